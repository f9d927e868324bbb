// Package fsverity owns fs-verity file digests: asking the kernel for the
// digest it enforces when the file has fs-verity enabled (Measure), the
// one overlayfs compares; computing a file's digest in userspace (Digest),
// for ovlmount check, where the kernel cannot give it (no
// CONFIG_FS_VERITY, or a filesystem without fs-verity); and the value of
// the overlay metacopy xattr that carries a digest (Metacopy,
// DecodeMetacopy).
//
// It reads files only through fds its callers opened and hands back bytes:
// it never opens a path, writes a file or an xattr, or enables fs-verity on
// anything, and it knows nothing of layers or of the name (trusted. or
// user.) a metacopy value is stored under; those belong to the layers and
// overlay packages.
//
// Digests are those of fs-verity with 4096-byte blocks and no salt: what
// `fsverity digest` computes by default on machines with 4 KiB pages, and
// what composefs records.
package fsverity

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Alg is an fs-verity hash algorithm, numbered as the kernel numbers them
// (FS_VERITY_HASH_ALG_*): the same number is stored in the descriptor, in
// the metacopy xattr and returned by FS_IOC_MEASURE_VERITY.
type Alg uint8

const (
	SHA256 Alg = unix.FS_VERITY_HASH_ALG_SHA256
	SHA512 Alg = unix.FS_VERITY_HASH_ALG_SHA512
)

// MaxDigestSize is the largest digest of any algorithm
// (FS_VERITY_MAX_DIGEST_SIZE).
const MaxDigestSize = 64

// Size is the length of the algorithm's digests in bytes, 0 for an
// algorithm this package does not know.
func (a Alg) Size() int {
	switch a {
	case SHA256:
		return sha256.Size
	case SHA512:
		return sha512.Size
	}
	return 0
}

// String is the name `fsverity digest` prints before a digest.
func (a Alg) String() string {
	switch a {
	case SHA256:
		return "sha256"
	case SHA512:
		return "sha512"
	}
	return fmt.Sprintf("alg%d", uint8(a))
}

// sum hashes b into dst and returns the used part of dst.
func (a Alg) sum(dst *[MaxDigestSize]byte, b []byte) []byte {
	if a == SHA256 {
		s := sha256.Sum256(b)
		return dst[:copy(dst[:], s[:])]
	}
	s := sha512.Sum512(b)
	return dst[:copy(dst[:], s[:])]
}

const (
	// BlockSize is the size of the data blocks and of the Merkle tree
	// blocks.
	BlockSize    = 4096
	logBlockSize = 12
	// maxLevels is the kernel's FS_VERITY_MAX_LEVELS: a tree that would
	// need more levels is refused with EINVAL. With 4096-byte blocks
	// only a SHA-512 tree of a file over 2^60 bytes gets there.
	maxLevels = 8
	// readSize is how much Digest reads and hashes at a time: enough
	// that the reads cost little and each goroutine hashes for a
	// millisecond or so, little enough that memory stays bounded
	// whatever the file's size.
	readSize = 256 * BlockSize
	// descriptorSize is sizeof(struct fsverity_descriptor), without
	// the signature the kernel never hashes.
	descriptorSize = 256
)

// ErrChanged is returned when the file's size, mtime or ctime changed
// while Digest read it, so that the bytes hashed may be neither the old
// data nor the new. It wraps EIO, the errno overlayfs returns when it
// cannot get a file's digest.
var ErrChanged = fmt.Errorf("fsverity: the file changed while it was hashed: %w", syscall.EIO)

// Digest returns the fs-verity file digest of the data of the regular
// file open as fd, as `fsverity digest --hash-alg=... --block-size=4096`
// prints it and as FS_IOC_MEASURE_VERITY would return it had fs-verity
// been enabled on the file. It reads with pread, so the fd's offset does
// not move, a MiB at a time: its memory does not grow with the file's
// size. It hashes on GOMAXPROCS goroutines. Errors: EINVAL
// for an algorithm it does not know or a file that is not regular (EISDIR
// for a directory), as FS_IOC_ENABLE_VERITY; ErrChanged; read errors as
// pread returns them.
func Digest(fd int, alg Alg) ([]byte, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	return digest(fd, alg, &st)
}

// digest is Digest for the file whose fstat, taken before any read, is
// st.
func digest(fd int, alg Alg, st *unix.Stat_t) ([]byte, error) {
	if alg.Size() == 0 {
		return nil, fmt.Errorf("fsverity: hash algorithm %d: %w", uint8(alg), syscall.EINVAL)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFDIR:
		return nil, syscall.EISDIR
	default:
		return nil, syscall.EINVAL
	}
	t, err := newTree(alg, st.Size)
	if err != nil {
		return nil, err
	}
	if err := t.hashData(fd, st.Size); err != nil {
		return nil, err
	}
	root := t.finish()
	var after unix.Stat_t
	if err := unix.Fstat(fd, &after); err != nil {
		return nil, err
	}
	if keyOf(&after) != keyOf(st) {
		return nil, ErrChanged
	}
	var d [MaxDigestSize]byte
	desc := descriptor(alg, st.Size, root)
	return alg.sum(&d, desc[:]), nil
}

// descriptor is the fsverity_descriptor whose hash is the file digest:
// version 1, the algorithm, log2 of the block size, no salt, sig_size 0
// (the kernel zeroes it before hashing even when a signature is
// attached), the data size little-endian, the root hash zero-padded to 64
// bytes, and zeros for the salt and the reserved bytes.
func descriptor(alg Alg, size int64, root []byte) [descriptorSize]byte {
	var d [descriptorSize]byte
	d[0] = 1
	d[1] = byte(alg)
	d[2] = logBlockSize
	binary.LittleEndian.PutUint64(d[8:16], uint64(size))
	copy(d[16:16+MaxDigestSize], root)
	return d
}

// tree builds a Merkle tree as the data blocks stream in, keeping only one
// pending block per level, never the tree. Level 0 holds the hashes of
// the data blocks, each level above the hashes of the blocks of the level
// below; a block of a level is hashed into the next as soon as it is
// full, and the single hash above the top level is the root. A file of
// one block has no levels: the hash of its block is the root; an empty
// file has a root of zeros.
type tree struct {
	alg     Alg
	pending [][]byte // a block per level, filled from the front
	filled  []int
	root    [MaxDigestSize]byte
	scratch [MaxDigestSize]byte // a hash on its way into a level: add copies it at once
}

func newTree(alg Alg, size int64) (*tree, error) {
	perBlock := int64(BlockSize / alg.Size())
	levels := 0
	for n := (size + BlockSize - 1) / BlockSize; n > 1; n = (n + perBlock - 1) / perBlock {
		if levels == maxLevels {
			return nil, fmt.Errorf("fsverity: a %d-byte file needs more than %d tree levels: %w", size, maxLevels, syscall.EINVAL)
		}
		levels++
	}
	t := &tree{alg: alg, pending: make([][]byte, levels), filled: make([]int, levels)}
	buf := make([]byte, levels*BlockSize)
	for i := range t.pending {
		t.pending[i] = buf[i*BlockSize : (i+1)*BlockSize]
	}
	return t, nil
}

// hashData reads the file's size bytes from the start and adds the hash of
// each block, the last one zero-padded, to level 0.
func (t *tree) hashData(fd int, size int64) error {
	buf := make([]byte, readSize)
	sums := make([]byte, readSize/BlockSize*t.alg.Size())
	for off := int64(0); off < size; {
		n := int(min(int64(readSize), size-off))
		if err := preadFull(fd, buf[:n], off); err != nil {
			return err
		}
		if pad := -n & (BlockSize - 1); pad > 0 {
			clear(buf[n : n+pad])
			n += pad
		}
		ds := t.alg.Size()
		blocks := n / BlockSize
		hashBlocks(t.alg, buf[:n], sums[:blocks*ds])
		for i := range blocks {
			t.add(0, sums[i*ds:(i+1)*ds])
		}
		off += int64(n)
	}
	return nil
}

// hashBlocks puts the hash of each block of data into sums, the blocks
// shared among GOMAXPROCS goroutines: hashing a block takes some ten
// times longer than reading it from the page cache (measured: 0.5 against
// 2.5 to 5 GB/s), so the hashing is what a digest waits for, and it
// parallelizes.
func hashBlocks(alg Alg, data, sums []byte) {
	blocks := len(data) / BlockSize
	ds := alg.Size()
	run := func(lo, hi int) {
		var h [MaxDigestSize]byte
		for i := lo; i < hi; i++ {
			copy(sums[i*ds:], alg.sum(&h, data[i*BlockSize:(i+1)*BlockSize]))
		}
	}
	per := (blocks + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	for lo := per; lo < blocks; lo += per {
		wg.Go(func() { run(lo, min(lo+per, blocks)) })
	}
	run(0, min(per, blocks))
	wg.Wait()
}

// preadFull fills b from offset off; the file ending before b is full
// means it shrank since its size was taken.
func preadFull(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pread(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return ErrChanged
		}
		b = b[n:]
		off += int64(n)
	}
	return nil
}

// add appends the hash h to level, and hashes the level's block into the
// level above once full. Above the top level is the root.
func (t *tree) add(level int, h []byte) {
	if level == len(t.pending) {
		copy(t.root[:], h)
		return
	}
	t.filled[level] += copy(t.pending[level][t.filled[level]:], h)
	if t.filled[level] == BlockSize {
		t.seal(level)
	}
}

// seal hashes level's pending block, zero-padded, into the level above.
func (t *tree) seal(level int) {
	b := t.pending[level]
	clear(b[t.filled[level]:])
	t.filled[level] = 0
	t.add(level+1, t.alg.sum(&t.scratch, b))
}

// finish seals the partly filled blocks, bottom up, and returns the root
// hash.
func (t *tree) finish() []byte {
	for level := range t.pending {
		if t.filled[level] > 0 {
			t.seal(level)
		}
	}
	return t.root[:t.alg.Size()]
}

// fileKey is what identifies unchanged data without reading it. The
// ctime cannot be set from userspace, so a write, truncate or touch that
// keeps size and mtime still changes the key.
type fileKey struct {
	dev, ino     uint64
	size         int64
	mtime, ctime unix.Timespec
}

func keyOf(st *unix.Stat_t) fileKey {
	return fileKey{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim, ctime: st.Ctim}
}
