package check

import (
	"bytes"
	"fmt"
)

// overlay.metacopy is empty, or the kernel's struct ovl_metacopy:
//
//	u8 version (0) | u8 len (of it all) | u8 flags | u8 digest_algo |
//	u8 digest[len-4]
//
// where digest_algo is an FS_VERITY_HASH_ALG_* and digest the fs-verity
// digest of the data file (util.c ovl_check_metacopy_xattr,
// ovl_validate_verity).
const (
	metacopyHeader = 4
	metacopyMax    = metacopyHeader + 64 // FS_VERITY_MAX_DIGEST_SIZE
)

// metacopy is a decoded overlay.metacopy.
type metacopy struct {
	alg    uint8
	digest []byte
}

// parseMetacopy reads an overlay.metacopy value. lookup is set when the
// kernel's lookup itself fails on it (EIO, for fewer bytes than the
// header); bad alone says why the kernel refuses it where it reads the
// digest, with verity=on or require (EIO, or ERANGE for more bytes than
// it reads).
func parseMetacopy(v []byte) (m metacopy, bad string, lookup bool) {
	switch {
	case len(v) == 0:
		return m, "", false
	case len(v) < metacopyHeader:
		return m, fmt.Sprintf("%d bytes, fewer than its %d-byte header", len(v), metacopyHeader), true
	case len(v) > metacopyMax:
		return m, fmt.Sprintf("%d bytes, more than the %d the kernel reads", len(v), metacopyMax), false
	case v[0] != 0:
		return m, fmt.Sprintf("version %d, not 0", v[0]), false
	case int(v[1]) != len(v):
		return m, fmt.Sprintf("length byte %d for %d bytes", v[1], len(v)), false
	}
	return metacopy{alg: v[3], digest: v[metacopyHeader:]}, "", false
}

// verityProblem compares the digest a metacopy xattr carries with the
// fs-verity digest of its data file, open at fd, as ovl_validate_verity
// compares it with the one fs-verity measured: digest computes that
// digest. It returns what is wrong, or "".
func verityProblem(m metacopy, fd int, digest func(fd int, alg uint8) ([]byte, error)) string {
	if m.alg == 0 {
		if len(m.digest) > 0 {
			return "overlay.metacopy carries a digest but no hash algorithm: the kernel refuses it with verity=on (EIO)"
		}
		return ""
	}
	got, err := digest(fd, m.alg)
	if err != nil {
		return fmt.Sprintf("the fs-verity digest of its data cannot be computed (hash algorithm %d): %v", m.alg, err)
	}
	if !bytes.Equal(got, m.digest) {
		return fmt.Sprintf("overlay.metacopy carries fs-verity digest %x, and its data has %x: the kernel refuses to open it with verity=on or require (EIO)", m.digest, got)
	}
	return ""
}
