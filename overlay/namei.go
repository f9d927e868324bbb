package overlay

import (
	"strings"
	"syscall"

	"github.com/ovlmount/ovlmount/inodes"
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// maxName is the longest name a layer filesystem takes.
const maxName = 255

// Entry is the answer to a lookup: the node's id and attributes.
type Entry struct {
	ID   uint64
	Attr Attr
}

// found is the result of resolving a name in a directory, before it
// becomes a node.
type found struct {
	typ  uint32
	objs []obj
	st   unix.Stat_t // the winner's attributes
	// fresh marks an object just created: it has no copy-up origin.
	fresh bool
	// upperFree, when the name resolved to nothing, says that the upper
	// layer holds no whiteout of either kind for it, so create need not
	// look again.
	upperFree bool
}

// Lookup resolves name in directory parent and adds a kernel reference to
// the node it names.
func (fs *FS) Lookup(parent uint64, name string) (Entry, error) {
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	p, err := fs.get(parent)
	if err != nil {
		return Entry{}, err
	}
	f, err := fs.resolve(p, name)
	if err != nil {
		return Entry{}, err
	}
	return fs.acquire(p, name, f), nil
}

// acquire turns a resolved name into a node held by the kernel.
// Preconditions: renameMu held for reading.
func (fs *FS) acquire(p *node, name string, f found) Entry {
	num, ok, key := fs.number(p, name, f)
	id, n := fs.nodes.Acquire(num, ok, key, func(id uint64) *node {
		n := &node{id: id, typ: f.typ, objs: f.objs}
		n.at.Store(&place{parent: p, name: name})
		return n
	})
	n.mu.Lock()
	if n.unlinked {
		// A hard link of an unlinked node, found under another name:
		// the node lives on there. A non-directory has no children
		// whose paths could depend on its place.
		n.unlinked = false
		n.objs = f.objs
		n.at.Store(&place{parent: p, name: name})
	}
	n.mu.Unlock()
	return Entry{ID: id, Attr: fs.attr(n, &f.st)}
}

// checkName validates a name the kernel sends for a directory entry.
func checkName(name string) error {
	if !layers.ValidName(name) {
		return syscall.EINVAL
	}
	if len(name) > maxName {
		return syscall.ENAMETOOLONG
	}
	return nil
}

// resolve finds what name means in directory p, searching its layers top
// down like the kernel's ovl_lookup: a whiteout ends the search, a
// non-directory ends it, a directory goes on into the layers below until
// one is opaque or holds something that is not a directory.
// Preconditions: renameMu held.
func (fs *FS) resolve(p *node, name string) (found, error) {
	return fs.resolveIn(p, p.layersOf(), name)
}

// resolveIn is resolve over the given layer objects of p.
func (fs *FS) resolveIn(p *node, pobjs []obj, name string) (found, error) {
	var f found
	if !p.isDir() {
		return f, syscall.ENOTDIR
	}
	if err := checkName(name); err != nil {
		return f, err
	}
	if strings.HasPrefix(name, layers.WhiteoutPrefix) {
		// AUFS markers are not objects of the merged tree.
		return f, syscall.ENOENT
	}
	dir := p.path()
	rel := layers.Join(dir, name)
	for i, po := range pobjs {
		l := po.layer
		st, err := fs.statAt(p, l, name)
		if err == unix.ENOENT {
			// An AUFS whiteout hides the layers below; the last
			// layer has none.
			if i < len(pobjs)-1 && fs.aufsWhiteout(p, l, name) {
				break
			}
			f.upperFree = i == 0 && l.Upper
			continue
		}
		if err != nil {
			return f, errno(err)
		}
		if layers.IsWhiteout(&st) || (po.marks.XWhiteouts && l.IsXWhiteout(rel, &st)) {
			break
		}
		typ := st.Mode & unix.S_IFMT
		if f.objs == nil {
			f.typ, f.st = typ, st
		} else if typ != unix.S_IFDIR {
			break
		}
		o := obj{layer: l, dev: st.Dev, ino: st.Ino}
		if typ == unix.S_IFDIR {
			if o.marks, err = l.Marks(rel); err != nil {
				return f, errno(err)
			}
		}
		f.objs = append(f.objs, o)
		if typ != unix.S_IFDIR || o.marks.Opaque {
			break
		}
	}
	if f.objs == nil {
		return f, syscall.ENOENT
	}
	return f, nil
}

// lowerPositive reports whether name in directory p shows an object from
// a lower layer when the upper layer is left out: whether removing it
// needs a whiteout.
// Preconditions: renameMu held.
func (fs *FS) lowerPositive(p *node, name string) (bool, error) {
	var lowers []obj
	for _, o := range p.layersOf() {
		if !o.layer.Upper {
			lowers = append(lowers, o)
		}
	}
	if len(lowers) == 0 {
		return false, nil
	}
	_, err := fs.resolveIn(p, lowers, name)
	if err == syscall.ENOENT {
		return false, nil
	}
	return err == nil, err
}

// aufsWhiteout reports whether directory p has an AUFS whiteout .wh.NAME
// for name in layer l.
// Preconditions: renameMu held; p has an object in l.
func (fs *FS) aufsWhiteout(p *node, l *layers.Layer, name string) bool {
	if len(name)+len(layers.WhiteoutPrefix) > maxName {
		return false
	}
	_, err := fs.statAt(p, l, layers.WhiteoutPrefix+name)
	return err == nil
}

// number computes the inode number the kernel shows for a resolved name
// (ok false when the rule yields none), and the identity of the object
// the number comes from.
//
// The rule (fs/overlayfs/inode.c, ovl_getattr): a directory takes the
// number of its topmost lower directory when it has one; an upper
// non-directory takes its copy-up origin's number when the origin is
// known and was not a hard link; everything else keeps its own.
// Preconditions: renameMu held.
func (fs *FS) number(p *node, name string, f found) (uint64, bool, inodes.Key) {
	src := f.objs[0]
	if src.layer.Upper {
		if f.typ == unix.S_IFDIR {
			if len(f.objs) > 1 {
				src = f.objs[1]
			}
		} else if !f.fresh {
			if k, nlink, ok := fs.origin(p, name); ok && nlink == 1 {
				src = obj{dev: k.Dev, ino: k.Ino}
			}
		}
	}
	n, ok := fs.scheme.Ino(src.dev, src.ino)
	return n, ok, inodes.Key{Dev: src.dev, Ino: src.ino}
}
