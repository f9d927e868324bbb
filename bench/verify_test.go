package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestDiffTrees(t *testing.T) {
	a := map[string]string{"x": "mode 100644 size 1", "y": "mode 40755", "z": "mode 120777 -> t"}
	b := map[string]string{"x": "mode 100644 size 2", "y": "mode 40755", "w": "mode 100644 size 0"}
	got := diffTrees(a, b, "A", "B", 10)
	want := []string{
		"w: only on B (mode 100644 size 0)",
		"x: A: mode 100644 size 1; B: mode 100644 size 2",
		"z: only on A (mode 120777 -> t)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("diffTrees = %q, want %q", got, want)
	}
	if got := diffTrees(a, b, "A", "B", 1); len(got) != 2 || got[1] != "..." {
		t.Errorf("diffTrees with max 1 = %q, want one difference and ...", got)
	}
	if got := diffTrees(a, a, "A", "A", 10); len(got) != 0 {
		t.Errorf("diffTrees of a tree with itself = %q", got)
	}
}

func TestTree(t *testing.T) {
	d := t.TempDir()
	if err := os.WriteFile(filepath.Join(d, "f"), []byte("data"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", filepath.Join(d, "l")); err != nil {
		t.Fatal(err)
	}
	before, err := tree(d)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != 3 {
		t.Fatalf("tree has %d entries, want ., f and l: %q", len(before), before)
	}
	// Same size, other content: only the hash tells.
	if err := os.WriteFile(filepath.Join(d, "f"), []byte("DATA"), 0o640); err != nil {
		t.Fatal(err)
	}
	after, err := tree(d)
	if err != nil {
		t.Fatal(err)
	}
	if d := diffTrees(before, after, "before", "after", 10); len(d) != 1 {
		t.Errorf("differences after changing f's content: %q, want one", d)
	}
}
