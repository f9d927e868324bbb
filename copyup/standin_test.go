package copyup

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// StandIn puts a regular file in place of a lower symlink or device, or
// of an upper one, with the target, xattrs but the overlay's own, times
// and override, and leaves the parent's times and the work directory as
// they were.
func TestStandIn(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	lowerDir := filepath.Join(base, "lower")
	testenv.Must(t, os.Mkdir(lowerDir, 0o755))
	testenv.Must(t, os.Symlink("../a/target", filepath.Join(lowerDir, "ln")))
	testenv.Must(t, unix.Mknod(filepath.Join(lowerDir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	testenv.Must(t, os.WriteFile(filepath.Join(lowerDir, "file"), []byte("x"), 0o644))
	s := newStack(t, lowerDir, base)
	testenv.Must(t, os.Symlink("up", filepath.Join(s.upperDir, "upln")))
	for _, p := range []string{"ln", "null"} {
		testenv.Must(t, unix.Lsetxattr(filepath.Join(lowerDir, p), "trusted.kept", []byte("k"), 0))
		// The overlay's own xattrs stay behind.
		testenv.Must(t, unix.Lsetxattr(filepath.Join(lowerDir, p), "trusted.overlay.origin", []byte("stale"), 0))
		setTimes(t, filepath.Join(lowerDir, p), 1000, 2000)
	}
	setTimes(t, filepath.Join(s.upperDir, "upln"), 3000, 4000)
	setTimes(t, s.upperDir, 5000, 6000)
	udir, err := s.upper.OpenPath("")
	testenv.Must(t, err)
	defer unix.Close(udir)
	ldir, err := s.lower.OpenPath("")
	testenv.Must(t, err)
	defer unix.Close(ldir)

	for _, tc := range []struct {
		name, content, override string
		upper                   bool
		atime, mtime            int64
	}{
		{"ln", "../a/target", "0:0:0120777:symlink", false, 1000, 2000},
		{"null", "", "0:0:0666:char-1-3", false, 1000, 2000},
		{"upln", "up", "5:6:0120777:symlink", true, 3000, 4000},
	} {
		src, sdir := s.lower, ldir
		if tc.upper {
			src, sdir = s.upper, udir
		}
		opts := Options{Fsync: true, Xattrs: map[string]string{"user.override": tc.override}}
		st, err := s.work.StandIn(src, sdir, udir, tc.name, opts)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		p := filepath.Join(s.upperDir, tc.name)
		got := lstat(t, p)
		if got.Ino != st.Ino || got.Mode != unix.S_IFREG|0o600 || got.Uid != 0 {
			t.Errorf("%s: upper object mode %o uid %d ino %d (StandIn said %d)", tc.name, got.Mode, got.Uid, got.Ino, st.Ino)
		}
		if got.Atim.Sec != tc.atime || got.Mtim.Sec != tc.mtime {
			t.Errorf("%s: times %d %d, want %d %d", tc.name, got.Atim.Sec, got.Mtim.Sec, tc.atime, tc.mtime)
		}
		if b, err := os.ReadFile(p); err != nil || string(b) != tc.content {
			t.Errorf("%s: holds %q, %v", tc.name, b, err)
		}
		x := xattrs(t, p)
		if x["user.override"] != tc.override || !tc.upper && x["trusted.kept"] != "k" {
			t.Errorf("%s: xattrs %q", tc.name, x)
		}
		if _, ok := x["trusted.overlay.origin"]; ok {
			t.Errorf("%s: has an origin", tc.name)
		}
	}
	if pst := lstat(t, s.upperDir); pst.Atim.Sec != 5000 || pst.Mtim.Sec != 6000 {
		t.Errorf("upper directory times %d %d, were 5000 6000", pst.Atim.Sec, pst.Mtim.Sec)
	}
	if w := s.workEntries(t); len(w) != 0 {
		t.Errorf("work holds %v", w)
	}
	// A lower name already in the upper layer, a regular file, a bad name.
	for name, want := range map[string]error{"ln": unix.EEXIST, "file": unix.EINVAL, "..": unix.EINVAL} {
		if _, err := s.work.StandIn(s.lower, ldir, udir, name, Options{}); err != want {
			t.Errorf("StandIn %s: %v, want %v", name, err, want)
		}
	}
	if w := s.workEntries(t); len(w) != 0 {
		t.Errorf("after failures work holds %v", w)
	}
}
