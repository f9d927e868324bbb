package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/fsverity"
	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// Stacks in the formats the kernel writes with redirect_dir=on and
// metacopy=on, and composefs-style data-only layers, read by ovlmount and
// by the kernel with the same read options: every name, type, mode, size,
// block count, inode number and content, or the errno of each, must
// agree.

// stackDirs are one stack's directories.
type stackDirs struct {
	lower, upper, work string
	lowers             string // the lowerdir value
}

func newStackDirs(t *testing.T) stackDirs {
	d := t.TempDir()
	s := stackDirs{lower: d + "/lower", upper: d + "/upper", work: d + "/work"}
	testenv.MakeTree(t, d, "d lower", "d upper", "d work")
	s.lowers = s.lower
	return s
}

// options is the -o value that mounts s, with opts after the layers.
func (s stackDirs) options(opts string) string {
	o := "lowerdir=" + s.lowers
	if s.upper != "" {
		o += ",upperdir=" + s.upper + ",workdir=" + s.work
	}
	if opts != "" {
		o += "," + opts
	}
	return o
}

// kernelMount mounts the kernel's overlay of s with opts at a new
// directory until the test ends, or until the returned function is
// called.
func kernelMount(t *testing.T, s stackDirs, opts string) (string, func()) {
	t.Helper()
	mnt := t.TempDir()
	o := s.options(opts)
	if out, err := exec.Command("mount", "-t", "overlay", "overlay", "-o", o, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount -t overlay -o %s: %v\n%s", o, err, out)
	}
	done := false
	unmount := func() {
		if !done {
			done = true
			testenv.Unmount(t, mnt)
		}
	}
	t.Cleanup(unmount)
	return mnt, unmount
}

// ovlMount is kernelMount for ovlmount.
func ovlMount(t *testing.T, s stackDirs, opts string) (string, func()) {
	t.Helper()
	mnt := t.TempDir()
	mountDaemon(t, mnt, "-o", s.options(opts), mnt)
	return mnt, func() { testenv.Unmount(t, mnt) }
}

// implMount mounts s without options until the test ends, with the
// kernel's overlay (impl "kernel") or ovlmount, and returns the mountpoint.
func implMount(t *testing.T, impl string, s stackDirs) string {
	t.Helper()
	mount := ovlMount
	if impl == "kernel" {
		mount = kernelMount
	}
	mnt, _ := mount(t, s, "")
	return mnt
}

// oldTimes is a time (2010) before any a test's own files get: the view
// shows mtimes before it, which tests set to see that they are kept.
const oldTimes = 1262304000

// view is what a tree shows through a mount, one line an entry, errors
// included.
func view(t *testing.T, mnt string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(mnt, p)
		if err != nil {
			out = append(out, fmt.Sprintf("%s: %v", rel, errnoOf(err)))
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			out = append(out, fmt.Sprintf("%s: lstat %v", rel, errnoOf(err)))
			return nil
		}
		line := fmt.Sprintf("%s %o size=%d blocks=%d ino=%d", rel, st.Mode, st.Size, st.Blocks, st.Ino)
		if st.Mtim.Sec < oldTimes {
			// A time a test set, kept through whatever it did.
			line += fmt.Sprintf(" mtime=%d", st.Mtim.Sec)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			f, err := os.Open(p)
			if err != nil {
				line += fmt.Sprintf(" open %v", errnoOf(err))
			} else {
				h := sha256.New()
				_, err := io.Copy(h, f)
				f.Close()
				line += fmt.Sprintf(" data=%x err=%v", h.Sum(nil)[:6], errnoOf(err))
			}
		}
		out = append(out, line)
		return nil
	})
	return out
}

func errnoOf(err error) string {
	if err == nil {
		return "-"
	}
	var e unix.Errno
	for u := err; u != nil; {
		if x, ok := u.(unix.Errno); ok {
			e = x
			break
		}
		w, ok := u.(interface{ Unwrap() error })
		if !ok {
			break
		}
		u = w.Unwrap()
	}
	if e == 0 {
		return err.Error()
	}
	return unix.ErrnoName(e)
}

// sameView mounts s with opts by the kernel and by ovlmount and fails on
// any difference in what they show.
func sameView(t *testing.T, s stackDirs, opts string) {
	t.Helper()
	kmnt, kdone := kernelMount(t, s, opts)
	want := view(t, kmnt)
	kdone()
	omnt, odone := ovlMount(t, s, opts)
	got := view(t, omnt)
	odone()
	if !slices.Equal(got, want) {
		t.Errorf("with %q ovlmount shows\n  %s\nthe kernel\n  %s", opts, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestReadsKernelRedirects(t *testing.T) {
	testenv.RequireMount(t)
	s := newStackDirs(t)
	testenv.MakeTree(t, s.lower, "f a/x x", "f a/sub/s s", "f a/sub/deep/d d", "f p/f f", "f m/inner/i i")
	// The kernel writes redirects: relative (a renamed in place),
	// absolute (moved into another directory), one inside the other.
	mnt, done := kernelMount(t, s, "redirect_dir=on")
	for _, mv := range [][2]string{{"a", "b"}, {"b/sub", "p/sub2"}, {"p/sub2/deep", "deep2"}, {"m", "p/m2"}} {
		testenv.Must(t, os.Rename(filepath.Join(mnt, mv[0]), filepath.Join(mnt, mv[1])))
	}
	testenv.Must(t, os.WriteFile(filepath.Join(mnt, "b/new"), []byte("n"), 0o644))
	done()
	for _, opts := range []string{"", "redirect_dir=on", "redirect_dir=follow", "redirect_dir=nofollow", "redirect_dir=off"} {
		sameView(t, s, opts)
	}
}

func TestReadsKernelMetacopy(t *testing.T) {
	testenv.RequireMount(t)
	s := newStackDirs(t)
	testenv.Must(t, os.MkdirAll(filepath.Join(s.lower, "d"), 0o755))
	for p, size := range map[string]int{"f": 100, "g": 5000, "d/h": 70000, "w": 10} {
		testenv.Must(t, os.WriteFile(filepath.Join(s.lower, p), []byte(strings.Repeat(p[:1], size)), 0o644))
	}
	mnt, done := kernelMount(t, s, "metacopy=on")
	testenv.Must(t, os.Chmod(filepath.Join(mnt, "f"), 0o600))
	testenv.Must(t, os.Rename(filepath.Join(mnt, "g"), filepath.Join(mnt, "g2")))
	testenv.Must(t, os.Rename(filepath.Join(mnt, "d/h"), filepath.Join(mnt, "h2")))
	testenv.Must(t, os.Chmod(filepath.Join(mnt, "w"), 0o600))
	f, err := os.OpenFile(filepath.Join(mnt, "w"), os.O_WRONLY|os.O_APPEND, 0)
	testenv.Must(t, err)
	f.WriteString("more")
	f.Close()
	done()
	for _, opts := range []string{"metacopy=on", "", "metacopy=off"} {
		sameView(t, s, opts)
	}
}

func TestReadsDataOnlyLayers(t *testing.T) {
	testenv.RequireMount(t)
	d := t.TempDir()
	meta, meta2, data := d+"/meta", d+"/meta2", d+"/data"
	for _, p := range []string{meta + "/dir", meta2, data + "/ab"} {
		testenv.Must(t, os.MkdirAll(p, 0o755))
	}
	testenv.Must(t, os.WriteFile(data+"/ab/cdef", []byte("the object's content\n"), 0o644))
	// A composefs-style metadata layer: sparse files as big as their
	// data, marked metacopy, redirected to a data-only layer; one whose
	// data is missing.
	for name, target := range map[string]string{"dir/f": "/ab/cdef", "missing": "/no/such"} {
		p := filepath.Join(meta, name)
		testenv.Must(t, os.Truncate(mkfile(t, p), 21))
		testenv.Must(t, unix.Lsetxattr(p, "trusted.overlay.metacopy", nil, 0))
		testenv.Must(t, unix.Lsetxattr(p, "trusted.overlay.redirect", []byte(target), 0))
	}
	s := stackDirs{lowers: meta + ":" + meta2 + "::" + data}
	sameView(t, s, "metacopy=on,redirect_dir=on")
}

func mkfile(t *testing.T, p string) string {
	t.Helper()
	testenv.Must(t, os.WriteFile(p, nil, 0o640))
	return p
}

// sameWrites makes the lower layer with mk twice, runs ops through a
// kernel mount of one stack and through ovlmount on the other, both with
// opts, and fails unless both show the same, each implementation shows
// the other's stack the same, and the upper layers hold the same names,
// types and overlay xattrs (origins, which hold file handles, compared by
// presence; uuids left out).
func sameWrites(t *testing.T, opts string, mk func(lower string), ops func(t *testing.T, mnt string)) {
	t.Helper()
	k, o := newStackDirs(t), newStackDirs(t)
	mk(k.lower)
	mk(o.lower)
	kmnt, kdone := kernelMount(t, k, opts)
	ops(t, kmnt)
	kview := view(t, kmnt)
	kdone()
	omnt, odone := ovlMount(t, o, opts)
	ops(t, omnt)
	oview := view(t, omnt)
	odone()
	if !equalIgnoringIno(oview, kview) {
		t.Errorf("after the same changes with %q ovlmount shows\n  %s\nthe kernel\n  %s", opts, strings.Join(oview, "\n  "), strings.Join(kview, "\n  "))
	}
	if got, want := upperShape(t, o.upper), upperShape(t, k.upper); !slices.Equal(got, want) {
		t.Errorf("with %q ovlmount's upper layer holds\n  %s\nthe kernel's\n  %s", opts, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	// Each reads the other's stack.
	sameView(t, k, opts)
	sameView(t, o, opts)
}

// equalIgnoringIno compares two views but for inode numbers, which differ
// between two copies of the lower layer.
func equalIgnoringIno(a, b []string) bool {
	strip := func(v []string) []string {
		out := make([]string, len(v))
		for i, l := range v {
			f := strings.Fields(l)
			out[i] = strings.Join(slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, "ino=") }), " ")
		}
		return out
	}
	return slices.Equal(strip(a), strip(b))
}

// upperShape lists an upper layer: each entry's name, type, mode and
// overlay xattrs.
func upperShape(t *testing.T, upper string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(upper, p)
		var st unix.Stat_t
		testenv.Must(t, unix.Lstat(p, &st))
		line := fmt.Sprintf("%s %o", rel, st.Mode)
		buf := make([]byte, 4096)
		n, _ := unix.Llistxattr(p, buf)
		var names []string
		for _, name := range strings.Split(string(buf[:max(n, 0)]), "\x00") {
			if strings.Contains(name, ".overlay.") {
				names = append(names, name)
			}
		}
		slices.Sort(names)
		for _, name := range names {
			v := make([]byte, 4096)
			m, _ := unix.Lgetxattr(p, name, v)
			switch {
			case strings.HasSuffix(name, ".uuid"):
				continue
			case strings.HasSuffix(name, ".origin"):
				line += " " + name
			default:
				line += fmt.Sprintf(" %s=%q", name, v[:max(m, 0)])
			}
		}
		out = append(out, line)
		return nil
	})
	return out
}

func TestWritesRedirects(t *testing.T) {
	testenv.RequireMount(t)
	mk := func(lower string) {
		testenv.MakeTree(t, lower, "f a/f f", "f a/sub/s s", "f a/sub/deep/d d", "f p/f pf", "f m/inner/i i", "f x/y/z z")
	}
	ops := func(t *testing.T, mnt string) {
		for _, mv := range [][2]string{
			{"a", "b"},               // a lower directory, in its parent: relative
			{"b/sub", "p/sub2"},      // into another directory: absolute
			{"p/sub2/deep", "deep2"}, // out of a redirected one
			{"deep2", "deep3"},       // again: the first redirect stays
			{"m", "p/m2"},            // a merged one (below)
			{"p/m2/inner", "p/m2/inner2"},
		} {
			if mv[0] == "m" {
				testenv.Must(t, os.WriteFile(filepath.Join(mnt, "m/upper"), []byte("u"), 0o644))
			}
			testenv.Must(t, os.Rename(filepath.Join(mnt, mv[0]), filepath.Join(mnt, mv[1])))
		}
		testenv.Must(t, os.Mkdir(filepath.Join(mnt, "a"), 0o755)) // over the whiteout: opaque
		testenv.Must(t, unix.Renameat2(unix.AT_FDCWD, filepath.Join(mnt, "x"), unix.AT_FDCWD, filepath.Join(mnt, "b"), unix.RENAME_EXCHANGE))
	}
	sameWrites(t, "redirect_dir=on", mk, ops)
}

func TestWritesMetacopy(t *testing.T) {
	testenv.RequireMount(t)
	mk := func(lower string) {
		testenv.Must(t, os.MkdirAll(filepath.Join(lower, "d/e"), 0o755))
		for p, size := range map[string]int{"chmod": 10, "chown": 5000, "times": 70000, "xattr": 3, "mv": 100, "mvfar": 200, "link": 300, "write": 400, "trunc": 500, "d/e/deep": 600, "d/f": 700} {
			testenv.Must(t, os.WriteFile(filepath.Join(lower, p), []byte(strings.Repeat(p[:1], size)), 0o644))
		}
		// Opened for writing, not written: the data copy-up changes
		// the mtime of the one with data, not of the one all holes.
		testenv.Must(t, os.WriteFile(filepath.Join(lower, "opened"), []byte("o"), 0o644))
		testenv.Must(t, os.WriteFile(filepath.Join(lower, "holes"), nil, 0o644))
		testenv.Must(t, os.Truncate(filepath.Join(lower, "holes"), 1<<20))
		old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
		testenv.Must(t, os.Chtimes(filepath.Join(lower, "opened"), old, old))
		testenv.Must(t, os.Chtimes(filepath.Join(lower, "holes"), old, old))
	}
	ops := func(t *testing.T, mnt string) {
		p := func(name string) string { return filepath.Join(mnt, name) }
		for _, name := range []string{"opened", "holes"} {
			testenv.Must(t, os.Chmod(p(name), 0o600))
			f, err := os.OpenFile(p(name), os.O_WRONLY, 0)
			testenv.Must(t, err)
			f.Close()
		}
		testenv.Must(t, os.Chmod(p("chmod"), 0o600))
		testenv.Must(t, os.Lchown(p("chown"), 1000, 1000))
		ts := []unix.Timespec{{Sec: 1000}, {Sec: 2000}}
		testenv.Must(t, unix.UtimesNano(p("times"), ts))
		testenv.Must(t, unix.Setxattr(p("xattr"), "user.k", []byte("v"), 0))
		testenv.Must(t, os.Rename(p("mv"), p("mv2")))
		testenv.Must(t, os.Rename(p("mvfar"), p("d/mvfar")))
		testenv.Must(t, os.Rename(p("d/e/deep"), p("deep")))
		testenv.Must(t, os.Link(p("link"), p("d/link2")))
		testenv.Must(t, os.Chmod(p("write"), 0o640))
		f, err := os.OpenFile(p("write"), os.O_WRONLY|os.O_APPEND, 0)
		testenv.Must(t, err)
		f.WriteString("more")
		f.Close()
		testenv.Must(t, os.Chmod(p("trunc"), 0o640))
		testenv.Must(t, os.Truncate(p("trunc"), 7))
		testenv.Must(t, os.Chmod(p("d/f"), 0o600))
		testenv.Must(t, os.Rename(p("d/f"), p("d/f2")))
		testenv.Must(t, os.Rename(p("d/f2"), p("f3")))
	}
	// With verity, data without fs-verity of its own (all of it on
	// these machines) is left below unchecked (on) or copied (require),
	// as by the kernel.
	for _, opts := range []string{"metacopy=on", "metacopy=on,verity=on", "metacopy=on,verity=require"} {
		sameWrites(t, opts, mk, ops)
	}
}

// TestUUIDModes checks, for each uuid= mode, that ovlmount stamps the
// upper root with a persistent uuid where the kernel does, and writes
// origins with the kernel's uuid: a new upper layer, then one made old
// (impure, no uuid) by a first mount with uuid=null.
func TestUUIDModes(t *testing.T) {
	testenv.RequireMount(t)
	type outcome struct{ stamped, nullOrigin bool }
	run := func(mount func(*testing.T, stackDirs, string) (string, func()), mode string, old bool) outcome {
		s := newStackDirs(t)
		testenv.MakeTree(t, s.lower, "f f f", "f g g")
		if old {
			mnt, done := mount(t, s, "uuid=null")
			testenv.Must(t, os.Chmod(filepath.Join(mnt, "g"), 0o600))
			done()
		}
		mnt, done := mount(t, s, "uuid="+mode)
		testenv.Must(t, os.Chmod(filepath.Join(mnt, "f"), 0o600))
		done()
		var o outcome
		_, err := testenv.Xattr(s.upper, "trusted.overlay.uuid")
		o.stamped = err == nil
		v, err := testenv.Xattr(filepath.Join(s.upper, "f"), "trusted.overlay.origin")
		testenv.Must(t, err)
		o.nullOrigin = len(v) >= 21 && v[5:21] == string(make([]byte, 16))
		return o
	}
	for _, mode := range []string{"auto", "on", "null", "off"} {
		for _, old := range []bool{false, true} {
			k, o := run(kernelMount, mode, old), run(ovlMount, mode, old)
			if k != o {
				t.Errorf("uuid=%s on an old upper layer: %v: ovlmount %+v, the kernel %+v", mode, old, o, k)
			}
		}
	}
}

// TestRootlessVerity mounts a composefs-style stack as an unprivileged
// user in a user namespace: a layer of metacopy files whose markers
// record the fs-verity digests of their data, in a data-only layer of
// content-addressed files they reach by absolute redirects. The data
// files have no fs-verity (this kernel has none), so, as the kernel does,
// verity=on refuses every file with a digest (EIO), right or wrong, and
// reads one without; verity=require refuses them all.
func TestRootlessVerity(t *testing.T) {
	testenv.RequireMount(t)
	testenv.RequireProgram(t, "unshare", "util-linux")
	testenv.RequireProgram(t, "setpriv", "util-linux")
	d, bin := nsLayers(t, rootlessUID, rootlessUID)
	meta, data := filepath.Join(d, "meta"), filepath.Join(d, "data")
	objects := map[string]string{"good": "the object's content\n", "wrong": "w\n", "nodigest": "n\n"}
	for name, content := range objects {
		obj := filepath.Join(data, "ab", name)
		testenv.Must(t, os.MkdirAll(filepath.Dir(obj), 0o755))
		testenv.Must(t, os.WriteFile(obj, []byte(content), 0o644))
		f, err := os.Open(obj)
		testenv.Must(t, err)
		digest, err := fsverity.Digest(int(f.Fd()), fsverity.SHA256)
		f.Close()
		testenv.Must(t, err)
		if name == "wrong" {
			digest[0] ^= 1
		}
		m := fsverity.Metacopy{Alg: fsverity.SHA256, Digest: digest}
		if name == "nodigest" {
			m = fsverity.Metacopy{}
		}
		v, err := m.Encode()
		testenv.Must(t, err)
		p := filepath.Join(meta, name)
		testenv.Must(t, os.MkdirAll(meta, 0o755))
		testenv.Must(t, os.WriteFile(p, nil, 0o644))
		testenv.Must(t, os.Truncate(p, int64(len(content))))
		testenv.Must(t, unix.Lsetxattr(p, "user.overlay.metacopy", v, 0))
		testenv.Must(t, unix.Lsetxattr(p, "user.overlay.redirect", []byte("/ab/"+name), 0))
	}
	testenv.Must(t, filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
		if err != nil || p == d || e.Name() == "dev" {
			return err
		}
		return os.Lchown(p, rootlessUID, rootlessUID)
	}))
	read := func(verity string) string {
		t.Helper()
		script := `cd "$1"; "$2" -o "lowerdir=$PWD/meta::$PWD/data,metacopy=on,redirect_dir=on,verity=$3" m || exit 1
for f in good wrong nodigest; do printf '%s: ' $f; cat m/$f 2>&1 | tr '\n' ' '; echo; done
umount m`
		out, err := asRootlessUser(d, "sh", "-c", script, "sh", d, bin, verity)
		if err != nil {
			t.Fatalf("in the user namespace: %v\n%s", err, out)
		}
		return string(out)
	}
	want := "good: cat: m/good: Input/output error \nwrong: cat: m/wrong: Input/output error \nnodigest: n \n"
	if got := read("on"); got != want {
		t.Errorf("read as an unprivileged user, verity=on:\n%s\nwant:\n%s", got, want)
	}
	want = strings.Replace(want, "nodigest: n ", "nodigest: cat: m/nodigest: Input/output error ", 1)
	if got := read("require"); got != want {
		t.Errorf("read as an unprivileged user, verity=require:\n%s\nwant:\n%s", got, want)
	}
}

// TestRmdirOverLowerXWhiteout removes a merged directory whose only
// entry below is an xwhiteout in a lower layer: the kernel's listing
// shows nothing, but its emptiness check counts the xwhiteout and rmdir
// says ENOTEMPTY; ovlmount must say the same, on both, and keep the
// directory.
func TestRmdirOverLowerXWhiteout(t *testing.T) {
	testenv.RequireMount(t)
	for _, side := range []struct {
		name  string
		mount func(*testing.T, stackDirs, string) (string, func())
	}{{"kernel", kernelMount}, {"ovlmount", ovlMount}} {
		t.Run(side.name, func(t *testing.T) {
			s := newStackDirs(t)
			l1 := filepath.Dir(s.lower) + "/lower1"
			testenv.MakeTree(t, s.lower, "d d", "f d/n4", "x d/n4 trusted.overlay.whiteout=", "x d trusted.overlay.opaque=x")
			testenv.MakeTree(t, l1, "d d")
			s.lowers = s.lower + ":" + l1
			mnt, unmount := side.mount(t, s, "")
			defer unmount()
			if names := testenv.DirNames(t, mnt+"/d"); len(names) != 0 {
				t.Errorf("d lists %v, want nothing", names)
			}
			if err := unix.Rmdir(mnt + "/d"); err != unix.ENOTEMPTY {
				t.Errorf("rmdir d: %v, want ENOTEMPTY", err)
			}
			if _, err := os.Lstat(mnt + "/d"); err != nil {
				t.Errorf("d after rmdir: %v", err)
			}
		})
	}
}

// TestUserxattrWrites: with userxattr ovlmount writes its markers as
// user.overlay.* (here the opaque marker of a directory made where a
// lower one was removed, and a copy-up's origin), which a kernel mount
// with userxattr reads: it shows the same tree.
func TestUserxattrWrites(t *testing.T) {
	testenv.RequireMount(t)
	s := newStackDirs(t)
	testenv.MakeTree(t, s.lower, "d d", "f d/old old", "f f data")
	mnt, unmount := ovlMount(t, s, "userxattr")
	testenv.Must(t, os.Remove(mnt+"/d/old"))
	testenv.Must(t, os.Remove(mnt+"/d"))
	testenv.Must(t, os.Mkdir(mnt+"/d", 0o755))
	testenv.Must(t, os.Chmod(mnt+"/f", 0o600))
	unmount()
	for path, name := range map[string]string{"d": "user.overlay.opaque", "f": "user.overlay.origin"} {
		if _, err := testenv.Xattr(filepath.Join(s.upper, path), name); err != nil {
			t.Errorf("upper %s: %s: %v", path, name, err)
		}
		if _, err := testenv.Xattr(filepath.Join(s.upper, path), strings.Replace(name, "user.", "trusted.", 1)); err != unix.ENODATA {
			t.Errorf("upper %s: the trusted form of %s: %v, want ENODATA", path, name, err)
		}
	}
	kmnt, kunmount := kernelMount(t, s, "userxattr")
	defer kunmount()
	if names := testenv.DirNames(t, kmnt+"/d"); len(names) != 0 {
		t.Errorf("the kernel with userxattr lists %v in d, want nothing (opaque)", names)
	}
	if fi, err := os.Stat(kmnt + "/f"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the kernel with userxattr: f %v, %v", fi, err)
	}
}
