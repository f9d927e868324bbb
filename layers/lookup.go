package layers

import "golang.org/x/sys/unix"

// Looked is what one name holds in one layer's directory, for a lookup.
type Looked int

const (
	// Missing: nothing by that name.
	Missing Looked = iota
	// Hidden: a whiteout of the name, which ends the lookup.
	Hidden
	// Present: an object, which Lookup describes.
	Present
)

// maxName is the longest name a layer holds (NAME_MAX).
const maxName = 255

// Lookup looks name up in directory dfd of a layer, one step of the
// kernel's ovl_lookup (ovl_lookup_single): whether it is missing, hidden
// by a whiteout of any form (a 0/0 char device; an xwhiteout where the
// directory has XWhiteouts, xwhiteouts; an AUFS .wh.name where aufs says
// one can hide something below), or present, with its attributes and, for
// a directory, its markers. The name itself is never followed.
func Lookup(dfd int, name string, xwhiteouts, aufs bool) (Looked, unix.Stat_t, DirMarks, error) {
	var st unix.Stat_t
	err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == unix.ENOENT:
		if aufs && len(name)+len(WhiteoutPrefix) <= maxName {
			var wst unix.Stat_t
			if unix.Fstatat(dfd, WhiteoutPrefix+name, &wst, unix.AT_SYMLINK_NOFOLLOW) == nil {
				return Hidden, st, DirMarks{}, nil
			}
		}
		return Missing, st, DirMarks{}, nil
	case err != nil:
		return Missing, st, DirMarks{}, err
	case IsWhiteout(&st), xwhiteouts && IsXWhiteoutAt(dfd, name, &st):
		return Hidden, st, DirMarks{}, nil
	}
	var m DirMarks
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if m, err = MarksAt(dfd, name); err != nil {
			return Missing, st, m, err
		}
	}
	return Present, st, m, nil
}
