package layers

import (
	"encoding/hex"
	"strconv"

	"golang.org/x/sys/unix"
)

// The inodes index (the kernel's index=on) lives in workdir/index: an
// entry for each lower hard link copied up, named by the hex of the
// origin's struct ovl_fb (as overlay.origin holds it) and hard-linked to
// the upper copy, so that every name of the lower link finds the one
// copy. The upper copy's overlay.nlink holds the overlay's link count
// relative to the upper inode's ("U+1") or to the lower one's ("L-2").
// The index directory's overlay.upper names the upper root, with the
// ovl_fb flag that says a handle is an upper one.

const (
	fbPathUpper = 1 << 2 // OVL_FH_FLAG_PATH_UPPER
	fbFlagsAll  = fbBigEndian | fbAnyEndian | fbPathUpper
	// nlinkMax is the longest overlay.nlink the kernel reads (a 13-byte
	// buffer, NUL included).
	nlinkMax = 12
)

// EncodeUpper returns the ovl_fb value naming handle h of an upper-layer
// object (the index directory's overlay.upper), as the kernel encodes it
// with its upper flag.
func EncodeUpper(uuid [16]byte, h unix.FileHandle) ([]byte, error) {
	fb, err := EncodeOrigin(uuid, h)
	if err != nil {
		return nil, err
	}
	fb[3] |= fbPathUpper
	return fb, nil
}

// IndexName returns the name of the index entry of the object whose
// ovl_fb is fb.
func IndexName(fb []byte) string { return hex.EncodeToString(fb) }

// ParseIndexName returns the ovl_fb an index entry's name holds, checked
// as the kernel's ovl_verify_index checks it: EINVAL for a name shorter
// than an ovl_fb's header in hex, not hex, or not an ovl_fb (CheckFb);
// ENODATA for one the kernel cannot read (CheckFb).
func ParseIndexName(name string) ([]byte, error) {
	if len(name) < 2*fbHeader {
		return nil, unix.EINVAL
	}
	// Odd lengths: the kernel decodes len/2 bytes and ignores the rest.
	fb, err := hex.DecodeString(name[:len(name)/2*2])
	if err != nil {
		return nil, unix.EINVAL
	}
	return fb, CheckFb(fb)
}

// CheckFb checks an ovl_fb as the kernel's ovl_check_fb_len: EINVAL for
// one too short for its header or its length byte, or without the
// magic; ENODATA ("origin unknown") for a later version, unknown flags,
// or a fid in the other byte order.
func CheckFb(fb []byte) error {
	if len(fb) < fbHeader || len(fb) < int(fb[2]) || fb[1] != fbMagic {
		return unix.EINVAL
	}
	flags := fb[3]
	if fb[0] > fbVersion || flags&^fbFlagsAll != 0 {
		return unix.ENODATA
	}
	if flags&fbAnyEndian == 0 && flags&fbBigEndian != nativeEndianFlag() {
		return unix.ENODATA
	}
	return nil
}

// nativeEndianFlag is the ovl_fb byte-order flag this host writes.
func nativeEndianFlag() byte {
	if isBigEndian() {
		return fbBigEndian
	}
	return 0
}

// Nlink is an overlay.nlink value: the overlay's link count as the link
// count of the upper inode (or, with Lower, of the lower one) plus Diff.
type Nlink struct {
	Lower bool
	Diff  int
}

// ParseNlink parses an overlay.nlink value as the kernel's ovl_get_nlink
// reads it: 'U' or 'L', a sign, a decimal number; ok is false for
// anything else.
func ParseNlink(v []byte) (n Nlink, ok bool) {
	if len(v) < 2 || len(v) > nlinkMax || (v[0] != 'U' && v[0] != 'L') || (v[1] != '+' && v[1] != '-') {
		return n, false
	}
	d, err := strconv.ParseInt(string(v[1:]), 10, 32)
	if err != nil {
		return n, false
	}
	return Nlink{Lower: v[0] == 'L', Diff: int(d)}, true
}

// String returns the value the kernel writes: "U%+i" or "L%+i".
func (n Nlink) String() string {
	c := "U"
	if n.Lower {
		c = "L"
	}
	if n.Diff >= 0 {
		c += "+"
	}
	return c + strconv.Itoa(n.Diff)
}

// Link makes newName of newDfd another name of oldName of oldDfd (not
// followed if a symlink).
func Link(oldDfd int, oldName string, newDfd int, newName string) error {
	return unix.Linkat(oldDfd, oldName, newDfd, newName, 0)
}
