package overlay

import (
	"strings"
	"syscall"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// Lookup of one name, after the kernel's ovl_lookup (fs/overlayfs/namei.c):
// the layers of the parent are searched top down. A whiteout of any form
// ends the search; a non-directory ends it, unless it is a metacopy file,
// whose data is searched for below; a directory goes on into the layers
// below until one is opaque or holds something that is not a directory.
//
// A redirect (overlay.redirect on a directory, or on a metacopy file)
// changes what is looked for in the layers below: a relative one another
// name in the parent's objects, an absolute one a path from the roots of
// the layers below, walked one name at a time. Data-only layers are
// searched last, only for the data of a metacopy file with an absolute
// redirect.

// looking is one lookup in progress.
type looking struct {
	fs *FS
	f  found
	// stop ends the search; name is what is looked for in the parent's
	// objects; abs, once an absolute redirect is met, the path looked
	// for from the roots instead.
	stop      bool
	name, abs string
	// redirected says a redirect was met: following it is refused
	// without redirect_dir=follow or more.
	redirected bool
}

// resolveIn is resolve over the given layer objects of p.
// Preconditions: renameMu held.
func (fs *FS) resolveIn(p *node, pobjs []obj, name string) (found, error) {
	if !p.isDir() {
		return found{}, syscall.ENOTDIR
	}
	if err := checkName(name); err != nil {
		return found{}, err
	}
	if strings.HasPrefix(name, layers.WhiteoutPrefix) {
		// AUFS markers are not objects of the merged tree.
		return found{}, syscall.ENOENT
	}
	lk := &looking{fs: fs, name: name}
	below := -1 // the stack index of the last layer searched
	for i, po := range pobjs {
		if lk.stop || lk.abs != "" {
			break
		}
		// An AUFS whiteout hides the layers below; the last layer has
		// none to hide.
		aufs := i < len(pobjs)-1
		var lf layers.Found
		look := lk.name
		err := fs.inDir(p, po.layer, func(dfd int) error {
			var err error
			lf, err = layers.Lookup(dfd, look, po.marks.XWhiteouts, aufs, fs.reading)
			return err
		})
		if err != nil {
			return found{}, toErrno(err)
		}
		if lf.Kind == layers.Missing && lk.f.objs == nil && i == 0 && po.layer.Upper {
			lk.f.upperFree = true
		}
		where := ""
		if look != name {
			where = look
		}
		if err := lk.add(po.layer, lf, where, i == len(pobjs)-1); err != nil {
			return found{}, err
		}
		below = po.layer.Index
	}
	if lk.abs != "" && !lk.stop {
		if err := lk.fromRoots(below); err != nil {
			return found{}, err
		}
	}
	f, err := lk.done()
	if err == nil && fs.index != nil {
		err = fs.indexLookup(p, name, &f)
	}
	return f, err
}

// add records what layer l holds of the name (lf), found at where ("" for
// the name in the parent's object, else place.far's form), and what it
// means for the layers below; lastObj says l's is the last of the objects
// searched.
func (lk *looking) add(l *layers.Layer, lf layers.Found, where string, lastObj bool) error {
	switch lf.Kind {
	case layers.Missing:
		return nil
	case layers.Hidden:
		lk.stop = true
		return nil
	}
	f := &lk.f
	typ := lf.St.Mode & unix.S_IFMT
	if err := lk.checkRead(l, lf, lastObj); err != nil {
		return err
	}
	// The last object's redirect is not read: it shows as it is.
	last := lk.last(l, lastObj)
	if f.objs != nil {
		if lk.redirected && !lk.fs.opts.Redirects.Follow {
			// A redirect is like a symlink into the layers below,
			// followed without permission checks: refused unless
			// redirects are on (the kernel's "refusing to follow
			// redirect").
			return syscall.EPERM
		}
		switch {
		case f.typ == unix.S_IFDIR && typ != unix.S_IFDIR,
			f.typ == unix.S_IFREG && typ != unix.S_IFREG,
			f.typ != unix.S_IFDIR && f.typ != unix.S_IFREG:
			lk.stop = true
			return nil
		case f.metacopy && !lk.fs.opts.Metacopy:
			// The kernel's "refusing to follow metacopy origin".
			return syscall.EPERM
		case f.typ == unix.S_IFREG && lf.Metacopy:
			// Another metacopy file: only its redirect matters.
			if !last {
				lk.redirect(lf.Redirect)
			}
			return nil
		}
	} else {
		if lf.Metacopy && !l.Upper && !lk.fs.opts.Metacopy && !lk.toData(l, lf) {
			// The kernel's "refusing to follow metacopy origin",
			// whatever is below: without metacopy=on a lower
			// metacopy file is followed only into the data-only
			// layers, from the lowest layer above them.
			return syscall.EPERM
		}
		f.typ, f.st = typ, lf.St
		f.metacopy, f.redirect = lf.Metacopy, lf.Redirect
	}
	o := objOf(l, &lf.St)
	o.marks = lf.Marks
	f.objs = append(f.objs, o)
	if where != "" {
		if f.far == nil {
			f.far = make(map[*layers.Layer]string)
		}
		f.far[l] = where
	}
	switch {
	case last:
		lk.stop = true
	case typ == unix.S_IFDIR && !lf.Marks.Opaque:
		lk.redirect(lf.Redirect)
	case typ == unix.S_IFREG && lf.Metacopy && len(f.objs) == 1:
		// The data is below.
		lk.redirect(lf.Redirect)
	default:
		lk.stop = true
	}
	return nil
}

// checkRead refuses what layer l holds (lf) as the kernel's
// ovl_lookup_single does when it reads its markers: a metacopy marker it
// refuses at every lookup (EIO), and a redirect that is not valid
// (EINVAL) where it reads it, on a directory that is not opaque or on a
// metacopy file, unless l's object is the last it looks at (last). It
// reads nothing of an object not of the type of those above it, which
// ends the lookup.
func (lk *looking) checkRead(l *layers.Layer, lf layers.Found, lastObj bool) error {
	f := &lk.f
	typ := lf.St.Mode & unix.S_IFMT
	if f.objs != nil && f.typ != typ {
		return nil
	}
	if lf.Metacopy {
		if err := checkMarker(lf.MetacopyValue); err != nil {
			return err
		}
	}
	reads := typ == unix.S_IFDIR && !lf.Marks.Opaque || typ == unix.S_IFREG && lf.Metacopy
	if reads && lf.BadRedirect && !lk.last(l, lastObj) {
		return syscall.EINVAL
	}
	return nil
}

// last reports whether the kernel's lookup takes what layer l holds as
// the last object it looks at, and so reads no redirect of it (ovl_lookup's
// d.last), as measured on the kernel: with redirects followed, or with
// data-only layers, only in the lowest layer above the data-only ones,
// and with data-only layers only for a directory found above already (a
// metacopy file's data, or a directory first found there, may be below
// it); else (nofollow) the last of the objects searched (lastObj).
func (lk *looking) last(l *layers.Layer, lastObj bool) bool {
	fs := lk.fs
	if !fs.opts.Redirects.Follow && len(fs.dataLayers) == 0 {
		return lastObj
	}
	above := lk.f.objs != nil && lk.f.typ == unix.S_IFDIR
	return l == fs.lowestLower() && (len(fs.dataLayers) == 0 || above)
}

// toData reports whether metacopy file lf, the first object of the name,
// in layer l, has its data looked for in the data-only layers without
// metacopy=on: it is in the lowest layer above them, with an absolute
// redirect.
func (lk *looking) toData(l *layers.Layer, lf layers.Found) bool {
	return len(lk.fs.dataLayers) > 0 && l == lk.fs.lowestLower() && strings.HasPrefix(lf.Redirect, "/")
}

// redirect takes redirect r, if any, for the layers below.
func (lk *looking) redirect(r string) {
	switch {
	case r == "":
	case r[0] == '/':
		lk.abs, lk.redirected = r, true
	case lk.abs != "":
		// A relative redirect met while following an absolute one:
		// another last name.
		lk.abs, lk.redirected = lk.abs[:strings.LastIndexByte(lk.abs, '/')+1]+r, true
	default:
		lk.name, lk.redirected = r, true
	}
}

// fromRoots goes on with an absolute redirect in the layers below the
// one of stack index below, from their roots.
func (lk *looking) fromRoots(below int) error {
	roots := lk.fs.rootObjs()
	for i, ro := range roots {
		if lk.stop {
			break
		}
		if ro.layer.Index <= below {
			continue
		}
		path := lk.abs
		lf, err := lk.walk(ro, path)
		if err != nil {
			return err
		}
		if err := lk.add(ro.layer, lf, path, i == len(roots)-1); err != nil {
			return err
		}
	}
	return nil
}

// walk looks up path (from the root, starting with '/') in the root
// object ro's layer one name at a time, as ovl_lookup_layer does: the
// last name as one step of a lookup; before it, anything but a
// directory, or a whiteout, ends the search, and an opaque directory ends
// it after this layer. A redirect on a directory on the way changes the
// path for the layers below.
func (lk *looking) walk(ro obj, path string) (layers.Found, error) {
	names := strings.Split(path[1:], "/")
	dfd, err := ro.layer.OpenPath("")
	if err != nil {
		return layers.Found{}, err
	}
	defer func() { unix.Close(dfd) }()
	xw := ro.marks.XWhiteouts
	for i, name := range names {
		lf, err := layers.Lookup(dfd, name, xw, true, lk.fs.reading)
		if err != nil || i == len(names)-1 {
			return lf, err
		}
		if lf.Kind == layers.Missing {
			return lf, nil
		}
		if lf.Kind == layers.Hidden || lf.St.Mode&unix.S_IFMT != unix.S_IFDIR {
			lk.stop = true
			return layers.Found{}, nil
		}
		if lf.Marks.Opaque {
			lk.stop = true
		}
		if r := lf.Redirect; r != "" {
			rest := strings.Join(names[i+1:], "/")
			if r[0] != '/' {
				r = "/" + strings.Join(append(names[:i:i], r), "/")
			}
			lk.abs, lk.stop, lk.redirected = r+"/"+rest, false, true
		}
		next, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return layers.Found{}, err
		}
		unix.Close(dfd)
		dfd, xw = next, lf.Marks.XWhiteouts
	}
	return layers.Found{}, nil
}

// done finishes the lookup: a metacopy file's data from a data-only layer
// if it has none yet, and the errors of what was not found.
func (lk *looking) done() (found, error) {
	f := lk.f
	if f.objs == nil {
		return f, syscall.ENOENT
	}
	if f.metacopy && len(f.objs) == 1 {
		// No data below: a metacopy file with an absolute redirect
		// takes it from a data-only layer, found now or, if not there
		// yet, at open (the kernel looks there lazily); an upper one
		// (a metadata copy-up of such a file) only with metacopy=on.
		// Any other is EIO, as in the kernel.
		if lk.abs == "" || len(lk.fs.dataLayers) == 0 || f.objs[0].layer.Upper && !lk.fs.opts.Metacopy {
			return f, syscall.EIO
		}
		if o, ok := lk.fs.dataObj(lk.abs); ok {
			f.objs = append(f.objs, o)
			f.far = map[*layers.Layer]string{o.layer: lk.abs}
		} else {
			f.lazy = lk.abs
		}
	}
	return f, nil
}

// lazyData finds the data of metacopy file n that no data-only layer held
// at lookup, as the kernel's ovl_maybe_lookup_lowerdata does at the first
// access to it: ENOENT if it is still missing.
// Preconditions: renameMu held; n.mu held.
func (fs *FS) lazyData(n *node) error {
	if n.aux == nil || n.aux.lazy == "" {
		return nil
	}
	o, ok := fs.dataObj(n.aux.lazy)
	if !ok {
		return syscall.ENOENT
	}
	at := n.at.Load()
	n.at.Store(&place{parent: at.parent, name: at.name, far: map[*layers.Layer]string{o.layer: n.aux.lazy}})
	n.setObjs(append(n.objects()[:1:1], o))
	n.aux.lazy = ""
	return nil
}

// dataObj finds the data of a metacopy file at path (absolute) in the
// data-only layers, as ovl_lookup_data_layers does: a plain path there,
// no whiteouts, walked one name at a time, and the data a regular file.
func (fs *FS) dataObj(path string) (obj, bool) {
	i := strings.LastIndexByte(path, '/')
	for _, l := range fs.dataLayers {
		dfd, err := l.Walk(path[1:max(i, 1)])
		if err != nil {
			continue
		}
		var st unix.Stat_t
		err = unix.Fstatat(dfd, path[i+1:], &st, unix.AT_SYMLINK_NOFOLLOW)
		unix.Close(dfd)
		if err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
			return objOf(l, &st), true
		}
	}
	return obj{}, false
}
