// Package fusemount owns making a FUSE mount and handing back its
// /dev/fuse connection: mount(2) with fd=N where the process may mount
// (root, or the owner of its user and mount namespaces), the setuid
// fusermount3 helper otherwise, and unmounting again. It speaks no FUSE
// protocol: serving the connection is the caller's.
package fusemount

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Options describe a mount. Flags are mount(8)'s flag words (ro, nosuid,
// nodev, noexec, noatime and their opposites); Data are the FUSE
// filesystem's own options (default_permissions, allow_other, max_read=N).
type Options struct {
	Source  string // what mountinfo shows as the source
	Subtype string // the type is "fuse." + Subtype
	Flags   []string
	Data    []string
}

// flagBits maps mount(8) flag words to mount(2) bits: set (true) or clear.
var flagBits = map[string]struct {
	bit uintptr
	set bool
}{
	"ro": {unix.MS_RDONLY, true}, "rw": {unix.MS_RDONLY, false},
	"nosuid": {unix.MS_NOSUID, true}, "suid": {unix.MS_NOSUID, false},
	"nodev": {unix.MS_NODEV, true}, "dev": {unix.MS_NODEV, false},
	"noexec": {unix.MS_NOEXEC, true}, "exec": {unix.MS_NOEXEC, false},
	"noatime": {unix.MS_NOATIME, true}, "atime": {unix.MS_NOATIME, false},
	"sync": {unix.MS_SYNCHRONOUS, true}, "async": {unix.MS_SYNCHRONOUS, false},
	"dirsync": {unix.MS_DIRSYNC, true},
}

// Mount mounts a new FUSE connection at dir (an absolute path to an
// existing directory) and returns the connection's fd. The kernel queues
// its INIT request at once; the mount answers nothing until the caller
// serves the fd.
//
// mount(2) is tried first; where it is refused with EPERM (a user outside
// a user namespace of its own), fusermount3 mounts and passes the fd back
// over a socket.
func Mount(dir string, o Options) (int, error) {
	var flags uintptr
	for _, f := range o.Flags {
		b, ok := flagBits[f]
		if !ok {
			return -1, fmt.Errorf("unknown mount flag %q", f)
		}
		if b.set {
			flags |= b.bit
		} else {
			flags &^= b.bit
		}
	}
	fd, err := mountDirect(dir, o, flags)
	if err == nil {
		return fd, nil
	}
	if !errors.Is(err, unix.EPERM) {
		return -1, err
	}
	if _, lerr := exec.LookPath("fusermount3"); lerr != nil {
		return -1, fmt.Errorf("%v (and no fusermount3 to mount as this user: Debian package fuse3)", err)
	}
	return fusermount(dir, o)
}

// mountDirect is Mount through mount(2).
func mountDirect(dir string, o Options, flags uintptr) (int, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return -1, err
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("/dev/fuse: %w", err)
	}
	data := append([]string{
		"fd=" + strconv.Itoa(fd),
		fmt.Sprintf("rootmode=%o", st.Mode&unix.S_IFMT),
		"user_id=" + strconv.Itoa(os.Geteuid()),
		"group_id=" + strconv.Itoa(os.Getegid()),
	}, o.Data...)
	if err := unix.Mount(o.Source, dir, "fuse."+o.Subtype, flags, strings.Join(data, ",")); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// fusermount is Mount through fusermount3: it opens /dev/fuse, mounts it
// at dir with the options, and sends the fd over the socket named by
// _FUSE_COMMFD.
func fusermount(dir string, o Options) (int, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	ours := os.NewFile(uintptr(pair[0]), "fusermount socket")
	theirs := os.NewFile(uintptr(pair[1]), "fusermount socket")
	defer ours.Close()
	opts := append(append([]string{}, o.Flags...), "fsname="+o.Source, "subtype="+o.Subtype)
	opts = append(opts, o.Data...)
	cmd := exec.Command("fusermount3", "-o", strings.Join(opts, ","), "--", dir)
	cmd.ExtraFiles = []*os.File{theirs} // fd 3 in the child
	cmd.Env = append(os.Environ(), "_FUSE_COMMFD=3")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		theirs.Close()
		return -1, fmt.Errorf("fusermount3: %w", err)
	}
	theirs.Close()
	fd, rerr := receiveFd(int(ours.Fd()))
	werr := cmd.Wait()
	if rerr != nil || werr != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = fmt.Sprint(errors.Join(werr, rerr))
		}
		return -1, fmt.Errorf("fusermount3: %s", msg)
	}
	return fd, nil
}

// receiveFd reads one message from the socket sock and returns the fd it
// carries.
func receiveFd(sock int) (int, error) {
	buf := make([]byte, 8)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		_, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, err
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) == 0 {
			return -1, fmt.Errorf("no fd received")
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			return -1, fmt.Errorf("no fd received")
		}
		unix.CloseOnExec(fds[0])
		return fds[0], nil
	}
}

// Unmount ends the mount at dir: with umount(2) where the process may,
// lazily if it is busy, and through fusermount3 -u otherwise.
func Unmount(dir string) error {
	err := unix.Unmount(dir, 0)
	if err == unix.EBUSY {
		err = unix.Unmount(dir, unix.MNT_DETACH)
	}
	if err != unix.EPERM {
		return err
	}
	out, ferr := exec.Command("fusermount3", "-u", "-z", "--", dir).CombinedOutput()
	if ferr != nil {
		return fmt.Errorf("fusermount3 -u: %v: %s", ferr, strings.TrimSpace(string(out)))
	}
	return nil
}
