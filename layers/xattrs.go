package layers

import "strings"

// The overlay's private xattrs, in one table, as the kernel's
// ovl_xattr_table (fs/overlayfs/util.c). A stack keeps them in one
// namespace: trusted.overlay.* by default, user.overlay.* where trusted.*
// cannot be written (a mount without CAP_SYS_ADMIN, the kernel's
// userxattr). Markers are read in either, and in fuse-overlayfs's
// user.fuseoverlayfs.*, so that a stack written by any of them reads the
// same.

// Xattr names one private xattr.
type Xattr int

const (
	XattrOpaque   Xattr = iota // "y": hides the layers below; "x": may hold xwhiteouts
	XattrRedirect              // where a renamed directory's lower part lives
	XattrOrigin                // the file handle of the lower object copied up
	XattrImpure                // the directory holds copied-up or moved entries
	XattrNlink                 // an index's link count
	XattrUpper                 // an index entry's upper file handle
	XattrMetacopy              // the data is still below
	XattrProtattr              // append-only and immutable flags
	XattrWhiteout              // an xwhiteout: a regular file that hides a name
	XattrUUID                  // the upper filesystem's overlay uuid
	numXattrs
)

var xattrNames = [numXattrs]string{"opaque", "redirect", "origin", "impure", "nlink", "upper", "metacopy", "protattr", "whiteout", "uuid"}

// Namespace is where a stack keeps its private xattrs.
type Namespace string

// The namespaces of private xattrs.
const (
	Trusted       Namespace = "trusted.overlay."
	User          Namespace = "user.overlay."
	FuseOverlayfs Namespace = "user.fuseoverlayfs." // read: markers fuse-overlayfs wrote
)

// Name returns the name of x in namespace ns.
func (ns Namespace) Name(x Xattr) string { return string(ns) + xattrNames[x] }

// markerNamespaces are the namespaces markers are read in.
var markerNamespaces = [...]Namespace{Trusted, User, FuseOverlayfs}

// IsPrivateXattr reports whether name belongs to an overlay implementation
// rather than to the user: such names are never shown through the mount
// (but an escaped one, IsEscapedXattr, stands for the user's own).
func IsPrivateXattr(name string) bool {
	for _, ns := range markerNamespaces {
		if strings.HasPrefix(name, string(ns)) {
			return true
		}
	}
	return false
}

// escapeNamespaces are the private namespaces whose user xattrs are
// escaped: X.overlay.Y is stored as X.overlay.overlay.Y.
var escapeNamespaces = [...]Namespace{Trusted, User}

// IsEscapedXattr reports whether a stored name is a user's own xattr of
// a private namespace, escaped.
func IsEscapedXattr(name string) bool {
	for _, ns := range escapeNamespaces {
		if strings.HasPrefix(name, string(ns)+"overlay.") {
			return true
		}
	}
	return false
}

// EscapeXattr returns the name a user's trusted.* xattr is stored under,
// as the kernel escapes it (ovl_xattr_escape): trusted.overlay.X as
// trusted.overlay.overlay.X, anything else as it is.
func EscapeXattr(name string) string {
	if rest, ok := strings.CutPrefix(name, string(Trusted)); ok {
		return string(Trusted) + "overlay." + rest
	}
	return name
}

// UnescapeXattr returns the user's name of an escaped trusted.* name,
// and whether it was one.
func UnescapeXattr(stored string) (string, bool) {
	rest, ok := strings.CutPrefix(stored, string(Trusted)+"overlay.")
	if !ok {
		return "", false
	}
	return string(Trusted) + rest, true
}
