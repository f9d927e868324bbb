package copyup

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ovlmount/ovlmount/internal/testenv"
)

// TestRefill gives an upper metacopy file its data: the result holds the
// data, the metadata and the xattrs but the markers, its mtime changed
// only where data was written; a failure at any step leaves the metacopy
// file as it was, the parent's times unchanged and nothing in work.
func TestRefill(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	lowerDir := filepath.Join(base, "lower")
	testenv.Must(t, os.MkdirAll(lowerDir, 0o755))
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	testenv.Must(t, os.WriteFile(filepath.Join(lowerDir, "full"), data, 0o644))
	testenv.Must(t, os.WriteFile(filepath.Join(lowerDir, "sparse"), nil, 0o644))
	testenv.Must(t, os.Truncate(filepath.Join(lowerDir, "sparse"), 2<<20))
	s := newStack(t, lowerDir, base)
	setTimes(t, s.upperDir, 1500000000, 1400000000)
	const marker = "trusted.overlay.metacopy"
	for _, name := range []string{"full", "sparse"} {
		up := filepath.Join(s.upperDir, name)
		// metacopy makes the metacopy file, as metacopy copy-up and a
		// rename leave it.
		metacopy := func() (file, parent unix.Stat_t) {
			s.copy(t, name, Options{Trusted: true, Metacopy: &Marker{Name: marker}})
			testenv.Must(t, unix.Lsetxattr(up, "trusted.overlay.redirect", []byte("/"+name), 0))
			testenv.Must(t, unix.Lsetxattr(up, "user.kept", []byte("v"), 0))
			testenv.Must(t, os.Chmod(up, 0o4751))
			setTimes(t, up, 1300000000, 1200000000)
			setTimes(t, s.upperDir, 1500000000, 1400000000)
			return lstat(t, up), lstat(t, s.upperDir)
		}
		metacopy()
		wantX := xattrs(t, up)
		delete(wantX, marker)

		var steps []string
		failAt = func(step string) error { steps = append(steps, step); return nil }
		refill := func() (int, error) {
			meta, err := unix.Open(up, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			testenv.Must(t, err)
			defer unix.Close(meta)
			src, err := unix.Open(filepath.Join(lowerDir, name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			testenv.Must(t, err)
			defer unix.Close(src)
			return s.work.Refill(s.upper.Root(), name, meta, src, []string{marker}, true)
		}
		// A dry run records the steps; its result is put back.
		fd, err := refill()
		testenv.Must(t, err)
		failAt = nil
		unix.Close(fd)
		testenv.Must(t, os.Remove(up))
		before, parent := metacopy()
		if len(steps) < 6 {
			t.Fatalf("steps %v", steps)
		}
		for _, fail := range steps {
			failAt = func(step string) error {
				if step == fail {
					return unix.ENOSPC
				}
				return nil
			}
			what := fmt.Sprintf("%s failing at %s", name, fail)
			if _, err := refill(); !isErrno(err, unix.ENOSPC) {
				t.Fatalf("%s: %v", what, err)
			}
			if after := lstat(t, up); after.Ino != before.Ino || after.Mtim != before.Mtim {
				t.Errorf("%s: metacopy file changed", what)
			}
			if _, err := testenv.Xattr(up, marker); err != nil {
				t.Errorf("%s: marker gone: %v", what, err)
			}
			if w := s.workEntries(t); len(w) != 0 {
				t.Errorf("%s: work holds %v", what, w)
			}
			if p := lstat(t, s.upperDir); p.Mtim != parent.Mtim {
				t.Errorf("%s: parent mtime changed", what)
			}
		}
		failAt = nil
		fd, err = refill()
		testenv.Must(t, err)
		unix.Close(fd)
		after := lstat(t, up)
		if got, want := digest(t, up), digest(t, filepath.Join(lowerDir, name)); got != want {
			t.Errorf("%s: data differs", name)
		}
		if after.Ino == before.Ino || after.Mode != before.Mode || after.Uid != before.Uid || after.Atim != before.Atim {
			t.Errorf("%s: metadata %+v, was %+v", name, after, before)
		}
		if wrote := name == "full"; (after.Mtim != before.Mtim) != wrote {
			t.Errorf("%s: mtime %v, was %v", name, after.Mtim, before.Mtim)
		}
		if x := xattrs(t, up); !equalMaps(x, wantX) {
			t.Errorf("%s: xattrs %q, want %q", name, keys(x), keys(wantX))
		}
		if p := lstat(t, s.upperDir); p.Mtim != parent.Mtim {
			t.Errorf("%s: parent mtime changed", name)
		}
		if w := s.workEntries(t); len(w) != 0 {
			t.Errorf("%s: work holds %v", name, w)
		}
	}
}
