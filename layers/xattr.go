package layers

import (
	"runtime"
	"slices"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Extended attributes are read through /proc/self/fd/N of an O_PATH fd:
// that reaches the object the fd holds (a symlink included) without a path
// walk in the layer. Values and lists grow until they fit.

// Getxattr returns the value of attribute name of rel.
func (l *Layer) Getxattr(rel, name string) ([]byte, error) {
	fd, err := l.OpenPath(rel)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return FdGetxattr(fd, name)
}

// FdGetxattr returns attribute name of the object held by fd (which may be
// an O_PATH fd).
func FdGetxattr(fd int, name string) ([]byte, error) {
	p := procPath(fd)
	return grow(func(buf []byte) (int, error) { return unix.Getxattr(p, name, buf) }, 256, 64)
}

// FdListxattr returns the attribute names of the object held by fd.
func FdListxattr(fd int) ([]string, error) {
	p := procPath(fd)
	buf, err := grow(func(buf []byte) (int, error) { return unix.Listxattr(p, buf) }, 1024, 256)
	if err != nil {
		return nil, err
	}
	var names []string
	start := 0
	for i := range buf {
		if buf[i] == 0 {
			if i > start {
				names = append(names, string(buf[start:i]))
			}
			start = i + 1
		}
	}
	return names, nil
}

// grow calls call with a buffer of size bytes and returns what it filled.
// Where that is too small (ERANGE), it asks call for the size needed (a
// nil buffer) and calls it again with that much and slack more, as the
// value may grow in between.
func grow(call func(buf []byte) (int, error), size, slack int) ([]byte, error) {
	buf := make([]byte, size)
	for {
		n, err := call(buf)
		if err != unix.ERANGE {
			if err != nil {
				return nil, err
			}
			return buf[:n], nil
		}
		need, err := call(nil)
		if err != nil {
			return nil, err
		}
		buf = make([]byte, need+slack)
	}
}

// xattrArgs is the kernel's struct xattr_args.
type xattrArgs struct {
	value uint64
	size  uint32
	flags uint32
}

// GetxattrAt returns attribute attr of entry name of directory dfd (an
// O_PATH fd will do), never following a symlink. It is one getxattrat(2)
// (Linux 6.13) where the kernel has it, else an O_PATH open of the entry
// and a getxattr through /proc.
func GetxattrAt(dfd int, name, attr string) ([]byte, error) {
	if !noGetxattrat.Load() {
		v, err := getxattrat(dfd, name, attr)
		if err != unix.ENOSYS {
			return v, err
		}
		noGetxattrat.Store(true)
	}
	fd, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return FdGetxattr(fd, attr)
}

// noGetxattrat is set once the kernel has answered getxattrat with ENOSYS.
var noGetxattrat atomic.Bool

func getxattrat(dfd int, name, attr string) ([]byte, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return nil, err
	}
	a, err := unix.BytePtrFromString(attr)
	if err != nil {
		return nil, err
	}
	// Most answers are ENODATA or short: a buffer on the stack, and an
	// allocation only for a value found.
	var small [256]byte
	buf := small[:]
	for {
		args := xattrArgs{value: uint64(uintptr(unsafe.Pointer(&buf[0]))), size: uint32(len(buf))}
		n, _, e := unix.Syscall6(unix.SYS_GETXATTRAT, uintptr(dfd), uintptr(unsafe.Pointer(p)),
			unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
		runtime.KeepAlive(buf)
		switch {
		case e == unix.ERANGE:
			// Ask for the size, then read again.
			args = xattrArgs{}
			sz, _, e := unix.Syscall6(unix.SYS_GETXATTRAT, uintptr(dfd), uintptr(unsafe.Pointer(p)),
				unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
			if e != 0 {
				return nil, e
			}
			buf = make([]byte, sz+64)
		case e != 0:
			return nil, e
		default:
			return slices.Clone(buf[:n]), nil
		}
	}
}
