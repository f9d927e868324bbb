package overlay

import (
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
	// far says where objects lie that are not at the name in the
	// parent's objects (place.far): reached through a redirect.
	far map[*layers.Layer]string
	// metacopy says the winner is a regular file whose data is below
	// (objs[len(objs)-1]); redirect is the winner's overlay.redirect.
	metacopy bool
	redirect string
	// lazy is the absolute redirect of a metacopy file whose data no
	// data-only layer holds yet: looked for again at open.
	lazy string
	// index is what the inodes index says of the name (index=on), nil
	// when it says nothing.
	index *indexed
}

// Lookup resolves name in directory parent and adds a kernel reference to
// the node it names.
func (fs *FS) Lookup(parent uint64, name string) (Entry, error) {
	fs.stats.lookups.Add(1)
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
	if f.typ == unix.S_IFDIR && len(f.objs) > 1 && f.objs[0].layer.Upper {
		fs.recordOrigin(p, name, f)
	}
	return fs.acquire(p, name, f), nil
}

// recordOrigin gives merged directory name of p, resolved as f, the
// copy-up origin it lacks (a hand-made upper layer's), naming its topmost
// lower directory, and p's upper directory the impure marker, as the
// kernel's lookup does (ovl_lookup, which stores the origin of a merged
// upper directory found without one). What cannot be recorded stays
// unrecorded, as there.
// Preconditions: renameMu held; f is merged with an upper object.
func (fs *FS) recordOrigin(p *node, name string, f found) {
	origin := fs.xattrs.Name(layers.XattrOrigin)
	fs.inDir(p, fs.upper, func(pfd int) error {
		if _, err := layers.GetxattrAt(pfd, name, origin); err != unix.ENODATA {
			return nil
		}
		low := f.objs[1].layer
		fd, err := fs.openAt(p, low, name)
		if err != nil {
			return err
		}
		h, _, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH)
		unix.Close(fd)
		if err != nil {
			return err
		}
		uuid, err := layers.FSUUID(low.Root())
		if err != nil || fs.opts.UUID == UUIDOff {
			uuid = [16]byte{}
		}
		v, err := layers.EncodeOrigin(uuid, h)
		if err != nil {
			return err
		}
		if err := layers.SetxattrAt(pfd, name, origin, v); err != nil {
			return err
		}
		return layers.SetImpure(pfd, fs.xattrs)
	})
}

// acquire turns a resolved name into a node held by the kernel: the node
// the name's identity finds (another name of a hard link, or the same
// name looked up again), or a new one.
// Preconditions: renameMu held for reading.
func (fs *FS) acquire(p *node, name string, f found) Entry {
	id := fs.identify(p, name, f)
	n, isNew := fs.nodes.Acquire(id.Ident, func(n *node) bool { return n.kind() == f.typ }, func() *node {
		n := newNode(f.typ, f.objs, p, name, f.far)
		if f.lazy != "" || f.index != nil {
			n.aux = &aux{lazy: f.lazy, idx: f.index}
		}
		return n
	})
	if isNew {
		fs.setNumber(n, id)
		if f.fresh {
			// Made just now: no append-only or immutable flag.
			n.prot.Store(protKnown)
		}
		if f.index != nil {
			fs.addAlias(n, f.index)
		}
	} else {
		fs.stats.held.Add(1)
		n.mu.Lock()
		switch {
		case f.index != nil:
			// A name of the index is a node of its own (index.go):
			// its one name, as the index shows it now.
			n.setObjs(f.objs)
			n.unlinked = false
			n.at.Store(&place{parent: p, name: name, far: f.far})
		case n.unlinked:
			n.setObjs(f.objs)
			n.addName(p, name, f.far)
		default:
			n.addName(p, name, f.far)
		}
		n.mu.Unlock()
	}
	return Entry{ID: n.ID(), Attr: fs.attr(n, &f.st)}
}

// setNumber gives n the inode number id says.
func (fs *FS) setNumber(n *node, id identity) {
	fs.nodes.Number(n, id.Ident.Key, id.num, id.ok)
}

// held returns the node the kernel holds under name of p, resolved as f,
// if any.
// Preconditions: renameMu held.
func (fs *FS) held(p *node, name string, f found) *node {
	n, ok := fs.nodes.Peek(fs.identify(p, name, f).Ident)
	if !ok {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.named(p, name) {
		return n
	}
	return nil
}

// nodeOf returns the node of the object a name resolves to, whose identity
// is id, if the kernel holds one.
// Preconditions: renameMu held; the object still there, so that no other
// object has its inode number.
func (fs *FS) nodeOf(id identity) *node {
	n, _ := fs.nodes.Peek(id.Ident)
	return n
}

// endsObject reports whether removing name (identity id), which holds f,
// ends its object for the overlay: a directory, a lower object (which
// goes out of sight), the last link of an upper one, or a node found by
// its name (which had only that one). No later lookup may find the node
// then.
func endsObject(id identity, f found) bool {
	return f.typ == unix.S_IFDIR || !f.objs[0].layer.Upper || f.st.Nlink <= 1 || id.ByName
}

// unname records that name of p, which held f before and was a name of n
// (nil: a node the kernel does not hold), is gone (removed, or renamed
// over): n loses the name, and when it had no other, stat answers with
// f's attributes after the removal. Unhashing a node whose object the
// change ended is the caller's (remove does it before the change).
// Preconditions: renameMu held; p.dirMu held, or renameMu for writing.
func (fs *FS) unname(p *node, name string, n *node, f found) {
	if n == nil {
		return
	}
	upper := f.objs[0].layer.Upper
	n.mu.Lock()
	n.dropName(p, name, func(pl place) bool { return fs.holds(pl, n) })
	if n.unlinked {
		// An upper object lost the link (a directory all of them); a
		// lower one stays linked where it is, hidden by a whiteout.
		st := f.st
		switch {
		case upper && f.typ == unix.S_IFDIR:
			st.Nlink = 0
		case upper && st.Nlink > 0:
			st.Nlink--
		}
		n.more().gone = &st
	}
	n.mu.Unlock()
}

// holds reports whether name pl still holds n's winning object.
// Preconditions: renameMu held; n.mu held.
func (fs *FS) holds(pl place, n *node) bool {
	o := n.objects()[0]
	st, err := fs.statAt(pl.parent, o.layer, pl.name)
	return err == nil && objOf(o.layer, &st).key() == o.key()
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

// identity is how a resolved name is known: the identity its node is
// found by, and the inode number it shows (num, or a fallback one when ok
// is false), which belongs to the object Ident.Key names.
type identity struct {
	inodes.Ident
	num uint64
	ok  bool
}

// identify returns the identity of a resolved name.
//
// Its number follows the kernel's rule (fs/overlayfs/inode.c,
// ovl_getattr): a directory takes the number of its topmost lower
// directory when it has one; an upper non-directory takes its copy-up
// origin's number when the origin is known and was not a hard link;
// everything else keeps its own. Nodes are grouped as the kernel groups
// inodes (ovl_hash_bylower): by the object the number comes from, except
// the names of a lower hard link on a writable mount, which copy-up
// splits: each is a node of its own (sharing the number).
// Preconditions: renameMu held.
func (fs *FS) identify(p *node, name string, f found) identity {
	if x := f.index; x != nil {
		// A name of the index: a node of its own, showing the lower
		// object's number (index.go).
		id := identity{Ident: inodes.Ident{Key: x.key, ByName: true, Dir: p.ID(), Name: name}}
		id.num, id.ok = fs.scheme.Ino(x.key.Dev, x.key.Ino)
		return id
	}
	src := f.objs[0]
	byName := false
	switch {
	case f.typ == unix.S_IFDIR:
		if src.layer.Upper && len(f.objs) > 1 {
			src = f.objs[1]
		}
	case src.layer.Upper:
		if !f.fresh {
			if o, ok := fs.origin(p, name); ok && o.nlink == 1 {
				src = obj{dev: uint32(o.key.Dev), ino: o.key.Ino}
			}
		}
	case fs.upper != nil && f.st.Nlink > 1:
		byName = true
	}
	id := identity{Ident: inodes.Ident{Key: src.key()}}
	if byName {
		id.ByName, id.Dir, id.Name = true, p.ID(), name
	}
	id.num, id.ok = fs.scheme.Ino(id.Key.Dev, id.Key.Ino)
	return id
}
