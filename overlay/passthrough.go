package overlay

import (
	"syscall"
)

// FUSE passthrough: the kernel reads and writes a file's host object
// itself, without a request to the daemon, once the daemon has
// registered the host fd as the file's backing (fuse_backing_open, which
// needs CAP_SYS_ADMIN in the initial user namespace).
//
// The kernel allows one backing file per FUSE inode at a time, and no
// passthrough open beside an open that uses its page cache. A lower
// object is never passed through: a copy-up moves a file's data to the
// upper layer, and a reader opened before it must then read the copy, as
// on the kernel's overlay, which the daemon can only arrange while it
// serves the reads itself. So a node's opens are all passed through, on
// one backing registered for its upper object, or none is: the first
// open of a node with no open handle decides. A file made setuid while
// open through passthrough keeps the bit when another user writes it
// through that open (docs/differences.md).

// Backing registers host files with the kernel for passthrough (the
// connection, serve.go).
type Backing interface {
	// Open registers the host file open as fd and returns its id.
	Open(fd int) (int32, error)
	// Close drops the registration id; files already open keep it.
	Close(id int32)
}

// backing is a node's registered backing file, shared by its open
// handles.
type backing struct {
	id   int32
	refs int // open handles passed through
}

// Opened is an open file handle and how the kernel reaches its data.
type Opened struct {
	Handle uint64
	// Backing is the passthrough backing id, or -1: the daemon serves
	// the reads and writes.
	Backing int32
	// Shared says other nodes show the same file and change it
	// (Attr.Shared): the kernel must not keep its pages across opens.
	Shared bool
	// Direct says the kernel must send every read, not stop at the
	// file's size (a metacopy file whose data is longer than it shows).
	Direct bool
}

// SetBacking enables passthrough through b, or disables it (nil).
func (fs *FS) SetBacking(b Backing) {
	fs.hmu.Lock()
	fs.backing = b
	fs.hmu.Unlock()
}

// passedThrough reports whether an open of n would be passed through:
// passthrough is on, the object and its data are upper (not a metacopy
// file) and it shows no setuid or setgid bit, and n has no open handle
// that is not passed through.
//
// Setuid and setgid: a write the kernel passes through never reaches the
// daemon, and with HANDLE_KILLPRIV_V2 the kernel leaves clearing them to
// the daemon's WRITE, so such a file's data goes through the daemon.
// Preconditions: n.mu held.
func (fs *FS) passedThrough(n *node) bool {
	fs.hmu.Lock()
	on := fs.backing != nil
	fs.hmu.Unlock()
	return on && n.hasUpperData() && n.privs.Load() == privsNone && (n.aux == nil || len(n.aux.open) == 0 || n.aux.backing != nil)
}

// attach makes fd, n's host file opened for h, an open handle of n, and
// registers it as n's backing when passedThrough says so (pt).
// Preconditions: n.mu held.
func (fs *FS) attach(n *node, fd int, pt bool) Opened {
	h := &fileHandle{n: n, fd: fd, lower: !n.hasUpperData(), stale: -1}
	x := n.more()
	o := Opened{Backing: -1, Shared: x.idx != nil}
	if pt && x.backing == nil {
		fs.hmu.Lock()
		b := fs.backing
		fs.hmu.Unlock()
		if b != nil {
			id, err := b.Open(fd)
			switch {
			case err == nil:
				x.backing = &backing{id: id}
			case err == syscall.EPERM || err == syscall.ENOTTY || err == syscall.EINVAL:
				// Not allowed here after all (no CAP_SYS_ADMIN in the
				// initial user namespace, an old kernel): stop trying.
				fs.SetBacking(nil)
			}
		}
	}
	if pt && x.backing != nil {
		x.backing.refs++
		h.backed = true
		o.Backing = x.backing.id
	}
	if x.open == nil {
		x.open = make(map[*fileHandle]struct{})
	}
	x.open[h] = struct{}{}
	o.Handle = fs.addHandle(h)
	return o
}

// detach drops h from its node's open handles, and the node's backing
// with its last passed-through handle.
// Preconditions: h.n.mu held.
func (fs *FS) detach(h *fileHandle) {
	x := h.n.aux
	delete(x.open, h)
	if !h.backed || x.backing == nil {
		return
	}
	if x.backing.refs--; x.backing.refs == 0 {
		fs.hmu.Lock()
		b := fs.backing
		fs.hmu.Unlock()
		if b != nil {
			b.Close(x.backing.id)
		}
		x.backing = nil
	}
}
