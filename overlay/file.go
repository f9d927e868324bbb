package overlay

import (
	"sync"
	"syscall"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// fileHandle is an open regular file: the host fd of the layer object
// that won when it was opened (the upper one when opened for writing).
type fileHandle struct {
	n *node
	// mu guards the fields below. A read switches fd to the upper copy
	// once the node has been copied up, as the kernel does for an fd
	// opened before a copy-up; the lower fd stays open until release,
	// since a read in flight may still use it.
	mu    sync.Mutex
	fd    int
	lower bool // fd is a lower layer's file
	stale int  // the lower fd after a switch, or -1
	// backed says the kernel reads and writes fd itself (passthrough.go).
	backed bool
}

// file returns h's current fd.
// Preconditions: h.n.mu may be held (it comes before h.mu).
func (h *fileHandle) file() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fd
}

// readFd returns the fd to read h through.
func (fs *FS) readFd(h *fileHandle) int {
	h.mu.Lock()
	fd, lower := h.fd, h.lower
	h.mu.Unlock()
	if !lower || !h.n.upperData() {
		return fd
	}
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	h.n.mu.Lock()
	gone := h.n.unlinked
	h.n.mu.Unlock()
	if gone {
		return fd
	}
	up, err := fs.openFile(h.n, fs.upper, unix.O_RDONLY)
	if err != nil {
		return fd
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.lower {
		unix.Close(up)
		return h.fd
	}
	h.stale, h.fd, h.lower = h.fd, up, false
	return up
}

// Open opens regular file id with open(2) flags and returns a handle.
// Opening for writing or with O_TRUNC copies the file up first, as the
// kernel does (with O_TRUNC, without its data). killPrivs, when set, is a
// caller without CAP_FSETID opening with O_TRUNC: setuid and setgid go,
// as on a truncate (HANDLE_KILLPRIV_V2).
func (fs *FS) Open(id uint64, flags int, killPrivs *Cred) (Opened, error) {
	o, privs, err := fs.open(id, flags)
	if err == nil && killPrivs != nil && flags&unix.O_TRUNC != 0 && privs {
		h := o.Handle
		_, err = fs.SetAttr(id, SetAttrs{Handle: &h, KillPrivs: killPrivs})
	}
	return o, err
}

// open is Open but for the setuid and setgid bits, and reports whether the
// file may have either.
func (fs *FS) open(id uint64, flags int) (Opened, bool, error) {
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	n, err := fs.get(id)
	if err != nil {
		return Opened{}, false, err
	}
	if n.kind() == unix.S_IFDIR {
		return Opened{}, false, syscall.EISDIR
	}
	write := flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0
	if write {
		if fs.upper == nil {
			return Opened{}, false, syscall.EROFS
		}
		if err := fs.checkProt(n, flags&unix.O_APPEND != 0 && flags&unix.O_TRUNC == 0); err != nil {
			return Opened{}, false, err
		}
		fd, err := fs.copyUpOpen(n, flags&unix.O_TRUNC != 0)
		if err != nil {
			return Opened{}, false, err
		}
		if fd >= 0 {
			// The copy is truncated already, as O_TRUNC asks.
			n.mu.Lock()
			defer n.mu.Unlock()
			return fs.attach(n, fd, fs.passedThrough(n)), n.privs.Load() != privsNone, nil
		}
	}
	o, err := fs.openHandle(n, flags)
	return o, n.privs.Load() != privsNone, err
}

// openHandle opens n's winning object. A writable file is opened O_RDWR:
// with the writeback cache the kernel reads through write-only handles;
// so is one passed through, whose backing later opens of the node share.
// O_APPEND is left out, since the kernel sends the offsets; O_TRUNC is
// applied by the host open.
// Preconditions: renameMu held; n copied up if flags write.
func (fs *FS) openHandle(n *node, flags int) (Opened, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.unlinked {
		return Opened{}, syscall.ENOENT
	}
	if err := fs.lazyData(n); err != nil {
		return Opened{}, err
	}
	pt := fs.passedThrough(n)
	host := unix.O_RDONLY
	if pt || flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0 {
		host = unix.O_RDWR | flags&unix.O_TRUNC
	}
	// A metacopy file is read from the object below that holds its
	// data; it is never opened for writing as such (copyUpOpen).
	data, own := dataOf(n.objects(), n.kind())
	fd, err := fs.openFile(n, data.layer, host)
	if err != nil {
		return Opened{}, toErrno(err)
	}
	if !own {
		if err := fs.verifyData(n, fd); err != nil {
			unix.Close(fd)
			return Opened{}, err
		}
	}
	o := fs.attach(n, fd, pt)
	o.Direct = !own && fs.dataLonger(n, fd)
	return o, nil
}

// dataLonger reports whether the data of metacopy file n, open as dfd,
// is longer than the size n shows, its metadata's: the kernel's overlay
// reads such data to its end, where reads through the FUSE page cache
// stop at the size the kernel was given.
// Preconditions: renameMu held; n.mu held.
func (fs *FS) dataLonger(n *node, dfd int) bool {
	var data unix.Stat_t
	if unix.Fstat(dfd, &data) != nil {
		return false
	}
	meta, err := fs.lstat(n, n.objects()[0].layer)
	return err == nil && data.Size > meta.Size
}

func (fs *FS) fileHandle(h uint64) (*fileHandle, error) {
	fs.hmu.Lock()
	defer fs.hmu.Unlock()
	f := fs.handles[h]
	if f == nil {
		return nil, syscall.EBADF
	}
	return f, nil
}

// ReadFd returns the host fd to read handle h through. It stays open until
// h is released, which the kernel does not do while a read of h is in
// flight.
func (fs *FS) ReadFd(h uint64) (int, error) {
	f, err := fs.fileHandle(h)
	if err != nil {
		return -1, err
	}
	return fs.readFd(f), nil
}

// Write writes data at offset off of handle h and returns how much it
// wrote: all of it, or, when the host stops part way (a full
// filesystem), what went in before, as write(2) on the kernel's overlay
// returns a short count. killPrivs, when set, is the caller, who lacks
// CAP_FSETID: setuid and setgid go first, as the kernel drops them
// (killedPrivs), which the daemon's own write would not do
// (HANDLE_KILLPRIV_V2).
func (fs *FS) Write(h uint64, data []byte, off int64, killPrivs *Cred) (int, error) {
	f, err := fs.fileHandle(h)
	if err != nil {
		return 0, err
	}
	fd := f.file()
	if killPrivs != nil && f.n.privs.Load() != privsNone {
		if _, err := fs.SetAttr(f.n.ID(), SetAttrs{Handle: &h, KillPrivs: killPrivs}); err != nil {
			return 0, err
		}
	}
	// A write cut short by an error returns what was written, as
	// write(2) does.
	done, err := layers.Pwrite(fd, data, off)
	if err != nil && done == 0 {
		return 0, toErrno(err)
	}
	return done, nil
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
	return toErrno(layers.Fsync(f.file()))
}

// Fallocate is fallocate(2) on handle h.
func (fs *FS) Fallocate(h uint64, mode uint32, off, length int64) error {
	f, err := fs.fileHandle(h)
	if err != nil {
		return err
	}
	return toErrno(layers.Fallocate(f.file(), mode, off, length))
}

// Lseek answers lseek(2) with SEEK_DATA or SEEK_HOLE on handle h: the
// holes of the host file it reads through.
func (fs *FS) Lseek(h uint64, off int64, whence int) (int64, error) {
	f, err := fs.fileHandle(h)
	if err != nil {
		return 0, err
	}
	n, err := unix.Seek(fs.readFd(f), off, whence)
	return n, toErrno(err)
}

// CopyFileRange copies n bytes at offset inOff of handle in to offset
// outOff of handle out, with the host's copy_file_range (a reflink or an
// in-kernel copy where the filesystem can), as the kernel's overlay does
// on the real files.
func (fs *FS) CopyFileRange(in uint64, inOff int64, out uint64, outOff int64, n int, flags int) (int, error) {
	fin, err := fs.fileHandle(in)
	if err != nil {
		return 0, err
	}
	fout, err := fs.fileHandle(out)
	if err != nil {
		return 0, err
	}
	copied, err := layers.CopyFileRange(fs.readFd(fin), &inOff, fout.file(), &outOff, n, flags)
	return copied, toErrno(err)
}

// Release closes handle h.
func (fs *FS) Release(h uint64) {
	f := fs.dropHandle(h)
	if f == nil {
		return
	}
	f.n.mu.Lock()
	fs.detach(f)
	f.n.mu.Unlock()
	f.mu.Lock()
	unix.Close(f.fd)
	if f.stale >= 0 {
		unix.Close(f.stale)
	}
	f.mu.Unlock()
}

// Readlink returns the target of symlink id, itself or a file standing
// for it (override.go).
func (fs *FS) Readlink(id uint64) (string, error) {
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	n, err := fs.get(id)
	if err != nil {
		return "", err
	}
	switch n.kind() {
	case unix.S_IFLNK:
		var t string
		err = fs.inParent(n, n.layersOf()[0].layer, func(dfd int, name string) error {
			var err error
			t, err = layers.ReadlinkAt(dfd, name)
			return err
		})
		if err != unix.EINVAL {
			return t, toErrno(err)
		}
		// Made file-backed meanwhile? backWithFile holds n.mu until the
		// node is the file's.
		n.mu.Lock()
		backed := n.kind() == unix.S_IFREG
		n.mu.Unlock()
		if !backed {
			return "", syscall.EINVAL
		}
	case unix.S_IFREG:
	default:
		return "", syscall.EINVAL
	}
	return fs.readOverrideLink(n)
}

// SyncFS flushes the upper layer's filesystem.
func (fs *FS) SyncFS() error {
	if fs.upper == nil || fs.opts.NoFsync {
		return nil
	}
	return toErrno(layers.Syncfs(fs.upper.Root()))
}
