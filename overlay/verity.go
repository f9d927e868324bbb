package overlay

import (
	"bytes"
	"syscall"

	"github.com/ovlmount/ovlmount/internal/fsverity"
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// fs-verity of metacopy files (verity=on|require), as the kernel's
// ovl_validate_verity and ovl_get_verity_digest: the marker of a
// metacopy file may record the fs-verity digest its data must have,
// which is compared with the digest the data file's filesystem enforces
// (FS_IOC_MEASURE_VERITY). A data file without fs-verity of its own (a
// kernel without CONFIG_FS_VERITY, a filesystem without it) cannot be
// checked, and is refused (EIO) as the kernel refuses it: a digest
// computed here would vouch for data that nothing keeps from changing.

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
// against the digest n's marker records, as ovl_validate_verity: EIO on
// a data file without fs-verity, on another digest or algorithm, and,
// with verity=require, on a marker without a digest. The kernel checks
// once per inode and remembers it; its data files having fs-verity never
// change, so checking at every open and copy-up, as here, finds the same.
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
	if err != nil || !ok || alg != m.Alg || !bytes.Equal(got, m.Digest) {
		return syscall.EIO
	}
	return nil
}

// verifyCopied is verifyData before a copy-up of n, of its data or of
// its metadata, even of a metacopy file already upper, as the kernel's
// ovl_copy_up_flags checks (ovl_verify_lowerdata) before it looks at
// what there is to copy: a file it would refuse to open is not copied
// up either (EIO), nor are its attributes changed.
// Preconditions: renameMu held; no node's mu held.
func (fs *FS) verifyCopied(n *node) error {
	if fs.opts.Verity == VerityOff || n.kind() != unix.S_IFREG {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := fs.lazyData(n); err != nil {
		return err
	}
	data, own := dataOf(n.objects(), n.kind())
	if own {
		return nil
	}
	dfd, err := fs.openFile(n, data.layer, unix.O_RDONLY)
	if err != nil {
		return toErrno(err)
	}
	defer unix.Close(dfd)
	return fs.verifyData(n, dfd)
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
