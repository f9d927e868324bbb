package inodes

import (
	"math/rand/v2"
	"testing"
)

// TestIndexAgreesWithAMap adds and removes random keys, many of them
// sharing a home slot so that removals move probe runs back, and checks
// every step against a map, through growing and shrinking.
func TestIndexAgreesWithAMap(t *testing.T) {
	// Keys below 64 all hash to one of four slots.
	hash := func(k uint64) uint64 {
		if k < 64 {
			return k % 4
		}
		return mix(k)
	}
	x := newIndex[*tnode](idOf, hash)
	want := map[uint64]*tnode{}
	r := rand.New(rand.NewPCG(1, 2))
	for step := range 200000 {
		var k uint64
		switch {
		case step < 100000 && step%3 == 0:
			k = r.Uint64N(64)
		case step < 100000:
			k = r.Uint64N(1 << 20)
		default:
			// Mostly removals: the index shrinks.
			k = r.Uint64N(1 << 20)
			for old := range want {
				k = old
				break
			}
		}
		if _, ok := want[k]; ok {
			if !x.remove(k) {
				t.Fatalf("step %d: remove(%d) found nothing", step, k)
			}
			delete(want, k)
		} else {
			n := &tnode{}
			n.id = k
			x.add(n)
			want[k] = n
		}
		if step%997 == 0 || step > 199000 {
			if x.n != len(want) {
				t.Fatalf("step %d: %d entries, want %d", step, x.n, len(want))
			}
			for k, n := range want {
				if got, ok := x.find(k); !ok || got != n {
					t.Fatalf("step %d: find(%d) = %v, %v", step, k, got, ok)
				}
			}
			for k := range uint64(64) {
				if _, ok := x.find(k); ok != (want[k] != nil) {
					t.Fatalf("step %d: find(%d) found %v", step, k, ok)
				}
			}
		}
	}
	if len(x.slots) > 4*minIndex {
		t.Errorf("%d slots left for %d entries", len(x.slots), x.n)
	}
}
