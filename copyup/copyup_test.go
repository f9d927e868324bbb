package copyup

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestCopyEveryKind(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name string
		opts Options
		hook func(t *testing.T)
	}{
		{"tmpfile", Options{Fsync: true, Trusted: true}, nil},
		{"named temp", Options{Trusted: true}, func(t *testing.T) {
			noTmpfile = true
			t.Cleanup(func() { noTmpfile = false })
		}},
		{"user xattrs", Options{Fsync: true}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.hook != nil {
				tc.hook(t)
			}
			base := t.TempDir()
			lowerDir := filepath.Join(base, "lower")
			want := buildLower(t, lowerDir)
			s := newStack(t, lowerDir, base)
			prefix := "trusted.overlay."
			if !tc.opts.Trusted {
				prefix = "user.overlay."
			}
			for _, o := range lowerTree {
				if o.rel == "d/h2" {
					continue
				}
				parent := filepath.Dir(filepath.Join(s.upperDir, o.rel))
				before := lstat(t, parent)
				st := s.copy(t, o.rel, tc.opts)
				upperPath := filepath.Join(s.upperDir, o.rel)
				lowerPath := filepath.Join(lowerDir, o.rel)
				// The lower object is untouched, its atime included
				// (checked before the test reads it).
				if now := lstat(t, lowerPath); now.Atim != want[o.rel].Atim || now.Mtim != want[o.rel].Mtim || now.Ctim != want[o.rel].Ctim {
					t.Errorf("lower %s changed: %+v, was %+v", o.rel, now, want[o.rel])
				}
				sameObject(t, o.rel, want[o.rel], lowerPath, upperPath)
				if now := lstat(t, upperPath); now.Ino != st.Ino || now.Dev != st.Dev || now.Mode != st.Mode {
					t.Errorf("%s: Copy returned ino %d mode %o, the upper object has %d %o", o.rel, st.Ino, st.Mode, now.Ino, now.Mode)
				}
				after := lstat(t, parent)
				if after.Atim != before.Atim || after.Mtim != before.Mtim {
					t.Errorf("%s: parent times %v %v, were %v %v", o.rel, after.Atim, after.Mtim, before.Atim, before.Mtim)
				}
				if v, err := testenv.Xattr(parent, prefix+"impure"); err != nil || v != "y" {
					t.Errorf("%s: parent impure %q, %v", o.rel, v, err)
				}
				origin, err := testenv.Xattr(upperPath, prefix+"origin")
				switch {
				case o.rel == "d/h1":
					// Copy-up breaks a hard link: no origin.
					if err != unix.ENODATA {
						t.Errorf("%s: origin on a hard-linked file: %q, %v", o.rel, origin, err)
					}
				case !tc.opts.Trusted && want[o.rel].Mode&unix.S_IFMT != unix.S_IFREG && want[o.rel].Mode&unix.S_IFMT != unix.S_IFDIR:
					// user.* xattrs are refused on symlinks and special
					// files; the kernel goes on without the origin.
					if err != unix.EPERM && err != unix.ENODATA {
						t.Errorf("%s: origin %q, %v", o.rel, origin, err)
					}
				default:
					if w := expectedOrigin(t, lowerPath); origin != w {
						t.Errorf("%s: origin %x, want %x (%v)", o.rel, origin, w, err)
					}
				}
				if o.rel == "d/sparse" {
					// The kernel's blocks: a 1 MiB chunk copied whole
					// from each data start that begins a chunk (0, 1M,
					// 32M and 40M: 4 MiB), the holes between them
					// skipped; the copy may take one more block for
					// xattrs (ext4: the inherited ACL and the origin no
					// longer fit in the inode).
					const kernel = 4 << 20 / 512
					if u := lstat(t, upperPath); u.Blocks < kernel || u.Blocks > kernel+u.Blksize/512 {
						t.Errorf("sparse file: %d blocks, the kernel's copy %d", u.Blocks, kernel)
					}
				}
				if w := s.workEntries(t); len(w) != 0 {
					t.Errorf("%s: work holds %v", o.rel, w)
				}
			}
			if x := xattrs(t, filepath.Join(s.upperDir, "d/f")); x["trusted.overlay.overlay.esc"] != "escaped" || x["user.overlay.overlay.uesc"] != "escaped too" {
				t.Errorf("escaped xattrs not kept: %q", keys(x))
			}
			if x := xattrs(t, filepath.Join(s.upperDir, "d/suid")); x["security.capability"] != string(capability()) {
				t.Errorf("security.capability lost: %q", keys(x))
			}
		})
	}
}

func TestCopyTruncate(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	lowerDir := filepath.Join(base, "lower")
	testenv.MakeTree(t, lowerDir, "f f data")
	s := newStack(t, lowerDir, base)
	st := s.copy(t, "f", Options{Trusted: true, Truncate: true})
	if st.Size != 0 || st.Mode != unix.S_IFREG|0o644 {
		t.Errorf("size %d mode %o, want an empty 0644 file", st.Size, st.Mode)
	}
}

// TestFlags checks the inode flags the kernel copies (sync, noatime) and
// those it records as overlay.protattr (append-only, immutable).
func TestFlags(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	lowerDir := filepath.Join(base, "lower")
	testenv.MakeTree(t, lowerDir, "d a", "d i", "d ai", "d plain", "f f x")
	setFlags := func(rel string, flags uint32) bool {
		fd, err := unix.Open(filepath.Join(lowerDir, rel), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		testenv.Must(t, err)
		defer unix.Close(fd)
		old, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
		if err != nil {
			return false
		}
		if err := unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(old|flags)); err != nil {
			return false
		}
		if flags&protFlags != 0 {
			t.Cleanup(func() {
				fd, err := unix.Open(filepath.Join(lowerDir, rel), unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err == nil {
					unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(old))
					unix.Close(fd)
				}
			})
		}
		return true
	}
	if !setFlags("f", flagSync|flagNoatime) {
		t.Skip("no inode flags on this filesystem")
	}
	setFlags("a", flagAppend)
	setFlags("i", flagImmutable)
	setFlags("ai", flagAppend|flagImmutable)
	s := newStack(t, lowerDir, base)
	for _, rel := range []string{"a", "i", "ai", "plain", "f"} {
		s.copy(t, rel, Options{Trusted: true})
	}
	for rel, want := range map[string]string{"a": "a", "i": "i", "ai": "ai"} {
		if v, err := testenv.Xattr(filepath.Join(s.upperDir, rel), "trusted.overlay.protattr"); v != want {
			t.Errorf("%s: protattr %q, %v; want %q", rel, v, err, want)
		}
	}
	if _, err := testenv.Xattr(filepath.Join(s.upperDir, "plain"), "trusted.overlay.protattr"); err != unix.ENODATA {
		t.Errorf("plain: protattr: %v", err)
	}
	fd, err := unix.Open(filepath.Join(s.upperDir, "f"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	testenv.Must(t, err)
	flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	unix.Close(fd)
	testenv.Must(t, err)
	if flags&copyFlags != copyFlags {
		t.Errorf("f: flags %#x, want sync and noatime", flags)
	}
	for _, rel := range []string{"a", "i", "ai"} {
		fd, err := unix.Open(filepath.Join(s.upperDir, rel), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		testenv.Must(t, err)
		flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
		unix.Close(fd)
		if err == nil && flags&protFlags != 0 {
			t.Errorf("%s: the upper directory has flags %#x", rel, flags)
		}
	}
}

func TestExisting(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	lowerDir := filepath.Join(base, "lower")
	testenv.MakeTree(t, lowerDir, "d dir", "f f lower")
	s := newStack(t, lowerDir, base)
	testenv.Must(t, os.WriteFile(filepath.Join(s.upperDir, "f"), []byte("upper"), 0o600))
	testenv.MakeTree(t, s.upperDir, "l dir f")
	for _, rel := range []string{"f", "dir"} {
		if _, err := copyRel(s.work, s.lower, s.upper, rel, Options{Trusted: true}); !isErrno(err, unix.EEXIST) {
			t.Errorf("%s: %v, want EEXIST", rel, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(s.upperDir, "f")); string(b) != "upper" {
		t.Errorf("upper file changed: %q", b)
	}
	if _, err := testenv.Xattr(s.upperDir, "trusted.overlay.impure"); err != unix.ENODATA {
		t.Errorf("impure set on a failed copy: %v", err)
	}
	if w := s.workEntries(t); len(w) != 0 {
		t.Errorf("work holds %v", w)
	}
	// The name taken between the check and the link: the link refuses.
	failAt = func(step string) error {
		if step == "place" {
			return os.WriteFile(filepath.Join(s.upperDir, "late"), nil, 0o644)
		}
		return nil
	}
	defer func() { failAt = nil }()
	testenv.Must(t, os.WriteFile(filepath.Join(lowerDir, "late"), []byte("lower"), 0o644))
	if _, err := copyRel(s.work, s.lower, s.upper, "late", Options{Trusted: true}); !isErrno(err, unix.EEXIST) {
		t.Errorf("late: %v, want EEXIST", err)
	}
	if fi, err := os.Stat(filepath.Join(s.upperDir, "late")); err != nil || fi.Size() != 0 {
		t.Errorf("late: the other file changed: %v %v", fi, err)
	}
	if _, err := testenv.Xattr(s.upperDir, "trusted.overlay.impure"); err != unix.ENODATA {
		t.Errorf("impure left after a failed link: %v", err)
	}
}

func TestBadArguments(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	lowerDir := filepath.Join(base, "lower")
	testenv.Must(t, os.MkdirAll(filepath.Join(lowerDir, "d"), 0o755))
	s := newStack(t, lowerDir, base)
	for _, rel := range []string{"", ".", "..", "d/..", "/d", "d/", "d//x", "a\x00b"} {
		if _, err := copyRel(s.work, s.lower, s.upper, rel, Options{}); !isErrno(err, unix.EINVAL) {
			t.Errorf("%q: %v, want EINVAL", rel, err)
		}
	}
	if _, err := copyRel(s.work, s.lower, s.upper, "d/x", Options{}); !isErrno(err, unix.ENOENT) {
		t.Errorf("missing lower object: %v, want ENOENT", err)
	}
	if _, err := copyRel(s.work, s.lower, s.upper, "d", Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := copyRel(s.work, s.upper, s.lower, "d", Options{}); !isErrno(err, unix.EROFS) {
		t.Errorf("lower as upper: %v, want EROFS", err)
	}
	// The upper parent missing, or not a directory.
	testenv.Must(t, os.MkdirAll(filepath.Join(lowerDir, "p/q"), 0o755))
	if _, err := copyRel(s.work, s.lower, s.upper, "p/q", Options{}); !isErrno(err, unix.ENOENT) {
		t.Errorf("no upper parent: %v, want ENOENT", err)
	}
	testenv.Must(t, os.WriteFile(filepath.Join(s.upperDir, "p"), nil, 0o644))
	if _, err := copyRel(s.work, s.lower, s.upper, "p/q", Options{}); !isErrno(err, unix.ENOTDIR) {
		t.Errorf("upper parent a file: %v, want ENOTDIR", err)
	}
}

// TestNoFollow checks that no symlink stored in a layer is followed: in
// the lower path, in the upper parent, or as the object copied.
func TestNoFollow(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	lowerDir := filepath.Join(base, "lower")
	outside := filepath.Join(base, "outside")
	testenv.MakeTree(t, lowerDir, "f real/f real", "l rel real", "l abs "+outside, "l tofile "+outside+"/f")
	testenv.MakeTree(t, outside, "f f outside")
	s := newStack(t, lowerDir, base)
	for _, d := range []string{"rel", "abs"} {
		testenv.Must(t, os.Mkdir(filepath.Join(s.upperDir, d), 0o755))
		// The parent, a symlink, is opened itself, and is no
		// directory.
		if _, err := copyRel(s.work, s.lower, s.upper, d+"/f", Options{Trusted: true}); !isErrno(err, unix.ENOTDIR) {
			t.Errorf("%s/f: %v, want ENOTDIR", d, err)
		}
		if _, err := os.Lstat(filepath.Join(s.upperDir, d, "f")); !os.IsNotExist(err) {
			t.Errorf("%s/f: copied through a symlink", d)
		}
	}
	// The symlink itself is copied, as a symlink.
	s.copy(t, "tofile", Options{Trusted: true})
	if fi, err := os.Lstat(filepath.Join(s.upperDir, "tofile")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("tofile: %v %v, want a symlink", fi, err)
	}
	// An upper parent that is a symlink to a directory outside.
	testenv.MakeTree(t, s.upperDir, "l up "+outside)
	testenv.MakeTree(t, lowerDir, "f up/g g")
	// The symlink is opened itself, and is no directory.
	if _, err := copyRel(s.work, s.lower, s.upper, "up/g", Options{Trusted: true}); !isErrno(err, unix.ENOTDIR) {
		t.Errorf("up/g: %v, want ENOTDIR", err)
	}
	if _, err := os.Lstat(filepath.Join(outside, "g")); !os.IsNotExist(err) {
		t.Errorf("copied through an upper symlink")
	}
	if x := xattrs(t, outside); len(x) != 0 {
		t.Errorf("xattrs set through an upper symlink: %q", keys(x))
	}
}

func TestOpenCleans(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	testenv.MakeTree(t, outside, "d keep/deep", "f keep/file keep")
	workdir := filepath.Join(base, "workdir")
	testenv.Must(t, os.Mkdir(workdir, 0o755))

	// Missing: created, mode 0.
	w, err := Open(workdir)
	testenv.Must(t, err)
	w.Close()
	if st := lstat(t, filepath.Join(workdir, "work")); st.Mode != unix.S_IFDIR {
		t.Errorf("work: mode %o, want a directory of mode 0", st.Mode)
	}

	work := filepath.Join(workdir, "work")
	testenv.MakeTree(t, work, "f #1 temp", "d #2/a/b/c", "l #2/a/b/out "+outside, "l #3 "+outside+"/keep", "l #4 /", "l #2/up ..", "f #6/locked/x")
	testenv.Must(t, unix.Mknod(filepath.Join(work, "#2/a/wh"), unix.S_IFCHR, 0))
	testenv.Must(t, unix.Mkfifo(filepath.Join(work, "#5"), 0o600))
	testenv.Must(t, os.Chmod(filepath.Join(work, "#6/locked"), 0))
	testenv.Must(t, os.Chmod(filepath.Join(work, "#6"), 0))
	testenv.Must(t, unix.Lsetxattr(work, "system.posix_acl_default", acl([3]uint32{aclUserObj, 7, aclNoID}, [3]uint32{aclGroupObj, 5, aclNoID}, [3]uint32{aclOther, 5, aclNoID}), 0))
	w, err = Open(workdir)
	testenv.Must(t, err)
	defer w.Close()
	names, err := readNames(w.Fd())
	testenv.Must(t, err)
	if len(names) != 0 {
		t.Errorf("work holds %v", names)
	}
	if _, err := testenv.Xattr(work, "system.posix_acl_default"); err != unix.ENODATA {
		t.Errorf("default ACL on work kept: %v", err)
	}
	for _, p := range []string{"keep", "keep/deep", "keep/file"} {
		if _, err := os.Lstat(filepath.Join(outside, p)); err != nil {
			t.Errorf("outside %s: %v", p, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(outside, "keep/file")); string(b) != "keep" {
		t.Errorf("outside file changed: %q", b)
	}
	if _, err := os.Lstat(workdir); err != nil {
		t.Errorf("workdir: %v", err)
	}

	// workdir/work a symlink: refused, not followed.
	other := filepath.Join(base, "other")
	testenv.Must(t, os.Mkdir(other, 0o755))
	testenv.Must(t, os.Symlink(outside, filepath.Join(other, "work")))
	if w, err := Open(other); err == nil {
		w.Close()
		t.Errorf("Open followed workdir/work, a symlink")
	}
	if _, err := os.Lstat(filepath.Join(outside, "keep/file")); err != nil {
		t.Errorf("outside emptied through a symlink: %v", err)
	}
}

// TestFaultInjection fails a copy at every step in turn: the upper layer
// must then hold no object at rel, work nothing, and the parent neither
// the impure marker nor other times.
func TestFaultInjection(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	lowerDir := filepath.Join(base, "lower")
	testenv.MakeTree(t, lowerDir, "d p/dir", "f p/empty", "f p/hard x", "l p/link target", "p p/fifo")
	testenv.Must(t, os.WriteFile(filepath.Join(lowerDir, "p/file"), []byte("data"), 0o4755))
	testenv.Must(t, os.Link(filepath.Join(lowerDir, "p/hard"), filepath.Join(lowerDir, "p/hard2")))
	testenv.Must(t, unix.Lsetxattr(filepath.Join(lowerDir, "p/file"), "user.a", []byte("b"), 0))
	s := newStack(t, lowerDir, base)
	testenv.Must(t, os.Mkdir(filepath.Join(s.upperDir, "p"), 0o755))
	parent := filepath.Join(s.upperDir, "p")
	setTimes(t, parent, 1500000000, 1400000000)
	errInjected := unix.ENOSPC
	for _, named := range []bool{false, true} {
		noTmpfile = named
		for _, rel := range []string{"p/file", "p/empty", "p/hard", "p/dir", "p/link", "p/fifo"} {
			for _, opts := range []Options{{Fsync: true, Trusted: true}, {Fsync: true}} {
				var steps []string
				failAt = func(step string) error {
					steps = append(steps, step)
					return nil
				}
				s.copy(t, rel, opts)
				testenv.Must(t, os.RemoveAll(filepath.Join(s.upperDir, rel)))
				unix.Lremovexattr(parent, "trusted.overlay.impure")
				unix.Lremovexattr(parent, "user.overlay.impure")
				setTimes(t, parent, 1500000000, 1400000000)
				before := lstat(t, parent)
				if len(steps) < 6 {
					t.Fatalf("%s: steps %v", rel, steps)
				}
				for _, fail := range steps {
					failAt = func(step string) error {
						if step == fail {
							return errInjected
						}
						return nil
					}
					what := fmt.Sprintf("%s %+v named=%v failing at %s", rel, opts, named, fail)
					if _, err := copyRel(s.work, s.lower, s.upper, rel, opts); !isErrno(err, errInjected) {
						t.Errorf("%s: %v", what, err)
					}
					if _, err := os.Lstat(filepath.Join(s.upperDir, rel)); !os.IsNotExist(err) {
						t.Errorf("%s: upper object left: %v", what, err)
					}
					if w := s.workEntries(t); len(w) != 0 {
						t.Errorf("%s: work holds %v", what, w)
					}
					if x := xattrs(t, parent); len(x) != 0 {
						t.Errorf("%s: parent xattrs %q", what, keys(x))
					}
					if after := lstat(t, parent); after.Atim != before.Atim || after.Mtim != before.Mtim {
						t.Errorf("%s: parent times changed", what)
					}
				}
				failAt = nil
				s.copy(t, rel, opts)
				testenv.Must(t, os.RemoveAll(filepath.Join(s.upperDir, rel)))
				unix.Lremovexattr(parent, "trusted.overlay.impure")
				unix.Lremovexattr(parent, "user.overlay.impure")
			}
		}
	}
	noTmpfile = false
}

// TestConcurrent copies many objects into one parent at once.
func TestConcurrent(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	lowerDir := filepath.Join(base, "lower")
	testenv.Must(t, os.MkdirAll(filepath.Join(lowerDir, "p"), 0o755))
	const n = 32
	for i := range n {
		if i%4 == 0 {
			testenv.Must(t, os.Mkdir(filepath.Join(lowerDir, "p", fmt.Sprint(i)), 0o755))
		} else {
			testenv.Must(t, os.WriteFile(filepath.Join(lowerDir, "p", fmt.Sprint(i)), []byte(fmt.Sprint(i)), 0o644))
		}
	}
	s := newStack(t, lowerDir, base)
	s.copy(t, "p", Options{Trusted: true})
	fds := countFds(t)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := copyRel(s.work, s.lower, s.upper, "p/"+fmt.Sprint(i), Options{Trusted: true}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	entries, err := os.ReadDir(filepath.Join(s.upperDir, "p"))
	testenv.Must(t, err)
	if len(entries) != n {
		t.Errorf("%d entries copied, want %d", len(entries), n)
	}
	if v, _ := testenv.Xattr(filepath.Join(s.upperDir, "p"), "trusted.overlay.impure"); v != "y" {
		t.Errorf("impure %q", v)
	}
	if w := s.workEntries(t); len(w) != 0 {
		t.Errorf("work holds %v", w)
	}
	if now := countFds(t); now != fds {
		t.Errorf("%d fds open, %d before", now, fds)
	}
}

func countFds(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	testenv.Must(t, err)
	return len(entries)
}
