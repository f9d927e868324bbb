package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// getdentsNames lists directory dir with getdents64 calls of 512 bytes, a
// few entries each, as the stress suite does, and counts each name.
func getdentsNames(dir string) (map[string]int, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	seen := map[string]int{}
	buf := make([]byte, 512)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil || n == 0 {
			return seen, err
		}
		for b := buf[:n]; len(b) > 0; {
			reclen := int(b[16]) | int(b[17])<<8
			name := b[19:reclen]
			seen[string(name[:bytes.IndexByte(name, 0)])]++
			b = b[reclen:]
		}
	}
}

// TestConcurrentListings: four threads list a merged directory a few
// entries per call while each makes and removes names of its own in it.
// Every name that stays must be listed once by every reader, however the
// others' reads and changes interleave, as on the kernel's overlay, which
// runs the same test first. On ovlmount the readers share the merged
// listing (the kernel opens no directory of a FUSE mount for them), and
// the kernel reads on from its own cache of it.
func TestConcurrentListings(t *testing.T) {
	testenv.RequireMount(t)
	for _, impl := range []string{"kernel", "ovlmount"} {
		t.Run(impl, func(t *testing.T) {
			s := newStackDirs(t)
			bottom := filepath.Join(filepath.Dir(s.lower), "bottom")
			s.lowers = s.lower + ":" + bottom
			var top, low []string
			for w := range 4 {
				for j := range 20 {
					top = append(top, fmt.Sprintf("f c/stable%d-%d s", w, j))
				}
			}
			for j := range 30 {
				low = append(low, fmt.Sprintf("f c/low%d l", j))
			}
			testenv.MakeTree(t, s.lower, top...)
			testenv.MakeTree(t, bottom, low...)
			mnt := implMount(t, impl, s)
			if bad := listConcurrently(t, filepath.Join(mnt, "c"), 4, 20, 3*time.Second); bad > 0 {
				t.Errorf("%d listings showed a name that stayed twice or not at all", bad)
			}
		})
	}
}

// listConcurrently runs workers threads on dir for d: each makes or
// removes a name of its own, then lists dir and checks its stable names.
// It returns how many names were listed other than once.
func listConcurrently(t *testing.T, dir string, workers, stable int, d time.Duration) int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	bad := 0
	deadline := time.Now().Add(d)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				p := filepath.Join(dir, fmt.Sprintf("churn%d-%d", w, i%7))
				if i%2 == 0 {
					if fd, err := unix.Open(p, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644); err == nil {
						unix.Close(fd)
					}
				} else {
					unix.Unlink(p)
				}
				seen, err := getdentsNames(dir)
				if err != nil {
					t.Error(err)
					return
				}
				for j := range stable {
					if name := fmt.Sprintf("stable%d-%d", w, j); seen[name] != 1 {
						mu.Lock()
						if bad++; bad <= 3 {
							t.Logf("worker %d listed %s %d times", w, name, seen[name])
						}
						mu.Unlock()
					}
				}
			}
		}()
	}
	wg.Wait()
	return bad
}
