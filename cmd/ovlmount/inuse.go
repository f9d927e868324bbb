package main

import (
	"fmt"
	"time"

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
// waited for a while (claimWait). The kernel's marks and these locks do not see each
// other: a kernel mount and ovlmount mount of one upper layer are not
// told apart.
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
	return nil
}
