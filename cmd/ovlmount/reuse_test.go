package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestHeldObjectsUnderNumberReuse: callers in directories of their own
// each hold an object by an O_PATH descriptor, remove it and make its
// name again as another type, in a loop. The host hands the numbers of
// removed objects to objects made meanwhile in the other directories; a
// held object must keep showing its own type and nlink, as on the
// kernel. (A removal that found its node by inode number after the host
// had removed the object took another caller's new node for it, whose
// type the kernel then saw change: EIO.)
func TestHeldObjectsUnderNumberReuse(t *testing.T) {
	testenv.RequireMount(t)
	for _, impl := range []string{"kernel", "ovlmount"} {
		t.Run(impl, func(t *testing.T) {
			mnt := implMount(t, impl, newStackDirs(t))
			if bad := recreateHeld(t, mnt, 4, 3*time.Second); len(bad) > 0 {
				t.Errorf("%d held objects changed; first: %v", len(bad), bad[0])
			}
		})
	}
}

// recreateHeld runs workers threads for d, each in a directory of its own
// under mnt, and returns what went wrong.
func recreateHeld(t *testing.T, mnt string, workers int, d time.Duration) []string {
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		bad []string
	)
	report := func(format string, args ...any) {
		mu.Lock()
		bad = append(bad, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	create := func(p string, kind int) error {
		switch kind % 3 {
		case 0:
			return os.WriteFile(p, []byte("data"), 0o644)
		case 1:
			return unix.Mkdir(p, 0o755)
		default:
			return unix.Symlink("target", p)
		}
	}
	remove := func(p string, kind int) error {
		if kind%3 == 1 {
			return unix.Rmdir(p)
		}
		return unix.Unlink(p)
	}
	deadline := time.Now().Add(d)
	for w := range workers {
		dir := filepath.Join(mnt, fmt.Sprintf("w%d", w))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				p := filepath.Join(dir, fmt.Sprintf("n%d", i%3))
				kind := i + w
				if err := create(p, kind); err != nil {
					report("make %s: %v", p, err)
					return
				}
				fd, err := unix.Open(p, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				if err != nil {
					report("open %s: %v", p, err)
					return
				}
				var before, after unix.Stat_t
				err = unix.Fstat(fd, &before)
				if err == nil {
					err = remove(p, kind)
				}
				if err == nil {
					err = create(p, kind+1)
				}
				if err == nil {
					err = unix.Fstat(fd, &after)
				}
				switch {
				case err != nil:
					report("%s, step %d: %v", p, i, err)
				case after.Mode != before.Mode || after.Ino != before.Ino || after.Nlink != 0:
					report("%s, step %d: held object was mode %o ino %d, now mode %o ino %d nlink %d",
						p, i, before.Mode, before.Ino, after.Mode, after.Ino, after.Nlink)
				}
				unix.Close(fd)
				if err := remove(p, kind+1); err != nil {
					report("remove %s: %v", p, err)
					return
				}
			}
		})
	}
	wg.Wait()
	return bad
}

// TestHardLinkUnderAForgottenDirectory: a hard link held through one
// name (an O_PATH descriptor) while the kernel forgets the directory of
// its other name; that name is then removed, or renamed over another,
// through the directory looked up again. The held name stays, with the
// link count the kernel shows. (ovlmount once kept the link's place under
// the forgotten directory's node, and the held name said ENOENT.)
func TestHardLinkUnderAForgottenDirectory(t *testing.T) {
	testenv.RequireMount(t)
	for _, impl := range []string{"kernel", "ovlmount"} {
		for _, op := range []string{"unlink", "rename"} {
			t.Run(impl+"/"+op, func(t *testing.T) {
				mnt := implMount(t, impl, newStackDirs(t))
				m, lo := filepath.Join(mnt, "m"), filepath.Join(mnt, "lo")
				testenv.MakeTree(t, mnt, "d m", "d lo", "l m/n xx", "f m/other o")
				testenv.Must(t, unix.Linkat(unix.AT_FDCWD, m+"/n", unix.AT_FDCWD, lo+"/n", 0))
				fd, err := unix.Open(lo+"/n", unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				testenv.Must(t, err)
				defer unix.Close(fd)
				unix.Sync()
				testenv.Must(t, os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0))
				want := uint64(1)
				if op == "unlink" {
					testenv.Must(t, unix.Unlink(m+"/n"))
				} else {
					testenv.Must(t, unix.Rename(m+"/n", m+"/other"))
					want = 2
				}
				var st unix.Stat_t
				if err := unix.Lstat(lo+"/n", &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFLNK || st.Nlink != want {
					t.Errorf("lstat of the held name after %s of the other: mode %o nlink %d, %v; want a symlink, nlink %d", op, st.Mode, st.Nlink, err, want)
				}
				if err := unix.Fstat(fd, &st); err != nil || st.Nlink != want {
					t.Errorf("fstat of the held name after %s of the other: nlink %d, %v; want %d", op, st.Nlink, err, want)
				}
			})
		}
	}
}
