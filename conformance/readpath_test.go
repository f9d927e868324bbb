package conformance

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// Environment variables the tests read.
const (
	// envBin names the FUSE overlay program under test. When unset, TestMain
	// builds cmd/ovlmount.
	envBin = "OVLMOUNT_BIN"
	// envCI set to "true" turns skips for missing prerequisites (root,
	// /dev/fuse, kernel overlay) into failures, so CI cannot pass vacuously.
	envCI = "CI"
)

var (
	envProblem string // why this machine cannot run mount tests; "" if it can
	progPath   string // absolute path of the program under test
	progErr    error  // why there is no program under test
)

func TestMain(m *testing.M) {
	ServeHelper()
	done := testenv.Start()
	envProblem = checkEnvironment()
	var cleanup func()
	if envProblem == "" {
		progPath, cleanup, progErr = findProgram()
	}
	code := m.Run()
	if cleanup != nil {
		cleanup()
	}
	done()
	os.Exit(code)
}

func checkEnvironment() string {
	if os.Geteuid() != 0 {
		return "not root: the tests mount filesystems and create device nodes"
	}
	if fi, err := os.Stat("/dev/fuse"); err != nil || fi.Mode()&fs.ModeCharDevice == 0 {
		return "/dev/fuse is missing"
	}
	for _, tool := range []string{"mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is not installed"
		}
	}
	// overlay may be a module that loads on first use, so /proc/filesystems
	// cannot answer; a throwaway mount can.
	dir, err := os.MkdirTemp("", "ovl-probe")
	if err != nil {
		return err.Error()
	}
	defer os.RemoveAll(dir)
	l := Layers{Lowers: []string{filepath.Join(dir, "a"), filepath.Join(dir, "b")}}
	for _, d := range append(l.Lowers, filepath.Join(dir, "mnt")) {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err.Error()
		}
	}
	m, err := Kernel{}.Mount(l, filepath.Join(dir, "mnt"))
	if err != nil {
		return "kernel overlayfs cannot be mounted: " + err.Error()
	}
	if err := m.Unmount(); err != nil {
		return err.Error()
	}
	return ""
}

// findProgram returns the program under test and a function removing
// whatever findProgram created for it.
func findProgram() (string, func(), error) {
	if p := os.Getenv(envBin); p != "" {
		path, err := exec.LookPath(p)
		if err != nil {
			return "", nil, fmt.Errorf("%s=%s: %w", envBin, p, err)
		}
		path, err = filepath.Abs(path)
		return path, nil, err
	}
	if _, err := os.Stat(filepath.Join("..", "cmd", "ovlmount")); errors.Is(err, fs.ErrNotExist) {
		return "", nil, fmt.Errorf("cmd/ovlmount does not exist yet, so there is no ovlmount to test; "+
			"set %s to a FUSE overlay with fuse-overlayfs's command line (%s=/usr/bin/fuse-overlayfs) to exercise the harness", envBin, envBin)
	}
	dir, err := os.MkdirTemp("", "ovlmount-bin")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	bin := filepath.Join(dir, "ovlmount")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/ovlmount/ovlmount/cmd/ovlmount").CombinedOutput()
	if err != nil {
		return "", cleanup, fmt.Errorf("go build cmd/ovlmount: %v\n%s", err, out)
	}
	return bin, cleanup, nil
}

func requireEnv(t *testing.T) {
	t.Helper()
	if envProblem == "" {
		return
	}
	if os.Getenv(envCI) == "true" {
		t.Fatalf("cannot run: %s (%s=true: failing instead of skipping)", envProblem, envCI)
	}
	t.Skipf("skipping: %s", envProblem)
}

func programUnderTest(t *testing.T) FUSE {
	t.Helper()
	requireEnv(t)
	if progErr != nil {
		t.Fatal(progErr)
	}
	return FUSE{Prog: progPath}
}

func build(t *testing.T, s Spec) Layers {
	t.Helper()
	l, err := s.Build(t.TempDir())
	if err != nil {
		t.Fatalf("building layers: %v", err)
	}
	return l
}

// mountAndWalk mounts l, whose layers must share one filesystem, with impl
// on a fresh work directory, walks it, runs check (if any) on the mounted
// directory, and unmounts.
func mountAndWalk(t *testing.T, impl Impl, l Layers, check func(dir string)) *Tree {
	t.Helper()
	requireSameFS(t, append(append([]string{}, l.Lowers...), l.Upper)...)
	return walkMounted(t, impl, l, check)
}

// walkMounted is mountAndWalk for layers on any filesystems.
func walkMounted(t *testing.T, impl Impl, l Layers, check func(dir string)) *Tree {
	t.Helper()
	base := t.TempDir()
	mnt := filepath.Join(base, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if l.Upper != "" {
		l.Work = filepath.Join(base, "work")
		if err := os.Mkdir(l.Work, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m, err := impl.Mount(l, mnt)
	if err != nil {
		t.Fatalf("mount %s: %v", impl.Name(), err)
	}
	// Registered after t.TempDir's removal, so it runs before it.
	t.Cleanup(func() {
		if IsMounted(mnt) {
			if err := m.Unmount(); err != nil {
				t.Error(err)
			}
		}
		if t.Failed() && m.Log != "" {
			if out, err := os.ReadFile(m.Log); err == nil && len(out) > 0 {
				t.Logf("%s output:\n%s", impl.Name(), out)
			}
		}
	})
	start := time.Now()
	tree, err := Walk(mnt)
	if err != nil {
		t.Fatalf("walk %s: %v", impl.Name(), err)
	}
	t.Logf("%s: walked %d entries in %v", impl.Name(), len(tree.Entries), time.Since(start).Round(time.Millisecond))
	if check != nil {
		check(mnt)
	}
	if err := m.Unmount(); err != nil {
		t.Fatalf("unmount %s: %v", impl.Name(), err)
	}
	return tree
}

// kernelReference returns the kernel's steady-state view of l. On the first
// mount of pristine layers the kernel lists merged upper directories with
// the upper inode number as d_ino, while lstat already shows the lower
// (origin) number; looking them up records origin and marks the parent
// impure, after which readdir agrees with lstat. The second mount is
// therefore the reference, and the first may differ from it in d_ino only.
func kernelReference(t *testing.T, l Layers, check func(dir string)) *Tree {
	t.Helper()
	first := mountAndWalk(t, Kernel{}, l, check)
	second := mountAndWalk(t, Kernel{}, l, nil)
	settled := 0
	for _, d := range Diff(second, first, DiffOptions{}) {
		if d.Field != "d_ino" {
			t.Errorf("kernel's first mount differs from its second beyond d_ino: %v", d)
			continue
		}
		settled++
	}
	if settled > 0 {
		t.Logf("kernel: %d d_ino values settled after the first mount recorded origins", settled)
	}
	return second
}

// requireSameFS checks the samefs precondition: only then does the kernel
// report the layers' own inode numbers, which the comparison relies on.
func requireSameFS(t *testing.T, paths ...string) {
	t.Helper()
	var dev uint64
	for i, p := range paths {
		if p == "" {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if i > 0 && dev != 0 && uint64(st.Dev) != dev {
			t.Fatalf("%s is on another filesystem than %s; put all layers on one filesystem", p, paths[0])
		}
		dev = uint64(st.Dev)
	}
}

// expectSame reports every difference between the kernel's walk and
// other's, a few examples per field so that one systematic divergence does
// not hide the others.
func expectSame(t *testing.T, label string, kernel, other *Tree, opts DiffOptions) {
	t.Helper()
	diffs := Diff(kernel, other, opts)
	t.Logf("%s: compared %d kernel entries with %d entries: %d differences", label, len(kernel.Entries), len(other.Entries), len(diffs))
	if len(diffs) == 0 {
		return
	}
	byField := map[string][]string{}
	var order []string
	for _, d := range diffs {
		if _, seen := byField[d.Field]; !seen {
			order = append(order, d.Field)
		}
		byField[d.Field] = append(byField[d.Field], d.String())
	}
	var b strings.Builder
	for _, f := range order {
		fmt.Fprintf(&b, "%s (%d):\n  %s\n", f, len(byField[f]), strings.Join(examples(byField[f]), "\n  "))
	}
	t.Errorf("%s differs from the kernel:\n%s", label, b.String())
}

// examples shortens a long list of problems to its first few.
func examples(list []string) []string {
	const max = 12
	if len(list) <= max {
		return list
	}
	return append(list[:max:max], fmt.Sprintf("... and %d more", len(list)-max))
}

func expectConsistentInos(t *testing.T, label string, tree *Tree) {
	t.Helper()
	if bad := tree.DirentInoMismatches(); len(bad) > 0 {
		t.Errorf("%s: readdir d_ino differs from lstat st_ino (%d):\n  %s", label, len(bad), strings.Join(examples(bad), "\n  "))
	}
}

func expectSameIno(t *testing.T, label string, tree *Tree, paths ...string) {
	t.Helper()
	for _, p := range paths {
		e, ok := tree.Entries[p]
		if !ok {
			t.Errorf("%s: %s is missing", label, p)
			return
		}
		if first := tree.Entries[paths[0]]; e.Ino != first.Ino {
			t.Errorf("%s: hard links %s (ino %d) and %s (ino %d) differ", label, paths[0], first.Ino, p, e.Ino)
		}
	}
}

// checkMmap reads files through shared, read-only mappings, the way loaders
// and databases do, which takes a different kernel path than read(2).
func checkMmap(t *testing.T, label, dir string, want map[string]string) {
	t.Helper()
	for p, content := range want {
		f, err := os.Open(filepath.Join(dir, p))
		if err != nil {
			t.Errorf("%s: %v", label, err)
			continue
		}
		data, err := unix.Mmap(int(f.Fd()), 0, len(content), unix.PROT_READ, unix.MAP_SHARED)
		f.Close()
		if err != nil {
			t.Errorf("%s: mmap %s: %v", label, p, err)
			continue
		}
		if !bytes.Equal(data, []byte(content)) {
			t.Errorf("%s: mmap of %s does not show the file's content", label, p)
		}
		if err := unix.Munmap(data); err != nil {
			t.Error(err)
		}
	}
}

func expectEROFS(t *testing.T, label, dir string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "new-file"), os.O_CREATE|os.O_WRONLY, 0o644)
	if err == nil {
		f.Close()
	}
	if !errors.Is(err, unix.EROFS) {
		t.Errorf("%s: creating a file in a lowers-only mount: got %v, want EROFS", label, err)
	}
	if err := os.Mkdir(filepath.Join(dir, "new-dir"), 0o755); !errors.Is(err, unix.EROFS) {
		t.Errorf("%s: mkdir in a lowers-only mount: got %v, want EROFS", label, err)
	}
}

// countUnder counts the entries directly inside dir.
func countUnder(tree *Tree, dir string) int {
	n := 0
	for p := range tree.Entries {
		if filepath.Dir(p) == dir {
			n++
		}
	}
	return n
}

// richSpec builds the main read-path scenario: three lowers and, if
// withUpper, an upper layer, using every marker the kernel honours, with a
// directory "big" showing bigEntries names. It also returns the content of
// files worth reading through mmap.
func richSpec(withUpper bool, bigEntries int) (Spec, map[string]string) {
	long := strings.Repeat("n", 251) + "-255" // NAME_MAX bytes
	deep := "deep"
	var deepMid string
	for i := 1; i <= 30; i++ {
		deep += fmt.Sprintf("/d%02d", i)
		if i == 15 {
			deepMid = deep
		}
	}
	t1 := time.Date(2019, 5, 6, 7, 8, 9, 500000000, time.UTC)
	t2 := time.Date(2001, 9, 9, 1, 46, 40, 1, time.UTC)
	var big strings.Builder
	for i := 0; big.Len() < 3<<20+123; i++ {
		fmt.Fprintf(&big, "line %d of a file larger than a few pages\n", i)
	}
	mmapFiles := map[string]string{"mmap/big": big.String(), "mmap/small": "hello through mmap\n"}

	l2 := Layer{
		{Path: "shadowed", Kind: File, Content: "bottom"},
		{Path: "merged", Kind: Dir, Mode: 0o700, UID: 1000, Xattrs: map[string]string{"user.layer": "l2"}},
		{Path: "merged/from-l2", Kind: File, Content: "l2"},
		{Path: "merged/gone-by-upper", Kind: File, Content: "hidden by the upper"},
		{Path: "merged/gone-by-l0", Kind: File, Content: "hidden by l0"},
		{Path: "merged/deaddir/x", Kind: File, Content: "hidden with its dir"},
		{Path: "merged/sub/in-l2", Kind: File, Content: "l2"},
		{Path: "opaque-low/hidden", Kind: File, Content: "below an opaque dir"},
		{Path: "opaque-up/hidden", Kind: File, Content: "below an opaque upper dir"},
		{Path: "xw/a", Kind: File, Content: "a from l2"},
		{Path: "xw/c", Kind: File, Content: "c from l2"},
		{Path: "typeflip/inner", Kind: File, Content: "below a file"},
		{Path: "flip2", Kind: File, Content: "below a dir"},
		{Path: deep + "/leaf-l2", Kind: File, Content: "deep"},
		{Path: "special/fifo", Kind: Fifo, Mode: 0o600},
		{Path: "special/null", Kind: CharDev, Major: 1, Minor: 3, Mode: 0o666},
		{Path: "special/loop0", Kind: BlockDev, Major: 7, Minor: 0, Mode: 0o660, GID: 6},
		{Path: "special/sock", Kind: Socket},
		{Path: "sym/abs", Kind: Symlink, Target: "/etc/passwd"},
		{Path: "sym/outside", Kind: Symlink, Target: "../../../../etc"},
		{Path: "xattrs/file", Kind: File, Content: "x", Mode: 0o600, UID: 1000, GID: 100,
			Xattrs: map[string]string{"user.comment": "hello", "trusted.test": "t", "user.empty": ""}},
		{Path: "xattrs/dir", Kind: Dir, Xattrs: map[string]string{"user.dir": "1", "trusted.dir": "2"}},
		{Path: "names/" + long, Kind: File, Content: "long name", Mtime: t2},
	}
	l1 := Layer{
		{Path: "shadowed", Kind: File, Content: "middle", Mode: 0o600},
		{Path: "merged", Kind: Dir, Mode: 0o755, Xattrs: map[string]string{"user.layer": "l1"}},
		{Path: "merged/from-l1", Kind: File, Content: "l1", Mtime: t1},
		{Path: "merged/sub/in-l1", Kind: File, Content: "l1"},
		{Path: "opaque-low", Kind: Dir, Opaque: OpaqueTrusted},
		{Path: "opaque-low/visible-l1", Kind: File, Content: "in the opaque dir"},
		{Path: "xw/b", Kind: File, Content: "b from l1"},
		{Path: "links/a", Kind: File, Content: "linked", Mode: 0o640},
		{Path: "links/b", Kind: HardLink, Target: "links/a"},
		{Path: "links/sub/c", Kind: HardLink, Target: "links/a"},
		{Path: "sym/rel", Kind: Symlink, Target: "../shadowed"},
		{Path: "sym/dangling", Kind: Symlink, Target: "no/such/file"},
		{Path: "sym/abs-dir", Kind: Symlink, Target: "/etc"},
		{Path: deepMid + "/mid-l1", Kind: File, Content: "middle depth"},
		{Path: "mmap/big", Kind: File, Content: mmapFiles["mmap/big"]},
	}
	l0 := Layer{
		{Path: "merged", Kind: Dir, Mode: 0o751, GID: 50},
		{Path: "merged/from-l0", Kind: File, Content: "l0", UID: 65534, GID: 65534},
		{Path: "merged/gone-by-l0", Kind: Whiteout},
		{Path: "merged/deaddir", Kind: Whiteout},
		{Path: "typeflip", Kind: File, Content: "a file over a dir"},
		{Path: "flip2/inside", Kind: File, Content: "a dir over a file"},
		{Path: "xw", Kind: Dir, Opaque: OpaqueXWhiteouts},
		{Path: "xw/a", Kind: XWhiteout},
		{Path: "xw/kept", Kind: File, Content: "not a whiteout"},
		{Path: "xw/empty", Kind: File},
		{Path: "opaque-low/top", Kind: File, Content: "above the opaque dir"},
		{Path: "special/zero", Kind: CharDev, Major: 1, Minor: 5},
		{Path: deep + "/leaf-l0", Kind: File, Content: "deep too"},
		{Path: "mmap/small", Kind: File, Content: mmapFiles["mmap/small"]},
	}
	s := Spec{Lowers: []Layer{l0, l1, l2}}
	if withUpper {
		s.Upper = Layer{
			{Path: "shadowed", Kind: File, Content: "top", Mode: 0o640, UID: 1000, GID: 1000, Mtime: t1},
			{Path: "merged", Kind: Dir, Mode: 0o750, Mtime: t2},
			{Path: "merged/from-upper", Kind: File, Content: "upper"},
			{Path: "merged/gone-by-upper", Kind: Whiteout},
			{Path: "opaque-up", Kind: Dir, Opaque: OpaqueTrusted},
			{Path: "opaque-up/visible", Kind: File, Content: "upper"},
			{Path: "upper-only/sub/file", Kind: File, Content: "only in the upper"},
			{Path: "uplinks/x", Kind: File, Content: "upper link"},
			{Path: "uplinks/y", Kind: HardLink, Target: "uplinks/x"},
			{Path: "special/upfifo", Kind: Fifo},
			{Path: "special/upsock", Kind: Socket},
			{Path: "sym/rel-up", Kind: Symlink, Target: "../merged/from-l0"},
			{Path: "names/" + long + "/" + long, Kind: File, Content: "two long names"},
			{Path: "xattrs/up", Kind: File, Xattrs: map[string]string{"user.up": "u", "trusted.up": "tu"}},
			{Path: deepMid + "/up-file", Kind: File, Content: "upper, deep"},
		}
	}
	s.AddBigDir("big", bigEntries)
	return s, mmapFiles
}

func TestReadPathRich(t *testing.T) {
	prog := programUnderTest(t)
	const bigEntries = 10000
	spec, mmapFiles := richSpec(true, bigEntries)
	l := build(t, spec)
	mmapCheck := func(label string) func(string) {
		return func(dir string) { checkMmap(t, label, dir, mmapFiles) }
	}

	// The kernel writes to the upper layer when it mounts (origin and
	// impure xattrs on merged directories), so walk the program under test
	// once on pristine layers and once on layers the kernel has seen.
	before := mountAndWalk(t, prog, l, mmapCheck(prog.Name()))
	kernel := kernelReference(t, l, mmapCheck("kernel"))
	after := mountAndWalk(t, prog, l, nil)

	if n := countUnder(kernel, "big"); n != bigEntries {
		t.Fatalf("kernel shows %d entries in big, the spec means %d: the scenario is broken", n, bigEntries)
	}
	expectConsistentInos(t, "kernel", kernel)
	expectConsistentInos(t, prog.Name()+" (pristine layers)", before)
	expectConsistentInos(t, prog.Name()+" (after the kernel)", after)
	expectSame(t, prog.Name()+" (pristine layers)", kernel, before, DiffOptions{})
	expectSame(t, prog.Name()+" (after the kernel)", kernel, after, DiffOptions{})
}

func TestReadPathLowersOnly(t *testing.T) {
	prog := programUnderTest(t)
	const bigEntries = 2000
	spec, mmapFiles := richSpec(false, bigEntries)
	l := build(t, spec)
	check := func(label string) func(string) {
		return func(dir string) {
			checkMmap(t, label, dir, mmapFiles)
			expectEROFS(t, label, dir)
		}
	}

	got := mountAndWalk(t, prog, l, check(prog.Name()))
	kernel := mountAndWalk(t, Kernel{}, l, check("kernel"))

	if n := countUnder(kernel, "big"); n != bigEntries {
		t.Fatalf("kernel shows %d entries in big, the spec means %d: the scenario is broken", n, bigEntries)
	}
	expectConsistentInos(t, "kernel", kernel)
	expectConsistentInos(t, prog.Name(), got)
	expectSame(t, prog.Name(), kernel, got, DiffOptions{})
}

// TestReadPathAUFSMarkers covers the markers only userspace overlays read.
// The kernel ignores them, so the expectation is the kernel's view of the
// same layers with the markers translated to its own format; inode numbers
// cannot match because those are different files.
func TestReadPathAUFSMarkers(t *testing.T) {
	prog := programUnderTest(t)
	spec := Spec{
		Lowers: []Layer{
			{ // top
				{Path: "a/y", Kind: AUFSWhiteout},
				{Path: "d", Kind: Dir, Opaque: OpaqueFuse},
				{Path: "d/new", Kind: File, Content: "above a fuse-overlayfs opaque marker"},
				{Path: "g", Kind: Dir, Opaque: OpaqueAUFS},
				{Path: "g/new", Kind: File, Content: "above an AUFS opaque marker"},
			},
			{
				{Path: "a/x", Kind: AUFSWhiteout},
				{Path: "a/w", Kind: File, Content: "w from the middle"},
				{Path: "b", Kind: Dir, Opaque: OpaqueAUFS, Mode: 0o711},
				{Path: "b/new", Kind: File, Content: "new b"},
				{Path: "c", Kind: Dir, Opaque: OpaqueUser},
				{Path: "c/new", Kind: File, Content: "new c"},
				{Path: "links/p", Kind: File, Content: "linked"},
				{Path: "links/q", Kind: HardLink, Target: "links/p"},
				{Path: "gone-dir", Kind: AUFSWhiteout},
			},
			{ // bottom
				{Path: "a/w", Kind: File, Content: "w from the bottom"},
				{Path: "a/x", Kind: File, Content: "x"},
				{Path: "a/y", Kind: File, Content: "y"},
				{Path: "a/z", Kind: File, Content: "z"},
				{Path: "a/kept", Kind: File, Content: "kept"},
				{Path: "b/old", Kind: File, Content: "old"},
				{Path: "c/old", Kind: File, Content: "old"},
				{Path: "d/old", Kind: File, Content: "old"},
				{Path: "e/old", Kind: File, Content: "old"},
				{Path: "f/old", Kind: File, Content: "old"},
				{Path: "g/old", Kind: File, Content: "old"},
				{Path: "gone-dir/x", Kind: File, Content: "x"},
			},
		},
		Upper: Layer{
			{Path: "a/z", Kind: AUFSWhiteout},
			{Path: "e", Kind: Dir, Opaque: OpaqueAUFS},
			{Path: "e/new", Kind: File, Content: "new e"},
			{Path: "f", Kind: Dir, Opaque: OpaqueUser},
			{Path: "f/new", Kind: File, Content: "new f"},
			{Path: "h", Kind: Dir, Opaque: OpaqueFuse},
		},
	}
	got := mountAndWalk(t, prog, build(t, spec), nil)
	kernel := mountAndWalk(t, Kernel{}, build(t, spec.KernelEquivalent()), nil)

	expectConsistentInos(t, prog.Name(), got)
	expectSameIno(t, prog.Name(), got, "links/p", "links/q")
	expectSame(t, prog.Name()+" (AUFS markers)", kernel, got, DiffOptions{IgnoreInodeNumbers: true})
}

// TestHarnessKernelVsKernel checks the harness itself: two kernel mounts of
// the same layers must compare equal, and the kernel's d_ino must agree with
// its st_ino.
func TestHarnessKernelVsKernel(t *testing.T) {
	requireEnv(t)
	spec, _ := richSpec(true, 500)
	l := build(t, spec)
	reference := kernelReference(t, l, nil)
	again := mountAndWalk(t, Kernel{}, l, nil)
	expectConsistentInos(t, "kernel", reference)
	expectSame(t, "kernel (third mount)", reference, again, DiffOptions{})
}

// TestDiffReportsDifferences checks that Diff sees changes in compared
// fields, missing and extra paths, and ignores the normalised fields.
func TestDiffReportsDifferences(t *testing.T) {
	base := func() *Tree {
		return &Tree{Entries: map[string]*Entry{
			".": {Path: ".", Mode: unix.S_IFDIR | 0o755, Ino: 2},
			"f": {Path: "f", Mode: unix.S_IFREG | 0o644, Ino: 12, DIno: 12, Size: 3, SHA256: "abc"},
			"g": {Path: "g", Mode: unix.S_IFLNK | 0o777, Ino: 13, DIno: 13, Target: "f"},
		}}
	}
	kernel, other := base(), base()
	if d := Diff(kernel, other, DiffOptions{}); len(d) != 0 {
		t.Fatalf("identical trees differ: %v", d)
	}
	other.Entries["."].Ino = 1
	for _, e := range other.Entries {
		e.Dev, e.Atime, e.Ctime, e.Blocks, e.Blksize = 99, 1, 2, 3, 4
	}
	if d := Diff(kernel, other, DiffOptions{}); len(d) != 0 {
		t.Fatalf("normalised fields differ: %v", d)
	}
	other.Entries["f"].SHA256 = "abd"
	other.Entries["f"].Ino, other.Entries["f"].DIno = 14, 15
	other.Entries["f"].Xattrs = []Xattr{{Name: "user.a", Value: "b"}}
	delete(other.Entries, "g")
	other.Entries["h"] = &Entry{Path: "h", Mode: unix.S_IFIFO}
	want := []Difference{
		{Path: "f", Field: "d_ino", Kernel: "12", Other: "15"},
		{Path: "f", Field: "st_ino", Kernel: "12", Other: "14"},
		{Path: "f", Field: "content sha256", Kernel: "abc", Other: "abd"},
		{Path: "f", Field: "xattrs", Kernel: "[]", Other: `[user.a="b"]`},
		{Path: "g", Field: "exists", Kernel: "symlink", Other: "missing"},
		{Path: "h", Field: "exists", Kernel: "missing", Other: "fifo"},
	}
	got := Diff(kernel, other, DiffOptions{})
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Diff:\n got %v\nwant %v", got, want)
	}
	if d := Diff(kernel, other, DiffOptions{IgnoreInodeNumbers: true}); len(d) != len(want)-2 {
		t.Errorf("IgnoreInodeNumbers still reports: %v", d)
	}
	if bad := other.DirentInoMismatches(); len(bad) != 1 || !strings.HasPrefix(bad[0], "f:") {
		t.Errorf("DirentInoMismatches = %v, want one for f", bad)
	}
}
