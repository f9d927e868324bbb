package overlay

import (
	"bytes"
	"syscall"

	"github.com/ovlmount/ovlmount/internal/fsverity"
	"github.com/ovlmount/ovlmount/layers"
)

// fs-verity of metacopy files (verity=on|require), as the kernel's
// ovl_validate_verity and ovl_set_verity_xattr_from: the marker of a
// metacopy file may record the fs-verity digest its data must have. The
// kernel checks it against the data file's own fs-verity; where the data
// file has none (a kernel without CONFIG_FS_VERITY, a filesystem without
// it), ovlmount computes the digest itself (internal/fsverity), once per
// file while it does not change, so that a mount without privilege can
// enforce verity, which the kernel cannot.

// digestCacheEntries bounds the digests kept (about 450 bytes each).
const digestCacheEntries = 4096

// checkMarker refuses, with the kernel's errno, a metacopy value the
// kernel refuses wherever it looks the file up: a value of 1 to 3 bytes.
func checkMarker(value []byte) error {
	if _, err := fsverity.DecodeMetacopy(value); err != nil {
		if me, ok := err.(*fsverity.MetacopyError); ok && me.AtLookup {
			return me.Errno
		}
	}
	return nil
}

// verifyData checks the data of metacopy file n, held open as dfd,
// against the digest n's marker records: EIO on a mismatch, on a digest
// the data cannot have, and, with verity=require, on a marker without
// one. The kernel checks once per inode, its data files having fs-verity
// and so never changing; a data file without it may change, so every
// open checks (the digest cache hashes a file again only once it has
// changed).
// Preconditions: renameMu held; n.mu held; n is a metacopy file.
func (fs *FS) verifyData(n *node, dfd int) error {
	if fs.opts.Verity == VerityOff {
		return nil
	}
	value, err := fs.getxattr(n, n.objects()[0].layer, fs.markerName(n))
	if err != nil {
		return syscall.EIO
	}
	m, err := fsverity.DecodeMetacopy(value)
	if me, ok := err.(*fsverity.MetacopyError); ok {
		return me.Errno
	} else if err != nil {
		return syscall.EIO
	}
	if !m.HasDigest() {
		if fs.opts.Verity == VerityRequire {
			return syscall.EIO
		}
		return nil
	}
	alg, got, ok, err := fsverity.Measure(dfd)
	if err != nil {
		return syscall.EIO
	}
	if !ok || alg != m.Alg {
		alg = m.Alg
		if got, err = fs.digests.Digest(dfd, alg); err != nil {
			return syscall.EIO
		}
	}
	if !bytes.Equal(got, m.Digest) {
		return syscall.EIO
	}
	return nil
}

// markerName is the name of n's metacopy marker: in the namespace the
// layer of its winning object holds it in.
// Preconditions: renameMu held.
func (fs *FS) markerName(n *node) string {
	l := n.objects()[0].layer
	for _, ns := range fs.reading.Namespaces() {
		if _, err := fs.getxattr(n, l, ns.Name(layers.XattrMetacopy)); err == nil {
			return ns.Name(layers.XattrMetacopy)
		}
	}
	return fs.xattrs.Name(layers.XattrMetacopy)
}

// dataMarker returns the metacopy marker a copy-up without data records
// of lower data file dfd, and whether it may leave the data below: with
// verity=on|require, the data's digest where it has fs-verity of its own,
// as the kernel records it; with require, a file without fs-verity is
// copied whole instead.
func (fs *FS) dataMarker(dfd int) ([]byte, bool) {
	if fs.opts.Verity == VerityOff {
		return nil, true
	}
	alg, digest, ok, err := fsverity.Measure(dfd)
	if err != nil || !ok {
		return nil, fs.opts.Verity != VerityRequire
	}
	v, err := fsverity.Metacopy{Alg: alg, Digest: digest}.Encode()
	if err != nil {
		return nil, fs.opts.Verity != VerityRequire
	}
	return v, true
}
