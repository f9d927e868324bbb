package layers

import (
	"golang.org/x/sys/unix"
)

// On-disk markers. The kernel writes char 0/0 whiteouts and
// trusted.overlay.* xattrs; containers-storage unpacks image layers in the
// AUFS form (.wh. files); fuse-overlayfs writes user.fuseoverlayfs.* when
// trusted.* is refused. All of them are read; see docs/format.md.
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
// any of the three namespaces, or an .wh..wh..opq file inside it.
func (l *Layer) Marks(rel string) (DirMarks, error) {
	fd, err := l.OpenPath(rel)
	if err != nil {
		return DirMarks{}, err
	}
	defer unix.Close(fd)
	m, _, err := marks(fd)
	return m, err
}

// marks reads the opaque markers of the directory fd holds, and returns
// the names of its xattrs.
func marks(fd int) (DirMarks, []string, error) {
	var m DirMarks
	names, err := FdListxattr(fd)
	if err != nil && err != unix.ENOTSUP {
		return m, nil, err
	}
	for _, n := range names {
		switch n {
		case Trusted.Name(XattrOpaque), User.Name(XattrOpaque), FuseOverlayfs.Name(XattrOpaque):
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
// attributes are st and whose directory has XWhiteouts, is an xwhiteout.
func IsXWhiteoutAt(dfd int, name string, st *unix.Stat_t) bool {
	return isXWhiteout(st, func(attr string) error { _, err := GetxattrAt(dfd, name, attr); return err })
}

// isXWhiteout reports whether an object with attributes st that get finds
// xattrs of is an xwhiteout: an empty regular file with overlay.whiteout.
func isXWhiteout(st *unix.Stat_t, get func(attr string) error) bool {
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0 {
		return false
	}
	for _, n := range []string{Trusted.Name(XattrWhiteout), User.Name(XattrWhiteout)} {
		if get(n) == nil {
			return true
		}
	}
	return false
}
