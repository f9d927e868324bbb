package check

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// The overlay's own xattrs, as util.c's ovl_xattr_table names them after
// "trusted.overlay." (or "user.overlay." with userxattr).
const (
	xOpaque   = "opaque"
	xRedirect = "redirect"
	xOrigin   = "origin"
	xNlink    = "nlink"
	xUpper    = "upper"
	xUUID     = "uuid"
	xMetacopy = "metacopy"
	xWhiteout = "whiteout"
)

// The two namespaces a mount reads its xattrs from: trusted.overlay.*, or
// user.overlay.* with the userxattr option.
const (
	nsTrusted = iota
	nsUser
)

var nsPrefix = [2]string{string(layers.Trusted), string(layers.User)}

// ovlXattr is one of the overlay's xattrs on an object.
type ovlXattr struct {
	ns  int
	key string // after the prefix: "opaque", "origin"...
	val []byte
}

func (x ovlXattr) name() string { return nsPrefix[x.ns] + x.key }

// overlayKey returns the namespace and key of xattr name if it is one of
// the overlay's own. A user's own trusted.overlay.X is stored escaped as
// trusted.overlay.overlay.X, and is not.
func overlayKey(name string) (ns int, key string, ok bool) {
	for ns, p := range nsPrefix {
		if k, found := strings.CutPrefix(name, p); found && !strings.HasPrefix(k, "overlay.") {
			return ns, k, true
		}
	}
	return 0, "", false
}

// procPath is the /proc path of fd, which reaches the object fd holds
// without a path walk in a layer.
func procPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// listxattrAt lists the xattrs of entry name of directory dfd, without
// following it if it is a symlink.
func listxattrAt(dfd int, name string) ([]string, error) {
	p := procPath(dfd) + "/" + name
	buf := make([]byte, 256)
	for {
		n, err := unix.Llistxattr(p, buf)
		if err == unix.ERANGE {
			sz, err := unix.Llistxattr(p, nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, sz+64)
			continue
		}
		if err == unix.ENOTSUP {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		var names []string
		for _, s := range strings.Split(string(buf[:n]), "\x00") {
			if s != "" {
				names = append(names, s)
			}
		}
		return names, nil
	}
}

// overlayXattrs returns the overlay's xattrs of entry name of dfd, or of
// dfd itself for name "", and counts their namespace for path.
func (c *checker) overlayXattrs(dfd int, name, path string) ([]ovlXattr, error) {
	var names []string
	var err error
	if name == "" {
		names, err = layers.FdListxattr(dfd)
		if err == unix.ENOTSUP {
			names, err = nil, nil
		}
	} else {
		names, err = listxattrAt(dfd, name)
	}
	if err != nil {
		return nil, err
	}
	var out []ovlXattr
	var used [2]bool
	for _, n := range names {
		ns, key, ok := overlayKey(n)
		if !ok {
			continue
		}
		var v []byte
		if name == "" {
			v, err = layers.FdGetxattr(dfd, n)
		} else {
			v, err = layers.GetxattrAt(dfd, name, n)
		}
		if err == unix.ENODATA {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %v", path, n, err)
		}
		out = append(out, ovlXattr{ns: ns, key: key, val: v})
		used[ns] = true
	}
	for ns, u := range used {
		if u {
			c.ns.add(ns, path)
		}
	}
	return out, nil
}

// getOverlay returns the overlay's xattr key of the object fd holds, from
// either namespace (trusted first), as a lookup reads a marker.
func getOverlay(fd int, key string) ([]byte, bool, error) {
	for _, p := range nsPrefix {
		v, err := layers.FdGetxattr(fd, p+key)
		switch err {
		case nil:
			return v, true, nil
		case unix.ENODATA, unix.ENOTSUP:
		default:
			return nil, false, err
		}
	}
	return nil, false, nil
}

// maxListed bounds the paths kept per namespace for the mixing report.
const maxListed = 100

// namespaces counts the objects that carry the overlay's xattrs in each
// namespace.
type namespaces struct {
	count [2]int
	paths [2][]string
}

func (n *namespaces) add(ns int, path string) {
	n.count[ns]++
	if len(n.paths[ns]) < maxListed {
		n.paths[ns] = append(n.paths[ns], path)
	}
}

// checkNamespaces reports the objects of the less used namespace when the
// stack uses both: a mount reads trusted.overlay.* or, with userxattr,
// user.overlay.*, never both (ovl_xattr), so the other's markers are
// plain xattrs to it and its whiteouts, opaque directories, redirects
// and origins are lost.
func (c *checker) checkNamespaces() {
	n := &c.ns
	if n.count[nsTrusted] == 0 || n.count[nsUser] == 0 {
		return
	}
	minor, major := nsUser, nsTrusted
	if n.count[nsUser] > n.count[nsTrusted] {
		minor, major = nsTrusted, nsUser
	}
	for _, p := range n.paths[minor] {
		c.find(p, "carries %s* xattrs while %d other objects of the stack carry %s* ones: a mount reads only one of the two (trusted.overlay.*, or user.overlay.* with userxattr) and takes the other's markers for plain xattrs",
			nsPrefix[minor], n.count[major], nsPrefix[major])
	}
	if more := n.count[minor] - len(n.paths[minor]); more > 0 {
		c.find(c.layers[0].path, "%d more objects of the stack carry %s* xattrs (not listed)", more, nsPrefix[minor])
	}
}
