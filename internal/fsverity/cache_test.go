package fsverity

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// The tests tell a digest the cache answered from one it computed by
// asking with an O_PATH fd: fstat works on it, pread fails with EBADF.

func openPath(t *testing.T, path string) int {
	t.Helper()
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// waitSettled waits until the cache may keep path's digest: until the
// coarse clock has left the tick of the file's ctime.
func waitSettled(t *testing.T, path string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	for !settled(&st, coarseNow()) {
		time.Sleep(time.Millisecond)
	}
}

func cacheDigest(t *testing.T, c *Cache, fd int) []byte {
	t.Helper()
	sum, err := c.Digest(fd, SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

func TestCacheHashesOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	writeRandom(t, path, 5*BlockSize+3, rand.NewChaCha8([32]byte{3}))
	waitSettled(t, path)
	if _, err := Digest(openPath(t, path), SHA256); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("Digest of an O_PATH fd: %v, want EBADF", err)
	}
	c := NewCache(4)
	first := cacheDigest(t, c, openRead(t, path))
	if want, err := Digest(openRead(t, path), SHA256); err != nil || !bytes.Equal(first, want) {
		t.Fatalf("cache %x, Digest %x, %v", first, want, err)
	}
	again := cacheDigest(t, c, openPath(t, path))
	if !bytes.Equal(again, first) {
		t.Fatalf("second digest %x, first %x", again, first)
	}
	// The digest handed out is the caller's: changing it changes
	// nothing in the cache.
	again[0] ^= 0xff
	if third := cacheDigest(t, c, openPath(t, path)); !bytes.Equal(third, first) {
		t.Fatalf("digest after the caller changed its copy: %x, want %x", third, first)
	}
	// Another algorithm is another digest.
	if sum, err := c.Digest(openPath(t, path), SHA512); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("SHA-512 digest from a SHA-256 entry: %x, %v", sum, err)
	}
}

// A write that keeps the size, a truncate and a touch all make the cache
// read the file again, and its digest is the new data's.
func TestCacheNoticesChange(t *testing.T) {
	testenv.RequireProgram(t, "fsverity", "fsverity")
	for _, c := range []struct {
		name   string
		change func(path string) error
	}{
		{"write", func(path string) error {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte("changed"), BlockSize+1)
			return err
		}},
		{"truncate", func(path string) error { return os.Truncate(path, 2*BlockSize) }},
		{"touch", func(path string) error {
			old := time.Unix(1e9, 0)
			return os.Chtimes(path, old, old)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "f")
			writeRandom(t, path, 3*BlockSize, rand.NewChaCha8([32]byte{4}))
			waitSettled(t, path)
			cache := NewCache(4)
			cacheDigest(t, cache, openRead(t, path))
			if err := c.change(path); err != nil {
				t.Fatal(err)
			}
			if sum, err := cache.Digest(openPath(t, path), SHA256); !errors.Is(err, syscall.EBADF) {
				t.Fatalf("digest after %s without reading: %x, %v", c.name, sum, err)
			}
			got := hex.EncodeToString(cacheDigest(t, cache, openRead(t, path)))
			if want := toolDigest(t, path, SHA256); got != want {
				t.Fatalf("digest after %s: %s, fsverity digest %s", c.name, got, want)
			}
		})
	}
}

// The least recently used digest goes first.
func TestCacheEvicts(t *testing.T) {
	dir := t.TempDir()
	var paths []string
	for i := range 3 {
		p := filepath.Join(dir, string(rune('a'+i)))
		writeRandom(t, p, BlockSize+int64(i), rand.NewChaCha8([32]byte{5, byte(i)}))
		paths = append(paths, p)
	}
	for _, p := range paths {
		waitSettled(t, p)
	}
	c := NewCache(2)
	a, b, third := paths[0], paths[1], paths[2]
	cacheDigest(t, c, openRead(t, a))
	cacheDigest(t, c, openRead(t, b))
	cacheDigest(t, c, openPath(t, a)) // a is now the most recently used
	cacheDigest(t, c, openRead(t, third))
	if _, err := c.Digest(openPath(t, b), SHA256); !errors.Is(err, syscall.EBADF) {
		t.Errorf("b was the least recently used and should be gone: %v", err)
	}
	for _, p := range []string{a, third} {
		if _, err := c.Digest(openPath(t, p), SHA256); err != nil {
			t.Errorf("%s should be cached: %v", filepath.Base(p), err)
		}
	}
}

// Concurrent callers of the same and of other files all get the right
// digest (run with -race).
func TestCacheConcurrent(t *testing.T) {
	dir := t.TempDir()
	var paths []string
	var want [][]byte
	for i := range 3 {
		p := filepath.Join(dir, string(rune('a'+i)))
		writeRandom(t, p, 40*BlockSize+int64(i), rand.NewChaCha8([32]byte{6, byte(i)}))
		sum, err := Digest(openRead(t, p), SHA256)
		if err != nil {
			t.Fatal(err)
		}
		paths, want = append(paths, p), append(want, sum)
	}
	c := NewCache(2)
	var wg sync.WaitGroup
	errs := make(chan error, 24)
	for i := range 24 {
		wg.Go(func() {
			k := i % len(paths)
			fd, err := unix.Open(paths[k], unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				errs <- err
				return
			}
			defer unix.Close(fd)
			sum, err := c.Digest(fd, SHA256)
			if err == nil && !bytes.Equal(sum, want[k]) {
				err = errors.New(filepath.Base(paths[k]) + ": wrong digest " + hex.EncodeToString(sum))
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A ctime from the coarse clock's current tick, or from a fine-grained
// clock ahead of it, may still be the ctime of a later change.
func TestSettled(t *testing.T) {
	now := unix.Timespec{Sec: 100, Nsec: 500}
	for _, c := range []struct {
		ctime unix.Timespec
		want  bool
	}{
		{unix.Timespec{Sec: 99, Nsec: 999}, true},
		{unix.Timespec{Sec: 100, Nsec: 499}, true},
		{unix.Timespec{Sec: 100, Nsec: 500}, false},
		{unix.Timespec{Sec: 100, Nsec: 501}, false},
		{unix.Timespec{Sec: 101, Nsec: 0}, false},
	} {
		st := unix.Stat_t{Ctim: c.ctime}
		if got := settled(&st, now); got != c.want {
			t.Errorf("settled(ctime %v, now %v) = %v", c.ctime, now, got)
		}
	}
}
