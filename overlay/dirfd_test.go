package overlay

import (
	"testing"
)

// TestHeldDirFds checks that lookups hold at most dirFdMax directory fds,
// answer the same past the bound, and that forgetting a directory closes
// its fds.
func TestHeldDirFds(t *testing.T) {
	fs, _ := stack(t,
		[]string{"d a", "d b", "d c", "f a/x 1", "f b/y 2", "f c/z 3"},
		[]string{"d a", "d b", "f a/x2 4", "f b/y2 5"})
	fs.dirFdMax = 3
	for _, p := range []string{"a/x", "a/x2", "b/y", "b/y2", "c/z"} {
		if _, err := walk(fs, p); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	// The root in both layers, then a in the top one: the bound.
	if n := fs.dirFdCount.Load(); n != 3 {
		t.Fatalf("%d directory fds held, want 3 (the bound)", n)
	}
	// Past the bound, lookups open and close the directory.
	if _, err := walk(fs, "b/y2"); err != nil {
		t.Fatalf("b/y2 past the bound: %v", err)
	}
	a, err := walk(fs, "a")
	if err != nil {
		t.Fatal(err)
	}
	// Lookup "a" three times over (walks of a/x, a/x2, a): all forgotten.
	fs.Forget(a.ID, 3)
	if n := fs.dirFdCount.Load(); n != 2 {
		t.Errorf("%d directory fds held after a was forgotten, want the root's 2", n)
	}
}
