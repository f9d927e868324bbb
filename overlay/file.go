package overlay

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// fileHandle is an open regular file: the host fd of the layer object
// that won when it was opened (the upper one when opened for writing).
type fileHandle struct {
	n  *node
	fd int
}

// Open opens regular file id with open(2) flags and returns a handle.
// Opening for writing or with O_TRUNC copies the file up first, as the
// kernel does.
func (fs *FS) Open(id uint64, flags int) (uint64, error) {
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	n, err := fs.get(id)
	if err != nil {
		return 0, err
	}
	if n.typ == unix.S_IFDIR {
		return 0, syscall.EISDIR
	}
	write := flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0
	if write {
		if fs.upper == nil {
			return 0, syscall.EROFS
		}
		if err := fs.copyUpTrunc(n, flags&unix.O_TRUNC != 0); err != nil {
			return 0, err
		}
	}
	return fs.openHandle(n, flags)
}

// openHandle opens n's winning object. A writable file is opened O_RDWR:
// with the writeback cache the kernel reads through write-only handles.
// O_APPEND is left out, since the kernel sends the offsets; O_TRUNC is
// applied by the host open.
// Preconditions: renameMu held; n copied up if flags write.
func (fs *FS) openHandle(n *node, flags int) (uint64, error) {
	host := unix.O_RDONLY
	if flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0 {
		host = unix.O_RDWR | flags&unix.O_TRUNC
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.unlinked {
		return 0, syscall.ENOENT
	}
	fd, err := n.objs[0].layer.OpenFile(n.path(), host)
	if err != nil {
		return 0, errno(err)
	}
	h := &fileHandle{n: n, fd: fd}
	if n.open == nil {
		n.open = make(map[*fileHandle]struct{})
	}
	n.open[h] = struct{}{}
	return fs.addHandle(h), nil
}

func (fs *FS) fileHandle(h uint64) (*fileHandle, error) {
	f, ok := fs.handle(h).(*fileHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	return f, nil
}

// Read reads into dst from offset off of handle h.
func (fs *FS) Read(h uint64, dst []byte, off int64) (int, error) {
	f, err := fs.fileHandle(h)
	if err != nil {
		return 0, err
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

// Write writes data at offset off of handle h.
func (fs *FS) Write(h uint64, data []byte, off int64) error {
	f, err := fs.fileHandle(h)
	if err != nil {
		return err
	}
	for len(data) > 0 {
		n, err := unix.Pwrite(f.fd, data, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return errno(err)
		}
		data, off = data[n:], off+int64(n)
	}
	return nil
}

// Fsync flushes handle h to stable storage.
func (fs *FS) Fsync(h uint64) error {
	f, err := fs.fileHandle(h)
	if err != nil {
		return err
	}
	if fs.opts.NoFsync {
		return nil
	}
	return errno(unix.Fsync(f.fd))
}

// Fallocate is fallocate(2) on handle h.
func (fs *FS) Fallocate(h uint64, mode uint32, off, length int64) error {
	f, err := fs.fileHandle(h)
	if err != nil {
		return err
	}
	return errno(unix.Fallocate(f.fd, mode, off, length))
}

// Release closes handle h.
func (fs *FS) Release(h uint64) {
	f, ok := fs.dropHandle(h).(*fileHandle)
	if !ok {
		return
	}
	f.n.mu.Lock()
	delete(f.n.open, f)
	f.n.mu.Unlock()
	unix.Close(f.fd)
}

// Readlink returns the target of symlink id.
func (fs *FS) Readlink(id uint64) (string, error) {
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	n, err := fs.get(id)
	if err != nil {
		return "", err
	}
	if n.typ != unix.S_IFLNK {
		return "", syscall.EINVAL
	}
	t, err := n.layersOf()[0].layer.Readlink(n.path())
	return t, errno(err)
}

// SyncFS flushes the upper layer's filesystem.
func (fs *FS) SyncFS() error {
	if fs.upper == nil || fs.opts.NoFsync {
		return nil
	}
	return errno(unix.Syncfs(fs.upper.Root()))
}
