package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/ovlmount/ovlmount/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// claimWait is how long a mount with index=on waits for another mount's
// lock to go before it fails: an unmounted ovlmount's daemon exits only
// after umount returns, and a mount made again at once must not find it.
const claimWait = 3 * time.Second

// claimLayers marks upperdir and workdir as used by this mount, as the
// kernel marks their inodes (ovl_inuse_trylock), with an exclusive flock
// on each that the process holds until it exits. Where another ovlmount
// mount holds one, a mount with index=on fails (EBUSY), as in the kernel,
// whose index would be corrupted by two mounts writing it; without the
// index it only warns. A lock held after the other mount's unmount is
// waited for a while (claimWait). The kernel's marks are not to be seen
// from here, nor these locks by the kernel: with index=on, a kernel
// overlay mount that this mount namespace lists with the directories as
// its upperdir or workdir fails the mount too (kernelUser; mountinfo
// lists the paths as the kernel's mount was given them, so relative
// ones, which cannot be found, are left out); the kernel mounts over an
// ovlmount's.
func claimLayers(c *config) error {
	for _, d := range []struct{ what, path string }{{"upperdir", c.upper}, {"workdir", c.work}} {
		fd, err := unix.Open(d.path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("%s %s: %v", d.what, d.path, err)
		}
		// The fd stays open: the lock lasts as long as the mount's
		// process.
		err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		for deadline := time.Now().Add(claimWait); err == unix.EWOULDBLOCK && c.index && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
			err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		}
		switch {
		case err == nil:
		case err != unix.EWOULDBLOCK:
			unix.Close(fd)
		case c.index:
			unix.Close(fd)
			return fmt.Errorf("option index=on: %s %s is in use by another mount (index=off overrides): %v", d.what, d.path, unix.EBUSY)
		default:
			unix.Close(fd)
			logWarning("%s %s is in use by another mount: changes made through both are undefined", d.what, d.path)
		}
	}
	if c.index {
		if what, point := kernelUser(c); point != "" {
			return fmt.Errorf("option index=on: %s is in use by the kernel's overlay mounted at %s (index=off overrides): %v", what, point, unix.EBUSY)
		}
	}
	return nil
}

// kernelUser returns the first of upperdir and workdir that a kernel
// overlay mount listed in /proc/self/mountinfo has as its upperdir or
// workdir, and that mount's mountpoint ("" if none).
func kernelUser(c *config) (what, point string) {
	type dir struct {
		what string
		dev  uint64
		ino  uint64
	}
	var ours []dir
	for _, d := range []struct{ what, path string }{{"upperdir " + c.upper, c.upper}, {"workdir " + c.work, c.work}} {
		var st unix.Stat_t
		if unix.Stat(d.path, &st) == nil {
			ours = append(ours, dir{d.what, st.Dev, st.Ino})
		}
	}
	ms, _ := mountinfo.Read()
	for _, m := range ms {
		if m.Type != "overlay" {
			continue
		}
		for _, o := range m.SuperOpts {
			k, v, _ := strings.Cut(o, "=")
			if k != "upperdir" && k != "workdir" || !strings.HasPrefix(v, "/") {
				continue
			}
			var st unix.Stat_t
			if unix.Stat(mountinfo.Unescape(v), &st) != nil {
				continue
			}
			for _, d := range ours {
				if d.dev == st.Dev && d.ino == st.Ino {
					return d.what, m.Point
				}
			}
		}
	}
	return "", ""
}
