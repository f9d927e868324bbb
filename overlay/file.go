package overlay

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// fileHandle is an open regular file: the host fd of the layer object
// that won when it was opened.
type fileHandle struct {
	fd int
}

// Open opens regular file id with the access mode in flags and returns a
// handle. Writes are refused with EROFS: the engine has no write path.
func (fs *FS) Open(id uint64, flags int) (uint64, error) {
	n, err := fs.get(id)
	if err != nil {
		return 0, err
	}
	if n.typ == unix.S_IFDIR {
		return 0, syscall.EISDIR
	}
	if flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0 {
		return 0, syscall.EROFS
	}
	fd, err := n.objs[0].layer.OpenFile(n.rel, unix.O_RDONLY)
	if err != nil {
		return 0, errno(err)
	}
	return fs.addHandle(&fileHandle{fd: fd}), nil
}

// Read reads into dst from offset off of handle h.
func (fs *FS) Read(h uint64, dst []byte, off int64) (int, error) {
	f, ok := fs.handle(h).(*fileHandle)
	if !ok {
		return 0, syscall.EBADF
	}
	total := 0
	for total < len(dst) {
		n, err := unix.Pread(f.fd, dst[total:], off+int64(total))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return total, errno(err)
		}
		if n == 0 {
			break
		}
		total += n
	}
	return total, nil
}

// Release closes handle h.
func (fs *FS) Release(h uint64) {
	if f, ok := fs.dropHandle(h).(*fileHandle); ok {
		unix.Close(f.fd)
	}
}

// Readlink returns the target of symlink id.
func (fs *FS) Readlink(id uint64) (string, error) {
	n, err := fs.get(id)
	if err != nil {
		return "", err
	}
	if n.typ != unix.S_IFLNK {
		return "", syscall.EINVAL
	}
	t, err := n.objs[0].layer.Readlink(n.rel)
	return t, errno(err)
}
