package check

import (
	"encoding/hex"
	"errors"
	"os"
	"testing"

	"github.com/ovlmount/ovlmount/internal/fsverity"
	"github.com/ovlmount/ovlmount/internal/testenv"
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// Stacks built by hand, with one kind of fault planted in each; kernel_test.go
// checks the stacks the kernel writes, and what the kernel does with each
// fault.

var (
	tOpaque   = layers.Trusted.Name(layers.XattrOpaque)
	tRedirect = layers.Trusted.Name(layers.XattrRedirect)
	tOrigin   = layers.Trusted.Name(layers.XattrOrigin)
	tMetacopy = layers.Trusted.Name(layers.XattrMetacopy)
	tWhiteout = layers.Trusted.Name(layers.XattrWhiteout)
	tNlink    = layers.Trusted.Name(layers.XattrNlink)
	uOpaque   = layers.User.Name(layers.XattrOpaque)
)

// origin returns the overlay.origin value naming the object at path, as
// the kernel writes it.
func origin(t *testing.T, path string) string {
	t.Helper()
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, path, 0)
	testenv.Must(t, err)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	testenv.Must(t, err)
	defer unix.Close(fd)
	uuid, err := layers.FSUUID(fd)
	testenv.Must(t, err)
	v, err := layers.EncodeOrigin(uuid, h)
	testenv.Must(t, err)
	return string(v)
}

func TestClean(t *testing.T) {
	requireRoot(t)
	s := newStack(t, 2)
	s.build(t, "l1/d/", "l1/d/f=one", "l2/d/g=two", "l2/e/", "l2/link->d/g",
		"u/d/", "u/d/f=changed", "u/d/gone=c0:0", "u/new/", "u/new/x=")
	s.setx(t, "u/new", tOpaque, "y")
	s.setx(t, "u/d/f", tOrigin, origin(t, s.p("l1/d/f")))
	s.setx(t, "u/d", tOrigin, origin(t, s.p("l1/d")))
	// A user's own trusted.overlay.* xattr, escaped.
	s.setx(t, "u/d/f", string(layers.Trusted)+"overlay.mine", "x")
	s.clean(t)
}

func TestWhiteoutForm(t *testing.T) {
	requireRoot(t)
	s := newStack(t, 1)
	s.build(t, "l1/a=1", "l1/b=2", "u/a=c0:5", "l1/c=c0:7", "u/dev=c1:3")
	fs, res := s.check(t, Options{})
	s.wantFindings(t, fs, map[string]string{"u/a": "char device 0:5", "l1/c": "lower layers are never written"}, false)
	if res.Found != 2 || res.Repaired != 0 {
		t.Errorf("result %+v", res)
	}
	fs, res = s.check(t, Options{Repair: true})
	// The upper layer is checked first.
	s.wantFindings(t, fs[:1], map[string]string{"u/a": "char device 0:5"}, true)
	s.wantFindings(t, fs[1:], map[string]string{"l1/c": "char device 0:7"}, false)
	if res.Repaired != 1 {
		t.Errorf("result %+v, want one repaired", res)
	}
	var st unix.Stat_t
	testenv.Must(t, unix.Lstat(s.p("u/a"), &st))
	if !layers.IsWhiteout(&st) {
		t.Errorf("u/a after repair: mode %o rdev %d:%d", st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	testenv.Must(t, unix.Lstat(s.p("l1/c"), &st))
	if unix.Minor(st.Rdev) != 7 {
		t.Error("repair changed a lower layer")
	}
}

func TestOpaqueForm(t *testing.T) {
	requireRoot(t)
	s := newStack(t, 1)
	s.build(t, "l1/a/", "l1/b/", "l1/c/", "l1/f=", "u/a/", "u/b/", "u/c/", "u/f=")
	s.setx(t, "u/a", tOpaque, "yes")
	s.setx(t, "u/b", tOpaque, "y")
	s.setx(t, "u/c", tOpaque, "x")
	s.setx(t, "u/f", tOpaque, "y")
	fs, _ := s.check(t, Options{Repair: true})
	s.wantFindings(t, fs, map[string]string{"u/a": `is "yes"`, "u/f": "directories only"}, false)
}

func TestXWhiteout(t *testing.T) {
	requireRoot(t)
	s := newStack(t, 2)
	s.build(t, "l1/x/", "l1/x/gone=", "l1/y/", "l1/y/gone=", "l1/y/full=data", "l2/x/gone=a", "l2/y/gone=b", "l2/y/full=c")
	s.setx(t, "l1/x", tOpaque, "x")
	s.setx(t, "l1/x/gone", tWhiteout, "")
	s.setx(t, "l1/y/gone", tWhiteout, "")
	s.setx(t, "l1/y/full", tWhiteout, "")
	fs, _ := s.check(t, Options{})
	s.wantFindings(t, fs, map[string]string{"l1/y/gone": "not marked overlay.opaque=x", "l1/y/full": "a regular file of 4 bytes"}, false)
}

func TestNamespacesMixed(t *testing.T) {
	requireRoot(t)
	s := newStack(t, 1)
	s.build(t, "l1/a/", "u/a/", "u/b/", "u/c/")
	s.setx(t, "u/a", tOpaque, "y")
	s.setx(t, "u/b", tOpaque, "y")
	s.setx(t, "u/c", uOpaque, "y")
	fs, _ := s.check(t, Options{})
	s.wantFindings(t, fs, map[string]string{"u/c": "carries user.overlay.* xattrs while 2 other objects"}, false)
}

func TestRedirect(t *testing.T) {
	requireRoot(t)
	s := newStack(t, 2)
	s.build(t, "l1/a/", "l1/a/in=1", "l2/deep/er/", "l2/deep/er/x=2", "l1/p/", "l1/p/q/",
		"u/ok/", "u/abs/", "u/none/", "u/empty/", "u/slash/", "u/p/", "u/p/q2/", "u/opq/", "u/dots/", "u/dot/")
	s.setx(t, "u/ok", tRedirect, "a")
	s.setx(t, "u/abs", tRedirect, "/deep/er")
	s.setx(t, "u/none", tRedirect, "nothing")
	s.setx(t, "u/empty", tRedirect, "")
	s.setx(t, "u/slash", tRedirect, "a/b")
	// Relative to its parent's place below: p/q.
	s.setx(t, "u/p/q2", tRedirect, "q")
	// Never out of the layer.
	s.setx(t, "u/dots", tRedirect, "/../l2")
	s.setx(t, "u/dot", tRedirect, "..")
	// An opaque directory's redirect is not read.
	s.setx(t, "u/opq", tRedirect, "nothing")
	s.setx(t, "u/opq", tOpaque, "y")
	fs, _ := s.check(t, Options{})
	s.wantFindings(t, fs, map[string]string{
		"u/none":  "reaches no directory",
		"u/empty": "is empty (EINVAL)",
		"u/slash": "relative but has a '/'",
		"u/dots":  `the name ".."`,
		"u/dot":   `the name ".."`,
	}, false)
}

func TestMetacopy(t *testing.T) {
	requireRoot(t)
	s := newStack(t, 2)
	s.build(t, "l1/ok=12345", "l2/deeper=123", "l1/deeper=",
		"l1/short=12", "l1/d/", "l1/dir/", "l2/dir/renamed=abc", "l1/big=",
		"u/ok=", "u/deeper=", "u/short=", "u/none=", "u/d=", "u/moved=", "u/bad=", "u/big=")
	for _, f := range []string{"u/ok", "u/deeper", "u/short", "u/none", "u/d", "u/moved", "u/bad", "u/big"} {
		s.setx(t, f, tMetacopy, "")
	}
	testenv.Must(t, os.Truncate(s.p("u/ok"), 5))
	testenv.Must(t, os.Truncate(s.p("l1/deeper"), 3))
	s.setx(t, "l1/deeper", tMetacopy, "")
	testenv.Must(t, os.Truncate(s.p("u/deeper"), 3))
	testenv.Must(t, os.Truncate(s.p("u/short"), 5))
	s.setx(t, "u/moved", tRedirect, "/dir/renamed")
	testenv.Must(t, os.Truncate(s.p("u/moved"), 3))
	s.setx(t, "u/bad", tMetacopy, "ab")
	s.setx(t, "u/big", tMetacopy, "\x01\x05\x00\x01\x00")
	fs, _ := s.check(t, Options{})
	s.wantFindings(t, fs, map[string]string{
		"u/short": "whose data, " + s.p("l1/short") + ", has 2",
		"u/none":  "whose data is in no layer below",
		"u/d":     "whose data is in no layer below",
		"u/bad":   "2 bytes, too small (EIO)",
		"u/big":   "unsupported version 1 (EIO)",
	}, false)
}

func TestMetacopyDigest(t *testing.T) {
	requireRoot(t)
	s := newStack(t, 1)
	s.build(t, "l1/a=data", "l1/b=data", "l1/c=data", "u/a=", "u/b=", "u/c=", "u/d=", "l1/d=data")
	fd, err := unix.Open(s.p("l1/a"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	testenv.Must(t, err)
	sum, err := fsverity.Digest(fd, fsverity.SHA256)
	unix.Close(fd)
	testenv.Must(t, err)
	other := append([]byte(nil), sum...)
	other[0] ^= 1
	s.setx(t, "u/a", tMetacopy, "\x00\x24\x00\x01"+string(sum))
	s.setx(t, "u/b", tMetacopy, "\x00\x24\x00\x01"+string(other))
	// No algorithm: the kernel takes it for no digest at all.
	s.setx(t, "u/c", tMetacopy, "\x00\x24\x00\x00"+string(other))
	// A digest of SHA-512's length for SHA-256.
	s.setx(t, "u/d", tMetacopy, "\x00\x44\x00\x01"+string(other)+string(other))
	for _, f := range []string{"u/a", "u/b", "u/c", "u/d"} {
		testenv.Must(t, os.Truncate(s.p(f), 4))
	}
	fs, _ := s.check(t, Options{Digests: true})
	s.wantFindings(t, fs, map[string]string{
		"u/b": "digest sha256:" + hex.EncodeToString(other),
		"u/d": "digest sha256:" + hex.EncodeToString(other) + hex.EncodeToString(other),
	}, false)
	s.clean(t)
}

func TestOrigin(t *testing.T) {
	requireRoot(t)
	s := newStack(t, 1)
	s.build(t, "l1/f=1", "l1/gone=2", "l1/d/", "l1/e=", "u/f=1", "u/gone=2", "u/d/", "u/e/", "u/junk=", "u/empty=")
	s.setx(t, "u/f", tOrigin, origin(t, s.p("l1/f")))
	s.setx(t, "u/gone", tOrigin, origin(t, s.p("l1/gone")))
	testenv.Must(t, os.Remove(s.p("l1/gone")))
	s.setx(t, "u/d", tOrigin, origin(t, s.p("l1/d")))
	s.setx(t, "u/e", tOrigin, origin(t, s.p("l1/e")))
	s.setx(t, "u/junk", tOrigin, "\x00\xfa\x15")
	s.setx(t, "u/empty", tOrigin, "")
	fs, _ := s.check(t, Options{Repair: true})
	s.wantFindings(t, fs, map[string]string{
		"u/gone": "names nothing in the lower layers",
		"u/e":    "another type",
		"u/junk": "not a file handle",
	}, false)

	// A directory's origin outside the lower layers: the upper layer
	// was made over other ones.
	s.build(t, "elsewhere/")
	s.setx(t, "u/d", tOrigin, origin(t, s.p("elsewhere")))
	fs, _ = s.check(t, Options{})
	s.wantFindings(t, fs, map[string]string{
		"u/gone": "names nothing in the lower layers",
		"u/e":    "another type",
		"u/junk": "not a file handle",
		"u/d":    "outside the lower layers",
	}, false)
}

func TestWork(t *testing.T) {
	requireRoot(t)
	s := newStack(t, 1)
	s.build(t, "l1/a=", "w/work/#1=partial copy", "w/work/#2/", "w/work/#2/#3=c0:0",
		"w/work/#4/sub/deeper/", "w/work/#5=c0:0", "w/work/incompat/volatile/dirty=", "w/other=kept")
	fs, res := s.check(t, Options{})
	want := map[string]string{
		"w/work/#1":                "interrupted",
		"w/work/#2":                "interrupted",
		"w/work/#4":                "mounts the stack read-only",
		"w/work/incompat/volatile": "refuses to mount",
	}
	s.wantFindings(t, fs, want, false)
	if res.Found != 4 || res.Repaired != 0 {
		t.Errorf("result %+v", res)
	}
	fs, res = s.check(t, Options{Repair: true})
	if res.Repaired != 3 {
		t.Errorf("result %+v, want 3 repaired", res)
	}
	for _, f := range fs {
		if (f.Repair != "") == (f.Path == s.p("w/work/incompat/volatile")) {
			t.Errorf("finding %s", f)
		}
	}
	names := testenv.DirNames(t, s.p("w/work"))
	if len(names) != 2 || names[0] != "#5" || names[1] != "incompat" {
		t.Errorf("work holds %v after repair, want the shared whiteout and incompat", names)
	}
	if _, err := os.Stat(s.p("w/other")); err != nil {
		t.Errorf("repair touched the workdir beside work: %v", err)
	}
}

func TestLayout(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name  string
		edit  func(s *testStack)
		path  string
		words string
		// through is where a kernel mount of the stack fails lookups
		// with ELOOP; "" when it refuses the mount.
		through string
	}{
		{"work in upper", func(s *testStack) { s.Work = s.p("u/w") }, "u/w", "EINVAL", ""},
		{"upper in work", func(s *testStack) { s.Upper = s.p("w/u") }, "w/u", "EINVAL", ""},
		{"lower is upper", func(s *testStack) { s.Lower = append(s.Lower, s.Upper) }, "u", "ELOOP: conflicting", ""},
		{"lower in lower", func(s *testStack) { s.Lower = append(s.Lower, s.p("l1/sub")) }, "l1/sub", "ELOOP: overlapping", ""},
		{"upper in lower", func(s *testStack) { s.Upper = s.p("l1/sub") }, "l1/sub", "lookups that reach it", "sub"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t, 1)
			s.build(t, "l1/sub/", "u/w/", "w/u/")
			tc.edit(s)
			s.build(t, "u/w/work/#1=")
			fs, _ := s.check(t, Options{Repair: true})
			s.wantFindings(t, fs, map[string]string{tc.path: tc.words}, false)
			if _, err := os.Stat(s.p("u/w/work/#1")); err != nil {
				t.Errorf("repair went on through overlapping layers: %v", err)
			}
			err := s.tryMount("")
			if err == nil {
				defer unix.Unmount(s.p("m"), 0)
			}
			switch {
			case err == unix.ENODEV && os.Getenv("CI") != "true":
				t.Skip("no overlay filesystem in this kernel")
			case tc.through == "" && err == nil:
				t.Error("the kernel mounts the stack")
			case tc.through != "" && err != nil:
				t.Errorf("the kernel refuses the stack: %v", err)
			case tc.through != "":
				if _, err := os.Stat(s.p("m/" + tc.through)); !errors.Is(err, unix.ELOOP) {
					t.Errorf("the kernel looks up %s: %v, want ELOOP", tc.through, err)
				}
			}
		})
	}
}

func TestWorkOnAnotherMount(t *testing.T) {
	requireRoot(t)
	s := newStack(t, 1)
	testenv.Must(t, unix.Mount(s.Work, s.Work, "", unix.MS_BIND, ""))
	t.Cleanup(func() { unix.Unmount(s.Work, unix.MNT_DETACH) })
	fs, _ := s.check(t, Options{})
	s.wantFindings(t, fs, map[string]string{"w": "not on the mount of upperdir"}, false)
	if err := s.tryMount(""); err != unix.EINVAL && err != unix.ENODEV {
		if err == nil {
			unix.Unmount(s.p("m"), 0)
		}
		t.Errorf("the kernel mounts it: %v, want EINVAL", err)
	}
}

func TestParseHandle(t *testing.T) {
	good := "\x00\xfb\x1d\x00\x01" + string(make([]byte, 16)) + "\x01\x02\x03\x04\x05\x06\x07\x08"
	for _, tc := range []struct {
		v       string
		unknown bool
		bad     bool
	}{
		{good, false, false},
		{good + "extra", false, false},
		{good[:20], false, true},
		{good[:28], false, true},
		{"\x00\xfa" + good[2:], false, true},
		{"\x01" + good[1:], true, false},
		{good[:3] + "\x08" + good[4:], true, false},
	} {
		fh, unknown, bad := parseHandle([]byte(tc.v))
		if unknown != tc.unknown || (bad != "") != tc.bad {
			t.Errorf("parseHandle(%x) = unknown %v, bad %q", tc.v, unknown, bad)
		}
		if !unknown && bad == "" && len(fh.raw) != 29 {
			t.Errorf("parseHandle(%x): raw %x", tc.v, fh.raw)
		}
	}
}

func TestNlinkForm(t *testing.T) {
	for v, ok := range map[string]bool{"U+0": true, "L-1": true, "U+12": true, "U": false, "X+1": false, "U+": false, "U+1a": false, "U+1234567890123": false} {
		if (nlinkProblem([]byte(v)) == "") != ok {
			t.Errorf("nlinkProblem(%q) = %q", v, nlinkProblem([]byte(v)))
		}
	}
}
