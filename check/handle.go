package check

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"

	"golang.org/x/sys/unix"
)

// fileHandle is a struct ovl_fb, the value of overlay.origin and
// overlay.upper and the name of an index entry (in hex):
//
//	u8 version | u8 magic 0xfb | u8 len | u8 flags | u8 fid type |
//	u8 uuid[16] | fid
type fileHandle struct {
	raw    []byte // the len bytes of it
	uuid   [16]byte
	handle unix.FileHandle
}

const (
	fbHeader    = 21
	fbMagic     = 0xfb
	fbBigEndian = 1 << 0
	fbAnyEndian = 1 << 1
	fbFlagsAll  = 1<<3 - 1 // big-endian, any-endian, path-upper
)

// hostBigEndian is set on a big-endian host, where the kernel writes
// fbBigEndian.
var hostBigEndian = binary.NativeEndian.Uint16([]byte{0, 1}) == 1

// parseHandle reads an ovl_fb as ovl_check_fb_len does. bad says why the
// kernel calls it invalid; unknown is set for one it takes for "origin
// unknown" without complaint (a version or flags it does not know, the
// other byte order), to be left alone.
func parseHandle(v []byte) (fh fileHandle, unknown bool, bad string) {
	switch {
	case len(v) < fbHeader:
		return fh, false, fmt.Sprintf("%d bytes, fewer than the %d of its header", len(v), fbHeader)
	case len(v) < int(v[2]):
		return fh, false, fmt.Sprintf("%d bytes, fewer than the %d it says it has", len(v), v[2])
	case v[1] != fbMagic:
		return fh, false, fmt.Sprintf("magic %#x, not %#x", v[1], fbMagic)
	case v[0] > 0 || v[3]&^fbFlagsAll != 0:
		return fh, true, ""
	case v[3]&fbAnyEndian == 0 && (v[3]&fbBigEndian != 0) != hostBigEndian:
		return fh, true, ""
	}
	fh.raw = v[:v[2]]
	copy(fh.uuid[:], v[5:fbHeader])
	fh.handle = unix.NewFileHandle(int32(v[4]), fh.raw[fbHeader:])
	return fh, false, ""
}

// hexName is the name of fh's index entry (ovl_get_index_name_fh).
func (fh fileHandle) hexName() string { return hex.EncodeToString(fh.raw) }

// openHandle opens the object fh names (O_PATH) on the layers js, the first
// that has it: those on a filesystem of fh's uuid, or any for a null uuid
// (the kernel writes one with uuid=off or null). It returns the layer,
// or unix.ESTALE if none has it.
func (c *checker) openHandle(fh fileHandle, js []int) (fd, j int, err error) {
	for _, j := range js {
		l := c.layers[j]
		if fh.uuid != l.uuid && fh.uuid != [16]byte{} {
			continue
		}
		fd, err := unix.OpenByHandleAt(l.Root(), fh.handle, unix.O_PATH|unix.O_CLOEXEC)
		switch err {
		case nil:
			return fd, j, nil
		case unix.ESTALE, unix.ENOENT:
		default:
			return -1, -1, err
		}
	}
	return -1, -1, unix.ESTALE
}

// underLayer reports whether the directory fh names is one of the layers
// js or below one's root, as the kernel requires of a decoded directory
// (ovl_acceptable): it is opened through each layer's root in turn and
// walked up from. Through a layer's clone, ".." stops at the clone's root,
// so only a directory below it gets there.
func (c *checker) underLayer(fh fileHandle, js []int) bool {
	for _, j := range js {
		fd, _, err := c.openHandle(fh, []int{j})
		if err != nil {
			continue
		}
		id, err := fdID(fd)
		ids := append([]devIno{id}, ancestors(fd)...)
		unix.Close(fd)
		if err == nil && slices.Contains(ids, c.layers[j].id) {
			return true
		}
	}
	return false
}

// checkOrigin resolves the overlay.origin x of upper object path (type
// st) on the lower layers, as ovl_check_origin does for a non-directory:
// an origin that names nothing, or an object of another type, is ignored
// by the kernel, and the object then shows its upper inode number rather
// than its origin's. A directory's origin must also be in a lower layer.
// It returns the handle, valid or not.
func (c *checker) checkOrigin(path string, st *unix.Stat_t, x ovlXattr) (fileHandle, bool) {
	if len(x.val) == 0 {
		// "Copied up, origin unknown".
		return fileHandle{}, false
	}
	fh, unknown, bad := parseHandle(x.val)
	if bad != "" {
		c.find(path, "%s is not a file handle (%s): the kernel ignores it (invalid origin)", x.name(), bad)
		return fh, false
	}
	if unknown || !c.decode {
		return fh, !unknown
	}
	lowers := c.lowerLayers()
	fd, _, err := c.openHandle(fh, lowers)
	if err != nil {
		if err == unix.ESTALE {
			c.find(path, "%s names nothing in the lower layers: the kernel ignores it, and the object shows its own inode number instead of its origin's", x.name())
		} else {
			c.find(path, "%s cannot be resolved: %v", x.name(), err)
		}
		return fh, true
	}
	defer unix.Close(fd)
	var ost unix.Stat_t
	if err := unix.Fstat(fd, &ost); err != nil {
		c.find(path, "%s cannot be resolved: %v", x.name(), err)
		return fh, true
	}
	if ost.Mode&unix.S_IFMT != st.Mode&unix.S_IFMT {
		c.find(path, "%s names an object of another type (%s, this is %s): the kernel ignores it (invalid origin)", x.name(), typeName(ost.Mode), typeName(st.Mode))
		return fh, true
	}
	if ost.Mode&unix.S_IFMT == unix.S_IFDIR && !c.underLayer(fh, c.below(0)) {
		c.find(path, "%s names a directory outside the lower layers", x.name())
	}
	return fh, true
}

// typeName names the file type of mode.
func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFCHR:
		return "a char device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFIFO:
		return "a fifo"
	case unix.S_IFSOCK:
		return "a socket"
	}
	return "of unknown type"
}
