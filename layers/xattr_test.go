package layers

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestGetxattrAt reads through getxattrat(2) and through its fallback: a
// value longer than the first buffer, a missing one, and a symlink that
// is read itself, not followed.
func TestGetxattrAt(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	long := bytes.Repeat([]byte("v"), 1000)
	if err := unix.Setxattr(file, "user.long", long, 0); err != nil {
		t.Skipf("no user xattrs here: %v", err)
	}
	if err := os.Symlink("file", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	for _, fallback := range []bool{false, true} {
		noGetxattrat.Store(fallback)
		v, err := GetxattrAt(dfd, "file", "user.long")
		if err != nil || !bytes.Equal(v, long) {
			t.Errorf("fallback %v: user.long = %d bytes, %v; want %d bytes", fallback, len(v), err, len(long))
		}
		if _, err := GetxattrAt(dfd, "file", "user.none"); err != unix.ENODATA {
			t.Errorf("fallback %v: missing xattr: %v, want ENODATA", fallback, err)
		}
		if _, err := GetxattrAt(dfd, "link", "user.long"); err != unix.ENODATA {
			t.Errorf("fallback %v: through a symlink: %v, want ENODATA (not followed)", fallback, err)
		}
	}
	noGetxattrat.Store(false)
	if _, err := getxattrat(dfd, "file", "user.long"); err == unix.ENOSYS {
		t.Log("this kernel has no getxattrat(2): only the fallback ran")
	}
}
