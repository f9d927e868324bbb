package layers

import "strings"

// The overlay's private xattrs, in one table, as the kernel's
// ovl_xattr_table (fs/overlayfs/util.c). A stack keeps them in one
// namespace: trusted.overlay.* by default, user.overlay.* where trusted.*
// cannot be written (a mount without CAP_SYS_ADMIN, the kernel's
// userxattr). Which forms a mount reads is its Reading.

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

// Reading is which private xattrs a mount takes as its own: those it
// reads markers from, hides from the merged view, and stores a user's
// names of its namespace escaped in. The kernel takes one namespace,
// trusted.overlay.* or, with userxattr, user.overlay.*
// (ovl_is_private_xattr); without userxattr ovlmount takes every form
// another implementation writes, so that a stack written by the kernel, a
// rootless mount or fuse-overlayfs reads the same.
type Reading int

const (
	// EveryForm, without userxattr: markers are read in trusted.overlay.*,
	// user.overlay.* and, the opaque one, user.fuseoverlayfs.*; all
	// three are hidden; a user's trusted.overlay.X is stored as
	// trusted.overlay.overlay.X.
	EveryForm Reading = iota
	// UserForm, with userxattr, as the kernel's: markers are read in
	// user.overlay.* only, which is hidden; a user's user.overlay.X is
	// stored as user.overlay.overlay.X; trusted.overlay.* and
	// user.fuseoverlayfs.* names are plain xattrs, shown, set and copied
	// up as any other.
	UserForm
)

// Namespaces returns the namespaces r reads markers in (and the opaque
// marker also in opaqueNamespaces').
func (r Reading) Namespaces() []Namespace {
	if r == UserForm {
		return []Namespace{User}
	}
	return []Namespace{Trusted, User}
}

// opaqueNamespaces returns the namespaces r reads the opaque marker in:
// fuse-overlayfs writes it (only it) in its own.
func (r Reading) opaqueNamespaces() []Namespace {
	if r == UserForm {
		return []Namespace{User}
	}
	return []Namespace{Trusted, User, FuseOverlayfs}
}

// escaped returns the namespace whose user names r stores escaped.
func (r Reading) escaped() Namespace {
	if r == UserForm {
		return User
	}
	return Trusted
}

// IsPrivate reports whether name belongs to an overlay implementation
// rather than to the user: such names are never shown through the mount
// (but an escaped one, IsEscaped, stands for the user's own).
func (r Reading) IsPrivate(name string) bool {
	for _, ns := range r.opaqueNamespaces() {
		if strings.HasPrefix(name, string(ns)) {
			return true
		}
	}
	return false
}

// IsEscaped reports whether a stored name is a user's own xattr of a
// private namespace, escaped: X.overlay.Y stored as X.overlay.overlay.Y.
func (r Reading) IsEscaped(name string) bool {
	for _, ns := range r.Namespaces() {
		if strings.HasPrefix(name, string(ns)+"overlay.") {
			return true
		}
	}
	return false
}

// Escape returns the name a user's xattr is stored under, as the kernel
// escapes it (ovl_xattr_escape_name): X.overlay.Y of the escaped
// namespace as X.overlay.overlay.Y, anything else as it is.
func (r Reading) Escape(name string) string {
	ns := string(r.escaped())
	if rest, ok := strings.CutPrefix(name, ns); ok {
		return ns + "overlay." + rest
	}
	return name
}

// Unescape returns the user's name of a name Escape stored, and whether
// it was one.
func (r Reading) Unescape(stored string) (string, bool) {
	ns := string(r.escaped())
	rest, ok := strings.CutPrefix(stored, ns+"overlay.")
	if !ok {
		return "", false
	}
	return ns + rest, true
}
