package check

import (
	"fmt"
	"sort"

	"github.com/ovlmount/ovlmount/internal/fsverity"
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// frame is a directory of the layer being walked.
type frame struct {
	parent *frame
	l      int    // the layer
	fd     int    // the directory, open for reading
	name   string // its name in the parent
	path   string // host path
	// xwhiteouts is set by overlay.opaque=x: entries may be xwhiteouts.
	xwhiteouts bool
	// stack holds, once stacked, the directories of the layers below
	// that merge into this one, as the kernel's lookup finds them.
	stack    []node
	stackErr error
	stacked  bool
}

// stackOf returns the directories that merge into f from the layers
// below, looking them up on first use: most directories never need it.
func (c *checker) stackOf(f *frame) ([]node, error) {
	if !f.stacked {
		f.stacked = true
		if f.parent == nil {
			f.stack = c.roots(f.l)
		} else {
			res, err := c.lookup(f.parent, f.name)
			f.stack, f.stackErr = res.found, err
		}
	}
	return f.stack, f.stackErr
}

func (f *frame) close() {
	for _, n := range f.stack {
		n.close()
	}
	unix.Close(f.fd)
}

// walkLayer checks every object of layer i.
func (c *checker) walkLayer(i int) error {
	l := c.layers[i]
	fd, err := l.OpenDir("")
	if err != nil {
		return fmt.Errorf("%s %s: %v", l.role, l.path, err)
	}
	root := &frame{l: i, fd: fd, path: l.path}
	defer root.close()
	xs, err := c.overlayXattrs(fd, "", l.path)
	if err != nil {
		return err
	}
	for _, x := range xs {
		switch {
		case x.key == xOpaque && string(x.val) == "x":
			root.xwhiteouts = true
		case x.key == xUUID && l == c.upper && len(x.val) != 16:
			c.find(l.path, "%s is %d bytes, not 16: the kernel falls back to uuid=null", x.name(), len(x.val))
		}
	}
	return c.walkDir(root)
}

// walkDir checks the entries of the directory of f, and below.
func (c *checker) walkDir(f *frame) error {
	ents, err := layers.ReadDirFd(f.fd, false)
	if err != nil {
		return fmt.Errorf("%s: %v", f.path, err)
	}
	// In name order, so that reports come in an order of their own.
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
	for _, e := range ents {
		if err := c.checkEntry(f, e.Name); err != nil {
			return err
		}
	}
	return nil
}

// checkEntry checks entry name of the directory of f, and what is below
// it.
func (c *checker) checkEntry(f *frame, name string) error {
	path := f.path + "/" + name
	var st unix.Stat_t
	if err := unix.Fstatat(f.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	xs, err := c.overlayXattrs(f.fd, name, path)
	if err != nil {
		return err
	}
	upper := c.layers[f.l] == c.upper
	typ := st.Mode & unix.S_IFMT
	if typ == unix.S_IFCHR && st.Rdev != 0 && unix.Major(st.Rdev) == 0 {
		c.badWhiteout(f, name, path, &st)
		return nil
	}
	var redirect, meta, origin *ovlXattr
	opaque := ""
	for i := range xs {
		x := &xs[i]
		switch x.key {
		case xOpaque:
			opaque = c.checkOpaque(path, &st, *x)
		case xWhiteout:
			c.checkXWhiteout(f, path, &st, *x)
		case xRedirect:
			redirect = x
		case xMetacopy:
			meta = c.checkMetacopyXattr(path, &st, x)
		case xOrigin:
			origin = x
		case xNlink:
			if upper && typ != unix.S_IFDIR {
				if bad := nlinkProblem(x.val); bad != "" {
					c.find(path, "%s %s: the kernel ignores it (failed to get index nlink)", x.name(), bad)
				}
			}
		}
	}
	if upper && origin != nil && !layers.IsWhiteout(&st) {
		if fh, ok := c.checkOrigin(path, &st, *origin); ok && typ != unix.S_IFDIR {
			c.index.noteUpper(c, path, &st, fh)
		}
	}
	if meta != nil {
		if err := c.checkMetacopyData(f, name, path, &st, meta); err != nil {
			return err
		}
	}
	if typ != unix.S_IFDIR {
		return nil
	}
	fd, err := c.layers[f.l].OpenDirAt(f.fd, name)
	if err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	child := &frame{parent: f, l: f.l, fd: fd, name: name, path: path, xwhiteouts: opaque == "x"}
	defer child.close()
	if redirect != nil && opaque != "y" && len(c.below(f.l)) > 0 {
		// The kernel reads no redirect of an opaque directory, nor
		// one in the bottom layer, with nothing below to redirect to.
		stack, err := c.stackOf(child)
		if fail, ok := err.(*lookupFailure); ok {
			c.lookupFailed(path, fail)
		} else if err != nil {
			return err
		} else if len(stack) == 0 {
			c.find(path, "%s %q reaches no directory in the layers below: the kernel shows it without what it was renamed from", redirect.name(), redirect.val)
		}
	}
	return c.walkDir(child)
}

// lookupFailed reports that the kernel fails lookups of path, on the
// malformed marker of fail.
func (c *checker) lookupFailed(path string, fail *lookupFailure) {
	if fail.path == path {
		c.find(path, "%s: the kernel fails lookups of it", fail.why)
	} else {
		c.find(path, "the kernel fails lookups of it, at %s: %s", fail.path, fail.why)
	}
}

// checkOpaque checks overlay.opaque x of path (attributes st) and returns
// its value: the kernel reads one byte of it, "y" for an opaque directory
// or "x" for one that may hold xwhiteouts (ovl_get_dir_xattr_val), and
// reads it only on directories.
func (c *checker) checkOpaque(path string, st *unix.Stat_t, x ovlXattr) string {
	v := string(x.val)
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		c.find(path, "%s on %s: the kernel reads it on directories only", x.name(), typeName(st.Mode))
	case v != "y" && v != "x":
		c.find(path, "%s is %q, neither \"y\" (opaque) nor \"x\" (may hold xwhiteouts): the kernel takes the directory for neither", x.name(), v)
	}
	return v
}

// checkXWhiteout checks an overlay.whiteout x on path (attributes st) in
// the directory of f: an xwhiteout is an empty regular file
// (ovl_path_check_xwhiteout_xattr) in a directory marked
// overlay.opaque=x, the only directories whose entries readdir checks for
// them; a lookup takes one for a whiteout anywhere.
func (c *checker) checkXWhiteout(f *frame, path string, st *unix.Stat_t, x ovlXattr) {
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		c.find(path, "%s on %s: an xwhiteout is an empty regular file, and the kernel takes this for no whiteout", x.name(), typeName(st.Mode))
	case st.Size != 0:
		c.find(path, "%s on a regular file of %d bytes: an xwhiteout is empty, and the kernel takes this for no whiteout", x.name(), st.Size)
	case !f.xwhiteouts:
		c.find(path, "xwhiteout (%s) in a directory not marked overlay.opaque=x: the kernel hides the name from lookups but lists it in its directory", x.name())
	}
}

// checkMetacopyXattr checks the format of overlay.metacopy x on path and
// returns it if the kernel follows it.
func (c *checker) checkMetacopyXattr(path string, st *unix.Stat_t, x *ovlXattr) *ovlXattr {
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		c.find(path, "%s on %s: the kernel reads it on regular files only", x.name(), typeName(st.Mode))
		return nil
	}
	bad, atLookup := metacopyProblem(x.val)
	switch {
	case atLookup:
		c.find(path, "%s is %s: the kernel fails lookups of it", x.name(), bad)
		return nil
	case bad != "":
		c.find(path, "%s is %s: the kernel refuses it where it reads the digest, with verity=on or require", x.name(), bad)
	}
	return x
}

// checkMetacopyData finds the data of metacopy file path (entry name of
// f's directory, attributes st, xattr x) as the kernel's lookup does, and
// checks that it is there, of the file's size, and of the digest x
// carries.
func (c *checker) checkMetacopyData(f *frame, name, path string, st *unix.Stat_t, x *ovlXattr) error {
	res, err := c.lookup(f, name)
	if fail, ok := err.(*lookupFailure); ok {
		c.lookupFailed(path, fail)
		return nil
	}
	if err != nil {
		return err
	}
	defer res.close()
	switch {
	case res.data == nil && res.dataPath != "":
		c.find(path, "metacopy file (%s) whose data, at %s, is in no data-only layer: the kernel fails to open it (ENOENT)", x.name(), res.dataPath)
		return nil
	case res.data == nil:
		c.find(path, "metacopy file (%s) whose data is in no layer below: the kernel fails lookups of it (EIO)", x.name())
		return nil
	}
	data := res.data
	if data.st.Size != st.Size {
		c.find(path, "metacopy file of %d bytes whose data, %s, has %d: reads through the overlay are cut short or padded", st.Size, data.path, data.st.Size)
	}
	m, err := fsverity.DecodeMetacopy(x.val)
	if err != nil || !c.opts.Digests || !m.HasDigest() {
		return nil
	}
	fd, err := unix.Open(procPath(data.fd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		c.find(path, "its data, %s, cannot be read to check its fs-verity digest: %v", data.path, err)
		return nil
	}
	defer unix.Close(fd)
	if p := verityProblem(m, fd); p != "" {
		c.find(path, "%s (data: %s)", p, data.path)
	}
	return nil
}

// nlinkProblem says what the kernel finds wrong with an overlay.nlink
// value (ovl_get_nlink): "U" or "L", then a signed decimal number, in at
// most 12 bytes.
func nlinkProblem(v []byte) string {
	s := string(v)
	ok := len(s) > 2 && len(s) <= 12 && (s[0] == 'U' || s[0] == 'L') && (s[1] == '+' || s[1] == '-')
	for i := 2; ok && i < len(s); i++ {
		ok = s[i] >= '0' && s[i] <= '9'
	}
	if !ok {
		return fmt.Sprintf("is %q, not U or L then a signed number", s)
	}
	return ""
}
