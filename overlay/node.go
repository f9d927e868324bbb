package overlay

import (
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// node is one overlay object the kernel holds. It is immutable after
// creation: the read-only engine never changes what a node stands for.
type node struct {
	id     uint64
	typ    uint32 // S_IFMT bits
	parent *node  // the directory it was first found in; itself for the root
	rel    string // path below every layer root ("" for the root)
	// objs are the layer objects the node stands for, top first: the one
	// that wins, then, for a merged directory, each lower directory that
	// merges into it, down to an opaque one.
	objs []obj
}

// obj is a node's object in one layer.
type obj struct {
	layer *layers.Layer
	dev   uint64
	ino   uint64
	marks layers.DirMarks // directories only
}

// merged reports whether the node is a directory merged from several
// layers; the kernel gives those nlink 1.
func (n *node) merged() bool { return len(n.objs) > 1 }

func (n *node) isDir() bool { return n.typ == unix.S_IFDIR }
