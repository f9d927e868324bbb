package overlay

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/ovlmount/ovlmount/inodes"
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// node is one overlay object the kernel holds. Its locks are in the
// package's one order (fs.go).
type node struct {
	// Slot is the node table's: the FUSE node id (ID), the identity
	// the node is found by, the kernel's references, the inode number
	// stat shows (Num; FS.setNumber).
	inodes.Slot
	// privs says whether the mode last shown had setuid or setgid
	// (privsSome) or neither (privsNone): a write that must clear them
	// needs no look when there are none. Every change of mode goes
	// through the engine, which shows the new mode.
	privs atomic.Uint32
	// prot is the append-only and immutable flags once known (fileattr.go).
	prot atomic.Uint32

	// at places the node in the tree: its path below every layer root
	// is the parents' names joined. It changes with FS.renameMu held for
	// writing (rename), or, for an unlinked non-directory found again
	// under another of its hard links, held for reading; readers hold it
	// for reading.
	at atomic.Pointer[place]

	// typ is the S_IFMT bits of the winning object, read with kind. It
	// is fixed for the node's life but in one case: a symlink, fifo,
	// socket or device made file-backed becomes S_IFREG (backed.go), as
	// it still shows its own type.
	typ atomic.Uint32

	// mu guards the fields below. It is held only briefly and never
	// while taking another node's mu, except by copyUp, which holds it
	// across the copy so that a second caller waits for the first.
	mu sync.Mutex
	// unlinked is set when the node has lost every name the engine
	// knows: it lives on through open handles, or under another hard
	// link when it is looked up again.
	unlinked bool
	// noCaps records that the object has no security.capability: the
	// kernel asks before every write (aux.xattrGen).
	noCaps bool
	// objs and nobjs are the layer objects the node stands for
	// (objects), top first: the one that wins, then, for a merged
	// directory, each lower directory that merges into it, down to an
	// opaque one. Copy-up puts the upper object first. The array is
	// replaced, never changed in place, so a slice taken under mu stays
	// valid. (A pointer and a count, not a slice: 16 bytes less per
	// node.)
	nobjs uint16
	objs  *obj
	// aux is what only some nodes need: a directory's is made with it
	// and never replaced (read without mu); a non-directory's when it
	// first needs one (more).
	aux *aux
}

// aux is the part of a node that most nodes do without. A mount holds
// a node for every entry the kernel caches, most of them files nobody
// opens, so the node itself stays small (96 bytes; TestNodeSize).
type aux struct {
	// Directories.

	// dirMu serialises changes to a directory's entries (create,
	// remove), from the check that a name is free or present to the
	// change itself. Rename holds renameMu for writing instead.
	dirMu sync.Mutex
	// dfd are the fds a directory node holds (dirfd.go).
	dfd dirFds
	// ls is a directory's merged listing (readdir.go), with its own
	// lock: taken before renameMu by ReadDir, never inside any other.
	ls listing
	// version counts the changes of a directory's entries that have an
	// origin (a removal, a rename in or out), which alone make the
	// kernel read an upper-only directory's impure entries again
	// (ovl_dir_version_inc with impurity; impureCache).
	version atomic.Uint64

	// Non-directories; guarded by node.mu.

	// links are the other names the kernel found a hard-linked
	// non-directory under (at is one); one takes at's place when at's
	// name goes.
	links []place
	// open are the host fds of the node's open file handles, which
	// stat and chmod use once it is unlinked.
	open map[*fileHandle]struct{}
	// backing is the registered passthrough file its handles share,
	// while any is open (passthrough.go).
	backing *backing

	// gone is what stat shows of a node whose last name went, taken
	// from the object as it was before: the kernel still asks for the
	// attributes of an object held open (O_PATH too), and its overlay
	// answers from the real inode it keeps. Guarded by node.mu.
	gone *unix.Stat_t

	// lazy is the absolute redirect of a metacopy file whose data no
	// data-only layer held when it was looked up (found.lazy); guarded
	// by node.mu.
	lazy string

	// xattrGen counts changes of the node's xattrs (guarded by
	// node.mu), so that an answer read before a change is not recorded
	// as noCaps after it.
	xattrGen uint64

	// idx is what the inodes index says of the node's name (index.go):
	// set when the node is made, with its aux, and never changed.
	idx *indexed
}

// newNode returns a node of type typ for objs, placed at (p, name); far
// says where objects lie elsewhere (place.far).
func newNode(typ uint32, objs []obj, p *node, name string, far map[*layers.Layer]string) *node {
	n := new(node)
	n.typ.Store(typ)
	n.setObjs(objs)
	if typ == unix.S_IFDIR {
		n.aux = new(aux)
	}
	n.at.Store(&place{parent: p, name: name, far: far})
	return n
}

// scratchNode is newNode for a node the table never holds, made to
// work on a name the kernel holds no node for: it holds no directory fd,
// since nothing would ever close it.
func scratchNode(typ uint32, objs []obj, p *node, name string, far map[*layers.Layer]string) *node {
	n := newNode(typ, objs, p, name, far)
	if n.aux != nil {
		n.aux.dfd.closed = true
	}
	return n
}

// scratchFor is scratchNode for name of p, resolved as f.
func scratchFor(p *node, name string, f found) *node {
	n := scratchNode(f.typ, f.objs, p, name, f.far)
	if f.index != nil {
		n.aux = &aux{idx: f.index}
	}
	return n
}

// objects returns the node's layer objects.
// Preconditions: n.mu held, or n not yet shared.
func (n *node) objects() []obj {
	return unsafe.Slice(n.objs, n.nobjs)
}

// setObjs makes objs, which no one changes after, the node's layer
// objects. There is one per layer at most.
// Preconditions: n.mu held, or n not yet shared.
func (n *node) setObjs(objs []obj) {
	n.objs, n.nobjs = unsafe.SliceData(objs), uint16(len(objs))
}

// more returns n's aux, made if need be.
// Preconditions: n.mu held.
func (n *node) more() *aux {
	if n.aux == nil {
		n.aux = new(aux)
	}
	return n.aux
}

// xattrGen returns how many times n's xattrs have changed.
// Preconditions: n.mu held.
func (n *node) xattrGen() uint64 {
	if n.aux == nil {
		return 0
	}
	return n.aux.xattrGen
}

// links returns the other names of a hard-linked n.
// Preconditions: n.mu held.
func (n *node) links() []place {
	if n.aux == nil {
		return nil
	}
	return n.aux.links
}

// Values of node.privs.
const (
	privsUnknown = iota
	privsNone
	privsSome
)

// place is a node's parent directory (itself for the root) and name, and
// where its objects lie in the layers where that is not the same place
// (redirects, place.in). A place is never changed once published: a move
// publishes a new one.
type place struct {
	parent *node
	name   string
	// far maps a layer to where the node's object in it lies, when that
	// is not name in the parent's object there: another name in the
	// parent's object, or a path from the layer's root starting with
	// '/'. nil for most nodes.
	far map[*layers.Layer]string
}

// is reports whether pl is name of p. p may be another node of pl's
// parent directory: the kernel forgets a directory's node once none of
// its entries are cached, though a node below it stays held through
// another name (a hard link), and a later lookup of the directory makes
// a new node.
func (pl *place) is(p *node, name string) bool {
	return pl.name == name && (pl.parent == p || sameDir(pl.parent, p))
}

// sameDir reports whether directory nodes a and b stand for one
// directory: the one object a directory node is found by does not change
// (identify), and no two directories share it.
func sameDir(a, b *node) bool {
	k := a.Key()
	return k != (inodes.Key{}) && k == b.Key() && a.isDir() && b.isDir()
}

// in returns where the object in layer l of a node at pl lies: a name in
// the parent's object in l, or a path from l's root starting with '/'.
func (pl *place) in(l *layers.Layer) string {
	if w, ok := pl.far[l]; ok {
		return w
	}
	return pl.name
}

func (n *node) parent() *node { return n.at.Load().parent }

// obj is a node's object in one layer.
type obj struct {
	layer *layers.Layer
	ino   uint64
	// dev is the object's st_dev, which Linux encodes in 32 bits
	// (new_encode_dev): a node holds one obj or more, and a mount a
	// node for every entry the kernel caches.
	dev   uint32
	marks layers.DirMarks // directories only
}

// objOf returns the obj of layer l with attributes st.
func objOf(l *layers.Layer, st *unix.Stat_t) obj {
	return obj{layer: l, ino: st.Ino, dev: uint32(st.Dev)}
}

// key returns the object's identity on the host.
func (o obj) key() inodes.Key { return inodes.Key{Dev: uint64(o.dev), Ino: o.ino} }

// path returns the node's path below the layer roots.
// Preconditions: FS.renameMu held (read or write).
func (n *node) path() string {
	var names []string
	for m := n; ; {
		at := m.at.Load()
		if at.parent == m {
			break
		}
		names = append(names, at.name)
		m = at.parent
	}
	for i, j := 0, len(names)-1; i < j; i, j = i+1, j-1 {
		names[i], names[j] = names[j], names[i]
	}
	return strings.Join(names, "/")
}

// layersOf returns the node's layer objects.
func (n *node) layersOf() []obj {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.objects()
}

// data returns the object that holds a regular file's data: the winning
// one, or for a metacopy file (a winner whose data is below it) the last,
// and whether it is the winner's own.
func dataOf(objs []obj, typ uint32) (obj, bool) {
	if typ == unix.S_IFDIR || len(objs) == 1 {
		return objs[0], true
	}
	return objs[len(objs)-1], false
}

// upperData reports whether the node's data is in the upper layer: its
// winner is upper and no metacopy file.
func (n *node) upperData() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.hasUpperData()
}

// hasUpperData is upperData.
// Preconditions: n.mu held.
func (n *node) hasUpperData() bool {
	objs := n.objects()
	_, own := dataOf(objs, n.kind())
	return objs[0].layer.Upper && own
}

// merged reports whether the node is a directory merged from several
// layers; the kernel gives those nlink 1.
func (n *node) merged() bool { return len(n.layersOf()) > 1 }

func (n *node) isDir() bool { return n.kind() == unix.S_IFDIR }

// kind returns the S_IFMT bits of n's winning object.
func (n *node) kind() uint32 { return n.typ.Load() }

// addName records (p, name) as a name of n, found by a lookup: n's place
// if it had lost every name, another link otherwise. A directory has one
// name and keeps it (rename moves it).
// Preconditions: renameMu held; n.mu held.
func (n *node) addName(p *node, name string, far map[*layers.Layer]string) {
	pl := place{parent: p, name: name, far: far}
	switch {
	case n.unlinked:
		n.unlinked = false
		n.at.Store(&pl)
	case n.isDir():
	case n.at.Load().is(p, name):
		if n.at.Load().parent != p {
			// The name under a newer node of its directory.
			n.at.Store(&pl)
		}
	default:
		x := n.more()
		if i := slices.IndexFunc(x.links, func(l place) bool { return l.is(p, name) }); i >= 0 {
			x.links[i].parent = p
		} else {
			x.links = append(x.links, pl)
		}
	}
}

// dropName forgets (p, name) as a name of n, now removed or moved away,
// and gives n another of its known names in at's place, if it was at's.
// alive, when set, checks that a candidate name still holds n's object
// (a name found long ago may have gone meanwhile).
// Preconditions: renameMu held; n.mu held.
func (n *node) dropName(p *node, name string, alive func(place) bool) {
	x := n.aux
	if !n.at.Load().is(p, name) {
		if x != nil && !n.isDir() {
			x.links = slices.DeleteFunc(x.links, func(l place) bool { return l.is(p, name) })
		}
		return
	}
	for x != nil && len(x.links) > 0 {
		next := x.links[len(x.links)-1]
		x.links = x.links[:len(x.links)-1]
		if alive == nil || alive(next) {
			n.at.Store(&next)
			return
		}
	}
	n.unlinked = true
}

// moveName renames n's name (op, oldName) to (np, newName).
// Preconditions: renameMu held for writing; n.mu held.
func (n *node) moveName(op *node, oldName string, np *node, newName string) {
	to := place{parent: np, name: newName}
	if n.at.Load().is(op, oldName) {
		n.at.Store(&to)
		return
	}
	if i := slices.IndexFunc(n.links(), func(l place) bool { return l.is(op, oldName) }); i >= 0 {
		n.aux.links[i] = to
	}
}

// named reports whether (p, name) is one of n's names.
// Preconditions: n.mu held.
func (n *node) named(p *node, name string) bool {
	return n.at.Load().is(p, name) || slices.ContainsFunc(n.links(), func(l place) bool { return l.is(p, name) })
}

// setOpaque records that a directory's upper object has been made opaque.
// Preconditions: n.mu held.
func (n *node) setOpaque() {
	objs := append([]obj(nil), n.objects()...)
	objs[0].marks.Opaque = true
	n.setObjs(objs)
}

// openFd returns the host fd of one of n's open file handles, or -1: the
// way to n's object once it has lost its names.
// Preconditions: n.mu held.
func (n *node) openFd() int {
	if n.aux == nil {
		return -1
	}
	for h := range n.aux.open {
		return h.file()
	}
	return -1
}
