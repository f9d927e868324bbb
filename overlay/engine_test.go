package overlay

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/inodes"
	"github.com/ovlmount/ovlmount/internal/testenv"
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// stack makes layer directories under a temp dir, one from each spec
// (testenv.MakeTree's lines), and opens them as a read-only stack (top
// first).
func stack(t *testing.T, specs ...[]string) (*FS, []string) {
	t.Helper()
	return stackWith(t, Options{Timeout: time.Second}, specs...)
}

// stackWith is stack with the options opts.
func stackWith(t *testing.T, opts Options, specs ...[]string) (*FS, []string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("engine tests need root (mknod, trusted.* xattrs)")
		}
		t.Skip("engine tests need root (mknod, trusted.* xattrs)")
	}
	base := t.TempDir()
	var st []*layers.Layer
	var dirs []string
	for i, spec := range specs {
		dir := filepath.Join(base, "l"+string(rune('0'+i)))
		dirs = append(dirs, dir)
		testenv.MakeTree(t, dir, spec...)
		l, err := layers.Open(dir, i, false)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		st = append(st, l)
	}
	fs, err := New(st, opts)
	if err != nil {
		t.Fatal(err)
	}
	return fs, dirs
}

// walk resolves a slash-separated path from the root.
func walk(fs *FS, path string) (Entry, error) {
	e := Entry{ID: inodes.RootID}
	for _, name := range strings.Split(path, "/") {
		var err error
		if e, err = fs.Lookup(e.ID, name); err != nil {
			return e, err
		}
	}
	return e, nil
}

func names(t *testing.T, fs *FS, path string) []string {
	t.Helper()
	id := uint64(inodes.RootID)
	if path != "" {
		e, err := walk(fs, path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		id = e.ID
	}
	ents, err := fs.ReadDir(id, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.Name != "." && e.Name != ".." {
			out = append(out, e.Name)
		}
	}
	sort.Strings(out)
	return out
}

func TestWhiteoutsOfEveryForm(t *testing.T) {
	fs, _ := stack(t,
		[]string{"w char", "f .wh.aufs ", "d xdir", "x xdir trusted.overlay.opaque=x", "f xdir/ghost ", "x xdir/ghost trusted.overlay.whiteout=y", "f xdir/kept k"},
		[]string{"f char c", "f aufs a", "f plain p", "d xdir", "f xdir/ghost g"},
	)
	for _, p := range []string{"char", "aufs", "xdir/ghost", ".wh.aufs"} {
		if _, err := walk(fs, p); err != syscall.ENOENT {
			t.Errorf("lookup %s = %v, want ENOENT", p, err)
		}
	}
	if got := strings.Join(names(t, fs, ""), " "); got != "plain xdir" {
		t.Errorf("root lists %q", got)
	}
	// opaque=x marks xwhiteouts; it does not make the directory opaque.
	if got := strings.Join(names(t, fs, "xdir"), " "); got != "kept" {
		t.Errorf("xdir lists %q", got)
	}
}

func TestOpaqueOfEveryForm(t *testing.T) {
	fs, _ := stack(t,
		[]string{
			"d t", "x t trusted.overlay.opaque=y", "f t/top 1",
			"d u", "x u user.overlay.opaque=y", "f u/top 1",
			"d fo", "x fo user.fuseoverlayfs.opaque=y", "f fo/top 1",
			"d a", "f a/.wh..wh..opq ", "f a/top 1",
			"d m", "f m/top 1",
		},
		[]string{"d t", "f t/below 2", "d u", "f u/below 2", "d fo", "f fo/below 2", "d a", "f a/below 2", "d m", "f m/below 2"},
	)
	for _, d := range []string{"t", "u", "fo", "a"} {
		if got := strings.Join(names(t, fs, d), " "); got != "top" {
			t.Errorf("opaque %s lists %q, want top", d, got)
		}
		if _, err := walk(fs, d+"/below"); err != syscall.ENOENT {
			t.Errorf("%s/below = %v, want ENOENT", d, err)
		}
	}
	if got := strings.Join(names(t, fs, "m"), " "); got != "below top" {
		t.Errorf("merged m lists %q", got)
	}
	m, _ := walk(fs, "m")
	if m.Attr.Nlink != 1 {
		t.Errorf("merged dir nlink %d, want 1", m.Attr.Nlink)
	}
}

func TestMergeEndsAtNonDirectories(t *testing.T) {
	fs, _ := stack(t,
		[]string{"d d", "f d/top 1", "f f file"},
		[]string{"f d notadir", "d f", "f f/under 2"},
		[]string{"d d", "f d/deep 3"},
	)
	if got := strings.Join(names(t, fs, "d"), " "); got != "top" {
		t.Errorf("d lists %q: a file below a dir ends the merge", got)
	}
	if e, _ := walk(fs, "f"); e.Attr.Mode&unix.S_IFMT != unix.S_IFREG {
		t.Error("the top file must hide the directory below")
	}
	if _, err := walk(fs, "f/under"); err != syscall.ENOTDIR {
		t.Errorf("f/under = %v, want ENOTDIR", err)
	}
}

func TestLayerSymlinksAreNeverFollowed(t *testing.T) {
	fs, _ := stack(t,
		[]string{"d d", "f d/mine 1", "d d/sub", "d e"},
		[]string{"l d /etc", "d e", "l e/sub /etc", "l out ../../../../../../../etc", "l loop loop"},
		[]string{"d d", "f d/passwd lower", "d e", "d e/sub", "f e/sub/passwd x"},
	)
	// d is a directory on top and a symlink below: the merge stops there.
	if got := strings.Join(names(t, fs, "d"), " "); got != "mine sub" {
		t.Errorf("d lists %q", got)
	}
	for _, p := range []string{"d/passwd", "e/sub/passwd", "out/passwd", "loop/x"} {
		if _, err := walk(fs, p); err == nil {
			t.Errorf("%s resolved through a layer symlink", p)
		}
	}
	e, err := walk(fs, "out")
	if err != nil || e.Attr.Mode&unix.S_IFMT != unix.S_IFLNK {
		t.Fatalf("out: %v, mode %o", err, e.Attr.Mode)
	}
	if target, _ := fs.Readlink(e.ID); target != "../../../../../../../etc" {
		t.Errorf("readlink out = %q", target)
	}
	if _, err := fs.Open(e.ID, unix.O_RDONLY, nil); err == nil {
		t.Error("opening a symlink node must not follow it")
	}
}

func TestBadNames(t *testing.T) {
	fs, _ := stack(t, []string{"f a 1"})
	for name, want := range map[string]error{
		"..": syscall.EINVAL, ".": syscall.EINVAL, "a/b": syscall.EINVAL, "": syscall.EINVAL,
		strings.Repeat("n", 256): syscall.ENAMETOOLONG, strings.Repeat("n", 255): syscall.ENOENT,
	} {
		if _, err := fs.Lookup(inodes.RootID, name); err != want {
			t.Errorf("Lookup(%.20q) = %v, want %v", name, err, want)
		}
	}
	a, _ := walk(fs, "a")
	if _, err := fs.Lookup(a.ID, "x"); err != syscall.ENOTDIR {
		t.Errorf("lookup below a file = %v, want ENOTDIR", err)
	}
}

func TestReadDirOffsetsStayValid(t *testing.T) {
	fs, dirs := stack(t, []string{"f a 1", "f b 2"}, []string{"f c 3", "f a 0"})
	names := func(ents []Dirent, offsets bool) (out []string) {
		for _, e := range ents {
			if offsets {
				out = append(out, fmt.Sprintf("%s@%d", e.Name, e.Off))
			} else {
				out = append(out, e.Name)
			}
		}
		return out
	}
	after := func(ents []Dirent, off uint64, offsets bool) []string {
		i := slices.IndexFunc(ents, func(e Dirent) bool { return e.Off == off })
		return names(ents[i+1:], offsets)
	}
	first, _ := fs.ReadDir(inodes.RootID, 0, 1<<20)
	if len(first) != 5 {
		t.Fatalf("listing %v", names(first, true))
	}
	for i := 1; i < len(first); i++ {
		if first[i].Off <= first[i-1].Off {
			t.Fatalf("listing %v: offsets do not increase", names(first, true))
		}
	}
	at := first[2].Off // a reader has got as far as the third entry
	// A change in a layer does not move the offsets of a listing being
	// read...
	if err := os.WriteFile(filepath.Join(dirs[0], "new"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rest, _ := fs.ReadDir(inodes.RootID, at, 1<<20)
	if got, want := names(rest, true), names(first[3:], true); !slices.Equal(got, want) {
		t.Fatalf("resumed after a change: %v, want %v", got, want)
	}
	// ...a rewind sees it, and the names that stayed keep their offsets
	// and order...
	if err := os.Remove(filepath.Join(dirs[0], "b")); err != nil {
		t.Fatal(err)
	}
	again, _ := fs.ReadDir(inodes.RootID, 0, 1<<20)
	var want []string
	for _, e := range first {
		if e.Name != "b" {
			want = append(want, fmt.Sprintf("%s@%d", e.Name, e.Off))
		}
	}
	if got := names(again[:len(again)-1], true); !slices.Equal(got, want) || again[len(again)-1].Name != "new" {
		t.Fatalf("rewind: %v, want %v and new", names(again, true), want)
	}
	// ...so a reader that had got as far as the third entry before the
	// rewind goes on with the rest, once each.
	resumed, _ := fs.ReadDir(inodes.RootID, at, 1<<20)
	if got, want := names(resumed, true), after(again, at, true); !slices.Equal(got, want) {
		t.Fatalf("resumed after the rewind: %v, want %v", got, want)
	}
	// Another reader reads to the end, and a name is made: the reader
	// halfway through resumes after the name its offset names, in the
	// listing held or in one built again.
	full, _ := fs.ReadDir(inodes.RootID, 0, 1<<20)
	if end, err := fs.ReadDir(inodes.RootID, full[len(full)-1].Off, 1<<20); len(end) != 0 || err != nil {
		t.Fatalf("after the end: %v, %v", names(end, true), err)
	}
	if err := os.WriteFile(filepath.Join(dirs[0], "newer"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	resumed, _ = fs.ReadDir(inodes.RootID, at, 1<<20)
	// Whether a name made since the reader began shows is left open, as
	// by POSIX; where it goes in the layer's order is the host's.
	got, want := slices.DeleteFunc(names(resumed, false), func(n string) bool { return n == "newer" }), after(full, at, false)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("resumed after another reader's end: %v, want %v", got, want)
	}
	// d_ino equals st_ino.
	for _, d := range full {
		if d.Name == "." || d.Name == ".." {
			continue
		}
		e, err := fs.Lookup(inodes.RootID, d.Name)
		if err != nil || e.Attr.Ino != d.Ino {
			t.Errorf("%s: d_ino %d, st_ino %d (%v)", d.Name, d.Ino, e.Attr.Ino, err)
		}
	}
}

func TestPrivateXattrsHiddenAndEscaped(t *testing.T) {
	fs, _ := stack(t, []string{"f f 1",
		"x f trusted.overlay.origin=zzz", "x f trusted.overlay.overlay.mine=v",
		"x f user.overlay.opaque=y", "x f user.fuseoverlayfs.x=1",
		"x f user.plain=p", "x f trusted.other=o"})
	e, _ := walk(fs, "f")
	list, err := fs.Listxattr(e.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(list)
	if got := strings.Join(list, " "); got != "trusted.other trusted.overlay.mine user.plain" {
		t.Errorf("privileged list %q", got)
	}
	list, _ = fs.Listxattr(e.ID, false)
	if got := strings.Join(list, " "); got != "user.plain" {
		t.Errorf("unprivileged list %q", got)
	}
	if v, err := fs.Getxattr(e.ID, "trusted.overlay.mine"); err != nil || string(v) != "v" {
		t.Errorf("escaped xattr: %q, %v", v, err)
	}
	for _, n := range []string{"trusted.overlay.origin", "user.overlay.opaque", "user.fuseoverlayfs.x"} {
		if _, err := fs.Getxattr(e.ID, n); err != syscall.ENODATA {
			t.Errorf("Getxattr(%s) = %v, want ENODATA", n, err)
		}
	}
}

// TestUserxattrReadsUserFormOnly: with userxattr, as the kernel's, only
// user.overlay.* names are markers and hidden; trusted.overlay.* and
// user.fuseoverlayfs.* ones are plain xattrs, and a user's user.overlay.X
// is the escaped user.overlay.overlay.X.
func TestUserxattrReadsUserFormOnly(t *testing.T) {
	fs, _ := stackWith(t, Options{Timeout: time.Second, UserXattr: true},
		[]string{
			"d t", "x t trusted.overlay.opaque=y", "f t/top 1",
			"d u", "x u user.overlay.opaque=y", "f u/top 1",
			"d fo", "x fo user.fuseoverlayfs.opaque=y", "f fo/top 1",
			"d x", "x x user.overlay.opaque=x", "f x/ghost ", "x x/ghost user.overlay.whiteout=y",
			"f x/tghost ", "x x/tghost trusted.overlay.whiteout=y",
			"f f 1", "x f trusted.overlay.origin=zzz", "x f trusted.overlay.overlay.t=w", "x f user.overlay.overlay.mine=v",
			"x f user.overlay.opaque=y", "x f user.fuseoverlayfs.x=1", "x f user.plain=p",
		},
		[]string{"d t", "f t/below 2", "d u", "f u/below 2", "d fo", "f fo/below 2", "d x", "f x/ghost g", "f x/tghost g"},
	)
	for d, want := range map[string]string{"t": "below top", "u": "top", "fo": "below top", "x": "tghost"} {
		if got := strings.Join(names(t, fs, d), " "); got != want {
			t.Errorf("%s lists %q, want %q", d, got, want)
		}
	}
	if _, err := walk(fs, "x/ghost"); err != syscall.ENOENT {
		t.Errorf("x/ghost = %v, want ENOENT (a user.overlay.whiteout)", err)
	}
	if e, err := walk(fs, "x/tghost"); err != nil || e.Attr.Size != 0 {
		t.Errorf("x/tghost = %v, size %d; want the top layer's empty file", err, e.Attr.Size)
	}
	e, _ := walk(fs, "f")
	for privileged, want := range map[bool]string{
		true:  "trusted.overlay.origin trusted.overlay.overlay.t user.fuseoverlayfs.x user.overlay.mine user.plain",
		false: "user.fuseoverlayfs.x user.overlay.mine user.plain",
	} {
		list, err := fs.Listxattr(e.ID, privileged)
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(list)
		if got := strings.Join(list, " "); got != want {
			t.Errorf("list (privileged %v) %q, want %q", privileged, got, want)
		}
	}
	for name, want := range map[string]string{"user.overlay.mine": "v", "trusted.overlay.origin": "zzz", "trusted.overlay.overlay.t": "w", "user.fuseoverlayfs.x": "1"} {
		if v, err := fs.Getxattr(e.ID, name); err != nil || string(v) != want {
			t.Errorf("Getxattr(%s) = %q, %v; want %q", name, v, err, want)
		}
	}
	if _, err := fs.Getxattr(e.ID, "user.overlay.opaque"); err != syscall.ENODATA {
		t.Errorf("Getxattr(user.overlay.opaque) = %v, want ENODATA (stored as user.overlay.overlay.opaque)", err)
	}
}

func TestCurrentUmask(t *testing.T) {
	old := unix.Umask(0o027)
	defer unix.Umask(old)
	if got := currentUmask(); got != 0o027 {
		t.Errorf("currentUmask() = %#o, want 0o027", got)
	}
}

// TestListingResumesByName: an offset of a listing since dropped (the
// kernel's cache of it outlives it) resumes after the entry it names,
// wherever a rebuild put that entry, or at its position when it is gone.
func TestListingResumesByName(t *testing.T) {
	build := func(names ...string) *listing {
		l := &listing{}
		var ents []Dirent
		for _, n := range names {
			ents = append(ents, Dirent{Name: n})
		}
		l.update(ents)
		return l
	}
	old := build(".", "..", "a", "b", "c", "d")
	atB := old.ents[3].Off
	for _, tc := range []struct {
		names []string
		want  string // the first name after atB
	}{
		{[]string{".", "..", "a", "b", "c", "d"}, "c"},      // unchanged
		{[]string{".", "..", "x", "a", "b", "c", "d"}, "c"}, // a name made before b
		{[]string{".", "..", "b", "c", "d"}, "c"},           // a removed before b
		{[]string{".", "..", "a", "c", "d"}, "c"},           // b itself gone: where it was
	} {
		l := build(tc.names...)
		i := l.after(atB)
		if i >= len(l.ents) || l.ents[i].Name != tc.want {
			t.Errorf("after b's offset in %v: index %d, want %s", tc.names, i, tc.want)
		}
	}
}
