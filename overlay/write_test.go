package overlay

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// mountRW mounts lower (one layer) under a new upper layer in this
// process; see mountStack for the rules on touching the mount.
func mountRW(t *testing.T, lower string) (upper, mnt string) {
	t.Helper()
	testenv.RequireMount(t)
	fsys, upper, base := openRW(t, lower, Options{Timeout: time.Hour})
	mnt = filepath.Join(base, "mnt")
	testenv.Must(t, os.Mkdir(mnt, 0o755))
	serveAt(t, fsys, mnt)
	return upper, mnt
}

func lstatType(t *testing.T, p string) (uint32, unix.Stat_t) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return 0, st
	}
	return st.Mode & unix.S_IFMT, st
}

func writeFile(t *testing.T, p string, flags int, data string) {
	t.Helper()
	fd, err := unix.Open(p, unix.O_WRONLY|flags, 0o644)
	testenv.Must(t, err)
	_, err = unix.Write(fd, []byte(data))
	testenv.Must(t, err)
	testenv.Must(t, unix.Close(fd))
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY, 0)
	testenv.Must(t, err)
	defer unix.Close(fd)
	buf := make([]byte, 4096)
	n, err := unix.Read(fd, buf)
	testenv.Must(t, err)
	return string(buf[:n])
}

func TestWritesInTheKernelFormat(t *testing.T) {
	lower := t.TempDir()
	testenv.MakeTree(t, lower, "d dir/sub", "f dir/file lower", "f dir/sub/x x", "f gone g", "f moved m")
	sum := testenv.TreeSum(t, lower)
	t.Cleanup(func() {
		if testenv.TreeSum(t, lower) != sum {
			t.Error("the lower layer changed")
		}
	})
	upper, mnt := mountRW(t, lower)
	m := func(p string) string { return filepath.Join(mnt, p) }
	u := func(p string) string { return filepath.Join(upper, p) }

	var before unix.Stat_t
	testenv.Must(t, unix.Lstat(m("dir/file"), &before))
	writeFile(t, m("dir/file"), unix.O_APPEND, "+more")
	if got := readFile(t, m("dir/file")); got != "lower+more" {
		t.Errorf("after append: %q", got)
	}
	if got := readFile(t, filepath.Join(lower, "dir/file")); got != "lower" {
		t.Fatalf("the lower file changed: %q", got)
	}
	var after unix.Stat_t
	testenv.Must(t, unix.Lstat(m("dir/file"), &after))
	if after.Ino != before.Ino {
		t.Errorf("copy-up changed st_ino %d -> %d", before.Ino, after.Ino)
	}

	// Unlinking a lower file leaves a char 0/0 whiteout and copies
	// nothing up.
	testenv.Must(t, unix.Unlink(m("gone")))
	if typ, st := lstatType(t, u("gone")); typ != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("upper gone: type %o rdev %d, want a whiteout", typ, st.Rdev)
	}
	if _, err := os.Lstat(m("gone")); !os.IsNotExist(err) {
		t.Errorf("gone still shows: %v", err)
	}

	// Renaming a lower file leaves a whiteout at the old name.
	testenv.Must(t, unix.Rename(m("moved"), m("dir/moved")))
	if typ, _ := lstatType(t, u("moved")); typ != unix.S_IFCHR {
		t.Errorf("old name of a renamed lower file: type %o, want a whiteout", typ)
	}
	if got := readFile(t, m("dir/moved")); got != "m" {
		t.Errorf("renamed file reads %q", got)
	}

	// A directory that exists below cannot be renamed (EXDEV).
	if err := unix.Rename(m("dir/sub"), m("sub2")); err != syscall.EXDEV {
		t.Errorf("rename of a lower dir: %v, want EXDEV", err)
	}

	// rmdir of a merged directory that still shows entries.
	if err := unix.Rmdir(m("dir/sub")); err != syscall.ENOTEMPTY {
		t.Errorf("rmdir of a non-empty dir: %v, want ENOTEMPTY", err)
	}
	testenv.Must(t, unix.Unlink(m("dir/sub/x")))
	testenv.Must(t, unix.Rmdir(m("dir/sub")))
	if typ, _ := lstatType(t, u("dir/sub")); typ != unix.S_IFCHR {
		t.Errorf("removed lower dir: upper type %o, want a whiteout", typ)
	}

	// mkdir over that whiteout makes an opaque directory.
	testenv.Must(t, unix.Mkdir(m("dir/sub"), 0o750))
	if v, err := testenv.Xattr(u("dir/sub"), layers.Trusted.Name(layers.XattrOpaque)); err != nil || v != "y" {
		t.Errorf("dir made over a whiteout: opaque %q, %v", v, err)
	}
	if ents, err := os.ReadDir(m("dir/sub")); err != nil || len(ents) != 0 {
		t.Errorf("new dir over a whiteout lists %v, %v", ents, err)
	}

	// char 0/0 is refused; other nodes are made.
	if err := unix.Mknod(m("wh"), unix.S_IFCHR|0o600, 0); err != syscall.EPERM {
		t.Errorf("mknod 0/0: %v, want EPERM", err)
	}
	testenv.Must(t, unix.Mkfifo(m("fifo"), 0o640))
	testenv.Must(t, unix.Symlink("dir/file", m("link")))
	testenv.Must(t, unix.Link(m("dir/file"), m("hard")))
	var a, b unix.Stat_t
	testenv.Must(t, unix.Lstat(m("hard"), &a))
	testenv.Must(t, unix.Lstat(m("dir/file"), &b))
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard link: inos %d %d nlink %d", a.Ino, b.Ino, a.Nlink)
	}

	// chmod copies up; the mode is exact.
	testenv.Must(t, unix.Chmod(m("dir/moved"), 0o4751))
	if _, st := lstatType(t, u("dir/moved")); st.Mode&0o7777 != 0o4751 {
		t.Errorf("chmod: upper mode %o", st.Mode&0o7777)
	}

	// Nothing is left in the workdir.
	if ents := testenv.DirNames(t, filepath.Join(filepath.Dir(upper), "work/work")); len(ents) != 0 {
		t.Errorf("workdir/work holds %v", ents)
	}
}

func TestOpenUnlinkedFileKeepsWorking(t *testing.T) {
	lower := t.TempDir()
	upper, mnt := mountRW(t, lower)
	p := filepath.Join(mnt, "f")
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o600)
	testenv.Must(t, err)
	defer unix.Close(fd)
	testenv.Must(t, unix.Unlink(p))
	if _, err := unix.Write(fd, []byte("still here")); err != nil {
		t.Fatalf("write after unlink: %v", err)
	}
	testenv.Must(t, unix.Fchmod(fd, 0o640))
	var st unix.Stat_t
	testenv.Must(t, unix.Fstat(fd, &st))
	if st.Mode&0o777 != 0o640 || st.Size != 10 {
		t.Errorf("fstat after unlink: mode %o size %d", st.Mode&0o777, st.Size)
	}
	buf := make([]byte, 32)
	n, err := unix.Pread(fd, buf, 0)
	if err != nil || string(buf[:n]) != "still here" {
		t.Errorf("read after unlink: %q, %v", buf[:n], err)
	}
	if _, err := os.Lstat(filepath.Join(upper, "f")); !os.IsNotExist(err) {
		t.Errorf("upper still has the unlinked file: %v", err)
	}
}

func TestConcurrentOpenersCopyUpOnce(t *testing.T) {
	lower := t.TempDir()
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i % 251)
	}
	testenv.Must(t, os.WriteFile(filepath.Join(lower, "f"), data, 0o644))
	upper, mnt := mountRW(t, lower)
	var before unix.Stat_t
	testenv.Must(t, unix.Stat(filepath.Join(mnt, "f"), &before))
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			fd, err := unix.Open(filepath.Join(mnt, "f"), unix.O_RDWR, 0)
			if err == nil {
				err = unix.Close(fd)
			}
			errs <- err
		}()
	}
	for range 8 {
		testenv.Must(t, <-errs)
	}
	got, err := os.ReadFile(filepath.Join(upper, "f"))
	testenv.Must(t, err)
	if len(got) != len(data) || string(got) != string(data) {
		t.Fatalf("upper copy: %d bytes, want the lower %d", len(got), len(data))
	}
	var after unix.Stat_t
	testenv.Must(t, unix.Stat(filepath.Join(mnt, "f"), &after))
	if after.Ino != before.Ino {
		t.Errorf("st_ino changed across copy-up: %d -> %d", before.Ino, after.Ino)
	}
	if ents := testenv.DirNames(t, filepath.Join(filepath.Dir(upper), "work/work")); len(ents) != 0 {
		t.Errorf("workdir/work holds %v", ents)
	}
}
