package conformance

import (
	"cmp"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// interopSpec is a small stack for sessions of writes through a kernel
// mount: files to copy up (one a hard link), a merged directory, a lower
// directory to delete and recreate.
func interopSpec() Spec {
	return Spec{
		Lowers: []Layer{
			{
				{Path: "d/top", Kind: File, Content: "l0"},
				{Path: "d/chmod-me", Kind: File, Content: "mode"},
				{Path: "tagged", Kind: File, Content: "xattrs", Xattrs: map[string]string{"user.a": "1"}},
			},
			{
				{Path: "append", Kind: File, Content: "lower"},
				{Path: "link1", Kind: File, Content: "linked"},
				{Path: "link2", Kind: HardLink, Target: "link1"},
				{Path: "d/bottom", Kind: File, Content: "l1"},
				{Path: "d/remove-me", Kind: File, Content: "x"},
				{Path: "renamed-from", Kind: File, Content: "moving"},
				{Path: "tree/a/b", Kind: File, Content: "deep"},
				{Path: "tree/c", Kind: Symlink, Target: "a/b"},
			},
		},
		Upper: Layer{},
	}
}

// TestKernelWritesOvlmountReads: a session of writes through a kernel
// mount leaves an upper layer in the kernel's format (copy-up origins,
// whiteouts, an opaque directory, impure parents); ovlmount must then show
// exactly the kernel's view of it, inode numbers included.
func TestKernelWritesOvlmountReads(t *testing.T) {
	prog := programUnderTest(t)
	l := build(t, interopSpec())
	base := t.TempDir()
	session := l
	session.Work = filepath.Join(base, "work")
	mnt := filepath.Join(base, "mnt")
	for _, d := range []string{session.Work, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m, err := Kernel{}.Mount(session, mnt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if IsMounted(mnt) {
			m.Unmount()
		}
	})
	p := func(rel string) string { return filepath.Join(mnt, rel) }
	steps := []struct {
		what string
		do   func() error
	}{
		{"append to a lower file", func() error {
			f, err := os.OpenFile(p("append"), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteString(" and upper")
			return err
		}},
		{"copy up one name of a hard link", func() error { return os.WriteFile(p("link1"), []byte("changed"), 0o644) }},
		{"chmod a lower file", func() error { return os.Chmod(p("d/chmod-me"), 0o600) }},
		{"setxattr on a lower file", func() error { return unix.Setxattr(p("tagged"), "user.b", []byte("2"), 0) }},
		{"unlink a lower file", func() error { return os.Remove(p("d/remove-me")) }},
		{"rename a lower file", func() error { return os.Rename(p("renamed-from"), p("d/renamed-to")) }},
		{"remove a lower tree", func() error { return os.RemoveAll(p("tree")) }},
		{"mkdir over a whiteout", func() error { return os.Mkdir(p("tree"), 0o750) }},
		{"create in the opaque dir", func() error { return os.WriteFile(p("tree/new"), []byte("new"), 0o640) }},
		{"create in a merged dir", func() error { return os.WriteFile(p("d/created"), []byte("c"), 0o644) }},
		{"mkdir a new tree", func() error { return os.MkdirAll(p("fresh/sub"), 0o755) }},
		{"symlink", func() error { return os.Symlink("../d/top", p("fresh/link")) }},
		{"mkfifo", func() error { return unix.Mkfifo(p("fresh/fifo"), 0o600) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s through the kernel: %v", s.what, err)
		}
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	kernel := kernelReference(t, l, nil)
	ours := mountAndWalk(t, prog, l, nil)
	expectSame(t, "ovlmount on the kernel's upper layer", kernel, ours, DiffOptions{})
	expectConsistentInos(t, prog.Name(), ours)
	// The copied-up name of the hard link has its own number now; the
	// other name keeps the lower one.
	if ours.Entries["link1"].Ino == ours.Entries["link2"].Ino {
		t.Error("copy-up of one name of a hard link must break the link")
	}
}

// TestXinoAcrossFilesystems: with a lower layer on tmpfs and the others
// on the test filesystem, ovlmount's inode numbers equal a kernel mount's
// with xino=on (ovlmount's default, xino=auto).
func TestXinoAcrossFilesystems(t *testing.T) {
	prog := programUnderTest(t)
	l := build(t, interopSpec())
	tmp := t.TempDir()
	if err := unix.Mount("tmpfs", tmp, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(tmp, unix.MNT_DETACH) })
	moved := filepath.Join(tmp, "lower0")
	if out, err := exec.Command("cp", "-a", l.Lowers[0], moved).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v: %s", err, out)
	}
	l.Lowers[0] = moved
	kernel := walkMounted(t, Kernel{Options: "xino=on"}, l, nil)
	ours := walkMounted(t, prog, l, nil)
	expectSame(t, "xino over ext4 and tmpfs", kernel, ours, DiffOptions{})
	expectConsistentInos(t, prog.Name(), ours)
	if ino := ours.Entries["tagged"].Ino; ino>>62 == 0 {
		t.Errorf("a tmpfs object's number %#x carries no filesystem index", ino)
	}
}

// TestOvlmountWritesKernelReads is the converse of
// TestKernelWritesOvlmountReads: a session of mixed writes through
// ovlmount, then a kernel mount of the same layers must show exactly the
// merged tree ovlmount showed, inode numbers and d_ino included. That
// holds only if ovlmount writes the kernel's format: whiteouts, opaque
// directories, origins the kernel can follow back to the lower objects,
// impure parents (without which the kernel's d_ino would not be the
// origin number).
func TestOvlmountWritesKernelReads(t *testing.T) {
	prog := programUnderTest(t)
	spec := writeBase()
	l := build(t, spec)
	base := t.TempDir()
	// As in the write scenarios: the kernel's own lazy bookkeeping on
	// directories the session never touches is not ovlmount's to copy.
	if err := Settle(base, l, Scenario{}); err != nil {
		t.Fatal(err)
	}
	const user = 1000
	// Every step succeeds on the kernel but the two that are there for
	// their errors.
	session := []Op{
		Write("f", 0, "rewritten by ovlmount"),
		Append("big", "appended"),
		Chmod("x", 0o600),
		Setxattr("x", "user.added", "v", 0),
		Removexattr("x", "user.a"),
		Utimens("d/sub/c", tPast, tFuture),
		Link("f", "m/f-link"),
		Unlink("d/a"),
		Unlink("m/l1"),
		Unlink("wf").Want("ENOENT"),
		Rename("m/l0", "m/renamed"),
		Rename("u/dir", "m/moved-dir"),
		Rmdir("e"),
		Rmdir("mw"),
		Rmdir("wd").Want("ENOENT"),
		Mkdir("wd", 0o750),
		Create("wd/new", 0o640, "in an opaque dir"),
		Create("m/new", 0o600, "new"),
		Mkdir("newdir", 0o755),
		MkSymlink("../f", "newdir/link"),
		Mkfifo("newdir/fifo", 0o600),
		Create("pub/users", 0o644, "a user's").AsUser(user, user),
		Chown("sym", 7, 8),
		Mkdir("sgid/sub", 0o755),
	}
	for i := range session {
		if session[i].Expect == "" {
			session[i] = session[i].Want("ok")
		}
	}
	l.Work = filepath.Join(base, "work")
	mnt := filepath.Join(base, "mnt")
	for _, d := range []string{l.Work, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m, err := prog.Mount(l, mnt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmountIfMounted(m) })
	results, err := guardedOps(m, session)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		if got := cmp.Or(r.Err, "ok"); got != session[i].Expect {
			t.Errorf("%s: %v gave %v, the kernel gives %s", prog.Name(), session[i], r, session[i].Expect)
		}
	}
	ours, err := guardedWalk(m, probedXattrs)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	l.Work = ""
	kernel := mountAndWalk(t, Kernel{}, l, nil)
	expectSame(t, "the kernel on ovlmount's upper layer", kernel, ours, DiffOptions{})
	expectConsistentInos(t, "the kernel on ovlmount's upper layer", kernel)
	expectConsistentInos(t, prog.Name(), ours)
}
