package inodes

import (
	"sync"
	"sync/atomic"
)

// RootID is the FUSE id of the root directory, fixed by the protocol.
const RootID = 1

// Key identifies a host object: its filesystem and inode number.
type Key struct{ Dev, Ino uint64 }

// Ident is how a node is found again by a later lookup: by the host
// object it stands for (Key), or, for an object that is not shared
// between its names (a lower hard link, which copy-up splits), by the
// directory node and name it was found under.
type Ident struct {
	Key    Key
	ByName bool   // found by Dir and Name, not by Key
	Dir    uint64 // node id of the directory
	Name   string
}

type numUse struct {
	key  Key
	refs int
}

type nameKey struct {
	dir  uint64
	name string
}

// Slot is what the table keeps in a node: the caller's node type embeds
// it, so that the table needs no allocation of its own per node. It is
// kept small: a mount holds one per entry the kernel caches.
type Slot struct {
	id     uint64
	refs   uint64        // kernel references
	num    atomic.Uint64 // the inode number shown; written under Table.mu
	key    Key           // the object found by (Ident.Key)
	byName bool          // found by the name in Table.names instead
	hashed bool          // found by its identity
	// tracked says num is counted in Table.owner.
	tracked bool
}

// Num returns the inode number the node shows (Number), without the
// table's lock.
func (s *Slot) Num() uint64 { return s.num.Load() }

// ID returns the node's FUSE id.
func (s *Slot) ID() uint64 { return s.id }

// Key returns the object the node is found by (Ident.Key), without the
// table's lock: only for a node whose identity never changes after it is
// made (a directory: Rehash is for the names of files).
func (s *Slot) Key() Key { return s.key }

func (s *Slot) slot() *Slot { return s }

// Node is a node type that embeds a Slot.
type Node interface {
	comparable
	slot() *Slot
}

// Table maps FUSE node ids to nodes, with the kernel's lookup count for
// each, and finds a node again by its identity. Node ids are allocated
// here, never from inode numbers, and never given twice: a new object
// that gets a deleted object's inode number from the host can never
// inherit a node the kernel still holds. Inode numbers are the Scheme's,
// kept unique among the objects held (Number).
//
// Lock order: Table.mu is a leaf; callers may hold their own locks.
type Table[N Node] struct {
	mu     sync.Mutex
	nodes  index[N, uint64] // by id, while the kernel holds them
	byKey  index[N, Key]    // hashed nodes by object
	byName map[nameKey]N
	names  map[*Slot]nameKey // the names of the nodes found by name
	next   uint64            // the next id

	// Inode numbers. With track (numbers of several filesystems shown
	// as they are, which may collide), owner says which object shows
	// a number, and how many nodes show it. fallbacks are the numbers
	// given to objects without a usable one (or whose number another
	// object showed), kept for the mount's life; fallback is the next.
	track     bool
	owner     map[uint64]numUse
	fallbacks map[Key]uint64
	fallback  uint64

	// peak is the most nodes held since the maps were last rebuilt: Go
	// maps keep their size when emptied, so after the kernel forgets
	// most of what a tree walk looked up, they are copied into small
	// ones (Forget), and shrinks counts those rebuilds. (The indexes
	// shrink as they go.)
	peak    int
	shrinks int64
}

// NewTable returns a table holding root under RootID, pinned forever,
// showing number num for object key. Objects without a usable number get
// numbers from the Scheme's fallback range; with track, objects whose
// numbers collide too (Scheme.MayCollide).
func NewTable[N Node](root N, key Key, num uint64, scheme *Scheme) *Table[N] {
	t := &Table[N]{
		nodes:     newIndex[N](idOf, mix),
		byKey:     newIndex[N](keyOf, hashKey),
		byName:    make(map[nameKey]N),
		names:     make(map[*Slot]nameKey),
		next:      RootID + 1,
		track:     scheme.MayCollide(),
		owner:     make(map[uint64]numUse),
		fallbacks: make(map[Key]uint64),
		fallback:  scheme.Fallback(),
	}
	s := root.slot()
	s.id, s.refs, s.key = RootID, 1, key
	t.nodes.add(root)
	t.setNumber(s, key, num, true)
	return t
}

// Get returns the node with id while the kernel holds it.
func (t *Table[N]) Get(id uint64) (N, bool) {
	t.mu.Lock()
	n, ok := t.nodes.find(id)
	t.mu.Unlock()
	return n, ok
}

// Acquire adds one kernel reference to the node found by ident, or, when
// there is none or fits rejects it (a node of another type: its object is
// gone and the host reused the inode number), to a new node made by mk
// and hashed under ident. It returns the node and whether it is new; a
// new node still needs its number (Number).
func (t *Table[N]) Acquire(ident Ident, fits func(N) bool, mk func() N) (N, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n, ok := t.find(ident); ok {
		if fits(n) {
			n.slot().refs++
			return n, false
		}
		t.unhash(n.slot())
	}
	n := mk()
	s := n.slot()
	s.id, s.refs = t.next, 1
	t.setIdent(s, ident)
	t.next++
	t.nodes.add(n)
	t.hash(n)
	t.peak = max(t.peak, t.nodes.n)
	return n, true
}

// Peek returns the node ident finds, without taking a reference.
func (t *Table[N]) Peek(ident Ident) (N, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.find(ident)
}

// Preconditions: t.mu held.
func (t *Table[N]) find(ident Ident) (N, bool) {
	if ident.ByName {
		n, ok := t.byName[nameKey{ident.Dir, ident.Name}]
		return n, ok
	}
	return t.byKey.find(ident.Key)
}

// Preconditions: t.mu held; n not hashed.
func (t *Table[N]) hash(n N) {
	s := n.slot()
	if s.byName {
		t.byName[t.names[s]] = n
	} else {
		t.byKey.add(n)
	}
	s.hashed = true
}

// Preconditions: t.mu held.
func (t *Table[N]) unhash(s *Slot) {
	if !s.hashed {
		return
	}
	s.hashed = false
	if s.byName {
		if k := t.names[s]; t.byName[k].slot() == s {
			delete(t.byName, k)
		}
		return
	}
	if n, ok := t.byKey.find(s.key); ok && n.slot() == s {
		t.byKey.remove(s.key)
	}
}

// setIdent makes ident s's identity.
// Preconditions: t.mu held; s not hashed.
func (t *Table[N]) setIdent(s *Slot, ident Ident) {
	s.key, s.byName = ident.Key, ident.ByName
	if ident.ByName {
		t.names[s] = nameKey{ident.Dir, ident.Name}
	} else {
		delete(t.names, s)
	}
}

// IdentOf returns the identity n is found by.
func (t *Table[N]) IdentOf(n N) Ident {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ident(n.slot())
}

// Preconditions: t.mu held.
func (t *Table[N]) ident(s *Slot) Ident {
	id := Ident{Key: s.key}
	if s.byName {
		k := t.names[s]
		id.ByName, id.Dir, id.Name = true, k.dir, k.name
	}
	return id
}

// Unhash makes n unreachable by its identity: its object is gone (its
// last name removed), and a later object of the same identity gets a
// node of its own. The kernel may still hold n.
func (t *Table[N]) Unhash(n N) {
	t.mu.Lock()
	t.unhash(n.slot())
	t.mu.Unlock()
}

// Restore makes n reachable by its identity again after Unhash, when the
// change that was to end its object failed, unless another node has
// taken the identity meanwhile.
func (t *Table[N]) Restore(n N) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := n.slot()
	if s.hashed {
		return
	}
	if _, ok := t.find(t.ident(s)); ok {
		return
	}
	t.hash(n)
}

// Rehash gives n a new identity: copy-up made it another object (a lower
// hard link's name becomes an upper file of its own).
func (t *Table[N]) Rehash(n N, ident Ident) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := n.slot()
	was := s.hashed
	t.unhash(s)
	t.setIdent(s, ident)
	if was {
		if old, ok := t.find(ident); ok {
			t.unhash(old.slot())
		}
		t.hash(n)
	}
}

// Number gives n the inode number of object key: num when ok (and, if
// numbers may collide, no other object held shows num), else one from the
// fallback range, the same for the object for the mount's life. It
// returns the number.
func (t *Table[N]) Number(n N, key Key, num uint64, ok bool) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := n.slot()
	t.releaseNumber(s)
	t.setNumber(s, key, num, ok)
	return s.num.Load()
}

// PeekNumber returns the number object key shows, or would show if looked
// up now (what readdir gives as d_ino).
func (t *Table[N]) PeekNumber(key Key, num uint64, ok bool) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !ok {
		return t.fallbackFor(key)
	}
	if u, held := t.owner[num]; t.track && held && u.key != key {
		return t.fallbackFor(key)
	}
	return num
}

// setNumber stores s's number: the old one, if any, stays readable
// until the new one replaces it.
// Preconditions: t.mu held; s holds no tracked number.
func (t *Table[N]) setNumber(s *Slot, key Key, num uint64, ok bool) {
	switch {
	case !ok:
		num = t.fallbackFor(key)
	case !t.track:
	default:
		u, held := t.owner[num]
		if held && u.key != key {
			num = t.fallbackFor(key)
			break
		}
		u.key = key
		u.refs++
		t.owner[num] = u
		s.tracked = true
	}
	s.num.Store(num)
}

// fallbackFor returns object key's number from the fallback range.
// Preconditions: t.mu held.
func (t *Table[N]) fallbackFor(key Key) uint64 {
	num, ok := t.fallbacks[key]
	if !ok {
		num = t.fallback
		t.fallback++
		t.fallbacks[key] = num
	}
	return num
}

// releaseNumber stops counting s's number as shown; s keeps it until
// given another.
// Preconditions: t.mu held.
func (t *Table[N]) releaseNumber(s *Slot) {
	if !s.tracked {
		return
	}
	num := s.num.Load()
	u := t.owner[num]
	if u.refs--; u.refs <= 0 {
		delete(t.owner, num)
	} else {
		t.owner[num] = u
	}
	s.tracked = false
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
	node, ok := t.nodes.find(id)
	if !ok {
		return zero, false
	}
	s := node.slot()
	if n < s.refs {
		s.refs -= n
		return zero, false
	}
	t.nodes.remove(id)
	t.unhash(s)
	delete(t.names, s)
	t.releaseNumber(s)
	t.shrink()
	return node, true
}

// minShrink is the peak below which the maps are left as they are.
const minShrink = 4096

// shrink rebuilds the maps once they hold a quarter of their peak: each
// rebuild copies at most a third of the entries forgotten since the last.
// Preconditions: t.mu held.
func (t *Table[N]) shrink() {
	n := t.nodes.n
	if t.peak < minShrink || n > t.peak/4 {
		return
	}
	t.byName = clone(t.byName)
	t.names = clone(t.names)
	t.owner = clone(t.owner)
	t.peak = n
	t.shrinks++
}

func clone[K comparable, V any](m map[K]V) map[K]V {
	c := make(map[K]V, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
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
	return t.nodes.n
}
