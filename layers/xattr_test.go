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

// TestReadings: which names each Reading takes as the overlay's, and how
// it escapes a user's: without userxattr every form is private and
// trusted.overlay.* escaped; with it, as the kernel, only user.overlay.*,
// which is then the escaped one.
func TestReadings(t *testing.T) {
	for _, c := range []struct {
		r                Reading
		name             string
		private, escaped bool
		user             string // the name shown for it, "" if none
	}{
		{EveryForm, "trusted.overlay.opaque", true, false, ""},
		{EveryForm, "trusted.overlay.overlay.x", true, true, "trusted.overlay.x"},
		{EveryForm, "user.overlay.opaque", true, false, ""},
		{EveryForm, "user.overlay.overlay.x", true, true, ""},
		{EveryForm, "user.fuseoverlayfs.opaque", true, false, ""},
		{EveryForm, "user.plain", false, false, ""},
		{UserForm, "trusted.overlay.opaque", false, false, ""},
		{UserForm, "trusted.overlay.overlay.x", false, false, ""},
		{UserForm, "user.overlay.opaque", true, false, ""},
		{UserForm, "user.overlay.overlay.x", true, true, "user.overlay.x"},
		{UserForm, "user.fuseoverlayfs.opaque", false, false, ""},
	} {
		if got := c.r.IsPrivate(c.name); got != c.private {
			t.Errorf("%v: IsPrivate(%s) = %v", c.r, c.name, got)
		}
		if got := c.r.IsEscaped(c.name); got != c.escaped {
			t.Errorf("%v: IsEscaped(%s) = %v", c.r, c.name, got)
		}
		user, ok := c.r.Unescape(c.name)
		if user != c.user || ok != (c.user != "") {
			t.Errorf("%v: Unescape(%s) = %q, %v", c.r, c.name, user, ok)
		}
		if ok && c.r.Escape(user) != c.name {
			t.Errorf("%v: Escape(%s) = %q, want %q", c.r, user, c.r.Escape(user), c.name)
		}
	}
	if got := UserForm.Escape("trusted.overlay.x"); got != "trusted.overlay.x" {
		t.Errorf("userxattr escapes trusted.overlay.x as %q", got)
	}
}
