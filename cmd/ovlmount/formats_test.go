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
	for _, p := range []string{s.lower, s.upper, s.work} {
		must(t, os.Mkdir(p, 0o755))
	}
	s.lowers = s.lower
	return s
}

// kernelMount mounts the kernel's overlay of s with opts at a new
// directory until the test ends, or until the returned function is
// called.
func kernelMount(t *testing.T, s stackDirs, opts string) (string, func()) {
	t.Helper()
	mnt := t.TempDir()
	o := "lowerdir=" + s.lowers
	if s.upper != "" {
		o += ",upperdir=" + s.upper + ",workdir=" + s.work
	}
	if opts != "" {
		o += "," + opts
	}
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
	o := "lowerdir=" + s.lowers
	if s.upper != "" {
		o += ",upperdir=" + s.upper + ",workdir=" + s.work
	}
	if opts != "" {
		o += "," + opts
	}
	mountDaemon(t, mnt, "-o", o, mnt)
	return mnt, func() { testenv.Unmount(t, mnt) }
}

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
	for _, p := range []string{"a/sub/deep", "p", "m/inner"} {
		must(t, os.MkdirAll(filepath.Join(s.lower, p), 0o755))
	}
	for p, data := range map[string]string{"a/x": "x", "a/sub/s": "s", "a/sub/deep/d": "d", "p/f": "f", "m/inner/i": "i"} {
		must(t, os.WriteFile(filepath.Join(s.lower, p), []byte(data), 0o644))
	}
	// The kernel writes redirects: relative (a renamed in place),
	// absolute (moved into another directory), one inside the other.
	mnt, done := kernelMount(t, s, "redirect_dir=on")
	for _, mv := range [][2]string{{"a", "b"}, {"b/sub", "p/sub2"}, {"p/sub2/deep", "deep2"}, {"m", "p/m2"}} {
		must(t, os.Rename(filepath.Join(mnt, mv[0]), filepath.Join(mnt, mv[1])))
	}
	must(t, os.WriteFile(filepath.Join(mnt, "b/new"), []byte("n"), 0o644))
	done()
	for _, opts := range []string{"", "redirect_dir=on", "redirect_dir=follow", "redirect_dir=nofollow", "redirect_dir=off"} {
		sameView(t, s, opts)
	}
}

func TestReadsKernelMetacopy(t *testing.T) {
	testenv.RequireMount(t)
	s := newStackDirs(t)
	must(t, os.MkdirAll(filepath.Join(s.lower, "d"), 0o755))
	for p, size := range map[string]int{"f": 100, "g": 5000, "d/h": 70000, "w": 10} {
		must(t, os.WriteFile(filepath.Join(s.lower, p), []byte(strings.Repeat(p[:1], size)), 0o644))
	}
	mnt, done := kernelMount(t, s, "metacopy=on")
	must(t, os.Chmod(filepath.Join(mnt, "f"), 0o600))
	must(t, os.Rename(filepath.Join(mnt, "g"), filepath.Join(mnt, "g2")))
	must(t, os.Rename(filepath.Join(mnt, "d/h"), filepath.Join(mnt, "h2")))
	must(t, os.Chmod(filepath.Join(mnt, "w"), 0o600))
	f, err := os.OpenFile(filepath.Join(mnt, "w"), os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
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
		must(t, os.MkdirAll(p, 0o755))
	}
	must(t, os.WriteFile(data+"/ab/cdef", []byte("the object's content\n"), 0o644))
	// A composefs-style metadata layer: sparse files as big as their
	// data, marked metacopy, redirected to a data-only layer; one whose
	// data is missing.
	for name, target := range map[string]string{"dir/f": "/ab/cdef", "missing": "/no/such"} {
		p := filepath.Join(meta, name)
		must(t, os.Truncate(mkfile(t, p), 21))
		must(t, unix.Lsetxattr(p, "trusted.overlay.metacopy", nil, 0))
		must(t, unix.Lsetxattr(p, "trusted.overlay.redirect", []byte(target), 0))
	}
	s := stackDirs{lowers: meta + ":" + meta2 + "::" + data}
	sameView(t, s, "metacopy=on,redirect_dir=on")
}

func mkfile(t *testing.T, p string) string {
	t.Helper()
	must(t, os.WriteFile(p, nil, 0o640))
	return p
}
