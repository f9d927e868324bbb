package inodes

import "sync"

// RootID is the FUSE id of the root directory, fixed by the protocol.
const RootID = 1

// Key identifies a host object: its filesystem and inode number.
type Key struct{ Dev, Ino uint64 }

// Table maps FUSE ids to nodes, with the kernel's lookup count for each.
// An id stays in the table, and is never given to another object, until
// the kernel has forgotten every reference to it.
//
// Lock order: Table.mu is a leaf; callers may hold their own locks.
type Table[N any] struct {
	mu       sync.Mutex
	slots    map[uint64]*slot[N]
	fallback map[Key]uint64 // fallback ids, stable while their slot lives
	next     uint64
	// peak is the most slots held since the maps were last rebuilt: Go
	// maps keep their size when emptied, so after the kernel forgets
	// most of what a tree walk looked up, they are copied into small
	// ones (Forget), and shrinks counts those rebuilds.
	peak    int
	shrinks int64
}

type slot[N any] struct {
	node N
	key  Key // identity of the object, to detect two objects with one number
	refs uint64
}

// NewTable returns a table holding root under RootID, pinned forever.
// Objects whose natural number is taken or missing get ids from
// fallback on (Scheme.Fallback).
func NewTable[N any](root N, rootKey Key, fallback uint64) *Table[N] {
	t := &Table[N]{
		slots:    map[uint64]*slot[N]{RootID: {node: root, key: rootKey, refs: 1}},
		fallback: make(map[Key]uint64),
		next:     fallback,
	}
	return t
}

// Get returns the node with id while the kernel holds it.
func (t *Table[N]) Get(id uint64) (N, bool) {
	t.mu.Lock()
	s, ok := t.slots[id]
	t.mu.Unlock()
	if !ok {
		var zero N
		return zero, false
	}
	return s.node, true
}

// Acquire adds one kernel reference to the object key under its natural
// number id (ok false when there is none), creating its node with mk when
// the table has none. If id is already held by a different object, or is
// the root's, the object gets a fallback id instead. It returns the id and
// the node, which is the existing one when the object is already known.
func (t *Table[N]) Acquire(id uint64, ok bool, key Key, mk func(id uint64) N) (uint64, N) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ok {
		if s, held := t.slots[id]; !held {
			n := mk(id)
			t.slots[id] = &slot[N]{node: n, key: key, refs: 1}
			t.peak = max(t.peak, len(t.slots))
			return id, n
		} else if s.key == key && id != RootID {
			s.refs++
			return id, s.node
		}
	}
	if fid, held := t.fallback[key]; held {
		s := t.slots[fid]
		s.refs++
		return fid, s.node
	}
	fid := t.next
	t.next++
	n := mk(fid)
	t.slots[fid] = &slot[N]{node: n, key: key, refs: 1}
	t.peak = max(t.peak, len(t.slots))
	t.fallback[key] = fid
	return fid, n
}

// Forget drops n kernel references to id; at zero the id leaves the table
// and Forget returns its node and true.
func (t *Table[N]) Forget(id uint64, n uint64) (N, bool) {
	var zero N
	if id == RootID {
		return zero, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.slots[id]
	if !ok {
		return zero, false
	}
	if n >= s.refs {
		delete(t.slots, id)
		if fid, ok := t.fallback[s.key]; ok && fid == id {
			delete(t.fallback, s.key)
		}
		t.shrink()
		return s.node, true
	}
	s.refs -= n
	return zero, false
}

// minShrink is the peak below which the maps are left as they are.
const minShrink = 4096

// shrink rebuilds the maps once they hold a quarter of their peak: each
// rebuild copies at most a third of the slots forgotten since the last.
// Preconditions: t.mu held.
func (t *Table[N]) shrink() {
	n := len(t.slots)
	if t.peak < minShrink || n > t.peak/4 {
		return
	}
	slots := make(map[uint64]*slot[N], n)
	for id, s := range t.slots {
		slots[id] = s
	}
	fallback := make(map[Key]uint64, len(t.fallback))
	for k, id := range t.fallback {
		fallback[k] = id
	}
	t.slots, t.fallback, t.peak = slots, fallback, n
	t.shrinks++
}

// Shrinks returns how many times the table has given back the memory of
// forgotten ids.
func (t *Table[N]) Shrinks() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.shrinks
}

// Len returns the number of ids held, the root included.
func (t *Table[N]) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.slots)
}

// Peek returns the id an object would get from Acquire now, without
// taking a reference: what readdir shows as d_ino.
func (t *Table[N]) Peek(id uint64, ok bool, key Key) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ok && id != RootID {
		if s, held := t.slots[id]; !held || s.key == key {
			return id
		}
	}
	if fid, held := t.fallback[key]; held {
		return fid
	}
	return id
}
