package layers

import "golang.org/x/sys/unix"

// Writes of extended attributes, for the upper layer only: like the reads
// in xattr.go they go through /proc/self/fd/N of an fd (which may be
// O_PATH), so they reach the object the fd holds, a symlink included,
// without a path walk in the layer.

// FdSetxattr sets attribute name of the object held by fd to value.
// flags is 0, unix.XATTR_CREATE or unix.XATTR_REPLACE.
func FdSetxattr(fd int, name string, value []byte, flags int) error {
	return unix.Setxattr(procPath(fd), name, value, flags)
}

// FdRemovexattr removes attribute name of the object held by fd.
func FdRemovexattr(fd int, name string) error {
	return unix.Removexattr(procPath(fd), name)
}
