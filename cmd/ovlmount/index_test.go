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

// The inodes index (index=on): ovlmount and the kernel make the same
// changes to the same layers, and each reads the other's stacks; the
// names of a lower hard link must show one inode with the overlay's link
// count, and the upper layers and workdir/index must hold the same
// entries, links and overlay xattrs. Inode numbers differ between two
// copies of a lower layer, so they are compared as classes: each shown
// as the first path that shows it.

// linkView is view with link counts, inode numbers as classes.
func linkView(t *testing.T, mnt string) []string {
	t.Helper()
	first := map[uint64]string{}
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
		if _, ok := first[st.Ino]; !ok {
			first[st.Ino] = rel
		}
		line := fmt.Sprintf("%s %o nlink=%d size=%d blocks=%d ino=@%s", rel, st.Mode, st.Nlink, st.Size, st.Blocks, first[st.Ino])
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			line += " data=" + digest(p)
		}
		out = append(out, line)
		return nil
	})
	return out
}

func digest(p string) string {
	f, err := os.Open(p)
	if err != nil {
		return "open " + errnoOf(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "read " + errnoOf(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil)[:6])
}

// indexShape lists a stack's upper layer and workdir/index: each entry's
// type and mode, link count, inode class and overlay xattrs (origins by
// presence, uuids left out). Index entries show as the upper entry they
// are linked to ("index/=a"), or the first of them, "=(none)" if none;
// temporaries as "#".
func indexShape(t *testing.T, s stackDirs) []string {
	t.Helper()
	first := map[uint64]string{}
	var out []string
	walk := func(root, prefix string) {
		var lines []string
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			var st unix.Stat_t
			testenv.Must(t, unix.Lstat(p, &st))
			if _, ok := first[st.Ino]; !ok {
				first[st.Ino] = prefix + rel
			}
			name := prefix + rel
			switch {
			case prefix == "" || rel == ".":
			case strings.HasPrefix(rel, "#"):
				name = prefix + "#"
			case first[st.Ino] == name:
				// Linked from no name: the hex of a handle, which
				// differs between two copies of a layer.
				name = prefix + "=(none)"
			default:
				name = prefix + "=" + first[st.Ino]
			}
			ino := first[st.Ino]
			if name == prefix+"=(none)" {
				ino = name
			}
			lines = append(lines, fmt.Sprintf("%s %o nlink=%d ino=@%s%s", name, st.Mode, st.Nlink, ino, overlayXattrs(p)))
			return nil
		})
		slices.Sort(lines)
		out = append(out, lines...)
	}
	walk(s.upper, "")
	if _, err := os.Stat(s.work + "/index"); err == nil {
		walk(s.work+"/index", "index/")
	}
	return out
}

// overlayXattrs lists the overlay xattrs of p: origins by presence,
// uuids left out.
func overlayXattrs(p string) string {
	buf := make([]byte, 4096)
	n, _ := unix.Llistxattr(p, buf)
	var names []string
	for _, name := range strings.Split(string(buf[:max(n, 0)]), "\x00") {
		if strings.Contains(name, ".overlay.") && !strings.HasSuffix(name, ".uuid") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	line := ""
	for _, name := range names {
		v := make([]byte, 4096)
		m, _ := unix.Lgetxattr(p, name, v)
		if strings.HasSuffix(name, ".origin") || strings.HasSuffix(name, ".upper") {
			line += " " + name
		} else {
			line += fmt.Sprintf(" %s=%q", name, v[:max(m, 0)])
		}
	}
	return line
}

// mkLinks makes a lower layer of hard links: a, b, c and d/e one file,
// f and g another, s a file of one link, l and l2 a symlink.
func mkLinks(t *testing.T) func(lower string) {
	return func(lower string) {
		testenv.Must(t, os.MkdirAll(filepath.Join(lower, "d"), 0o755))
		testenv.Must(t, os.WriteFile(filepath.Join(lower, "a"), []byte("hello\n"), 0o644))
		for _, n := range []string{"b", "c", "d/e"} {
			testenv.Must(t, os.Link(filepath.Join(lower, "a"), filepath.Join(lower, n)))
		}
		testenv.Must(t, os.WriteFile(filepath.Join(lower, "f"), []byte(strings.Repeat("f", 5000)), 0o640))
		testenv.Must(t, os.Link(filepath.Join(lower, "f"), filepath.Join(lower, "g")))
		testenv.Must(t, os.WriteFile(filepath.Join(lower, "s"), []byte("single\n"), 0o644))
		testenv.Must(t, os.Symlink("a", filepath.Join(lower, "l")))
		testenv.Must(t, os.Link(filepath.Join(lower, "l"), filepath.Join(lower, "l2")))
	}
}

// sameIndexWrites makes the lower layer with mk twice, runs each session
// of sessions through a kernel mount of one stack and through ovlmount
// on the other, both with opts, mounting again between sessions, and
// fails unless after each both show the same names, links and contents,
// and hold the same upper layer and index; then each reads the other's
// stack the same.
func sameIndexWrites(t *testing.T, opts string, mk func(lower string), sessions ...func(t *testing.T, mnt string)) {
	t.Helper()
	sameIndexWritesOn(t, opts, nil, mk, sessions...)
}

// sameIndexWritesOn is sameIndexWrites with the lower layers subs,
// directories mk makes in the lower directory, top first.
func sameIndexWritesOn(t *testing.T, opts string, subs []string, mk func(lower string), sessions ...func(t *testing.T, mnt string)) {
	t.Helper()
	k, o := newStackDirs(t), newStackDirs(t)
	mk(k.lower)
	mk(o.lower)
	for _, s := range []*stackDirs{&k, &o} {
		if subs != nil {
			s.lowers = s.lower + "/" + strings.Join(subs, ":"+s.lower+"/")
		}
	}
	for i, ops := range sessions {
		kmnt, kdone := kernelMount(t, k, opts)
		ops(t, kmnt)
		kview := linkView(t, kmnt)
		kdone()
		omnt, odone := ovlMount(t, o, opts)
		ops(t, omnt)
		oview := linkView(t, omnt)
		odone()
		if !slices.Equal(oview, kview) {
			t.Errorf("session %d with %q: ovlmount shows\n  %s\nthe kernel\n  %s", i, opts, strings.Join(oview, "\n  "), strings.Join(kview, "\n  "))
		}
		if got, want := indexShape(t, o), indexShape(t, k); !slices.Equal(got, want) {
			t.Errorf("session %d with %q: ovlmount's upper layer and index hold\n  %s\nthe kernel's\n  %s", i, opts, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
	}
	sameLinkView(t, k, opts)
	sameLinkView(t, o, opts)
}

// sameLinkView is sameView with linkView, and inode numbers compared as
// they are.
func sameLinkView(t *testing.T, s stackDirs, opts string) {
	t.Helper()
	kmnt, kdone := kernelMount(t, s, opts)
	want := append(linkView(t, kmnt), view(t, kmnt)...)
	kdone()
	omnt, odone := ovlMount(t, s, opts)
	got := append(linkView(t, omnt), view(t, omnt)...)
	odone()
	if !slices.Equal(got, want) {
		t.Errorf("with %q ovlmount shows\n  %s\nthe kernel\n  %s", opts, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestWritesIndex(t *testing.T) {
	testenv.RequireMount(t)
	p := func(mnt, name string) string { return filepath.Join(mnt, name) }
	first := func(t *testing.T, mnt string) {
		testenv.Must(t, os.Chmod(p(mnt, "b"), 0o600))
		f, err := os.OpenFile(p(mnt, "c"), os.O_WRONLY|os.O_APPEND, 0)
		testenv.Must(t, err)
		f.WriteString("more\n")
		f.Close()
		testenv.Must(t, os.Remove(p(mnt, "d/e")))
		testenv.Must(t, os.Link(p(mnt, "a"), p(mnt, "n")))
		testenv.Must(t, os.Rename(p(mnt, "b"), p(mnt, "r")))
		testenv.Must(t, os.Rename(p(mnt, "f"), p(mnt, "d/f2")))
		testenv.Must(t, unix.Lsetxattr(p(mnt, "l"), "trusted.k", []byte("v"), 0))
		testenv.Must(t, os.Rename(p(mnt, "a"), p(mnt, "c"))) // one inode: nothing
	}
	second := func(t *testing.T, mnt string) {
		testenv.Must(t, os.Remove(p(mnt, "g")))
		testenv.Must(t, os.Remove(p(mnt, "d/f2"))) // the last name: the entry goes
		testenv.Must(t, os.Chmod(p(mnt, "a"), 0o640))
		testenv.Must(t, os.Rename(p(mnt, "s"), p(mnt, "n"))) // over a name of the index
		testenv.Must(t, os.Link(p(mnt, "l2"), p(mnt, "d/l3")))
	}
	sameIndexWrites(t, "index=on", mkLinks(t), first, second)
}

func TestWritesIndexMetacopy(t *testing.T) {
	testenv.RequireMount(t)
	p := func(mnt, name string) string { return filepath.Join(mnt, name) }
	first := func(t *testing.T, mnt string) {
		testenv.Must(t, os.Chmod(p(mnt, "b"), 0o600))
		testenv.Must(t, os.Rename(p(mnt, "c"), p(mnt, "c2")))
		testenv.Must(t, os.Link(p(mnt, "f"), p(mnt, "d/f3")))
	}
	second := func(t *testing.T, mnt string) {
		f, err := os.OpenFile(p(mnt, "a"), os.O_WRONLY|os.O_APPEND, 0)
		testenv.Must(t, err)
		f.WriteString("more\n")
		f.Close()
		testenv.Must(t, os.Remove(p(mnt, "d/e")))
		testenv.Must(t, os.Truncate(p(mnt, "g"), 10))
	}
	sameIndexWrites(t, "index=on,metacopy=on", mkLinks(t), first, second)
}

// TestWritesIndexLayers: hard links in a lower layer below another,
// one of them shadowed by the top layer, and directories renamed through
// redirects around them.
func TestWritesIndexLayers(t *testing.T) {
	testenv.RequireMount(t)
	p := func(mnt, name string) string { return filepath.Join(mnt, name) }
	mk := func(lower string) {
		testenv.MakeTree(t, lower, "f top/a top a", "f top/h2 shadowing", "d top/d", "f bottom/h1 linked", "d bottom/d", "f bottom/x x")
		for _, n := range []string{"h2", "d/h3", "d/h4"} {
			testenv.Must(t, os.Link(filepath.Join(lower, "bottom/h1"), filepath.Join(lower, "bottom", n)))
		}
	}
	first := func(t *testing.T, mnt string) {
		testenv.Must(t, os.Chmod(p(mnt, "h1"), 0o600))
		testenv.Must(t, os.Rename(p(mnt, "d"), p(mnt, "d2")))
		f, err := os.OpenFile(p(mnt, "d2/h3"), os.O_WRONLY|os.O_APPEND, 0)
		testenv.Must(t, err)
		f.WriteString("more\n")
		f.Close()
		testenv.Must(t, os.Link(p(mnt, "d2/h4"), p(mnt, "n")))
	}
	second := func(t *testing.T, mnt string) {
		testenv.Must(t, os.Remove(p(mnt, "h1")))
		testenv.Must(t, os.Rename(p(mnt, "d2/h4"), p(mnt, "h2")))
		testenv.Must(t, os.Rename(p(mnt, "d2"), p(mnt, "d3")))
	}
	sameIndexWritesOn(t, "index=on,redirect_dir=on", []string{"top", "bottom"}, mk, first, second)
}

// TestReadsKernelIndex reads stacks the kernel wrote with index=on, with
// the index and without, as the kernel reads them.
func TestReadsKernelIndex(t *testing.T) {
	testenv.RequireMount(t)
	for _, mount := range []string{"index=on", "index=on,metacopy=on"} {
		s := newStackDirs(t)
		mkLinks(t)(s.lower)
		mnt, done := kernelMount(t, s, mount)
		testenv.Must(t, os.Chmod(filepath.Join(mnt, "b"), 0o600))
		testenv.Must(t, os.Remove(filepath.Join(mnt, "c")))
		testenv.Must(t, os.Link(filepath.Join(mnt, "f"), filepath.Join(mnt, "d/f3")))
		testenv.Must(t, os.Rename(filepath.Join(mnt, "l"), filepath.Join(mnt, "d/l")))
		done()
		for _, opts := range []string{"index=on", "index=off", "index=on,metacopy=on", "metacopy=on"} {
			sameLinkView(t, s, opts)
		}
	}
}

// kernelRefuses fails the test unless the kernel refuses to mount s
// with opts, with want (its strerror; EINVAL is mount(8)'s "wrong fs
// type, bad option, ...").
func kernelRefuses(t *testing.T, s stackDirs, opts string, want unix.Errno) {
	t.Helper()
	mnt := t.TempDir()
	out, err := exec.Command("mount", "-t", "overlay", "overlay", "-o", s.options(opts), mnt).CombinedOutput()
	if err == nil {
		testenv.Unmount(t, mnt)
		t.Fatalf("the kernel mounts %s", s.options(opts))
	}
	if want != unix.EINVAL && !strings.Contains(string(out), want.Error()[1:]) {
		t.Errorf("the kernel refuses %s with %q, not %v", s.options(opts), out, want)
	}
}

// ovlmountRefuses fails the test unless ovlmount refuses to mount s with
// opts, with one line naming index=on and ending in want's errno.
func ovlmountRefuses(t *testing.T, s stackDirs, opts string, want unix.Errno) {
	t.Helper()
	mnt := t.TempDir()
	cleanupMount(t, mnt)
	r := ovlmount(t, "-o", s.options(opts), mnt)
	if r.code == 0 {
		testenv.Unmount(t, mnt)
		t.Fatalf("ovlmount mounts %s", s.options(opts))
	}
	if msg := strings.TrimSuffix(r.stderr, "\n"); strings.Contains(msg, "\n") || !strings.Contains(msg, "option index=on") || !strings.HasSuffix(msg, want.Error()) {
		t.Errorf("ovlmount refuses %s with %q: want one line naming index=on, ending in %q", s.options(opts), r.stderr, want.Error())
	}
}

// TestIndexMountChecks: an upper layer indexed over one lowerdir does
// not mount with the index over another (ESTALE, the kernel's "failed to
// verify upper root origin"), and the refusal changes nothing; with more
// layers below the same top lowerdir it mounts. An index of another upper
// layer is refused too.
func TestIndexMountChecks(t *testing.T) {
	testenv.RequireMount(t)
	s := newStackDirs(t)
	mkLinks(t)(s.lower)
	mnt, done := ovlMount(t, s, "index=on")
	testenv.Must(t, os.Chmod(filepath.Join(mnt, "a"), 0o600))
	done()
	before := indexShape(t, s)
	other := s
	other.lowers = t.TempDir()
	kernelRefuses(t, other, "index=on", unix.ESTALE)
	ovlmountRefuses(t, other, "index=on", unix.ESTALE)
	if after := indexShape(t, s); !slices.Equal(after, before) {
		t.Errorf("a refused mount changed the upper layer or index:\n  %s\nwas\n  %s", strings.Join(after, "\n  "), strings.Join(before, "\n  "))
	}
	below := s
	below.lowers = s.lower + ":" + other.lowers
	sameLinkView(t, below, "index=on")

	// A workdir whose index belongs to another upper layer: refused
	// (ESTALE) once the new upper root has its origin, as the kernel
	// leaves it.
	var shapes [2][]string
	for i, refuses := range []func(*testing.T, stackDirs, string, unix.Errno){kernelRefuses, ovlmountRefuses} {
		s := newStackDirs(t)
		mkLinks(t)(s.lower)
		_, done := kernelMount(t, s, "index=on")
		done()
		s.upper = t.TempDir()
		refuses(t, s, "index=on", unix.ESTALE)
		shapes[i] = indexShape(t, s)
	}
	if !slices.Equal(shapes[1], shapes[0]) {
		t.Errorf("refusing another upper layer's index, ovlmount leaves\n  %s\nthe kernel\n  %s", strings.Join(shapes[1], "\n  "), strings.Join(shapes[0], "\n  "))
	}
}

// TestIndexMountCleanup: mounting with the index cleans workdir/index as
// the kernel's ovl_indexdir_cleanup does. Two stacks the kernel wrote
// the same are damaged the same (leftover temporaries, upper names
// removed behind the overlay's back); the kernel mounts one, ovlmount the
// other, and both must be left the same. Entries the kernel cannot read
// fail the mount.
func TestIndexMountCleanup(t *testing.T) {
	testenv.RequireMount(t)
	build := func(t *testing.T) stackDirs {
		s := newStackDirs(t)
		testenv.MakeTree(t, s.lower, "f a a", "f f f", "f h h", "f i i")
		for _, n := range []string{"a b", "a c", "f g", "h h2", "i i2"} {
			old, new, _ := strings.Cut(n, " ")
			testenv.Must(t, os.Link(filepath.Join(s.lower, old), filepath.Join(s.lower, new)))
		}
		mnt, done := kernelMount(t, s, "index=on")
		for _, n := range []string{"a", "f", "h", "i"} {
			testenv.Must(t, os.Chmod(filepath.Join(mnt, n), 0o600))
		}
		for _, n := range []string{"b", "c", "h", "h2"} {
			testenv.Must(t, os.Remove(filepath.Join(mnt, n)))
		}
		done()
		testenv.MakeTree(t, s.work+"/index", "f #t", "d #d", "f #e/x/y/z")
		// a's entry keeps one link, and the overlay's count (U-1) says
		// no name: an orphan. f's keeps one, and U+0 says one name.
		testenv.Must(t, os.Remove(filepath.Join(s.upper, "a")))
		testenv.Must(t, os.Remove(filepath.Join(s.upper, "f")))
		return s
	}
	k, o := build(t), build(t)
	kmnt, kdone := kernelMount(t, k, "index=on")
	kview := linkView(t, kmnt)
	kdone()
	omnt, odone := ovlMount(t, o, "index=on")
	oview := linkView(t, omnt)
	odone()
	if !slices.Equal(oview, kview) {
		t.Errorf("ovlmount shows\n  %s\nthe kernel\n  %s", strings.Join(oview, "\n  "), strings.Join(kview, "\n  "))
	}
	if got, want := indexShape(t, o), indexShape(t, k); !slices.Equal(got, want) {
		t.Errorf("ovlmount's upper layer and index hold\n  %s\nthe kernel's\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}

	// Entries that fail the mount: the kernel has cleaned those it listed
	// before, and left the others. The order is the directory's, which
	// differs between two stacks (names hash differently): so each
	// refuses what the other left, and must change nothing more.
	for _, bad := range []struct {
		entry func(s stackDirs) string
		errno unix.Errno
	}{
		{func(stackDirs) string { return "zzz" }, unix.EINVAL},
		{func(s stackDirs) string {
			// A valid name, and no origin: an entry's name with
			// another last byte, so that it names no entry there is.
			entries, err := os.ReadDir(s.work + "/index")
			testenv.Must(t, err)
			name := entries[len(entries)-1].Name()
			last := "00"
			if strings.HasSuffix(name, last) {
				last = "01"
			}
			return name[:len(name)-2] + last
		}, unix.ENODATA},
	} {
		k, o := build(t), build(t)
		for _, s := range []stackDirs{k, o} {
			testenv.MakeTree(t, s.work+"/index", "f "+bad.entry(s))
		}
		kernelRefuses(t, k, "index=on", bad.errno)
		left := indexShape(t, k)
		ovlmountRefuses(t, k, "index=on", bad.errno)
		if got := indexShape(t, k); !slices.Equal(got, left) {
			t.Errorf("refusing (%v) what the kernel left when it refused, ovlmount changed it to\n  %s\nfrom\n  %s", bad.errno, strings.Join(got, "\n  "), strings.Join(left, "\n  "))
		}
		ovlmountRefuses(t, o, "index=on", bad.errno)
		left = indexShape(t, o)
		kernelRefuses(t, o, "index=on", bad.errno)
		if got := indexShape(t, o); !slices.Equal(got, left) {
			t.Errorf("refusing (%v) what ovlmount left when it refused, the kernel changed it to\n  %s\nfrom\n  %s", bad.errno, strings.Join(got, "\n  "), strings.Join(left, "\n  "))
		}
	}
}

// TestIndexMountInUse: while a mount uses an upper layer, another with
// index=on over it fails (EBUSY), whichever index option the first has,
// and one with index=off mounts, as two kernel mounts do. The kernel's
// marks cannot be seen from ovlmount, which finds kernel mounts in
// mountinfo instead, and the kernel does not see ovlmount's locks.
func TestIndexMountInUse(t *testing.T) {
	testenv.RequireMount(t)
	for _, first := range []string{"index=on", "index=off"} {
		k, o := newStackDirs(t), newStackDirs(t)
		_, kdone := kernelMount(t, k, first)
		kmnt := t.TempDir()
		out, err := exec.Command("mount", "-t", "overlay", "overlay", "-o", k.options("index=on"), kmnt).CombinedOutput()
		if err == nil {
			testenv.Unmount(t, kmnt)
			t.Fatalf("after %s, the kernel mounts the upper layer again with index=on", first)
		}
		_, kdone2 := kernelMount(t, k, "index=off")
		kdone2()
		kdone()
		t.Logf("after %s, the kernel refuses index=on: %s", first, out)

		_, odone := ovlMount(t, o, first)
		omnt := t.TempDir()
		cleanupMount(t, omnt)
		r := ovlmount(t, "-o", o.options("index=on"), omnt)
		if r.code == 0 {
			testenv.Unmount(t, omnt)
			t.Fatalf("after %s, ovlmount mounts the upper layer again with index=on", first)
		}
		if msg := strings.TrimSuffix(r.stderr, "\n"); strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "ovlmount: option index=on: upperdir ") || !strings.HasSuffix(msg, unix.EBUSY.Error()) {
			t.Errorf("after %s, ovlmount refuses index=on with %q: want one line naming index=on and upperdir, ending in %q", first, r.stderr, unix.EBUSY.Error())
		}
		_, odone2 := ovlMount(t, o, "index=off")
		odone2()
		odone()

		// A kernel overlay mount over the upper layer: listed in
		// mountinfo, it keeps ovlmount's index=on off it too.
		_, kdone = kernelMount(t, o, first)
		ovlmountRefuses(t, o, "index=on", unix.EBUSY)
		kdone()
	}
}
