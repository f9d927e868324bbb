package overlay

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Attr is what stat shows for a node.
type Attr struct {
	Ino     uint64
	Mode    uint32 // type and permission bits, as in st_mode
	Nlink   uint32
	Uid     uint32
	Gid     uint32
	Rdev    uint64
	Size    uint64
	Blocks  uint64 // 512-byte blocks allocated
	Blksize uint32
	Atime   time.Time
	Mtime   time.Time
	Ctime   time.Time
}

// GetAttr returns the current attributes of node id, read from the layer
// object that wins.
func (fs *FS) GetAttr(id uint64) (Attr, error) {
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	n, err := fs.get(id)
	if err != nil {
		return Attr{}, err
	}
	st, err := fs.stat(n)
	if err != nil {
		return Attr{}, err
	}
	return fs.attr(n, &st), nil
}

// stat returns the host attributes of n's winning object; for an
// unlinked node, through one of its open fds.
// Preconditions: renameMu held.
func (fs *FS) stat(n *node) (unix.Stat_t, error) {
	var st unix.Stat_t
	n.mu.Lock()
	objs, unlinked := n.objs, n.unlinked
	fd := -1
	for h := range n.open {
		fd = h.file()
		break
	}
	if unlinked && fd >= 0 {
		err := unix.Fstat(fd, &st)
		n.mu.Unlock()
		return st, errno(err)
	}
	n.mu.Unlock()
	if unlinked {
		return st, syscall.ENOENT
	}
	st, err := fs.lstat(n, objs[0].layer)
	return st, errno(err)
}

// attr turns the host attributes of n's winning object into those shown:
// its override xattr, if read, then the owner mapping.
// Preconditions: renameMu held; n.mu not held.
func (fs *FS) attr(n *node, st *unix.Stat_t) Attr {
	a := Attr{
		Ino:     n.ino.Load(),
		Mode:    st.Mode,
		Nlink:   uint32(st.Nlink),
		Uid:     st.Uid,
		Gid:     st.Gid,
		Rdev:    st.Rdev,
		Size:    uint64(st.Size),
		Blocks:  uint64(st.Blocks),
		Blksize: uint32(st.Blksize),
		Atime:   time.Unix(st.Atim.Unix()),
		Mtime:   time.Unix(st.Mtim.Unix()),
		Ctime:   time.Unix(st.Ctim.Unix()),
	}
	if n.isDir() && (n.merged() || fs.opts.StaticNlink) {
		a.Nlink = 1
	}
	if o, ok := fs.overrideOf(n, st.Mode&unix.S_IFMT); ok {
		a.Uid, a.Gid = o.uid, o.gid
		typ := a.Mode & unix.S_IFMT
		if o.typ != 0 && o.typ != typ {
			// A regular file standing for another type.
			typ, a.Rdev = o.typ, o.rdev
			if typ != unix.S_IFLNK {
				a.Size = 0
			}
		}
		a.Mode = typ | o.perm
	}
	a.Uid = fs.opts.UIDs.shown(a.Uid)
	a.Gid = fs.opts.GIDs.shown(a.Gid)
	return a
}
