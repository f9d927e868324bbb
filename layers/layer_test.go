package layers

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// hostile builds a layer whose symlinks all try to lead out of it or
// around in circles.
func hostile(t *testing.T) (*Layer, string) {
	t.Helper()
	root := t.TempDir()
	testenv.MakeTree(t, root,
		"f dir/file inside", "l etc /etc", "l dir/up ..", "l dir/sub/far ../../../../../../..", "l loop loop",
		"l b a", "l a b", "l magic /proc/self/root", "l dirlink dir")
	l, err := Open(root, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, root
}

func TestNoPathGoesThroughALayerSymlink(t *testing.T) {
	l, _ := hostile(t)
	for _, rel := range []string{
		"etc/passwd", "etc/.", "dir/up/dir/file", "dir/sub/far/etc/passwd",
		"loop/x", "a/x", "magic/etc/passwd", "dirlink/file",
	} {
		if _, err := l.Lstat(rel); err == nil {
			t.Errorf("Lstat(%q) went through a symlink", rel)
		} else if !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.EXDEV) && !errors.Is(err, unix.ENOTDIR) {
			t.Errorf("Lstat(%q) = %v, want ELOOP, EXDEV or ENOTDIR", rel, err)
		}
		if fd, err := l.OpenPath(rel); err == nil {
			unix.Close(fd)
			t.Errorf("OpenPath(%q) went through a symlink", rel)
		}
		if _, err := l.ReadDir(rel); err == nil {
			t.Errorf("ReadDir(%q) went through a symlink", rel)
		}
		if _, err := l.Getxattr(rel, "user.x"); err == nil || errors.Is(err, unix.ENODATA) {
			t.Errorf("Getxattr(%q) reached an object: %v", rel, err)
		}
	}
	// The escaping paths are refused even without a symlink.
	for _, rel := range []string{"..", "../etc", "dir/../../etc", "/etc"} {
		if _, err := l.Lstat(rel); !errors.Is(err, unix.EXDEV) {
			t.Errorf("Lstat(%q) = %v, want EXDEV", rel, err)
		}
	}
}

func TestSymlinksAreObjectsNotWays(t *testing.T) {
	l, _ := hostile(t)
	for rel, target := range map[string]string{"etc": "/etc", "loop": "loop", "dir/up": "..", "magic": "/proc/self/root"} {
		st, err := l.Lstat(rel)
		if err != nil {
			t.Fatalf("Lstat(%q): %v", rel, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			t.Errorf("Lstat(%q) mode %o, want a symlink", rel, st.Mode)
		}
		dir, name := ".", rel
		if i := strings.LastIndexByte(rel, '/'); i >= 0 {
			dir, name = rel[:i], rel[i+1:]
		}
		dfd, err := l.OpenPath(strings.TrimPrefix(dir, "."))
		if err != nil {
			t.Fatal(err)
		}
		got, err := ReadlinkAt(dfd, name)
		if err != nil || got != target {
			t.Errorf("ReadlinkAt(%q) = %q, %v; want %q", rel, got, err, target)
		}
		if fd, err := l.OpenFileAt(dfd, name, unix.O_RDONLY); err == nil {
			unix.Close(fd)
			t.Errorf("OpenFileAt(%q) followed the symlink", rel)
		}
		unix.Close(dfd)
	}
	if _, err := ReadlinkAt(l.Root(), "dir/file"); !errors.Is(err, unix.EINVAL) {
		t.Errorf("ReadlinkAt of a file = %v, want EINVAL", err)
	}
}

func TestSymlinkSwappedInDuringUse(t *testing.T) {
	l, root := hostile(t)
	// A directory replaced by a symlink behind the overlay's back must
	// not become a way out.
	if err := os.RemoveAll(filepath.Join(root, "dir")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(root, "dir")); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Lstat("dir/passwd"); err == nil {
		t.Fatal("Lstat went through a swapped-in symlink")
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"a": true, ".a": true, "..a": true, strings.Repeat("x", 255): true,
		"": false, ".": false, "..": false, "a/b": false, "/": false, "a\x00b": false,
	} {
		if got := ValidName(name); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestReadDirLongAndManyNames(t *testing.T) {
	root := t.TempDir()
	long := strings.Repeat("n", 255)
	want := map[string]bool{long: true}
	if err := os.WriteFile(filepath.Join(root, long), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3000; i++ {
		name := "f" + strings.Repeat("x", i%200) + string(rune('a'+i%26)) + itoa(i)
		want[name] = true
		if err := os.WriteFile(filepath.Join(root, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l, err := Open(root, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ents, err := l.ReadDir("")
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(want) {
		t.Fatalf("ReadDir: %d entries, want %d", len(ents), len(want))
	}
	for _, e := range ents {
		if !want[e.Name] || e.Type != unix.DT_REG || e.Ino == 0 {
			t.Fatalf("unexpected entry %+v", e)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestErrno(t *testing.T) {
	if got := Errno(&os.PathError{Op: "open", Path: "x", Err: syscall.ENOENT}); got != syscall.ENOENT {
		t.Errorf("Errno(PathError ENOENT) = %v", got)
	}
	if got := Errno(errors.New("opaque")); got != syscall.EIO {
		t.Errorf("Errno(plain error) = %v, want EIO", got)
	}
}
