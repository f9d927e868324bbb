package inodes

import "testing"

func TestSchemeSameFS(t *testing.T) {
	s := New([]uint64{7, 7, 7}, true)
	if !s.SameFS() {
		t.Fatal("one filesystem is samefs")
	}
	if n, ok := s.Ino(7, 1234); !ok || n != 1234 {
		t.Fatalf("Ino = %d, %v; want the real number", n, ok)
	}
}

func TestSchemeXino(t *testing.T) {
	// Measured on kernel 6.18: upper on ext4, one lower on tmpfs gives
	// "xino feature enabled using 2 upper inode bits" and the tmpfs
	// inode 3 shows as 1<<63|3.
	s := New([]uint64{5, 7}, true)
	if n, ok := s.Ino(7, 3); !ok || n != 1<<63|3 {
		t.Fatalf("two filesystems: %#x, want %#x", n, uint64(1<<63|3))
	}
	if s.Fallback() != 1<<62 {
		t.Errorf("fallback %#x, want the reserved bit 1<<62", s.Fallback())
	}
	// upper on fs 5, lowers on 5, 9, 9, 3: fsids 0, 0, 1, 1, 2; numfs 3
	// gives 3 bits, the fsid above bit 61.
	s = New([]uint64{5, 5, 9, 9, 3}, true)
	if s.SameFS() {
		t.Fatal("three filesystems are not samefs")
	}
	for _, c := range []struct {
		dev, ino, want uint64
	}{{5, 10, 10}, {9, 10, 10 | 1<<62}, {3, 10, 10 | 2<<62}} {
		if n, ok := s.Ino(c.dev, c.ino); !ok || n != c.want {
			t.Errorf("Ino(%d, %d) = %#x, %v; want %#x", c.dev, c.ino, n, ok, c.want)
		}
	}
	if _, ok := s.Ino(9, 1<<61); ok {
		t.Error("a number reaching the xino bits must not take the layout")
	}
	// Without an upper layer, fsid 0 stays unused.
	s = New([]uint64{9, 3}, false)
	if n, _ := s.Ino(9, 10); n != 10|1<<62 {
		t.Errorf("first lower fs without upper: %#x, want fsid 1", n)
	}
}

func TestScheme32(t *testing.T) {
	s := NewWidth([]uint64{7, 7}, true, 32)
	if n, ok := s.Ino(7, 1234); !ok || n != 1234 {
		t.Errorf("samefs: %d, %v; want the real number", n, ok)
	}
	if _, ok := s.Ino(7, 1<<31); ok {
		t.Error("samefs: a number past 31 bits must take a fallback")
	}
	if s.Fallback() != 1<<31 {
		t.Errorf("samefs fallback %#x, want 1<<31", s.Fallback())
	}
	// Two filesystems: 2 xino bits below bit 32.
	s = NewWidth([]uint64{5, 7}, true, 32)
	if n, ok := s.Ino(7, 3); !ok || n != 1<<31|3 {
		t.Errorf("xino: %#x, %v; want %#x", n, ok, uint64(1<<31|3))
	}
	if _, ok := s.Ino(5, 1<<30); ok {
		t.Error("xino: a number reaching the xino bits must take a fallback")
	}
	if s.Fallback() != 1<<30 {
		t.Errorf("xino fallback %#x, want 1<<30", s.Fallback())
	}
}

// tnode is a node type for the table tests.
type tnode struct {
	Slot
	typ string
}

func newTable() *Table[*tnode] {
	return NewTable(&tnode{typ: "dir"}, Key{1, 2}, 2, New([]uint64{1}, false))
}

func acquire(tab *Table[*tnode], id Ident, typ string) (*tnode, bool) {
	return tab.Acquire(id, func(n *tnode) bool { return n.typ == typ }, func() *tnode { return &tnode{typ: typ} })
}

func TestTableCountsAndForgets(t *testing.T) {
	tab := newTable()
	id := Ident{Key: Key{1, 100}}
	n, fresh := acquire(tab, id, "file")
	if !fresh || n.ID() == RootID {
		t.Fatalf("first Acquire: id %d, new %v", n.ID(), fresh)
	}
	for i := 0; i < 2; i++ {
		if m, fresh := acquire(tab, id, "file"); m != n || fresh {
			t.Fatalf("Acquire of the same object gave another node (new %v)", fresh)
		}
	}
	if _, gone := tab.Forget(n.ID(), 2); gone {
		t.Fatal("forgotten with one reference left")
	}
	if _, ok := tab.Get(n.ID()); !ok {
		t.Fatal("id dropped while the kernel holds it")
	}
	if m, gone := tab.Forget(n.ID(), 1); !gone || m != n {
		t.Fatal("not forgotten at zero")
	}
	if _, ok := tab.Get(n.ID()); ok || tab.Len() != 1 {
		t.Fatal("id kept after the last forget")
	}
	if _, gone := tab.Forget(RootID, 1); gone || tab.Len() != 1 {
		t.Fatal("the root must stay")
	}
}

// TestTableNeverReusesAnID: ids are never given twice, and a node whose
// object is gone (unhashed, or of another type now) is never found for a
// new object with the same inode number, while the kernel still holds it.
func TestTableNeverReusesAnID(t *testing.T) {
	tab := newTable()
	id := Ident{Key: Key{1, 50}}
	a, _ := acquire(tab, id, "file")
	tab.Forget(a.ID(), 1)
	b, _ := acquire(tab, id, "file")
	if b.ID() == a.ID() {
		t.Fatalf("id %d given twice", a.ID())
	}
	// The host reused the number for a directory: a new node.
	c, fresh := acquire(tab, id, "dir")
	if !fresh || c == b || c.ID() == b.ID() {
		t.Fatal("an object of another type inherited the node of its inode number")
	}
	if _, ok := tab.Get(b.ID()); !ok {
		t.Fatal("the old node went while the kernel holds it")
	}
	// Unhashed (last name removed): the next lookup gets a new node.
	tab.Unhash(c)
	if d, fresh := acquire(tab, id, "dir"); !fresh || d == c {
		t.Fatal("an unhashed node was found again")
	}
}

// TestTableRestore: a node unhashed for a removal that then failed is
// found again, unless another node took its identity meanwhile.
func TestTableRestore(t *testing.T) {
	tab := newTable()
	id := Ident{Key: Key{1, 60}}
	a, _ := acquire(tab, id, "dir")
	tab.Unhash(a)
	tab.Restore(a)
	if m, ok := tab.Peek(id); !ok || m != a {
		t.Fatal("a restored node is not found by its identity")
	}
	tab.Unhash(a)
	b, _ := acquire(tab, id, "dir")
	tab.Restore(a)
	if m, ok := tab.Peek(id); !ok || m != b {
		t.Fatal("Restore took the identity from the node that holds it now")
	}
}

func TestTableByName(t *testing.T) {
	tab := newTable()
	k := Key{1, 70}
	x, _ := acquire(tab, Ident{Key: k, ByName: true, Dir: 1, Name: "x"}, "file")
	y, _ := acquire(tab, Ident{Key: k, ByName: true, Dir: 1, Name: "y"}, "file")
	if x == y {
		t.Fatal("two names of a lower hard link share a node")
	}
	if m, _ := acquire(tab, Ident{Key: k, ByName: true, Dir: 1, Name: "x"}, "file"); m != x {
		t.Fatal("a name found again gave another node")
	}
	if _, ok := tab.Peek(Ident{Key: k}); ok {
		t.Fatal("a node found by name is found by its object")
	}
	// Copied up, x becomes an object of its own.
	tab.Rehash(x, Ident{Key: Key{1, 900}})
	if m, ok := tab.Peek(Ident{Key: Key{1, 900}}); !ok || m != x {
		t.Fatal("Rehash: not found by the new identity")
	}
	if _, ok := tab.Peek(Ident{Key: k, ByName: true, Dir: 1, Name: "x"}); ok {
		t.Fatal("Rehash: still found by the old identity")
	}
}

func TestTableNumbers(t *testing.T) {
	tab := newTable()
	a, _ := acquire(tab, Ident{Key: Key{1, 50}}, "file")
	if n := tab.Number(a, Key{1, 50}, 50, true); n != 50 {
		t.Fatalf("samefs number %d, want 50", n)
	}
	// No usable number: a fallback one, the same every time.
	b, _ := acquire(tab, Ident{Key: Key{1, 1 << 63}}, "file")
	fb := tab.Number(b, Key{1, 1 << 63}, 0, false)
	if fb < 1<<63 || tab.PeekNumber(Key{1, 1 << 63}, 0, false) != fb {
		t.Fatalf("fallback %#x, peek %#x", fb, tab.PeekNumber(Key{1, 1 << 63}, 0, false))
	}
	// Names of one object share its number.
	c, _ := acquire(tab, Ident{Key: Key{1, 60}, ByName: true, Dir: 1, Name: "c"}, "file")
	d, _ := acquire(tab, Ident{Key: Key{1, 60}, ByName: true, Dir: 1, Name: "d"}, "file")
	if tab.Number(c, Key{1, 60}, 60, true) != 60 || tab.Number(d, Key{1, 60}, 60, true) != 60 {
		t.Fatal("names of a lower hard link do not share its number")
	}
	// Renumbered at copy-up.
	if n := tab.Number(c, Key{1, 900}, 900, true); n != 900 || c.Num() != 900 {
		t.Fatalf("renumbered to %d", n)
	}
}

// TestTableCollisions: without xino over two filesystems, real numbers
// may collide; the second object held gets a fallback number.
func TestTableCollisions(t *testing.T) {
	s := NewFlat([]uint64{1, 2}, 64)
	if !s.MayCollide() {
		t.Fatal("two filesystems without xino may collide")
	}
	tab := NewTable(&tnode{typ: "dir"}, Key{1, 2}, 2, s)
	a, _ := acquire(tab, Ident{Key: Key{1, 50}}, "file")
	b, _ := acquire(tab, Ident{Key: Key{2, 50}}, "file")
	na := tab.Number(a, Key{1, 50}, 50, true)
	nb := tab.Number(b, Key{2, 50}, 50, true)
	if na != 50 || nb == 50 || nb < s.Fallback() {
		t.Fatalf("numbers %d and %#x", na, nb)
	}
	if p := tab.PeekNumber(Key{2, 50}, 50, true); p != nb {
		t.Fatalf("PeekNumber %#x, want %#x", p, nb)
	}
	tab.Forget(a.ID(), 1)
	c, _ := acquire(tab, Ident{Key: Key{1, 51}}, "file")
	if n := tab.Number(c, Key{1, 51}, 51, true); n != 51 {
		t.Fatalf("a free number not given: %d", n)
	}
}

// TestTableShrinks checks that forgetting most ids rebuilds the maps, and
// that nodes still held survive the rebuild.
func TestTableShrinks(t *testing.T) {
	tab := newTable()
	const n = 4 * minShrink
	var kept *tnode
	var ids []uint64
	for i := uint64(10); i < 10+n; i++ {
		m, _ := acquire(tab, Ident{Key: Key{1, i}}, "file")
		tab.Number(m, Key{1, i}, i, true)
		if kept == nil {
			kept = m
		} else {
			ids = append(ids, m.ID())
		}
	}
	for _, id := range ids {
		tab.Forget(id, 1)
	}
	if tab.Shrinks() == 0 {
		t.Fatalf("no rebuild after forgetting %d of %d ids", n-1, n+1)
	}
	if m, ok := tab.Get(kept.ID()); !ok || m != kept {
		t.Error("a held node lost in the rebuild")
	}
	if m, _ := acquire(tab, Ident{Key: Key{1, 10}}, "file"); m != kept {
		t.Error("a held node not found by identity after the rebuild")
	}
	if tab.Len() != 2 {
		t.Errorf("Len = %d, want 2", tab.Len())
	}
}
