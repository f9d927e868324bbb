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

func TestTableCountsAndForgets(t *testing.T) {
	tab := NewTable("root", Key{1, 2}, 1<<63)
	made := 0
	mk := func(id uint64) string { made++; return "node" }
	k := Key{1, 100}
	for i := 0; i < 3; i++ {
		if id, _ := tab.Acquire(100, true, k, mk); id != 100 {
			t.Fatalf("Acquire = %d, want 100", id)
		}
	}
	if made != 1 {
		t.Fatalf("node made %d times, want once", made)
	}
	if _, gone := tab.Forget(100, 2); gone {
		t.Fatal("forgotten with one reference left")
	}
	if _, ok := tab.Get(100); !ok {
		t.Fatal("id dropped while the kernel holds it")
	}
	if n, gone := tab.Forget(100, 1); !gone || n != "node" {
		t.Fatal("not forgotten at zero")
	}
	if _, ok := tab.Get(100); ok || tab.Len() != 1 {
		t.Fatal("id kept after the last forget")
	}
	if _, gone := tab.Forget(RootID, 1); gone || tab.Len() != 1 {
		t.Fatal("the root must stay")
	}
}

func TestTableNeverSharesAnID(t *testing.T) {
	tab := NewTable("root", Key{1, 2}, 1<<63)
	mk := func(id uint64) string { return "n" }
	a, _ := tab.Acquire(50, true, Key{1, 50}, mk)
	// Another object claiming the same number gets a fallback id, and
	// keeps it while held.
	b, _ := tab.Acquire(50, true, Key{2, 50}, mk)
	if a != 50 || b == 50 || b < 1<<63 {
		t.Fatalf("ids %d and %#x", a, b)
	}
	if b2, _ := tab.Acquire(50, true, Key{2, 50}, mk); b2 != b {
		t.Fatalf("second acquire of the same object: %#x, want %#x", b2, b)
	}
	if p := tab.Peek(50, true, Key{2, 50}); p != b {
		t.Fatalf("Peek = %#x, want %#x", p, b)
	}
	// Nothing takes the root's id.
	if r, _ := tab.Acquire(RootID, true, Key{3, 1}, mk); r == RootID {
		t.Fatal("an object took the root's id")
	}
	// No natural number at all.
	if c, _ := tab.Acquire(0, false, Key{4, 1 << 40}, mk); c < 1<<63 {
		t.Fatalf("no-number object got %d", c)
	}
	tab.Forget(b, 2)
	if _, ok := tab.Get(b); ok {
		t.Fatal("fallback id kept after forget")
	}
}

// TestTableShrinks checks that forgetting most ids rebuilds the maps, and
// that ids still held, fallback ones included, survive the rebuild.
func TestTableShrinks(t *testing.T) {
	tab := NewTable("root", Key{1, 2}, 1<<63)
	mk := func(id uint64) string { return "node" }
	const n = 4 * minShrink
	for i := uint64(10); i < 10+n; i++ {
		tab.Acquire(i, true, Key{1, i}, mk)
	}
	// Another object with a taken number: a fallback id.
	fid, _ := tab.Acquire(10, true, Key{2, 10}, mk)
	for i := uint64(11); i < 10+n; i++ {
		tab.Forget(i, 1)
	}
	if tab.Shrinks() == 0 {
		t.Fatalf("no rebuild after forgetting %d of %d ids", n-1, n+2)
	}
	if _, ok := tab.Get(10); !ok {
		t.Error("id 10 lost in the rebuild")
	}
	if id, _ := tab.Acquire(10, true, Key{2, 10}, mk); id != fid {
		t.Errorf("fallback id after the rebuild = %d, want %d", id, fid)
	}
	if tab.Len() != 3 {
		t.Errorf("Len = %d, want 3", tab.Len())
	}
}
