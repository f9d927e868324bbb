package check

import (
	"fmt"
	"strings"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// The kernel's lookup of a name (namei.c ovl_lookup), for what the checks
// need of it: which directories of the layers below a directory merge into
// it, following redirects, and which lower file holds the data of a
// metacopy file. A layer being walked plays the part of the kernel's upper
// layer, and the layers below it that of its lower ones, so that a lower
// layer that was an upper one is checked as the kernel reads it.

// node is an object of a layer found by a lookup.
type node struct {
	l    int    // layer
	fd   int    // O_PATH
	path string // host path
	st   unix.Stat_t
	own  bool // fd is to be closed with it (not a layer's root)
}

func (n node) close() {
	if n.own {
		unix.Close(n.fd)
	}
}

// lookupData is the kernel's struct ovl_lookup_data.
type lookupData struct {
	// name is looked up in the next layer: the name itself, or what a
	// redirect made of it (a path from the layer roots if absolute).
	name                 string
	isDir, stop, opaque  bool
	metacopy, redirected bool
	absRedirect          bool // the last redirect read was absolute
}

// lookupFailure is a lookup the kernel fails, on a malformed marker.
type lookupFailure struct{ path, why string }

func (f *lookupFailure) Error() string { return f.path + ": " + f.why }

// single looks up component comp of d.name in directory base (path
// basePath) of layer l, as ovl_lookup_single: prelen is where comp starts
// in d.name and post what follows it. ok is false when nothing is kept.
func (c *checker) single(l, base int, basePath string, d *lookupData, comp string, prelen int, post string) (n node, ok bool, err error) {
	last := post == ""
	path := basePath + "/" + comp
	if !layers.ValidName(comp) {
		// A redirect's "." or "..", which the kernel's lookup refuses,
		// and which would lead out of the layer.
		return n, false, &lookupFailure{basePath, fmt.Sprintf("a redirect leads to the name %q, which lookups refuse (EACCES)", comp)}
	}
	fd, err := unix.Openat(base, comp, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT || err == unix.ENAMETOOLONG {
		return n, false, nil
	}
	if err != nil {
		return n, false, fmt.Errorf("%s: %v", path, err)
	}
	n = node{l: l, fd: fd, path: path, own: true}
	if err := unix.Fstat(fd, &n.st); err != nil {
		n.close()
		return n, false, fmt.Errorf("%s: %v", path, err)
	}
	typ := n.st.Mode & unix.S_IFMT
	drop := func() (node, bool, error) { n.close(); return node{}, false, nil }
	white, err := isWhiteoutFd(fd, &n.st)
	if err != nil {
		n.close()
		return n, false, fmt.Errorf("%s: %v", path, err)
	}
	if white {
		d.stop, d.opaque = true, true
		return drop()
	}
	if last && d.metacopy && typ != unix.S_IFREG {
		d.stop = true
		return drop()
	}
	if typ != unix.S_IFDIR {
		if d.isDir || !last {
			d.stop = true
			return drop()
		}
		meta := false
		if typ == unix.S_IFREG {
			v, has, err := getOverlay(fd, xMetacopy)
			if err != nil {
				n.close()
				return n, false, fmt.Errorf("%s: %v", path, err)
			}
			if has {
				if bad, atLookup := metacopyProblem(v); atLookup {
					n.close()
					return n, false, &lookupFailure{path, "overlay.metacopy is " + bad}
				}
				meta = true
			}
		}
		d.metacopy, d.stop = meta, !meta
		if !meta {
			return n, true, nil
		}
	} else {
		if last {
			d.isDir = true
		}
		v, _, err := getOverlay(fd, xOpaque)
		if err != nil {
			n.close()
			return n, false, fmt.Errorf("%s: %v", path, err)
		}
		if string(v) == "y" {
			d.stop = true
			if last {
				d.opaque = true
			}
			return n, true, nil
		}
	}
	// ovl_check_redirect.
	d.absRedirect = false
	v, has, err := getOverlay(fd, xRedirect)
	if err != nil {
		n.close()
		return n, false, fmt.Errorf("%s: %v", path, err)
	}
	if !has {
		return n, true, nil
	}
	r := string(v)
	if bad := redirectProblem(r); bad != "" {
		n.close()
		return n, false, &lookupFailure{path, "overlay.redirect " + bad + " (EINVAL)"}
	}
	d.redirected = true
	if r[0] == '/' {
		d.absRedirect = true
		d.stop = false
		d.name = r + post
	} else {
		d.name = d.name[:prelen] + r + post
	}
	return n, true, nil
}

// redirectProblem says what the kernel finds wrong with redirect r
// (ovl_get_redirect_xattr): then a lookup of its object fails (EINVAL).
func redirectProblem(r string) string {
	switch {
	case r == "":
		return "is empty"
	case r[0] == '/':
		for _, s := range strings.Split(r[1:], "/") {
			if s == "" {
				return fmt.Sprintf("%q has an empty component", r)
			}
		}
	case strings.Contains(r, "/"):
		return fmt.Sprintf("%q is relative but has a '/'", r)
	}
	return ""
}

// isWhiteoutFd reports whether the object fd holds (attributes st) is a
// whiteout to a lookup (ovl_path_is_whiteout): a 0/0 char device, or an
// empty regular file with overlay.whiteout.
func isWhiteoutFd(fd int, st *unix.Stat_t) (bool, error) {
	if layers.IsWhiteout(st) {
		return true, nil
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0 {
		return false, nil
	}
	_, has, err := getOverlay(fd, xWhiteout)
	return has, err
}

// lookupLayer looks d.name up in directory dir of a layer, as
// ovl_lookup_layer: one component, or, after an absolute redirect, each
// component of a path from the layer's root.
func (c *checker) lookupLayer(dir node, d *lookupData) (node, bool, error) {
	if !strings.HasPrefix(d.name, "/") {
		return c.single(dir.l, dir.fd, dir.path, d, d.name, 0, "")
	}
	// rem counts from the end, since a redirect on the way changes the
	// part before it.
	rem := len(d.name) - 1
	cur := dir
	for {
		s := len(d.name) - rem
		next := strings.IndexByte(d.name[s:], '/')
		if next < 0 {
			next = len(d.name)
		} else {
			next += s
		}
		end := next == len(d.name)
		n, found, err := c.single(dir.l, cur.fd, cur.path, d, d.name[s:next], s, d.name[next:])
		if cur.fd != dir.fd {
			cur.close()
		}
		if err != nil || !found || end {
			return n, found, err
		}
		cur = n
		rem -= next - s + 1
	}
}

// roots returns the roots of the layers the kernel merges below layer i.
func (c *checker) roots(i int) []node {
	var out []node
	for _, j := range c.below(i) {
		l := c.layers[j]
		n := node{l: j, fd: l.Root(), path: l.path}
		unix.Fstat(n.fd, &n.st)
		out = append(out, n)
	}
	return out
}

// lookupResult is what a lookup of a name found below its walked layer.
type lookupResult struct {
	// found are the objects of the layers below, as the kernel keeps
	// them: the directories that merge, or a metacopy file's data.
	found []node
	// meta is set for a metacopy file of the walked layer, and data is
	// then where its data is, nil if nowhere.
	meta bool
	data *node
	// dataPath is set when the data is to be in a data-only layer, at
	// that absolute path.
	dataPath string
}

func (r lookupResult) close() {
	for _, n := range r.found {
		n.close()
	}
}

// lookup looks up name in the directory of frame f, as ovl_lookup with f's
// layer as the upper one: its object there first, then in the directories
// that merge into f from the layers below, following redirects. It fails
// with a *lookupFailure where the kernel's lookup fails.
func (c *checker) lookup(f *frame, name string) (lookupResult, error) {
	var res lookupResult
	d := &lookupData{name: name}
	top, ok, err := c.single(f.l, f.fd, f.path, d, name, 0, "")
	if err != nil || !ok {
		return res, err
	}
	top.close()
	res.meta = d.metacopy
	if d.stop {
		return res, nil
	}
	// ctr counts what the kernel keeps: the walked layer's object too,
	// unless the walked layer is the upper one.
	ctr := 0
	if c.layers[f.l] != c.upper {
		ctr = 1
	}
	poe, err := c.stackOf(f)
	if err != nil {
		return res, err
	}
	atRoots := false
	if d.redirected && strings.HasPrefix(d.name, "/") {
		poe, atRoots = c.roots(f.l), true
	}
	for i := 0; i < len(poe) && !d.stop; i++ {
		e := poe[i]
		n, ok, err := c.lookupLayer(e, d)
		if err != nil {
			res.close()
			return lookupResult{}, err
		}
		if ok {
			if d.metacopy && ctr > 0 {
				// Intermediate metacopy files are not kept.
				n.close()
			} else {
				res.found = append(res.found, n)
			}
			ctr++
		}
		if !d.stop && !atRoots && d.redirected && strings.HasPrefix(d.name, "/") {
			// An absolute redirect: on from the next layer's root.
			poe, atRoots, i = c.roots(e.l), true, -1
		}
	}
	if !res.meta && !d.metacopy {
		return res, nil
	}
	switch {
	case d.metacopy && ctr > 0 && d.absRedirect && c.hasData():
		// Data-only layers, looked up at first open
		// (ovl_maybe_lookup_lowerdata).
		res.dataPath = d.name
		if n := c.lookupData(d.name); n != nil {
			res.found = append(res.found, *n)
			res.data = &res.found[len(res.found)-1]
		}
	case !d.metacopy && len(res.found) > 0:
		res.data = &res.found[len(res.found)-1]
	}
	return res, nil
}

// hasData reports whether the stack has data-only layers.
func (c *checker) hasData() bool {
	return c.layers[len(c.layers)-1].data
}

// lookupData finds the data of a metacopy file at the absolute path p of
// a data-only layer, as ovl_lookup_data_layers: a regular file reached
// without symlinks or mount crossings.
func (c *checker) lookupData(p string) *node {
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	for j, l := range c.layers {
		if !l.data {
			continue
		}
		fd, err := unix.Openat2(l.Root(), strings.TrimPrefix(p, "/"), &how)
		if err != nil {
			continue
		}
		n := node{l: j, fd: fd, path: l.path + p, own: true}
		if unix.Fstat(fd, &n.st) == nil && n.st.Mode&unix.S_IFMT == unix.S_IFREG {
			return &n
		}
		n.close()
	}
	return nil
}
