// Package inodes owns the overlay's inode numbers and the table of nodes
// the kernel holds references to.
//
// Inode numbers follow the rule kernel overlayfs uses for st_ino: the
// real inode number of the object a node originates from when every layer
// is on one filesystem ("samefs"), and that number with the filesystem's
// index in the high bits when layers span several ("xino"). FUSE node
// ids are another thing: the table allocates them, and they never repeat
// (table.go). This package knows nothing of layers or FUSE; it maps
// numbers, finds nodes by identity and counts references.
package inodes

import "math/bits"

// Scheme maps (filesystem, real inode number) to the number the overlay
// shows. It is immutable after New and safe for concurrent use.
type Scheme struct {
	fsid    map[uint64]uint64 // st_dev of a layer filesystem -> fsid
	shift   uint              // width - xino bits; 0 for samefs
	width   uint              // bits of the numbers shown: 64, or 32
	collide bool              // real numbers of several filesystems shown as they are
}

// New builds the scheme for layers whose root st_dev values are devs, top
// first, with the upper layer (if any) first and flagged by hasUpper.
//
// As in the kernel (fs/overlayfs/super.c), the upper filesystem is fsid 0
// and each further filesystem gets the next fsid in lower-layer order;
// without an upper layer fsid 0 stays unused. With more than one
// filesystem, xino takes ilog2(numfs-1)+2 high bits, numfs counting fsid
// 0: the fsid goes above the lowest of them, which is reserved for
// numbers that cannot be mapped (Fallback).
func New(devs []uint64, hasUpper bool) *Scheme { return NewWidth(devs, hasUpper, 64) }

// NewWidth is New for numbers of width bits: 64, or 32 for programs that
// cannot take larger ones (fuse-overlayfs's ino32_t). With 32, the xino
// layout is laid over 32 bits as the kernel does on 32-bit machines, and
// with one filesystem a real number from 1<<31 up gets a fallback number
// instead of being cut: cut numbers would collide.
func NewWidth(devs []uint64, hasUpper bool, width uint) *Scheme {
	s := &Scheme{fsid: make(map[uint64]uint64), width: width}
	numfs := uint64(1)
	for i, d := range devs {
		if _, ok := s.fsid[d]; ok {
			continue
		}
		if i == 0 && hasUpper {
			s.fsid[d] = 0
			continue
		}
		s.fsid[d] = numfs
		numfs++
	}
	if len(s.fsid) > 1 {
		s.shift = width - uint(bits.Len64(numfs-1)-1+2)
	}
	return s
}

// NewFlat is the scheme without xino (xino=off): every real number shown
// as it is, whatever filesystem it comes from. Numbers of several
// filesystems may then collide (MayCollide).
func NewFlat(devs []uint64, width uint) *Scheme {
	s := NewWidth(devs[:1], false, width)
	for _, d := range devs {
		s.collide = s.collide || d != devs[0]
	}
	return s
}

// MayCollide reports whether two objects may get the same number: only
// without xino over several filesystems.
func (s *Scheme) MayCollide() bool { return s.collide }

// SameFS reports whether all layers are on one filesystem.
func (s *Scheme) SameFS() bool { return s.shift == 0 }

// Ino returns the overlay inode number of inode ino on filesystem dev. ok
// is false when the number does not fit the xino layout; the caller then
// needs a fallback number.
func (s *Scheme) Ino(dev, ino uint64) (n uint64, ok bool) {
	if s.shift == 0 {
		return ino, ino != 0 && (s.width == 64 || ino < 1<<(s.width-1))
	}
	if ino>>s.shift != 0 {
		return 0, false
	}
	return ino | s.fsid[dev]<<(s.shift+1), true
}

// Fallback returns the first number of the range for objects without a
// usable natural number: the reserved xino bit, or the top bit when all
// layers share one filesystem (real inode numbers do not reach it; with
// 32 bits they may, and then take the fallback too).
func (s *Scheme) Fallback() uint64 {
	if s.shift == 0 {
		return 1 << (s.width - 1)
	}
	return 1 << s.shift
}
