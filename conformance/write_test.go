package conformance

import (
	"cmp"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// runScenarios runs scenarios against other, several at a time (see
// envParallel), then reports each as a subtest and logs a compact summary:
// one line per scenario, with its first differences.
//
// lists name the scenarios allowed to differ (and required to), and those
// the program does not support yet (and must not pass), with the reason
// for each; empty for none.
func runScenarios(t *testing.T, other Impl, scenarios []Scenario, lists Lists) {
	if re := os.Getenv(envRun); re != "" {
		match, err := regexp.Compile(re)
		if err != nil {
			t.Fatalf("%s: %v", envRun, err)
		}
		scenarios = slices.DeleteFunc(slices.Clone(scenarios), func(s Scenario) bool { return !match.MatchString(s.Name) })
	}
	parallel := 4
	if v := os.Getenv(envParallel); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%s: want a positive number", envParallel, v)
		}
		parallel = n
	}
	tmp := t.TempDir()
	if os.Getenv(envKeep) == "1" {
		var err error
		if tmp, err = os.MkdirTemp("", "ovl-scenarios-"); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s=1: keeping every scenario's directories under %s", envKeep, tmp)
	}
	start := time.Now()
	rep := RunSuite(tmp, scenarios, other, lists, parallel, nil)
	var b strings.Builder
	for _, o := range rep.Outcomes {
		line := "PASS"
		t.Run(o.Scenario, func(t *testing.T) {
			if o.Status != StatusSame && o.Log != "" {
				if out, err := os.ReadFile(o.Log); err == nil && len(out) > 0 {
					t.Logf("%s output:\n%s", other.Name(), out)
				}
			}
			all := make([]string, len(o.Problems))
			for i, p := range o.Problems {
				all[i] = p.Text
			}
			switch o.Status {
			case StatusError:
				line = "ERROR " + o.Error
				t.Fatal(o.Error)
			case StatusStale:
				line = "STALE listed in " + o.List
				t.Errorf("listed in %s (%s) but no longer differs: remove it", o.List, o.Reason)
			case StatusUnsupported:
				line = "UNSUPPORTED " + firstLine(o.Unsupported)
				t.Errorf("%s does not support the scenario, and pending.txt does not list it: %s", other.Name(), o.Unsupported)
			case StatusPending:
				line = "PENDING " + cmp.Or(firstLine(o.Unsupported), fmt.Sprintf("(%d differences)", len(all)))
				t.Logf("%s does not support the scenario yet (pending.txt: %s): %s\n  %s", other.Name(), o.Reason,
					cmp.Or(o.Unsupported, "it differs"), strings.Join(examples(all), "\n  "))
			case StatusAccepted:
				line = fmt.Sprintf("ACCEPTED DIFF (%d) %s", len(all), strings.Join(digest(o.Problems, 3), "; "))
				t.Logf("%s differs from the kernel, accepted: %s\n  %s", other.Name(), o.Reason, strings.Join(examples(all), "\n  "))
			case StatusDiffers:
				line = fmt.Sprintf("DIFF (%d) %s", len(all), strings.Join(digest(o.Problems, 3), "; "))
				t.Errorf("%s differs from the kernel:\n  %s", other.Name(), strings.Join(examples(all), "\n  "))
				for i, op := range o.Ops {
					t.Logf("op %d %s: kernel %s, %s %s", i+1, op.Op, op.Kernel, other.Name(), op.Other)
				}
			}
		})
		fmt.Fprintf(&b, "\n  %-40s %s", o.Scenario, line)
	}
	c := rep.Counts
	t.Logf("%s vs kernel: %d of %d scenarios the same, %d accepted differences (accepted.txt), %d pending (pending.txt), in %v:%s",
		other.Name(), c.Same, c.Scenarios, c.Accepted, c.Pending, time.Since(start).Round(time.Millisecond), b.String())
}

// Environment variables runScenarios reads.
const (
	// envRun selects the scenarios whose names match a regular expression.
	envRun = "OVL_CONFORMANCE_RUN"
	// envParallel is how many scenarios run at once (default 4: most of
	// a scenario's time is spent waiting for mounts and unmounts).
	envParallel = "OVL_CONFORMANCE_PARALLEL"
)

// TestScenarios runs every scenario on the program under test and on the
// kernel, and compares results, merged trees before and after a remount,
// and the raw upper layers. It fails on any difference accepted.txt does
// not list, on a scenario the program does not support that pending.txt
// does not list, and on a listed scenario that no longer differs.
func TestScenarios(t *testing.T) {
	prog := programUnderTest(t)
	var lists Lists
	if strings.HasPrefix(prog.Name(), "ovlmount") {
		// The lists are ovlmount's; another program shows its own.
		lists = OvlmountLists()
	}
	runScenarios(t, prog, Scenarios(), lists)
}

// TestHarnessScenariosKernelVsKernel checks the scenario harness itself:
// the kernel against the kernel must show no difference at all. By
// default it runs a sample (see harnessSample), which keeps CI time down:
// every scenario's Want is already checked against the kernel by
// TestScenarios. With OVL_CONFORMANCE_RUN set it runs the scenarios that
// match, so OVL_CONFORMANCE_RUN=. runs them all.
func TestHarnessScenariosKernelVsKernel(t *testing.T) {
	requireEnv(t)
	// Foreign scenarios show the other side markers the kernel does not
	// read: kernel against kernel they differ by design.
	scenarios := slices.DeleteFunc(Scenarios(), func(s Scenario) bool { return s.Foreign })
	if os.Getenv(envRun) == "" {
		scenarios = harnessSample(scenarios)
	}
	runScenarios(t, Kernel{}, scenarios, Lists{})
}

// harnessSample picks scenarios that exercise each part of the harness at
// least once: the first of each area, and the first with each flag that
// changes how a scenario runs (LowersOnly, Pristine, operations as
// another user, data-only layers, preparation, each mount option).
func harnessSample(all []Scenario) []Scenario {
	var out []Scenario
	seen := map[string]bool{}
	for _, s := range all {
		features := []string{"area " + s.Area()}
		for _, o := range s.Options {
			features = append(features, "option "+o)
		}
		for f, on := range map[string]bool{
			"lowers-only": s.LowersOnly, "pristine": s.Pristine,
			"as user":   slices.ContainsFunc(s.Ops, func(o Op) bool { return o.As != nil }),
			"data-only": len(s.Spec.DataLowers) > 0, "prepare": len(s.Prepare) > 0,
		} {
			if on {
				features = append(features, f)
			}
		}
		if slices.ContainsFunc(features, func(f string) bool { return !seen[f] }) {
			out = append(out, s)
		}
		for _, f := range features {
			seen[f] = true
		}
	}
	return out
}

// TestDiffWriteRules checks the write-path rules of normalise and
// DiffUpper on made-up trees.
func TestDiffWriteRules(t *testing.T) {
	w := func(base time.Time) Window { return Window{From: base, To: base.Add(time.Minute)} }
	kw, ow := w(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)), w(time.Date(2030, 1, 1, 0, 5, 0, 0, time.UTC))
	old := DefaultMtime.UnixNano()
	tree := func(inos map[string]uint64, fresh map[string]int64) *Tree {
		t := &Tree{Entries: map[string]*Entry{}}
		for p, ino := range inos {
			t.Entries[p] = &Entry{Path: p, Mode: unix.S_IFREG | 0o644, Ino: ino, DIno: ino, Mtime: cmp.Or(fresh[p], old)}
		}
		return t
	}
	opts := DiffOptions{LowerInos: map[uint64]bool{10: true, 11: true}, KernelOps: kw, OtherOps: ow}
	kernel := tree(map[string]uint64{"lower": 10, "link1": 500, "link2": 500, "new": 600},
		map[string]int64{"new": kw.From.UnixNano() + 5})
	for _, c := range []struct {
		name  string
		inos  map[string]uint64
		fresh map[string]int64
		want  []string // path: field
	}{
		{"same identities", map[string]uint64{"lower": 10, "link1": 700, "link2": 700, "new": 800},
			map[string]int64{"new": ow.To.UnixNano() - 1}, nil},
		{"link broken", map[string]uint64{"lower": 10, "link1": 700, "link2": 701, "new": 800},
			map[string]int64{"new": ow.From.UnixNano()}, []string{"link2: d_ino", "link2: st_ino"}},
		{"lower number lost, new number from a lower", map[string]uint64{"lower": 12, "link1": 700, "link2": 700, "new": 11},
			map[string]int64{"new": ow.From.UnixNano()}, []string{"lower: d_ino", "lower: st_ino", "new: d_ino", "new: st_ino"}},
		{"two objects made one", map[string]uint64{"lower": 10, "link1": 700, "link2": 700, "new": 700},
			map[string]int64{"new": ow.From.UnixNano()}, []string{"new: d_ino", "new: st_ino"}},
		{"time not stamped, time not preserved", map[string]uint64{"lower": 10, "link1": 700, "link2": 700, "new": 800},
			map[string]int64{"lower": ow.From.UnixNano() + 1}, []string{"lower: mtime", "new: mtime"}},
	} {
		var got []string
		for _, d := range Diff(kernel, tree(c.inos, c.fresh), opts) {
			got = append(got, d.Path+": "+d.Field)
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}

	raw := func(entries ...*Entry) *Tree {
		t := &Tree{Entries: map[string]*Entry{}}
		for _, e := range entries {
			t.Entries[e.Path] = e
		}
		return t
	}
	// Two encodings of one lower object's handle are the same origin;
	// two random uuids of one length are the same uuid.
	origin := map[string]string{"trusted.overlay.origin": "handle(null uuid) lower0:/f"}
	k := raw(
		&Entry{Path: ".", Mode: unix.S_IFDIR | 0o755, Xattrs: []Xattr{{"trusted.overlay.uuid", "random"}}},
		&Entry{Path: "gone", Mode: unix.S_IFCHR},
		&Entry{Path: "d", Mode: unix.S_IFDIR | 0o755, Size: 4096, Xattrs: []Xattr{{"trusted.overlay.opaque", "y"}}},
		&Entry{Path: "f", Mode: unix.S_IFREG | 0o644, Size: 1, SHA256: "x", Xattrs: []Xattr{
			{"trusted.overlay.metacopy", ""}, {"trusted.overlay.origin", "handle"}, {"trusted.overlay.overlay.mine", "1"},
			{"user.a", "b"}}, Handles: origin},
		&Entry{Path: "g", Mode: unix.S_IFREG | 0o644, Xattrs: []Xattr{{"trusted.overlay.redirect", "/objects/g"}}},
	)
	o := raw(
		&Entry{Path: ".", Mode: unix.S_IFDIR | 0o755, Xattrs: []Xattr{{"trusted.overlay.uuid", "other!"}}},
		&Entry{Path: ".wh.gone", Mode: unix.S_IFREG},
		&Entry{Path: "d", Mode: unix.S_IFDIR | 0o755, Size: 8192},
		&Entry{Path: "f", Mode: unix.S_IFREG | 0o644, Size: 1, SHA256: "x", Xattrs: []Xattr{
			{"trusted.overlay.metacopy", ""}, {"trusted.overlay.origin", "another handle"}, {"user.a", "b"}}, Handles: origin},
		&Entry{Path: "g", Mode: unix.S_IFREG | 0o644, Xattrs: []Xattr{{"trusted.overlay.redirect", "objects/g"}}},
	)
	var got []string
	for _, d := range DiffUpper(k, o, privatePrefix) {
		got = append(got, d.String())
	}
	want := []string{
		`d: overlay xattrs: kernel [opaque="y"], other []`,
		`f: xattrs: kernel [trusted.overlay.overlay.mine="1" user.a="b"], other [user.a="b"]`,
		`g: overlay xattrs: kernel [redirect="/objects/g"], other [redirect="objects/g"]`,
		`gone: type: kernel whiteout, other aufs-whiteout (.wh.gone)`,
	}
	slices.Sort(got)
	slices.Sort(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("DiffUpper:\n got %q\nwant %q", got, want)
	}

	problems := []Problem{{"merged nlink", "n1"}, {"merged nlink", "n2"}, {"op", "o1"}, {"merged nlink", "n3"}, {"upper layer type", "u1"}}
	if got := digest(problems, 3); fmt.Sprint(got) != "[n1 o1 u1]" {
		t.Errorf("digest = %v, want one of each kind first", got)
	}
}

// TestScenarioTable checks the table itself: names are unique (the lists
// and reports key on them), every area is one the report lists, flags go
// together, and every accepted.txt and pending.txt entry names a scenario,
// only one of the lists naming it.
func TestScenarioTable(t *testing.T) {
	all := Scenarios()
	names := map[string]bool{}
	for _, s := range all {
		if names[s.Name] {
			t.Errorf("two scenarios named %s", s.Name)
		}
		names[s.Name] = true
		if s.LowersOnly && s.Spec.Upper != nil {
			t.Errorf("%s: LowersOnly with an upper layer", s.Name)
		}
		if len(s.Prepare) > 0 && (s.Pristine || s.LowersOnly) {
			t.Errorf("%s: Prepare needs an upper layer the kernel mounts first, so neither Pristine nor LowersOnly", s.Name)
		}
		if s.PrepareOptions != nil && len(s.Prepare) == 0 {
			t.Errorf("%s: PrepareOptions without Prepare", s.Name)
		}
	}
	if bad := unknownAreas(all); len(bad) > 0 {
		t.Errorf("areas Areas does not list: %v", bad)
	}
	lists := OvlmountLists()
	for file, list := range map[string]map[string]string{"accepted.txt": lists.Accepted, "pending.txt": lists.Pending} {
		for name := range list {
			if !names[name] {
				t.Errorf("%s lists %s, which is no scenario", file, name)
			}
		}
	}
	for name := range lists.Pending {
		if _, ok := lists.Accepted[name]; ok {
			t.Errorf("%s is listed both as accepted and as pending", name)
		}
	}
}

// unknownAreas returns the areas of scenarios that Areas does not list:
// the per-area summary would leave them out.
func unknownAreas(scenarios []Scenario) []string {
	known := map[string]bool{}
	for _, a := range Areas {
		known[a.Name] = true
	}
	var out []string
	for _, s := range scenarios {
		if !known[s.Area()] && !slices.Contains(out, s.Area()) {
			out = append(out, s.Area())
		}
	}
	return out
}

// digest picks up to n problems for a one-line summary: every kind of
// problem before a second one of any kind, so that one systematic
// difference does not hide the others.
func digest(problems []Problem, n int) []string {
	var firsts, rest []string
	seen := map[string]bool{}
	for _, p := range problems {
		if seen[p.Kind] {
			rest = append(rest, p.Text)
			continue
		}
		seen[p.Kind] = true
		firsts = append(firsts, p.Text)
	}
	out := append(firsts, rest...)
	return out[:min(n, len(out))]
}
