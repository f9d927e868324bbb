// Package inodes owns the overlay's inode numbers and the table of nodes
// the kernel holds references to.
//
// jacobsa/fuse shows a node's FUSE id as st_ino, so node ids are minted
// from the rule kernel overlayfs uses for st_ino: the real inode number of
// the object a node originates from when every layer is on one filesystem
// ("samefs"), and that number with the filesystem's index in the high bits
// when layers span several ("xino"). The root is the exception: FUSE fixes
// its id at 1. This package knows nothing of layers or FUSE; it maps
// numbers and counts references.
package inodes

// Scheme maps (filesystem, real inode number) to the number the overlay
// shows. It is immutable after New and safe for concurrent use.
type Scheme struct {
	fsid  map[uint64]uint64 // st_dev of a layer filesystem -> fsid
	shift uint              // 0 for samefs; else where the fsid goes
	bits  uint              // inode bits available below the fsid
}

// New builds the scheme for layers whose root st_dev values are devs, top
// first, with the upper layer (if any) first and flagged by hasUpper.
//
// Like the kernel, the upper filesystem is fsid 0 and each further
// filesystem gets the next fsid in lower-layer order; without an upper
// layer, fsid 0 stays unused. With more than one filesystem the real inode
// number keeps the low 32 bits, one bit is reserved (the kernel uses it for
// non-persistent numbers) and the fsid goes above it.
func New(devs []uint64, hasUpper bool) *Scheme {
	s := &Scheme{fsid: make(map[uint64]uint64)}
	next := uint64(1)
	for i, d := range devs {
		if _, ok := s.fsid[d]; ok {
			continue
		}
		if i == 0 && hasUpper {
			s.fsid[d] = 0
			continue
		}
		s.fsid[d] = next
		next++
	}
	if len(s.fsid) > 1 {
		s.bits = 32
		s.shift = s.bits + 1
	}
	return s
}

// SameFS reports whether all layers are on one filesystem.
func (s *Scheme) SameFS() bool { return s.shift == 0 }

// Ino returns the overlay inode number of inode ino on filesystem dev. ok
// is false when the number does not fit the xino layout; the caller then
// needs a number from Fallback.
func (s *Scheme) Ino(dev, ino uint64) (n uint64, ok bool) {
	if s.shift == 0 {
		return ino, ino != 0
	}
	if ino>>s.bits != 0 {
		return 0, false
	}
	return ino | s.fsid[dev]<<s.shift, true
}
