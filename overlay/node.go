package overlay

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// node is one overlay object the kernel holds.
//
// Lock order: a directory's listing lock ls.mu, then FS.renameMu, then a
// directory's dirMu, then any node's mu (never two at once), then the
// leaves inodes.Table.mu and FS.hmu.
type node struct {
	id  uint64
	typ uint32 // S_IFMT bits, fixed for the node's life

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
	// unlinked is set when the node's last name is removed: it lives on
	// through open handles only.
	unlinked bool
	// open are the host fds of the node's open file handles, which
	// stat and chmod use once it is unlinked.
	open map[*fileHandle]struct{}
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
