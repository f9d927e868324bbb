package inodes

// index is a hash set of nodes found by a key each node's Slot carries:
// open addressing with linear probing over a power-of-two array of node
// pointers, with a byte of each entry's hash beside it (tags), so that a
// probe looks at a node only when its tag matches. A mount holds a node
// for every entry the kernel caches, and a Go map of the same nodes
// takes two to four times the memory: its slots hold the key beside the
// pointer, and it never shrinks.
//
// The array grows to keep at most 7/8 of its slots used and shrinks to
// keep at least 1/8 (down to minIndex), so a walk of a huge tree gives
// its memory back once the kernel forgets it.
type index[N Node, K comparable] struct {
	slots []N
	tags  []uint8 // 0 for a free slot, else tag(hash)
	n     int
	key   func(*Slot) K
	hash  func(K) uint64
}

// minIndex is the fewest slots an index keeps.
const minIndex = 64

func newIndex[N Node, K comparable](key func(*Slot) K, hash func(K) uint64) index[N, K] {
	return index[N, K]{slots: make([]N, minIndex), tags: make([]uint8, minIndex), key: key, hash: hash}
}

// tag is the byte of hash h kept beside its entry: its top seven bits,
// with the high bit set so that it is never 0. The slot comes from the
// low bits, so the two are independent.
func tag(h uint64) uint8 { return uint8(h>>57) | 0x80 }

// find returns the node with key k.
func (x *index[N, K]) find(k K) (N, bool) {
	h := x.hash(k)
	t, mask := tag(h), uint64(len(x.slots)-1)
	for i := h & mask; ; i = (i + 1) & mask {
		switch x.tags[i] {
		case 0:
			var zero N
			return zero, false
		case t:
			if n := x.slots[i]; x.key(n.slot()) == k {
				return n, true
			}
		}
	}
}

// add adds n, whose key no node in x has.
func (x *index[N, K]) add(n N) {
	if (x.n+1)*8 > len(x.slots)*7 {
		x.resize(len(x.slots) * 2)
	}
	x.put(n)
	x.n++
}

// Preconditions: x has a free slot; n's key is not in x.
func (x *index[N, K]) put(n N) {
	h := x.hash(x.key(n.slot()))
	mask := uint64(len(x.slots) - 1)
	i := h & mask
	for x.tags[i] != 0 {
		i = (i + 1) & mask
	}
	x.slots[i], x.tags[i] = n, tag(h)
}

// remove removes the node with key k, and reports whether there was one.
// The entries after it in its probe run move back over the hole, so that
// no lookup needs a tombstone to go on past it.
func (x *index[N, K]) remove(k K) bool {
	h := x.hash(k)
	t, mask := tag(h), uint64(len(x.slots)-1)
	i := h & mask
	for ; ; i = (i + 1) & mask {
		if x.tags[i] == 0 {
			return false
		}
		if x.tags[i] == t && x.key(x.slots[i].slot()) == k {
			break
		}
	}
	for j := (i + 1) & mask; x.tags[j] != 0; j = (j + 1) & mask {
		// The entry at j may fill the hole at i unless its home slot
		// lies cyclically in (i, j].
		home := x.hash(x.key(x.slots[j].slot())) & mask
		if (j-home)&mask >= (j-i)&mask {
			x.slots[i], x.tags[i] = x.slots[j], x.tags[j]
			i = j
		}
	}
	var zero N
	x.slots[i], x.tags[i] = zero, 0
	x.n--
	if len(x.slots) > minIndex && x.n*8 < len(x.slots) {
		x.resize(len(x.slots) / 2)
	}
	return true
}

func (x *index[N, K]) resize(size int) {
	old, oldTags := x.slots, x.tags
	x.slots, x.tags = make([]N, size), make([]uint8, size)
	for i, n := range old {
		if oldTags[i] != 0 {
			x.put(n)
		}
	}
}

// mix spreads the bits of v over the word (the finaliser of splitmix64),
// so that keys that differ in a few low bits land far apart.
func mix(v uint64) uint64 {
	v ^= v >> 30
	v *= 0xbf58476d1ce4e5b9
	v ^= v >> 27
	v *= 0x94d049bb133111eb
	return v ^ v>>31
}

func idOf(s *Slot) uint64  { return s.id }
func keyOf(s *Slot) Key    { return s.key }
func hashKey(k Key) uint64 { return mix(k.Ino ^ mix(k.Dev)) }
