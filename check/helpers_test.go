package check

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// privateEnv marks the test process TestMain started in a mount
// namespace of its own.
const privateEnv = "OVLMOUNT_CHECK_TEST_PRIVATE"

// TestMain runs the tests below a temporary directory named for this
// process, after taking down what dead test runs left behind. As root it
// runs them in a mount namespace of their own, in a child: a kernel
// overlay mount with index=on holds its upper directory until its
// superblock goes, and a mount namespace another test makes meanwhile
// (the cmd/ovlmount tests make many) copies the mount and keeps it after
// the unmount here, so that the next mount of the same stack would fail
// (EBUSY). Mounts in a namespace of their own are copied nowhere, and go
// with it.
func TestMain(m *testing.M) {
	if os.Getenv(privateEnv) == "" && initialRoot() {
		cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
		cmd.Env = append(os.Environ(), privateEnv+"=1")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		// Go makes the new namespace's mounts private.
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit):
			os.Exit(exit.ExitCode())
		case err != nil:
			fmt.Fprintf(os.Stderr, "check tests: %v\n", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	done := testenv.Start()
	code := m.Run()
	done()
	os.Exit(code)
}

// requireRoot skips a test that needs root (mknod, trusted.* xattrs, file
// handles, mounts), or fails it with CI=true, so that CI never passes by
// skipping.
func requireRoot(t *testing.T) {
	t.Helper()
	if initialRoot() {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("check tests need root outside a user namespace (CI=true: failing instead of skipping)")
	}
	t.Skip("check tests need root outside a user namespace")
}

// testStack is a stack in a temporary directory: lower layers l1..lN,
// upper, workdir w, and a mountpoint m for kernel mounts of it.
type testStack struct {
	base string
	Stack
}

func newStack(t *testing.T, lowers int) *testStack {
	t.Helper()
	base := t.TempDir()
	s := &testStack{base: base}
	for i := 1; i <= lowers; i++ {
		s.Lower = append(s.Lower, filepath.Join(base, "l"+string(rune('0'+i))))
	}
	s.Upper, s.Work = filepath.Join(base, "u"), filepath.Join(base, "w")
	for _, d := range append(s.Lower, s.Upper, s.Work, filepath.Join(base, "m")) {
		testenv.Must(t, os.MkdirAll(d, 0o755))
	}
	return s
}

// p returns the path of rel below the stack's base ("u/a/b").
func (s *testStack) p(rel string) string { return filepath.Join(s.base, rel) }

// build makes the tree spec describes below the stack's base, one item
// each: "l1/d/" a directory, "l1/f=text" a file, "l1/g>l1/f" a hard link
// of l1/f, "l1/s->target" a symlink, "u/x=c0:0" a char device.
func (s *testStack) build(t *testing.T, spec ...string) {
	t.Helper()
	for _, item := range spec {
		switch {
		case strings.HasSuffix(item, "/"):
			testenv.Must(t, os.MkdirAll(s.p(item), 0o755))
		case strings.Contains(item, "->"):
			name, target, _ := strings.Cut(item, "->")
			testenv.Must(t, os.MkdirAll(filepath.Dir(s.p(name)), 0o755))
			testenv.Must(t, os.Symlink(target, s.p(name)))
		case charDevice.MatchString(item):
			m := charDevice.FindStringSubmatch(item)
			testenv.Must(t, os.MkdirAll(filepath.Dir(s.p(m[1])), 0o755))
			testenv.Must(t, unix.Mknod(s.p(m[1]), unix.S_IFCHR, int(unix.Mkdev(atoi(t, m[2]), atoi(t, m[3])))))
		case strings.Contains(item, ">"):
			name, target, _ := strings.Cut(item, ">")
			testenv.Must(t, os.Link(s.p(target), s.p(name)))
		default:
			name, text, _ := strings.Cut(item, "=")
			testenv.Must(t, os.MkdirAll(filepath.Dir(s.p(name)), 0o755))
			testenv.Must(t, os.WriteFile(s.p(name), []byte(text), 0o644))
		}
	}
}

var charDevice = regexp.MustCompile(`^([^=]*)=c([0-9]+):([0-9]+)$`)

func atoi(t *testing.T, s string) uint32 {
	t.Helper()
	n := uint32(0)
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("not a number: %q", s)
		}
		n = n*10 + uint32(c-'0')
	}
	return n
}

// setx sets xattr name of rel (not following a symlink) to value.
func (s *testStack) setx(t *testing.T, rel, name, value string) {
	t.Helper()
	testenv.Must(t, unix.Lsetxattr(s.p(rel), name, []byte(value), 0))
}

// check runs Run on the stack and returns its findings.
func (s *testStack) check(t *testing.T, o Options) ([]Finding, Result) {
	t.Helper()
	var fs []Finding
	res, err := Run(s.Stack, o, func(f Finding) { fs = append(fs, f) })
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Found != len(fs) {
		t.Errorf("Result.Found %d, %d findings reported", res.Found, len(fs))
	}
	return fs, res
}

// wantFindings checks that fs are exactly one finding for each of want,
// a map from a path relative to the base to a part of its problem, and
// that each is repaired or not as repaired says.
func (s *testStack) wantFindings(t *testing.T, fs []Finding, want map[string]string, repaired bool) {
	t.Helper()
	left := map[string]string{}
	for k, v := range want {
		left[s.p(k)] = v
	}
	for _, f := range fs {
		part, ok := left[f.Path]
		switch {
		case !ok:
			t.Errorf("unexpected finding: %s", f)
		case !strings.Contains(f.Problem, part):
			t.Errorf("finding %s: want a problem saying %q", f, part)
		case (f.Repair != "") != repaired:
			t.Errorf("finding %s: repaired %v, want %v", f, f.Repair != "", repaired)
		}
		delete(left, f.Path)
	}
	for p, part := range left {
		t.Errorf("no finding for %s (%q)", p, part)
	}
}

// clean checks that the stack has no finding.
func (s *testStack) clean(t *testing.T) {
	t.Helper()
	fs, _ := s.check(t, Options{})
	for _, f := range fs {
		t.Errorf("unexpected finding: %s", f)
	}
}

// options returns the kernel mount options of the stack, with extra.
func (s *testStack) options(extra string) string {
	opts := "lowerdir=" + strings.Join(s.Lower, ":")
	for _, d := range s.Data {
		opts += "::" + d
	}
	if s.Upper != "" {
		opts += ",upperdir=" + s.Upper + ",workdir=" + s.Work
	}
	if extra != "" {
		opts += "," + extra
	}
	return opts
}

// tryMount mounts a kernel overlay of the stack on m with extra options.
func (s *testStack) tryMount(extra string) error {
	return unix.Mount("overlay", s.p("m"), "overlay", 0, s.options(extra))
}

// mount mounts a kernel overlay of the stack on m with extra options, and
// returns its unmount; the test's end unmounts it too.
func (s *testStack) mount(t *testing.T, extra string) func() {
	t.Helper()
	mnt := s.p("m")
	if err := s.tryMount(extra); err != nil {
		if err == unix.ENODEV && os.Getenv("CI") != "true" {
			t.Skip("no overlay filesystem in this kernel")
		}
		t.Fatalf("mount -t overlay -o %s: %v", s.options(extra), err)
	}
	mounted := true
	umount := func() {
		if mounted {
			mounted = false
			testenv.Must(t, unix.Unmount(mnt, 0))
		}
	}
	t.Cleanup(func() {
		if mounted {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return umount
}
