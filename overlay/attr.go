package overlay

import (
	"time"

	"golang.org/x/sys/unix"
)

// Attr is what stat shows for a node.
type Attr struct {
	Ino   uint64
	Mode  uint32 // type and permission bits, as in st_mode
	Nlink uint32
	Uid   uint32
	Gid   uint32
	Rdev  uint64
	Size  uint64
	Atime time.Time
	Mtime time.Time
	Ctime time.Time
}

// GetAttr returns the current attributes of node id, read from the layer
// object that wins.
func (fs *FS) GetAttr(id uint64) (Attr, error) {
	n, err := fs.get(id)
	if err != nil {
		return Attr{}, err
	}
	st, err := n.objs[0].layer.Lstat(n.rel)
	if err != nil {
		return Attr{}, errno(err)
	}
	return fs.attr(n, &st), nil
}

func (fs *FS) attr(n *node, st *unix.Stat_t) Attr {
	a := Attr{
		Ino:   n.id,
		Mode:  st.Mode,
		Nlink: uint32(st.Nlink),
		Uid:   st.Uid,
		Gid:   st.Gid,
		Rdev:  st.Rdev,
		Size:  uint64(st.Size),
		Atime: time.Unix(st.Atim.Unix()),
		Mtime: time.Unix(st.Mtim.Unix()),
		Ctime: time.Unix(st.Ctim.Unix()),
	}
	if n.isDir() && (n.merged() || fs.opts.StaticNlink) {
		a.Nlink = 1
	}
	return a
}
