// Package layers owns host access to one layer directory of an overlay.
//
// A Layer is a directory opened once as an fd. Every access below it
// is relative to that fd through openat2 with RESOLVE_BENEATH,
// RESOLVE_NO_SYMLINKS and RESOLVE_NO_MAGICLINKS, and the last component is
// never followed: a symlink stored in a layer is data, never a way out of
// it. The package knows the on-disk markers (whiteouts, opaque directories)
// but nothing of how layers merge; that belongs to the overlay package. It
// must not write to a layer unless the layer was opened as the upper one.
package layers

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Layer is one directory of the stack. Its methods are safe for concurrent
// use: the only state is the root fd, which never changes after Open.
type Layer struct {
	// Path is the host path the layer was opened from, for messages only.
	Path string
	// Upper is true for the writable layer.
	Upper bool
	// Dev is the st_dev of the layer's root directory.
	Dev uint64
	// Index is the position in the stack: 0 is the top.
	Index int
	// DataOnly marks a data-only lower layer (lowerdir=a::b): never
	// merged or listed, only searched for the data of metacopy files.
	DataOnly bool

	root    int
	noatime int // O_NOATIME for lower layers, 0 for the upper one
}

const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// Open opens the directory at path as a layer. The path itself may go
// through symlinks (containers-storage passes links under its l/ directory);
// nothing below it will.
//
// A lower layer is reached, like in the kernel's overlay, through a private
// clone of its mount made read-only and noatime: the kernel itself then
// refuses any write to it and updates no atime, readlink's included (which
// O_NOATIME cannot prevent). Cloning needs CAP_SYS_ADMIN over the mount
// namespace; without it the layer is opened directly, and lower files are
// still opened with O_NOATIME. A clone does not include mounts below the
// layer's root, as in the kernel.
func Open(path string, index int, upper bool) (*Layer, error) {
	fd, err := openRoot(path, upper)
	if err != nil {
		if err == unix.ENOTDIR {
			return nil, fmt.Errorf("%s: not a directory", path)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	l := &Layer{Path: path, Upper: upper, Dev: st.Dev, Index: index, root: fd}
	if !upper {
		l.noatime = unix.O_NOATIME
	}
	return l, nil
}

// openRoot returns the layer's root directory fd: readable, not O_PATH,
// because open_by_handle_at and the filesystem uuid ioctl refuse O_PATH
// fds; O_PATH only for a root the caller may search but not read.
func openRoot(path string, upper bool) (int, error) {
	dir, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if !upper {
		if tree, err := readOnlyClone(dir); err == nil {
			unix.Close(dir)
			dir = tree
		}
	}
	defer unix.Close(dir)
	fd, err := unix.Openat(dir, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err == unix.EACCES {
		fd, err = unix.Openat(dir, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	return fd, err
}

// readOnlyClone returns an O_PATH fd of a detached, read-only, noatime
// clone of the mount holding directory dir, rooted at dir.
func readOnlyClone(dir int) (int, error) {
	tree, err := unix.OpenTree(dir, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return -1, err
	}
	attr := unix.MountAttr{
		Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOATIME,
		Attr_clr: unix.MOUNT_ATTR__ATIME,
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		unix.Close(tree)
		return -1, err
	}
	return tree, nil
}

// Clones reports whether Open reaches the lower layer at path through a
// clone of its mount, which shows no mount below the layer's root, rather
// than directly, through every mount below it.
func Clones(path string) bool {
	dir, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(dir)
	tree, err := readOnlyClone(dir)
	if err != nil {
		return false
	}
	unix.Close(tree)
	return true
}

// Close releases the root fd.
func (l *Layer) Close() error { return unix.Close(l.root) }

// Root returns the layer's root directory fd. It stays owned by the Layer.
func (l *Layer) Root() int { return l.root }

// ValidName reports whether name is a single path component the overlay
// may pass to the host: not empty, not "." or "..", no '/' and no NUL.
func ValidName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}

// openat2 opens rel (a relative path of valid names joined by '/', or ""
// for the root) below the layer root without following any symlink.
func (l *Layer) openat2(rel string, flags int) (int, error) {
	if rel == "" {
		rel = "."
	}
	how := unix.OpenHow{Flags: uint64(flags | unix.O_NOFOLLOW | unix.O_CLOEXEC), Resolve: resolveFlags}
	for {
		fd, err := unix.Openat2(l.root, rel, &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			// EAGAIN: a concurrent rename on the host made RESOLVE_BENEATH
			// unsure of itself; the kernel asks for a retry.
			continue
		}
		return fd, err
	}
}

// OpenPath returns an O_PATH fd for rel; the caller closes it. A symlink
// is opened itself, not followed.
func (l *Layer) OpenPath(rel string) (int, error) {
	return l.openat2(rel, unix.O_PATH)
}

// OpenDir opens the directory rel for reading entries.
func (l *Layer) OpenDir(rel string) (int, error) {
	return l.openat2(rel, unix.O_RDONLY|unix.O_DIRECTORY|l.noatime)
}

// OpenFileAt opens the regular file name of directory dfd, a directory of
// this layer, with flags (O_RDONLY, O_WRONLY or O_RDWR plus modifiers):
// one name, never followed if it is a symlink. Lower files are opened
// with O_NOATIME where the host allows it.
func (l *Layer) OpenFileAt(dfd int, name string, flags int) (int, error) {
	return l.openFile(func(flags int) (int, error) {
		return unix.Openat(dfd, name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}, flags)
}

func (l *Layer) openFile(open func(flags int) (int, error), flags int) (int, error) {
	if l.noatime != 0 {
		fd, err := open(flags | l.noatime)
		if err != unix.EPERM {
			return fd, err
		}
		// O_NOATIME needs ownership or CAP_FOWNER: fall back for files
		// of other users when running unprivileged.
	}
	return open(flags)
}

// Walk opens directory path (names joined by '/', "" for the root) below
// the layer's root as an O_PATH fd, one name at a time, following no
// symlink; the caller closes it.
func (l *Layer) Walk(path string) (int, error) {
	fd, err := unix.Openat(l.root, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil || path == "" {
		return fd, err
	}
	for _, name := range strings.Split(path, "/") {
		if !ValidName(name) {
			unix.Close(fd)
			return -1, unix.EINVAL
		}
		next, err := unix.Openat(fd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// Reopen opens the object the fd holds (an O_PATH fd will do) with flags,
// through /proc/self/fd/N: the same inode, whatever happened to its name
// meanwhile. Lower objects are opened with O_NOATIME where the host
// allows it.
func (l *Layer) Reopen(fd, flags int) (int, error) {
	p := procPath(fd)
	return l.openFile(func(flags int) (int, error) {
		for {
			r, err := unix.Open(p, flags|unix.O_CLOEXEC, 0)
			if err != unix.EINTR {
				return r, err
			}
		}
	}, flags)
}

// Lstat returns the attributes of rel without following a final symlink.
func (l *Layer) Lstat(rel string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if rel == "" {
		return st, unix.Fstat(l.root, &st)
	}
	fd, err := l.OpenPath(rel)
	if err != nil {
		return st, err
	}
	err = unix.Fstat(fd, &st)
	unix.Close(fd)
	return st, err
}

// ReadlinkAt returns the target of symlink name in directory dfd (an
// O_PATH fd will do); EINVAL if it is no symlink.
func ReadlinkAt(dfd int, name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(dfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, 2*len(buf))
	}
}

// Errno extracts the errno from err, or EIO when err carries none, so that
// no Go error reaches the kernel as a silent EIO without being mapped.
func Errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return syscall.EIO
}

// FsxattrSize is the size of the kernel's struct fsxattr.
const FsxattrSize = 28

// The ioctls of struct fsxattr: _IOR('X', 31, ...) and _IOW('X', 32, ...).
const (
	iocFsGetxattr = 0x801c581f
	iocFsSetxattr = 0x401c5820
)

// Fsxattr returns the extended inode attributes (FS_IOC_FSGETXATTR) of
// the open file fd, a struct fsxattr.
func Fsxattr(fd int) ([FsxattrSize]byte, error) {
	var x [FsxattrSize]byte
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), iocFsGetxattr, uintptr(unsafe.Pointer(&x)))
	if e != 0 {
		return x, e
	}
	return x, nil
}
