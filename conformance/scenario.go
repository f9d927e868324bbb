package conformance

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"golang.org/x/sys/unix"
)

// Scenario is a write-path test: layers, and operations to perform on the
// merged tree. Spec.Upper nil means an empty upper layer.
type Scenario struct {
	Name string
	Spec Spec
	Ops  []Op
	// Options are overlay mount options in the kernel's names and syntax
	// ("redirect_dir=on", "metacopy=on", "index=on", "uuid=null",
	// "xino=on", "userxattr", "verity=on"). Both sides get them at every
	// mount of the scenario: settling, preparing, the mount under test and
	// the remount. A program that refuses them, or says it ignored them,
	// does not support the scenario (StatusUnsupported).
	Options []string
	// Prepare are operations done through a kernel mount of each side's
	// layers, with PrepareOptions (nil: Options), before the scenario;
	// each must give the kernel its Want ("ok" if unset). The upper layer
	// then holds what the kernel writes (redirects, metacopy files,
	// origins, index entries) for the scenario to read back. The same
	// mount settles the upper layer (see Settle).
	Prepare        []Op
	PrepareOptions []string
	// Pristine skips settling the upper layer (see Settle): the scenario
	// is about what a first mount does to an upper layer no overlay has
	// mounted yet.
	Pristine bool
	// LowersOnly mounts Spec.Lowers without an upper layer: a read-only
	// overlay. Spec.Upper must be nil.
	LowersOnly bool
	// Foreign marks a Spec with markers the kernel does not read (AUFS
	// whiteouts and opaque files, user.overlay.opaque,
	// user.fuseoverlayfs.opaque): the kernel mounts Spec.KernelEquivalent()
	// instead, built apart, so inode numbers are compared as identities
	// only (which paths share an object), never as values.
	Foreign bool
}

// Area is the part of overlay behaviour s is about: its name up to the
// first slash ("rename/flags" is in area "rename").
func (s Scenario) Area() string {
	area, _, _ := strings.Cut(s.Name, "/")
	return area
}

// HasOptions reports whether s mounts with more than layers: mount
// options, or data-only lower layers.
func (s Scenario) HasOptions() bool {
	return len(s.Options) > 0 || len(s.Spec.DataLowers) > 0
}

// probes are the xattrs walks of s's mounts probe on every path.
func (s Scenario) probes() []string {
	if s.HasOptions() {
		return slices.Concat(probedXattrs, formatProbes)
	}
	return probedXattrs
}

// xattrPrefix is the prefix of the overlay's own xattrs in s's layers.
func (s Scenario) xattrPrefix() string {
	if slices.Contains(s.Options, "userxattr") {
		return userPrivatePrefix
	}
	return privatePrefix
}

// prepareOptions are the options of the kernel mount that prepares s.
func (s Scenario) prepareOptions() []string {
	if s.PrepareOptions != nil {
		return s.PrepareOptions
	}
	return s.Options
}

// WithOptions returns the scenarios with opts added to their Options: a
// group of scenarios that all mount with the same options.
func WithOptions(opts []string, scenarios ...Scenario) []Scenario {
	out := make([]Scenario, len(scenarios))
	for i, s := range scenarios {
		s.Options = slices.Concat(opts, s.Options)
		out[i] = s
	}
	return out
}

// xattrUser is the identity of the extra walk that lists xattrs as an
// unprivileged user (trusted.* are hidden from it, and it cannot enter
// private directories).
var xattrUser = Cred{UID: 1000, GID: 1000}

// Run is what one implementation did with a scenario.
type Run struct {
	Impl    Impl
	Results []Result // one per operation
	Window  Window   // when the operations ran (and the walk after them)
	Merged  *Tree    // the merged tree after the operations
	Remount *Tree    // the merged tree after unmounting and mounting again
	Upper   *Tree    // the raw upper directory after the last unmount
	// Index is the index directory in the work directory (index=on) after
	// the last unmount, keyed by the objects its entries' names decode
	// to (see ObserveUpper); empty if there is none.
	Index *Tree
	// UserXattrs is XattrTree(".") run as xattrUser after the operations:
	// one "path: xattrs" line per path.
	UserXattrs string
	Log        string // the program's output, if any
	// Ignored are the scenario's options the program said, when it
	// mounted, that it ignored (see ignoredOptions), and "data-only lower
	// layers" if it showed their names (see showsDataLayers).
	Ignored []string
}

// Report lists every way the other implementation's run differs from the
// kernel's, grouped by the stage that found it.
type Report struct {
	Scenario string
	Intent   []string     // kernel results other than an Op's Expect: the scenario is wrong
	Ops      []string     // operations with a different result
	Merged   []Difference // merged tree after the operations
	Remount  []Difference // other's tree after a remount vs before it
	Kernel   []Difference // the kernel's own remount vs before it (a harness problem)
	Upper    []Difference // raw upper layers
	Index    []Difference // index directories (index=on)
	User     []Difference // xattrs listed as an unprivileged user
	Inos     []string     // d_ino vs st_ino within the other's merged tree
}

// Problem is one finding of a Report.
type Problem struct {
	Kind string // "op", or stage and field ("merged mtime"): findings of one Kind are often one cause
	Text string
}

// Problems lists the report's findings, one line each, in stage order.
func (r Report) Problems() []Problem {
	var out []Problem
	for _, s := range r.Intent {
		out = append(out, Problem{"scenario", s})
	}
	for _, s := range r.Ops {
		out = append(out, Problem{"op", s})
	}
	for _, g := range []struct {
		label   string
		diffs   []Difference
		remount bool // Kernel and Other of the differences are before and after
	}{
		{"merged", r.Merged, false}, {"as uid 1000", r.User, false}, {"after remount", r.Remount, true}, {"upper layer", r.Upper, false},
		{"index dir", r.Index, false}, {"kernel after remount", r.Kernel, true},
	} {
		for _, d := range g.diffs {
			text := g.label + ": " + d.String()
			if g.remount {
				text = fmt.Sprintf("%s: %s: %s: before %s, after %s", g.label, d.Path, d.Field, d.Kernel, d.Other)
			}
			out = append(out, Problem{g.label + " " + d.Field, text})
		}
	}
	for _, s := range r.Inos {
		out = append(out, Problem{"d_ino vs st_ino", "d_ino vs st_ino: " + s})
	}
	return out
}

// RunScenario builds s's layers under dir, runs s on the kernel and on
// other, and compares. The lower layers are built once and shared, so the
// numbers of lower objects are the same for both; each side gets its own
// upper and work directories, built from the same Spec. An error means the
// scenario could not be run at all (layers, mounts, walks); differences
// are in the Report. A *RefusedError is a side that would not mount s.
func RunScenario(dir string, s Scenario, other Impl) (Report, *Run, *Run, error) {
	rep := Report{Scenario: s.Name}
	specs := [2]Spec{s.Spec, s.Spec}
	if s.Foreign {
		specs[0] = s.Spec.KernelEquivalent()
	}
	// lowers[0] is the kernel's, lowers[1] the other's: the same
	// directories unless the scenario is Foreign.
	var lowers [2]Layers
	for i := 1; i >= 0; i-- {
		if i == 0 && !s.Foreign {
			lowers[0] = lowers[1]
			break
		}
		p := filepath.Join(dir, fmt.Sprintf("lowers%d", i))
		if err := os.Mkdir(p, 0o755); err != nil {
			return rep, nil, nil, err
		}
		l, err := Spec{Lowers: specs[i].Lowers, DataLowers: specs[i].DataLowers}.Build(p)
		if err != nil {
			return rep, nil, nil, err
		}
		lowers[i] = l
	}
	lowerInos, err := InodeNumbers(slices.Concat(lowers[1].Lowers, lowers[1].Data))
	if err != nil {
		return rep, nil, nil, err
	}
	if s.Foreign {
		// An empty set: every number is compared as an identity.
		lowerInos = map[uint64]bool{}
	}
	var runs [2]*Run
	for i, impl := range []Impl{Kernel{}, other} {
		side := filepath.Join(dir, fmt.Sprintf("%d-%s", i, impl.Name()))
		if runs[i], err = runOn(side, lowers[i], s, specs[i].Upper, impl); err != nil {
			return rep, runs[0], runs[1], fmt.Errorf("%s: %w", impl.Name(), err)
		}
	}
	k, o := runs[0], runs[1]
	for i, op := range s.Ops {
		if got := k.Results[i].String(); op.Expect != "" && op.Expect != cmp.Or(k.Results[i].Err, "ok") {
			rep.Intent = append(rep.Intent, fmt.Sprintf("op %d %v: the scenario expects %s of the kernel, which gave %s", i+1, op, op.Expect, got))
		}
		if k.Results[i] != o.Results[i] {
			rep.Ops = append(rep.Ops, fmt.Sprintf("op %d %v: kernel %v, %s %v", i+1, op, k.Results[i], other.Name(), o.Results[i]))
		}
	}
	rep.Merged = Diff(k.Merged, o.Merged, DiffOptions{LowerInos: lowerInos, KernelOps: k.Window, OtherOps: o.Window})
	rep.Kernel, rep.Remount = SameDinoChanges(Diff(k.Merged, k.Remount, DiffOptions{}), Diff(o.Merged, o.Remount, DiffOptions{}))
	rep.Upper = DiffUpper(k.Upper, o.Upper, s.xattrPrefix())
	rep.Index = DiffUpper(k.Index, o.Index, s.xattrPrefix())
	rep.User = diffLines(k.UserXattrs, o.UserXattrs, "xattrs")
	rep.Inos = o.Merged.OwnDirentInoMismatches(k.Merged)
	return rep, k, o, nil
}

// runOn performs s with impl in the directory side: build upper,
// settle and prepare it, mount, operate, walk, remount, walk, and walk the
// raw upper and index. lowers holds the lower and data-only layers.
func runOn(side string, lowers Layers, s Scenario, upper Layer, impl Impl) (*Run, error) {
	if upper == nil {
		upper = Layer{}
	}
	if err := os.Mkdir(side, 0o755); err != nil {
		return nil, err
	}
	l := Layers{Lowers: lowers.Lowers, Data: lowers.Data, Options: s.Options}
	mnt := filepath.Join(side, "mnt")
	dirs := []string{mnt}
	if !s.LowersOnly {
		built, err := Spec{Upper: upper}.Build(side)
		if err != nil {
			return nil, err
		}
		l.Upper, l.Work = built.Upper, filepath.Join(side, "work")
		dirs = append(dirs, l.Work)
	}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, err
		}
	}
	if len(upper) > 0 && !s.Pristine && !s.LowersOnly || len(s.Prepare) > 0 {
		if err := Settle(side, l, s); err != nil {
			return nil, err
		}
	}
	run := &Run{Impl: impl}
	m, err := impl.Mount(l, mnt)
	if err != nil {
		return nil, &RefusedError{Impl: impl.Name(), Err: err}
	}
	run.Log = m.Log
	defer unmountIfMounted(m)
	if m.Log != "" {
		if out, err := os.ReadFile(m.Log); err == nil {
			run.Ignored = ignoredOptions(string(out), s.Options)
		}
	}
	if len(l.Data) > 0 {
		var name string
		if err := Guard(m, nil, func() error { name = showsDataLayers(l, mnt); return nil }); err != nil {
			return run, err
		}
		if name != "" {
			run.Ignored = append(run.Ignored, fmt.Sprintf("data-only lower layers (it shows %q)", name))
		}
	}
	// The slack covers coarse file timestamps, which may lag the clock
	// read here by a tick.
	run.Window.From = time.Now().Add(-time.Second)
	if run.Results, err = guardedOps(m, s.Ops); err != nil {
		return run, err
	}
	if run.Merged, err = guardedWalk(m, s.probes()); err != nil {
		return run, err
	}
	user, err := guardedOps(m, []Op{XattrTree(".").AsUser(xattrUser.UID, xattrUser.GID)})
	if err != nil {
		return run, err
	}
	run.UserXattrs = user[0].Out
	run.Window.To = time.Now().Add(time.Second)
	if err := m.Unmount(); err != nil {
		return run, err
	}
	if m, err = impl.Mount(l, mnt); err != nil {
		return run, fmt.Errorf("mounting again: %w", err)
	}
	defer unmountIfMounted(m)
	if run.Remount, err = guardedWalk(m, s.probes()); err != nil {
		return run, err
	}
	if err := m.Unmount(); err != nil {
		return run, err
	}
	run.Upper, run.Index = &Tree{Entries: map[string]*Entry{}}, &Tree{Entries: map[string]*Entry{}}
	if l.Upper != "" {
		if run.Upper, run.Index, err = ObserveUpper(l, s.xattrPrefix()); err != nil {
			return run, err
		}
	}
	return run, nil
}

// showsDataLayers returns a name at the root of a data-only layer of l
// that no other layer has and the mount at mnt shows, or "". Data-only
// layers are never merged: a program that shows their names takes them
// for ordinary lower layers (fuse-overlayfs reads lowerdir=L::D so).
func showsDataLayers(l Layers, mnt string) string {
	others := map[string]bool{}
	for _, d := range append(slices.Clone(l.Lowers), l.Upper) {
		if ents, err := os.ReadDir(d); err == nil {
			for _, e := range ents {
				others[e.Name()] = true
			}
		}
	}
	for _, d := range l.Data {
		ents, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if others[e.Name()] {
				continue
			}
			if _, err := os.Lstat(filepath.Join(mnt, e.Name())); err == nil {
				return e.Name()
			}
		}
	}
	return ""
}

// RefusedError is an implementation's refusal to mount a scenario's
// layers with its options. From the kernel it means the scenario is
// wrong; from a FUSE program, that the program does not support the
// scenario.
type RefusedError struct {
	Impl string
	Err  error
}

func (e *RefusedError) Error() string {
	if e.Impl == (Kernel{}).Name() {
		return "the kernel refuses the scenario's mount, so the scenario is wrong: " + e.Err.Error()
	}
	// What the program said is the point; the command line is long.
	if m, ok := errors.AsType[*MountError](e.Err); ok && strings.TrimSpace(m.Output) != "" {
		return e.Impl + " refuses the scenario's mount: " + strings.Join(strings.Fields(m.Output), " ")
	}
	return e.Impl + " refuses the scenario's mount: " + e.Err.Error()
}

func (e *RefusedError) Unwrap() error { return e.Err }

// ignoredOptions returns those of opts that a program's output says it
// ignored: programs that mount with an option they do not implement say
// so, on a line naming the option and "ignored" (fuse-overlayfs:
// "unknown argument ignored: metacopy=on"; ovlmount: "unknown option
// "metacopy=on" ignored", "option redirect_dir ignored: ...").
func ignoredOptions(log string, opts []string) []string {
	var out []string
	for _, o := range opts {
		name, _, _ := strings.Cut(o, "=")
		for _, line := range strings.Split(log, "\n") {
			if !strings.Contains(line, "ignored") {
				continue
			}
			if strings.Contains(line, o) || slices.Contains(strings.FieldsFunc(line, func(r rune) bool {
				return !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '_'
			}), name) {
				out = append(out, o)
				break
			}
		}
	}
	return out
}

// diffLines compares two "path: value" listings line by line.
func diffLines(kernel, other, field string) []Difference {
	split := func(s string) map[string]string {
		out := map[string]string{}
		for _, line := range strings.Split(s, "\n") {
			if p, v, ok := strings.Cut(line, ": "); ok {
				out[p] = v
			}
		}
		return out
	}
	k, o := split(kernel), split(other)
	var out []Difference
	for _, p := range slices.Sorted(maps.Keys(k)) {
		ov, ok := o[p]
		switch {
		case !ok:
			out = append(out, Difference{Path: p, Field: field, Kernel: k[p], Other: "not listed"})
		case ov != k[p]:
			out = append(out, Difference{Path: p, Field: field, Kernel: k[p], Other: ov})
		}
	}
	for _, p := range slices.Sorted(maps.Keys(o)) {
		if _, ok := k[p]; !ok {
			out = append(out, Difference{Path: p, Field: field, Kernel: "not listed", Other: o[p]})
		}
	}
	return out
}

// Settle mounts the kernel once over a pristine upper layer, with s's
// options, performs s's Prepare operations if any, and walks it, using the
// directories side/settle-work and side/settle-mnt (the zero Scenario
// only settles). On a first mount the kernel stores a random
// trusted.overlay.uuid on the upper root (unless the root is already
// marked impure, or uuid=null or off), and lookups record origin on upper
// directories that merge with lower ones and mark their parents impure
// (see kernelReference). Without settling,
// the kernel's side would write all that during the scenario and the raw
// upper comparison would charge the other side for not doing the same
// bookkeeping on objects the scenario never touched. Scenarios marked
// Pristine test exactly that bookkeeping.
//
// The settling mount has a work directory of its own, removed afterwards
// but for its index directory (index=on), which belongs with the upper
// layer: it moves to l.Work.
func Settle(side string, l Layers, s Scenario) error {
	work := l.Work
	l.Work = filepath.Join(side, "settle-work")
	l.Options = s.prepareOptions()
	mnt := filepath.Join(side, "settle-mnt")
	for _, d := range []string{l.Work, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	m, err := Kernel{}.Mount(l, mnt)
	if err != nil {
		return &RefusedError{Impl: Kernel{}.Name(), Err: fmt.Errorf("settling the upper layer: %w", err)}
	}
	defer unmountIfMounted(m)
	results, err := RunOps(mnt, s.Prepare, nil)
	if err != nil {
		return fmt.Errorf("preparing: %w", err)
	}
	for i, r := range results {
		if want := cmp.Or(s.Prepare[i].Expect, "ok"); cmp.Or(r.Err, "ok") != want {
			return fmt.Errorf("preparing, op %d %v: the kernel gave %v, the scenario wants %s, so the scenario is wrong", i+1, s.Prepare[i], r, want)
		}
	}
	if _, err := Walk(mnt); err != nil {
		return err
	}
	if err := m.Unmount(); err != nil {
		return err
	}
	index := filepath.Join(l.Work, "index")
	if _, err := os.Lstat(index); err == nil {
		if err := os.Rename(index, filepath.Join(work, "index")); err != nil {
			return err
		}
	}
	return os.RemoveAll(l.Work)
}

func unmountIfMounted(m *Mount) {
	if IsMounted(m.Dir) {
		m.Unmount()
	}
}

// InodeNumbers collects the inode number of every object in dirs: for
// DiffOptions.LowerInos.
func InodeNumbers(dirs []string) (map[uint64]bool, error) {
	out := map[uint64]bool{}
	for _, d := range dirs {
		err := filepath.WalkDir(d, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return &os.PathError{Op: "lstat", Path: p, Err: err}
			}
			out[st.Ino] = true
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no lower layers")
	}
	return out, nil
}

// hangTimeout is how long an operation or a walk of a FUSE mount may go
// without progress before the harness decides the daemon hung and aborts
// its connection. Without that, a process blocked in a FUSE request
// cannot even be ended by the test timeout, and go test hangs for good.
const hangTimeout = 20 * time.Second

// Guard runs f, which works on m, and aborts m's FUSE connection if done
// (nil: f as a whole) does not advance for hangTimeout (20 s). The error is
// f's, or one saying the daemon hung.
func Guard(m *Mount, done *atomic.Int64, f func() error) error {
	if _, ok := m.Impl.(FUSE); !ok {
		return f()
	}
	if done == nil {
		done = new(atomic.Int64)
	}
	finished := make(chan error, 1)
	go func() { finished <- f() }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last, since := done.Load(), time.Now()
	for {
		select {
		case err := <-finished:
			return err
		case <-tick.C:
		}
		if n := done.Load(); n != last {
			last, since = n, time.Now()
			continue
		}
		if time.Since(since) < hangTimeout {
			continue
		}
		abortErr := m.Abort()
		select {
		case <-finished:
		case <-time.After(hangTimeout):
		}
		return &hungError{impl: m.Impl.Name(), done: last, abortErr: abortErr}
	}
}

// hungError reports a FUSE daemon that stopped answering.
type hungError struct {
	impl     string
	done     int64 // progress when it stopped
	abortErr error
}

func (e *hungError) Error() string {
	if e.abortErr != nil {
		return fmt.Sprintf("%s answered nothing for %v, and aborting its connection failed: %v", e.impl, hangTimeout, e.abortErr)
	}
	return fmt.Sprintf("%s answered nothing for %v; its connection was aborted", e.impl, hangTimeout)
}

func guardedOps(m *Mount, ops []Op) ([]Result, error) {
	var results []Result
	done := new(atomic.Int64)
	err := Guard(m, done, func() (err error) {
		results, err = RunOps(m.Dir, ops, done)
		return err
	})
	if h, ok := err.(*hungError); ok && int(h.done) < len(ops) {
		err = fmt.Errorf("op %d %v: %w", h.done+1, ops[h.done], err)
	}
	return results, err
}

// guardedWalk walks m probing the xattrs named by probes on every path.
func guardedWalk(m *Mount, probes []string) (*Tree, error) {
	var tree *Tree
	err := Guard(m, nil, func() (err error) {
		tree, err = walkProbing(m.Dir, probes)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("walk: %w", err)
	}
	return tree, nil
}
