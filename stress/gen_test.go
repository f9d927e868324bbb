package stress

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/conformance"
)

func TestOpSet(t *testing.T) {
	s, err := ParseOpSet("all,-pending")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range groups["pending"] {
		if s[n] {
			t.Errorf("%s is still selected", n)
		}
	}
	if !s["recreate"] || !s[featureUpperHardLinks] {
		t.Errorf("all lost more than the group: %v", s.names())
	}
	back, err := ParseOpSet(s.String())
	if err != nil || !reflect.DeepEqual(back, s) {
		t.Errorf("%q reads back as %v, %v", s.String(), back, err)
	}
	few, err := ParseOpSet("rename,write")
	if err != nil || few.String() != "rename,write" {
		t.Errorf("a small set renders as %q (%v)", few.String(), err)
	}
	if _, err := ParseOpSet("all,-nosuchop"); err == nil {
		t.Error("an unknown name was accepted")
	}
	if _, err := ParseOpSet("lower-hardlinks"); err == nil {
		t.Error("a set of features only, with no step kind, was accepted")
	}
}

// TestGenerator checks what determinism and the workers' independence
// rest on: a seed gives the same layers and steps every time; each
// worker's paths are its own; no symlink can point out of its namespace.
func TestGenerator(t *testing.T) {
	ops := AllOps()
	a, b := NewPlan(42, 4, ops), NewPlan(42, 4, ops)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same seed gave two plans")
	}
	if reflect.DeepEqual(a.Spec, NewPlan(43, 4, ops).Spec) {
		t.Error("two seeds gave the same layers")
	}
	for w, pool := range a.Pools {
		for _, p := range pool.Paths {
			if a.owner(p) != w {
				t.Errorf("worker %d's path %s belongs to %d", w, p, a.owner(p))
			}
		}
		s1, s2 := Steps(a, w, ops, 500), Steps(b, w, ops, 500)
		if !reflect.DeepEqual(s1, s2) {
			t.Fatalf("worker %d: the same seed gave two sequences", w)
		}
		kinds := map[string]bool{}
		for _, s := range s1 {
			kinds[s.Kind] = true
			for _, o := range s.Ops {
				for _, p := range []string{o.Path, o.Target} {
					if o.Kind == conformance.OpSymlink && p == o.Target {
						if strings.HasPrefix(p, "/") || slices.Contains(strings.Split(p, "/"), "..") || p == "." {
							t.Errorf("symlink target %q can leave the namespace", p)
						}
						continue
					}
					if p != "" && p != sharedDir && a.owner(p) != w {
						t.Errorf("worker %d's step %v names %s", w, s, p)
					}
				}
			}
		}
		if len(kinds) < len(stepKinds)/2 {
			t.Errorf("worker %d drew only %d kinds of step in 500", w, len(kinds))
		}
	}
	for l := range numLayers {
		for _, n := range a.layer(l) {
			if n.Kind == conformance.Symlink && (strings.HasPrefix(n.Target, "/") || slices.Contains(strings.Split(n.Target, "/"), "..")) {
				t.Errorf("layer symlink %s -> %q can leave the namespace", n.Path, n.Target)
			}
		}
	}
	if !a.whiteoutsMerge() {
		t.Error("the plan has a whiteout in a directory that merges with nothing")
	}
	bad := &Plan{Spec: conformance.Spec{
		Upper:  conformance.Layer{{Path: "d", Kind: conformance.Dir}, {Path: "d/x", Kind: conformance.Whiteout}},
		Lowers: []conformance.Layer{{{Path: "e", Kind: conformance.Dir}}, {}},
	}}
	if bad.whiteoutsMerge() {
		t.Error("a whiteout in an upper-only directory passes for merged")
	}
	noLinks, err := ParseOpSet("all,-hardlinks")
	if err != nil {
		t.Fatal(err)
	}
	p := NewPlan(42, 4, noLinks)
	for l := range numLayers {
		for _, n := range p.layer(l) {
			if n.Kind == conformance.HardLink {
				t.Errorf("-hardlinks, yet %s links to %s", n.Path, n.Target)
			}
		}
	}
	for _, s := range Steps(p, 0, noLinks, 2000) {
		for _, o := range s.Ops {
			if o.Kind == conformance.OpLink {
				t.Errorf("-hardlinks, yet step %v links", s)
			}
		}
	}
}

func TestDDMin(t *testing.T) {
	need := []int{3, 17, 42}
	calls := 0
	got := ddmin(100, func(idx []int) bool {
		calls++
		for _, n := range need {
			if !slices.Contains(idx, n) {
				return false
			}
		}
		return true
	}, time.Time{})
	if !reflect.DeepEqual(got, need) {
		t.Errorf("ddmin kept %v, want %v", got, need)
	}
	t.Logf("%d tests", calls)
	if got := ddmin(10, func([]int) bool { return true }, time.Time{}); len(got) != 0 {
		t.Errorf("nothing is needed, yet ddmin kept %v", got)
	}
}

func TestOwnEntries(t *testing.T) {
	res := conformance.Result{N: 5, Out: "[..:dir .:dir w0-n1:reg w1-n0:dir w10-n2:lnk]"}
	got := ownEntries(res, "w1")
	if got.Out != "[..:dir .:dir w1-n0:dir]" || got.N != 3 {
		t.Errorf("got %v", got)
	}
}
