package overlay

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ovlmount/ovlmount/inodes"
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// node is one overlay object the kernel holds.
//
// Lock order: a directory's listing lock ls.mu, then FS.renameMu, then a
// directory's dirMu, then any node's mu (never two at once), then the
// leaves inodes.Table.mu and FS.hmu.
type node struct {
	// Slot is the node table's: the FUSE node id (ID), the identity
	// the node is found by, the kernel's references.
	inodes.Slot
	// ino is the inode number stat shows (FS.setNumber).
	ino atomic.Uint64
	// privs says whether the mode last shown had setuid or setgid
	// (privsSome) or neither (privsNone): a write that must clear them
	// needs no look when there are none. Every change of mode goes
	// through the engine, which shows the new mode.
	privs atomic.Uint32
	// prot is the append-only and immutable flags once known (fileattr.go).
	prot atomic.Uint32
	typ  uint32 // S_IFMT bits, fixed for the node's life

	// at places the node in the tree: its path below every layer root
	// is the parents' names joined. It changes with FS.renameMu held for
	// writing (rename), or, for an unlinked non-directory found again
	// under another of its hard links, held for reading; readers hold it
	// for reading.
	at atomic.Pointer[place]

	// dirMu serialises changes to a directory's entries (create,
	// remove), from the check that a name is free or present to the
	// change itself. Rename holds renameMu for writing instead.
	dirMu sync.Mutex

	// mu guards the fields below. It is held only briefly and never
	// while taking another node's mu, except by copyUp, which holds it
	// across the copy so that a second caller waits for the first.
	mu sync.Mutex
	// objs are the layer objects the node stands for, top first: the one
	// that wins, then, for a merged directory, each lower directory that
	// merges into it, down to an opaque one. Copy-up puts the upper
	// object first. The slice is replaced, never changed in place, so a
	// copy taken under mu stays valid.
	objs []obj
	// links are the other names the kernel found a hard-linked
	// non-directory under (at is one); one takes at's place when at's
	// name goes.
	links []place
	// unlinked is set when the node has lost every name the engine
	// knows: it lives on through open handles, or under another hard
	// link when it is looked up again.
	unlinked bool
	// open are the host fds of the node's open file handles, which
	// stat and chmod use once it is unlinked.
	open map[*fileHandle]struct{}
	// backing is the registered passthrough file its handles share,
	// while any is open (passthrough.go).
	backing *backing
	// noCaps records that the object has no security.capability: the
	// kernel asks before every write. xattrGen counts xattr changes, so
	// that an answer read before a change is not recorded after it.
	noCaps   bool
	xattrGen uint64

	// dfd are the fds a directory node holds (dirfd.go).
	dfd dirFds
	// ls is a directory's merged listing (readdir.go), with its own
	// lock: taken before renameMu by ReadDir, never inside any other.
	ls listing
}

// Values of node.privs.
const (
	privsUnknown = iota
	privsNone
	privsSome
)

// place is a node's parent directory (itself for the root) and name.
type place struct {
	parent *node
	name   string
}

func (n *node) parent() *node { return n.at.Load().parent }

// obj is a node's object in one layer.
type obj struct {
	layer *layers.Layer
	dev   uint64
	ino   uint64
	marks layers.DirMarks // directories only
}

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
	return n.objs
}

// upper reports whether the node's winning object is in the upper layer.
func (n *node) upper() bool { return n.layersOf()[0].layer.Upper }

// merged reports whether the node is a directory merged from several
// layers; the kernel gives those nlink 1.
func (n *node) merged() bool { return len(n.layersOf()) > 1 }

func (n *node) isDir() bool { return n.typ == unix.S_IFDIR }

// addName records (p, name) as a name of n, found by a lookup: n's place
// if it had lost every name, another link otherwise. A directory has one
// name and keeps it (rename moves it).
// Preconditions: renameMu held; n.mu held.
func (n *node) addName(p *node, name string) {
	pl := place{parent: p, name: name}
	switch {
	case n.unlinked:
		n.unlinked = false
		n.at.Store(&pl)
	case n.isDir() || *n.at.Load() == pl || slices.Contains(n.links, pl):
	default:
		n.links = append(n.links, pl)
	}
}

// dropName forgets (p, name) as a name of n, now removed or moved away,
// and gives n another of its known names in at's place, if it was at's.
// alive, when set, checks that a candidate name still holds n's object
// (a name found long ago may have gone meanwhile).
// Preconditions: renameMu held; n.mu held.
func (n *node) dropName(p *node, name string, alive func(place) bool) {
	pl := place{parent: p, name: name}
	if *n.at.Load() != pl {
		n.links = slices.DeleteFunc(n.links, func(l place) bool { return l == pl })
		return
	}
	for len(n.links) > 0 {
		next := n.links[len(n.links)-1]
		n.links = n.links[:len(n.links)-1]
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
	from, to := place{parent: op, name: oldName}, place{parent: np, name: newName}
	if *n.at.Load() == from {
		n.at.Store(&to)
		return
	}
	if i := slices.Index(n.links, from); i >= 0 {
		n.links[i] = to
	}
}

// setOpaque records that a directory's upper object has been made opaque.
// Preconditions: n.mu held.
func (n *node) setOpaque() {
	objs := append([]obj(nil), n.objs...)
	objs[0].marks.Opaque = true
	n.objs = objs
}

// openFd returns the host fd of one of n's open file handles, or -1: the
// way to n's object once it has lost its names.
// Preconditions: n.mu held.
func (n *node) openFd() int {
	for h := range n.open {
		return h.file()
	}
	return -1
}
