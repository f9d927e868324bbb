package check

import (
	"bytes"
	"fmt"

	"github.com/ovlmount/ovlmount/internal/fsverity"
	"golang.org/x/sys/unix"
)

// metacopyProblem says what the kernel finds wrong with an
// overlay.metacopy value (util.c ovl_check_metacopy_xattr, as
// internal/fsverity decodes it), or "". atLookup is set when the kernel
// fails every lookup of the file over it; otherwise it refuses the value
// only where it reads the digest, on an open with verity=on or require.
func metacopyProblem(v []byte) (problem string, atLookup bool) {
	_, err := fsverity.DecodeMetacopy(v)
	me, ok := err.(*fsverity.MetacopyError)
	if !ok {
		return "", false
	}
	return fmt.Sprintf("%s (%s)", me.Reason, unix.ErrnoName(me.Errno)), me.AtLookup
}

// verityProblem compares the fs-verity digest metacopy value m records
// with that of its data file, open at fd, as ovl_validate_verity does
// with verity=on or require. The data file's own fs-verity digest is the
// one the kernel compares; a file without fs-verity is hashed in full
// instead: the kernel, and ovlmount, refuse such a file outright, a
// matter of the filesystem the layer is on rather than of the stack,
// which may be copied to one with fs-verity. It returns what is wrong,
// or "".
func verityProblem(m fsverity.Metacopy, fd int) string {
	alg, got, measured, err := fsverity.Measure(fd)
	if err == nil && (!measured || alg != m.Alg) {
		got, err = fsverity.Digest(fd, m.Alg)
	}
	switch {
	case err != nil:
		return fmt.Sprintf("the fs-verity digest of its data cannot be computed (%v): %v", m.Alg, err)
	case !bytes.Equal(got, m.Digest):
		return fmt.Sprintf("overlay.metacopy records fs-verity digest %v:%x, and its data has %x: the kernel refuses to open it with verity=on or require (EIO)", m.Alg, m.Digest, got)
	}
	return ""
}
