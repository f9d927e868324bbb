package layers

import (
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The changes a mount makes to its upper layer and work directory, each
// a small wrapper, as the kernel's ovl_do_* are: package overlay and
// package copyup make no other (TestUpperChangesGoThroughLayers). Every one
// works on a directory fd and one name, or on an fd, and never follows a
// symlink that lives in a layer. The Fd* calls take an O_PATH fd too,
// reached through /proc/self/fd/N, which names the object itself (a
// symlink included), where the fd itself will not do.

// procPath names the object fd holds, for the calls that take no fd.
func procPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// Mkdir makes directory name in dfd.
func Mkdir(dfd int, name string, perm uint32) error { return unix.Mkdirat(dfd, name, perm) }

// Mknod makes device, fifo or socket node name in dfd; mode has the type.
func Mknod(dfd int, name string, mode uint32, dev uint64) error {
	return unix.Mknodat(dfd, name, mode, int(dev))
}

// Whiteout makes name in dfd a whiteout: a 0/0 character device.
func Whiteout(dfd int, name string) error { return unix.Mknodat(dfd, name, unix.S_IFCHR, 0) }

// AUFSWhiteout makes .wh.name in dfd, the AUFS form of a whiteout of
// name, where whiteouts cannot be char devices (mknod refused, rootless):
// an empty file made as tmp in the work directory wfd and moved in with
// one rename.
func AUFSWhiteout(wfd int, tmp string, dfd int, name string) error {
	fd, err := Create(wfd, tmp, unix.O_WRONLY, 0)
	if err != nil {
		return err
	}
	unix.Close(fd)
	if err := Rename(wfd, tmp, dfd, WhiteoutPrefix+name, 0); err != nil {
		Unlink(wfd, tmp)
		return err
	}
	return nil
}

// SetOpaque marks directory name of dfd opaque in namespace ns: it hides
// the directories of the same name below (the kernel's ovl_set_opaque).
func SetOpaque(dfd int, name string, ns Namespace) error {
	return SetxattrAt(dfd, name, ns.Name(XattrOpaque), []byte("y"))
}

// SetImpure marks directory dfd impure in namespace ns: it holds entries
// whose inode numbers come from a lower layer, copied up or moved in (the
// kernel's ovl_set_impure).
func SetImpure(dfd int, ns Namespace) error {
	return SetxattrAt(dfd, ".", ns.Name(XattrImpure), []byte("y"))
}

// Symlink makes symlink name in dfd, pointing at target.
func Symlink(target string, dfd int, name string) error { return unix.Symlinkat(target, dfd, name) }

// Create makes regular file name in dfd, which must not exist, and opens
// it with flags (O_RDWR or O_WRONLY plus modifiers).
func Create(dfd int, name string, flags int, perm uint32) (int, error) {
	return unix.Openat(dfd, name, flags|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm)
}

// Tmpfile makes an unnamed regular file on dfd's filesystem, open with
// flags (O_RDWR or O_WRONLY plus modifiers), for LinkFd to name.
func Tmpfile(dfd int, flags int, perm uint32) (int, error) {
	return unix.Openat(dfd, ".", flags|unix.O_TMPFILE|unix.O_CLOEXEC, perm)
}

// LinkFd links the object fd holds (an O_TMPFILE, or any fd, O_PATH
// included) as name in dfd, failing with EEXIST if name is taken. linkat
// of the fd itself needs CAP_DAC_READ_SEARCH; its /proc/self/fd link does
// not.
func LinkFd(fd, dfd int, name string) error {
	var err error = unix.ENOENT
	if !noEmptyPathLink {
		err = unix.Linkat(fd, "", dfd, name, unix.AT_EMPTY_PATH)
	}
	if err == unix.ENOENT || err == unix.EPERM {
		err = unix.Linkat(unix.AT_FDCWD, procPath(fd), dfd, name, unix.AT_SYMLINK_FOLLOW)
	}
	return err
}

// noEmptyPathLink makes LinkFd take the /proc/self/fd path, as without
// CAP_DAC_READ_SEARCH. Set only by tests.
var noEmptyPathLink bool

// Unlink removes non-directory name from dfd.
func Unlink(dfd int, name string) error { return unix.Unlinkat(dfd, name, 0) }

// Rmdir removes empty directory name from dfd.
func Rmdir(dfd int, name string) error { return unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR) }

// Rename moves oldName of oldDfd to newName of newDfd: renameat2 with
// flags (RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT), plain
// renameat without.
func Rename(oldDfd int, oldName string, newDfd int, newName string, flags uint) error {
	if flags == 0 {
		return unix.Renameat(oldDfd, oldName, newDfd, newName)
	}
	return unix.Renameat2(oldDfd, oldName, newDfd, newName, flags)
}

// RemoveAll removes name from dfd and, for a directory, everything below
// it; a symlink is removed itself. It is for temporaries in the work
// directory. A directory of mode 0 left by a copy-up is opened after a
// chmod, which needs no CAP_DAC_OVERRIDE of its owner.
func RemoveAll(dfd int, name string) error {
	err := unix.Unlinkat(dfd, name, 0)
	if err != unix.EISDIR {
		if err == unix.ENOENT {
			return nil
		}
		return err
	}
	fd, err := openDirBeneath(dfd, name)
	if err == unix.EACCES {
		if pfd, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
			Chmod(pfd, "", 0o700)
			unix.Close(pfd)
		}
		fd, err = openDirBeneath(dfd, name)
	}
	if err != nil {
		return err
	}
	err = Empty(fd)
	unix.Close(fd)
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return err
	}
	return nil
}

// Empty removes every entry of directory dir, recursively.
func Empty(dir int) error {
	for {
		fd, err := unix.Openat(dir, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ents, err := ReadDirFd(fd, false)
		unix.Close(fd)
		if err != nil || len(ents) == 0 {
			return err
		}
		for _, e := range ents {
			if err := RemoveAll(dir, e.Name); err != nil {
				return err
			}
		}
	}
}

func openDirBeneath(dfd int, name string) (int, error) {
	return unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// Chown changes the owner of name in dfd, or with name "" of the object
// dfd holds (O_PATH will do), a symlink itself; -1 leaves an id as it is.
func Chown(dfd int, name string, uid, gid int) error {
	return unix.Fchownat(dfd, name, uid, gid, atFlags(name))
}

// Chmod changes the mode bits of name in dfd, or with name "" of the
// object dfd holds (O_PATH will do), never following a symlink (which has
// no mode of its own: EOPNOTSUPP). Without fchmodat2 (Linux 6.6) a name is
// opened O_PATH and changed through /proc/self/fd.
func Chmod(dfd int, name string, perm uint32) error {
	if name == "" {
		if err := unix.Fchmod(dfd, perm); err != unix.EBADF {
			return err
		}
		return unix.Fchmodat(unix.AT_FDCWD, procPath(dfd), perm, 0)
	}
	err := unix.Fchmodat(dfd, name, perm, unix.AT_SYMLINK_NOFOLLOW)
	if err != unix.ENOSYS && err != unix.EOPNOTSUPP {
		return err
	}
	fd, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return unix.EOPNOTSUPP
	}
	return unix.Fchmodat(unix.AT_FDCWD, procPath(fd), perm, 0)
}

// SetTimes sets the access and modification times of name in dfd, or with
// name "" of the object dfd holds (O_PATH will do), a symlink itself.
// UTIME_OMIT leaves one as it is, UTIME_NOW takes the time now.
func SetTimes(dfd int, name string, atime, mtime unix.Timespec) error {
	return unix.UtimesNanoAt(dfd, name, []unix.Timespec{atime, mtime}, atFlags(name))
}

// atFlags are the *at flags for name: never follow it, and "" is the
// object of the directory fd itself.
func atFlags(name string) int {
	if name == "" {
		return unix.AT_SYMLINK_NOFOLLOW | unix.AT_EMPTY_PATH
	}
	return unix.AT_SYMLINK_NOFOLLOW
}

// FdTruncate sets the size of the regular file fd holds (O_PATH will do:
// it is opened for writing through /proc/self/fd).
func FdTruncate(fd int, size int64) error {
	if unix.Ftruncate(fd, size) == nil {
		return nil
	}
	wfd, err := unix.Open(procPath(fd), unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(wfd)
	return unix.Ftruncate(wfd, size)
}

// FdSetxattr sets attribute name of the object held by fd to value.
// flags is 0, unix.XATTR_CREATE or unix.XATTR_REPLACE.
func FdSetxattr(fd int, name string, value []byte, flags int) error {
	if err := unix.Fsetxattr(fd, name, value, flags); err != unix.EBADF {
		return err
	}
	return unix.Setxattr(procPath(fd), name, value, flags)
}

// SetxattrAt sets attribute attr of name in dfd, a symlink itself.
func SetxattrAt(dfd int, name, attr string, value []byte) error {
	fd, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return FdSetxattr(fd, attr, value, 0)
}

// FdRemovexattr removes attribute name of the object held by fd.
func FdRemovexattr(fd int, name string) error {
	if err := unix.Fremovexattr(fd, name); err != unix.EBADF {
		return err
	}
	return unix.Removexattr(procPath(fd), name)
}

// SetFlags sets the inode flags (FS_IOC_SETFLAGS) of the open file fd.
func SetFlags(fd int, flags uint32) error {
	return unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(flags))
}

// SetFsxattr sets the extended inode attributes (FS_IOC_FSSETXATTR) of
// the open file fd to x, a struct fsxattr.
func SetFsxattr(fd int, x *[FsxattrSize]byte) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), iocFsSetxattr, uintptr(unsafe.Pointer(x)))
	if e != 0 {
		return e
	}
	return nil
}

// Pwrite writes data to the open file fd at off, until all is written or
// an error stops it; it returns how much was written, and the error.
func Pwrite(fd int, data []byte, off int64) (int, error) {
	done := 0
	for done < len(data) {
		n, err := unix.Pwrite(fd, data[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

// Fallocate changes the space of the open file fd (fallocate(2)).
func Fallocate(fd int, mode uint32, off, length int64) error {
	return unix.Fallocate(fd, mode, off, length)
}

// CopyFileRange copies up to n bytes from in at *inOff to out at *outOff
// (copy_file_range(2)).
func CopyFileRange(in int, inOff *int64, out int, outOff *int64, n, flags int) (int, error) {
	return unix.CopyFileRange(in, inOff, out, outOff, n, flags)
}

// Clone makes the data of open file dst share the extents of open file
// src (FICLONE), where the filesystem can.
func Clone(dst, src int) error { return unix.IoctlFileClone(dst, src) }

// StartWriteback starts writing the dirty pages of n bytes at off of file
// fd to its device, and does not wait (SYNC_FILE_RANGE_WRITE): a later
// Fsync then has less left to write. It is a hint and reports nothing.
func StartWriteback(fd int, off, n int64) {
	unix.SyncFileRange(fd, off, n, unix.SYNC_FILE_RANGE_WRITE)
}

// Fsync flushes the file fd to its device.
func Fsync(fd int) error { return unix.Fsync(fd) }

// Syncfs flushes the filesystem that holds fd.
func Syncfs(fd int) error { return unix.Syncfs(fd) }
