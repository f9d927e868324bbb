package overlay

import (
	"sync"

	"golang.org/x/sys/unix"
)

// A reader's request and reply buffers (a megabyte each) are mapped
// outside the Go heap, and a reader that stops gives their pages back to
// the host at once (MADV_DONTNEED) and the mappings to mapped, for the
// next reader of any connection. The mappings themselves are never
// unmapped.
//
// Why not the Go heap: go-fuse's ProtocolServer keeps the requests it
// served in an array it shrinks without clearing (dropInflight), so the
// last request each slot held, and through it a slice of the buffers it
// was read into, stays reachable. Heap buffers of readers long gone would
// then stay live, and resident, until as many requests ran at once again:
// a walk of a huge tree left some 14 MiB of them after the kernel forgot
// every node. Those stale slices now point into mappings that stay mapped
// and hold no pages, which no collection ever looks at.
var mapped bufferMaps

// bufferMaps holds the buffer mappings no reader uses, by size.
type bufferMaps struct {
	mu   sync.Mutex // leaf
	free map[int][][]byte
}

// get returns a zeroed buffer of size bytes, taken from the free
// mappings or mapped now, and true; or, if the host refuses a mapping,
// one on the heap and false.
func (m *bufferMaps) get(size int) ([]byte, bool) {
	m.mu.Lock()
	if l := m.free[size]; len(l) > 0 {
		b := l[len(l)-1]
		m.free[size] = l[:len(l)-1]
		m.mu.Unlock()
		return b, true
	}
	m.mu.Unlock()
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]byte, size), false
	}
	return b, true
}

// put gives back a mapped buffer get returned: its pages go back to the
// host (they read as zeros next time) and the mapping to the free ones.
func (m *bufferMaps) put(b []byte) {
	unix.Madvise(b, unix.MADV_DONTNEED) // nothing to do if it fails: the pages stay
	m.mu.Lock()
	if m.free == nil {
		m.free = make(map[int][][]byte)
	}
	m.free[len(b)] = append(m.free[len(b)], b)
	m.mu.Unlock()
}
