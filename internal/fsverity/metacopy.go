package fsverity

import (
	"fmt"
	"syscall"
)

// The overlay metacopy xattr (overlay.metacopy under trusted. or user.)
// marks an upper file that holds metadata only, its data being in a lower
// layer. Its value is either empty, as every kernel wrote it before Linux
// 6.5 and still writes it when it has no digest to record, or struct
// ovl_metacopy cut after the digest bytes used:
//
//	byte 0  version      0
//	byte 1  len          the length of the value: 4 + digest bytes
//	byte 2  flags        none defined; written 0
//	byte 3  digest_algo  FS_VERITY_HASH_ALG_*, 0 for no digest
//	4...    digest       the lower data's fs-verity digest
const (
	metacopyMinSize = 4                               // OVL_METACOPY_MIN_SIZE
	metacopyMaxSize = metacopyMinSize + MaxDigestSize // OVL_METACOPY_MAX_SIZE
)

// Metacopy is what a metacopy xattr value tells overlayfs.
type Metacopy struct {
	// Flags is the flags byte: overlayfs defines none, writes 0 and
	// ignores what it reads.
	Flags uint8
	// Alg is the digest's algorithm, 0 when the value records no
	// digest.
	Alg Alg
	// Digest is the fs-verity digest the lower data must have. Decoded
	// values keep the bytes as stored, even with Alg 0 (when overlayfs
	// ignores them) or a length not Alg's (when no lower file can
	// match).
	Digest []byte
}

// HasDigest reports whether overlayfs, mounted with verity=on or
// verity=require, checks the lower data's fs-verity digest against the
// value's: overlayfs looks only at digest_algo.
func (m Metacopy) HasDigest() bool { return m.Alg != 0 }

// MetacopyError is a metacopy value overlayfs refuses, with the errno the
// refusal gives the caller.
type MetacopyError struct {
	Errno  syscall.Errno
	Reason string
	// AtLookup is true when overlayfs refuses the value whenever it looks
	// the file up, whatever the verity mode: it checks only the
	// value's length there. Otherwise it refuses the value only where
	// it reads it for the digest: on opening the file with verity=on
	// or verity=require.
	AtLookup bool
}

func (e *MetacopyError) Error() string {
	return fmt.Sprintf("overlay metacopy xattr: %s: %v", e.Reason, e.Errno)
}

func (e *MetacopyError) Unwrap() error { return e.Errno }

// DecodeMetacopy returns the meaning of a metacopy xattr value as
// overlayfs reads it (ovl_check_metacopy_xattr), or a *MetacopyError
// saying how the kernel refuses it:
//
//   - empty: no digest (the value every kernel writes without one);
//   - 1 to 3 bytes: EIO, at lookup, in every verity mode ("too small");
//   - exactly 4 bytes: no digest, whatever the bytes: overlayfs marks a
//     file as having a digest only when the value is longer than the
//     header, and reads only such values;
//   - version other than 0: EIO ("unsupported version");
//   - len other than the value's length: EIO ("invalid xattr size");
//   - longer than 68 bytes: ERANGE, the error of the getxattr into
//     overlayfs's 68-byte buffer, which it returns as it is.
//
// The last three are found only where overlayfs reads the value: with
// verity=off such values mark a metacopy file like any other.
func DecodeMetacopy(value []byte) (Metacopy, error) {
	n := len(value)
	switch {
	case n == 0 || n == metacopyMinSize:
		return Metacopy{}, nil
	case n < metacopyMinSize:
		return Metacopy{}, &MetacopyError{Errno: syscall.EIO, Reason: fmt.Sprintf("%d bytes, too small", n), AtLookup: true}
	case n > metacopyMaxSize:
		return Metacopy{}, &MetacopyError{Errno: syscall.ERANGE, Reason: fmt.Sprintf("%d bytes, more than %d", n, metacopyMaxSize)}
	case value[0] != 0:
		return Metacopy{}, &MetacopyError{Errno: syscall.EIO, Reason: fmt.Sprintf("unsupported version %d", value[0])}
	case int(value[1]) != n:
		return Metacopy{}, &MetacopyError{Errno: syscall.EIO, Reason: fmt.Sprintf("len %d in a %d-byte value", value[1], n)}
	}
	return Metacopy{Flags: value[2], Alg: Alg(value[3]), Digest: append([]byte(nil), value[metacopyMinSize:]...)}, nil
}

// Encode returns the value overlayfs writes for m
// (ovl_set_metacopy_xattr): empty when m has neither flags nor a digest,
// else the header and the digest. It refuses with EINVAL what overlayfs
// never writes: digest bytes without an algorithm, or not as many as the
// algorithm's digests have.
func (m Metacopy) Encode() ([]byte, error) {
	if m.Alg == 0 {
		if len(m.Digest) > 0 {
			return nil, fmt.Errorf("overlay metacopy xattr: a %d-byte digest without an algorithm: %w", len(m.Digest), syscall.EINVAL)
		}
		if m.Flags == 0 {
			return []byte{}, nil
		}
	} else if len(m.Digest) != m.Alg.Size() {
		return nil, fmt.Errorf("overlay metacopy xattr: a %d-byte digest for %v: %w", len(m.Digest), m.Alg, syscall.EINVAL)
	}
	v := make([]byte, metacopyMinSize+len(m.Digest))
	v[1] = byte(len(v))
	v[2] = m.Flags
	v[3] = byte(m.Alg)
	copy(v[metacopyMinSize:], m.Digest)
	return v, nil
}
