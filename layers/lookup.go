package layers

import (
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Looked is what one name holds in one layer's directory, for a lookup.
type Looked int

const (
	// Missing: nothing by that name.
	Missing Looked = iota
	// Hidden: a whiteout of the name, which ends the lookup.
	Hidden
	// Present: an object, which Found describes.
	Present
)

// Found is what Lookup found.
type Found struct {
	Kind  Looked
	St    unix.Stat_t
	Marks DirMarks // a directory's markers
	// Redirect is the overlay.redirect of a directory or a metacopy
	// file: where its lower part lives, a name in the same parent or a
	// path from the layers' roots starting with '/'. "" when there is
	// none or it is not valid; BadRedirect then says there is one the
	// kernel refuses (EINVAL) where it reads it: empty, relative with a
	// '/', or absolute with an empty name.
	Redirect    string
	BadRedirect bool
	// Metacopy says a regular file is marked overlay.metacopy: its data
	// is still below. MetacopyValue is the xattr's value.
	Metacopy      bool
	MetacopyValue []byte
}

// maxName is the longest name a layer holds (NAME_MAX).
const maxName = 255

// Lookup looks name up in directory dfd of a layer, one step of the
// kernel's ovl_lookup (ovl_lookup_single): whether it is missing, hidden
// by a whiteout of any form (a 0/0 char device; an xwhiteout where the
// directory has XWhiteouts, xwhiteouts; an AUFS .wh.name where aufs says
// one can hide something below), or present, with its attributes, a
// directory's markers and redirect, a regular file's metacopy marker and
// redirect. Markers are read as r says. The name itself is never followed.
func Lookup(dfd int, name string, xwhiteouts, aufs bool, r Reading) (Found, error) {
	var f Found
	err := unix.Fstatat(dfd, name, &f.St, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == unix.ENOENT:
		if aufs && len(name)+len(WhiteoutPrefix) <= maxName {
			var wst unix.Stat_t
			if unix.Fstatat(dfd, WhiteoutPrefix+name, &wst, unix.AT_SYMLINK_NOFOLLOW) == nil {
				f.Kind = Hidden
			}
		}
		return f, nil
	case err != nil:
		return f, err
	case IsWhiteout(&f.St), xwhiteouts && IsXWhiteoutAt(dfd, name, &f.St, r):
		f.Kind = Hidden
		return f, nil
	}
	f.Kind = Present
	switch f.St.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		fd, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return f, err
		}
		defer unix.Close(fd)
		var names []string
		if f.Marks, names, err = marks(fd, r); err != nil {
			return f, err
		}
		if !f.Marks.Opaque && slices.ContainsFunc(r.Namespaces(), func(ns Namespace) bool { return slices.Contains(names, ns.Name(XattrRedirect)) }) {
			f.Redirect, f.BadRedirect = redirectOf(func(attr string) ([]byte, error) { return FdGetxattr(fd, attr) }, r)
		}
	case unix.S_IFREG:
		get := func(attr string) ([]byte, error) { return GetxattrAt(dfd, name, attr) }
		for _, ns := range r.Namespaces() {
			if v, err := get(ns.Name(XattrMetacopy)); err == nil {
				f.Metacopy, f.MetacopyValue = true, v
				f.Redirect, f.BadRedirect = redirectOf(get, r)
				break
			}
		}
	}
	return f, nil
}

// redirectOf reads a redirect with get, in a namespace r reads, and
// returns it if it is valid: not empty; a relative one a single name; an
// absolute one names joined by single slashes. bad says it is one the
// kernel refuses (ovl_get_redirect_xattr: empty, a '/' in a relative one,
// an empty name in an absolute one); one it takes and cannot look up (a
// "." or ".." name) is neither valid nor bad.
func redirectOf(get func(attr string) ([]byte, error), rd Reading) (r string, bad bool) {
	for _, ns := range rd.Namespaces() {
		v, err := get(ns.Name(XattrRedirect))
		if err != nil {
			continue
		}
		r := string(v)
		names := []string{r}
		if rest, abs := strings.CutPrefix(r, "/"); abs {
			names = strings.Split(rest, "/")
		}
		for _, c := range names {
			if c == "" || strings.Contains(c, "/") {
				return "", true
			}
			if !ValidName(c) {
				return "", false
			}
		}
		return r, false
	}
	return "", false
}
