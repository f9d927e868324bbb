package layers

import (
	"slices"

	"golang.org/x/sys/unix"
)

// On-disk markers. The kernel writes char 0/0 whiteouts and
// trusted.overlay.* xattrs (user.overlay.* with userxattr);
// containers-storage unpacks image layers in the AUFS form (.wh. files);
// fuse-overlayfs writes user.fuseoverlayfs.* when trusted.* is refused.
// All of them are read, the xattrs as a mount's Reading says; see
// docs/format.md.
const (
	// WhiteoutPrefix starts the name of an AUFS whiteout file: .wh.NAME
	// hides NAME.
	WhiteoutPrefix = ".wh."
	// OpaqueFile in a directory makes it opaque (AUFS form).
	OpaqueFile = ".wh..wh..opq"
)

// IsWhiteout reports whether st is a kernel whiteout: a char device 0/0.
func IsWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// DirMarks are the markers a directory of one layer carries.
type DirMarks struct {
	// Opaque hides the same directory in every layer below.
	Opaque bool
	// XWhiteouts is set by overlay.opaque=x: entries of the directory
	// may be xwhiteouts (zero-size files with overlay.whiteout). The
	// directory is not opaque.
	XWhiteouts bool
}

// Marks reads the opaque markers of the directory rel: the opaque xattr in
// a namespace r reads it in, or an .wh..wh..opq file inside it.
func (l *Layer) Marks(rel string, r Reading) (DirMarks, error) {
	fd, err := l.OpenPath(rel)
	if err != nil {
		return DirMarks{}, err
	}
	defer unix.Close(fd)
	m, _, err := marks(fd, r)
	return m, err
}

// marks reads the opaque markers of the directory fd holds, as r reads
// them, and returns the names of its xattrs.
func marks(fd int, r Reading) (DirMarks, []string, error) {
	var m DirMarks
	names, err := FdListxattr(fd)
	if err != nil && err != unix.ENOTSUP {
		return m, nil, err
	}
	for _, ns := range r.opaqueNamespaces() {
		n := ns.Name(XattrOpaque)
		if !slices.Contains(names, n) {
			continue
		}
		v, err := FdGetxattr(fd, n)
		if err != nil {
			continue
		}
		switch string(v) {
		case "y":
			m.Opaque = true
		case "x":
			m.XWhiteouts = true
		}
	}
	if !m.Opaque {
		var st unix.Stat_t
		if unix.Fstatat(fd, OpaqueFile, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			m.Opaque = true
		}
	}
	return m, names, nil
}

// IsXWhiteoutAt reports whether entry name of directory dfd, whose
// attributes are st and whose directory has XWhiteouts, is an xwhiteout:
// an empty regular file with overlay.whiteout in a namespace r reads.
func IsXWhiteoutAt(dfd int, name string, st *unix.Stat_t, r Reading) bool {
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0 {
		return false
	}
	for _, ns := range r.Namespaces() {
		if _, err := GetxattrAt(dfd, name, ns.Name(XattrWhiteout)); err == nil {
			return true
		}
	}
	return false
}
