package fsverity

import (
	"container/list"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// Cache holds the digests Digest computed, so that a file is hashed once
// while its data does not change. A digest is found again by the file's
// st_dev, st_ino, size, mtime and ctime (nanoseconds included) and the
// algorithm: a write, truncate or touch changes the ctime, which no
// caller can set back, so a changed file is hashed again. It holds at
// most a fixed number of entries and drops the least recently used. It is
// safe for concurrent use, and callers asking for a file being hashed
// wait for that digest rather than hash it too.
type Cache struct {
	max int

	mu      sync.Mutex
	entries map[cacheKey]*cacheEntry
	lru     list.List // of *cacheEntry with a digest, most recently used first
}

type cacheKey struct {
	file fileKey
	alg  Alg
}

type cacheEntry struct {
	key  cacheKey
	done chan struct{} // closed when the hashing ended, sum or err set
	sum  []byte
	err  error
	elem *list.Element // in lru, once the digest is kept
}

// NewCache returns a cache of at most entries digests; an entry costs
// about 450 bytes with SHA-256 (measured). It panics if entries < 1.
func NewCache(entries int) *Cache {
	if entries < 1 {
		panic(fmt.Sprintf("fsverity: NewCache(%d)", entries))
	}
	return &Cache{max: entries, entries: make(map[cacheKey]*cacheEntry)}
}

// Digest is the package's Digest, answered from the cache when the file
// has not changed since it was hashed. The digest returned is the
// caller's to keep.
func (c *Cache) Digest(fd int, alg Alg) ([]byte, error) {
	// The clock is read before the stat: see settled.
	now := coarseNow()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	key := cacheKey{keyOf(&st), alg}
	c.mu.Lock()
	for {
		e := c.entries[key]
		if e == nil {
			break
		}
		if e.elem != nil {
			c.lru.MoveToFront(e.elem)
			c.mu.Unlock()
			return append([]byte(nil), e.sum...), nil
		}
		// Another caller is hashing the same data: its digest is
		// ours. If it failed, the error may have been its fd's, and
		// its entry is gone: this caller hashes.
		c.mu.Unlock()
		<-e.done
		if e.err == nil {
			return append([]byte(nil), e.sum...), nil
		}
		c.mu.Lock()
	}
	e := &cacheEntry{key: key, done: make(chan struct{})}
	c.entries[key] = e
	c.mu.Unlock()

	sum, err := digest(fd, alg, &st)

	c.mu.Lock()
	defer c.mu.Unlock()
	e.sum, e.err = sum, err
	close(e.done)
	if err != nil || !settled(&st, now) {
		delete(c.entries, key)
		return sum, err
	}
	e.elem = c.lru.PushFront(e)
	if c.lru.Len() > c.max {
		old := c.lru.Remove(c.lru.Back()).(*cacheEntry)
		delete(c.entries, old.key)
	}
	return append([]byte(nil), sum...), nil
}

// coarseNow is the kernel's coarse clock, the one file timestamps come
// from on filesystems without multigrain timestamps. It cannot fail; were
// it to, the zero time makes settled false and nothing is kept.
func coarseNow() unix.Timespec {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_REALTIME_COARSE, &ts)
	return ts
}

// settled reports whether every change to the file after the coarse
// clock read now gives it another ctime than st's, so that the key
// notices it, including a change while the file was being hashed. Where
// timestamps come from the coarse clock, every change within one clock
// tick gets the same ctime: a digest is kept only when st's ctime is from
// an earlier tick than now. Filesystems with multigrain timestamps (Linux
// 6.13 on) give a change after a stat a fine-grained ctime and never need
// this, but the cache cannot tell them apart; it only costs a second
// hashing of a file changed within the last tick.
func settled(st *unix.Stat_t, now unix.Timespec) bool {
	return st.Ctim.Sec < now.Sec || st.Ctim.Sec == now.Sec && st.Ctim.Nsec < now.Nsec
}
