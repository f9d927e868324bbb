package overlay

import (
	"testing"
	"unsafe"
)

// TestNodeSize keeps the node within its size class: a mount holds one
// per entry the kernel caches, 200,000 for a listing of a directory that
// big, and a field more takes it to the next class (112 bytes).
func TestNodeSize(t *testing.T) {
	if got := unsafe.Sizeof(node{}); got > 96 {
		t.Errorf("a node takes %d bytes, more than 96", got)
	}
}
