package overlay

import (
	"syscall"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// Removing: a name with nothing below it in the lower layers is removed
// from the upper layer; a name that would show a lower object gets a
// whiteout instead, put in place with one rename from the workdir (a
// directory is exchanged with it, then emptied in the workdir), so the
// name never shows what lies below. Unlinking a lower file does not copy
// it up.

// Unlink removes non-directory name from directory parent.
func (fs *FS) Unlink(parent uint64, name string) error {
	return fs.remove(parent, name, false)
}

// Rmdir removes directory name from directory parent; it must be empty in
// the merged view (whiteouts do not count).
func (fs *FS) Rmdir(parent uint64, name string) error {
	return fs.remove(parent, name, true)
}

func (fs *FS) remove(parent uint64, name string, dir bool) error {
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	p, err := fs.writable(parent)
	if err != nil {
		return err
	}
	// Checked before the parent is copied up too: as on the kernel, a
	// removal that fails leaves the upper layer as it was.
	p.aux.dirMu.Lock()
	f, err := fs.removable(p, name, dir)
	p.aux.dirMu.Unlock()
	if err != nil {
		return err
	}
	if fs.prot(p) != 0 || fs.protOf(p, name, f) != 0 {
		// An append-only or immutable directory keeps its entries; such
		// an object keeps its name.
		return syscall.EPERM
	}
	if err := fs.copyUp(p); err != nil {
		return err
	}
	if f.index != nil && !f.index.alias && !dir {
		// As the kernel's ovl_nlink_start: a name of a lower hard link
		// gets its upper object first, so that the index can keep the
		// overlay's link count (index.go).
		if _, _, err := fs.copiedUp(p, name, f); err != nil {
			return err
		}
	}
	p.aux.dirMu.Lock()
	defer p.aux.dirMu.Unlock()
	if f, err = fs.removable(p, name, dir); err != nil {
		return err
	}
	lower, err := fs.lowerPositive(p, name)
	if err != nil {
		return err
	}
	// Found before the change: the identity may come from the upper
	// object's origin, which goes with it. (Outside inDir below: the
	// origin is read through the same held fd.)
	id := fs.identify(p, name, f)
	// The node goes out of the table before the object goes: once the
	// host has removed it, it may give its inode number to an object
	// another caller makes in another directory, and that object's
	// lookup must not find this node. (No lookup of this name runs
	// meanwhile: the kernel holds the directory for the removal, and an
	// object ended here has no other name.)
	n, ends := fs.nodeOf(id), endsObject(id, f)
	if n != nil && ends {
		fs.nodes.Unhash(n)
	}
	inUpper, origin := f.objs[0].layer.Upper, false
	err = fs.countedRemoval(f.index, func() error {
		return fs.inDir(p, fs.upper, func(pfd int) error {
			// Only an upper-only directory's version counts (impureCache).
			origin = inUpper && !p.merged() && hasOrigin(pfd, name, fs.xattrs.Name(layers.XattrOrigin))
			return fs.removeUpper(pfd, name, lower, inUpper, dir)
		})
	})
	if err != nil {
		if n != nil && ends {
			fs.nodes.Restore(n)
		}
		return toErrno(err)
	}
	if origin {
		p.aux.version.Add(1)
	}
	// The object lives on under its other names, if it has any: an
	// upper non-directory with links left (a lower one just goes out of
	// sight).
	fs.unname(p, name, n, f)
	return nil
}

// removeUpper removes name from the upper directory pfd: over something
// below (lower), it leaves a whiteout (replacing an upper directory,
// inUpper && dir); an upper directory goes out of sight with one rename
// into the workdir and is emptied of the whiteouts it still holds there;
// anything else is unlinked.
func (fs *FS) removeUpper(pfd int, name string, lower, inUpper, dir bool) error {
	switch {
	case lower:
		return fs.putWhiteout(pfd, name, inUpper && dir)
	case dir:
		wfd, tmp := fs.work.Fd(), fs.work.TempName()
		if err := layers.Rename(pfd, name, wfd, tmp, 0); err != nil {
			return err
		}
		layers.RemoveAll(wfd, tmp)
		return nil
	}
	return layers.Unlink(pfd, name)
}

// removable resolves name in p and fails as unlink (dir false) or rmdir
// of it would: ENOENT, ENOTDIR, EISDIR, ENOTEMPTY.
// Preconditions: renameMu held, p.dirMu held.
func (fs *FS) removable(p *node, name string, dir bool) (found, error) {
	f, err := fs.resolve(p, name)
	if err != nil {
		return f, err
	}
	switch {
	case dir && f.typ != unix.S_IFDIR:
		return f, syscall.ENOTDIR
	case !dir && f.typ == unix.S_IFDIR:
		return f, syscall.EISDIR
	}
	if dir {
		if err := fs.checkEmpty(p, name, f); err != nil {
			return f, err
		}
	}
	return f, nil
}

// checkEmpty fails with ENOTEMPTY unless directory name of p, resolved as
// f, shows no entry in the merged view and holds no lower xwhiteout.
// Preconditions: renameMu held.
func (fs *FS) checkEmpty(p *node, name string, f found) error {
	d := scratchNode(unix.S_IFDIR, f.objs, p, name, f.far)
	ents, err := fs.merge(d)
	if err != nil {
		return err
	}
	if len(ents) > 2 {
		return syscall.ENOTEMPTY
	}
	// The kernel's emptiness check (ovl_check_empty_dir) does not read
	// xwhiteouts as whiteouts, as its listing does: one in a lower layer
	// makes the directory not empty, though it shows nothing.
	for _, o := range d.layersOf() {
		if o.layer.Upper || !o.marks.XWhiteouts {
			continue
		}
		raw, err := fs.readAll(d, o.layer)
		if err != nil {
			return toErrno(err)
		}
		for _, e := range raw {
			if e.Type == unix.DT_REG && fs.isWhiteout(d, o, e.Name, e.Type) {
				return syscall.ENOTEMPTY
			}
		}
	}
	return nil
}

// putWhiteout makes name in upper directory pfd a whiteout, replacing the
// upper object there, if any (exchange says it is a directory). The
// whiteout is made in the workdir (newWhiteout) and moved in with one
// rename. Where mknod is refused (rootless), it is an AUFS .wh.NAME file
// instead, created before the upper object goes, so that the lower one
// never shows.
func (fs *FS) putWhiteout(pfd int, name string, exchange bool) error {
	if !fs.charWhiteouts {
		wfd, tmp := fs.work.Fd(), fs.work.TempName()
		if err := layers.AUFSWhiteout(wfd, tmp, pfd, name); err != nil {
			return err
		}
		if exchange {
			if err := layers.Rename(pfd, name, wfd, tmp, 0); err != nil {
				return err
			}
			layers.RemoveAll(wfd, tmp)
			return nil
		}
		if err := layers.Unlink(pfd, name); err != nil && err != unix.ENOENT {
			return err
		}
		return nil
	}
	wfd, tmp, err := fs.newWhiteout()
	if err != nil {
		return err
	}
	if exchange {
		if err := layers.Rename(wfd, tmp, pfd, name, unix.RENAME_EXCHANGE); err != nil {
			layers.Unlink(wfd, tmp)
			return err
		}
		layers.RemoveAll(wfd, tmp)
		return nil
	}
	if err := layers.Rename(wfd, tmp, pfd, name, 0); err != nil {
		layers.Unlink(wfd, tmp)
		return err
	}
	return nil
}

// newWhiteout makes a whiteout to move in place, and returns its
// directory and name: in workdir/work, or with the inodes index, as the
// kernel's ovl_whiteout, a link of one whiteout shared by the mount in
// workdir/index (so whiteouts show more than one link until the next
// mount cleans the index), or that whiteout itself once it has as many
// links as the filesystem takes (the next gets a new one), or if linking
// it failed otherwise, when whiteouts stop being shared.
func (fs *FS) newWhiteout() (int, string, error) {
	if fs.index == nil {
		wfd, tmp := fs.work.Fd(), fs.work.TempName()
		return wfd, tmp, layers.Whiteout(wfd, tmp)
	}
	ix := fs.index
	ifd := ix.x.Fd()
	ix.wmu.Lock()
	defer ix.wmu.Unlock()
	if ix.whiteout == "" {
		name, err := fs.indexTemp(func(name string) error { return layers.Whiteout(ifd, name) })
		if err != nil {
			return -1, "", err
		}
		ix.whiteout = name
	}
	if !ix.noShare {
		tmp, err := fs.indexTemp(func(name string) error { return layers.Link(ifd, ix.whiteout, ifd, name) })
		if err == nil {
			return ifd, tmp, nil
		}
		if err != unix.EMLINK {
			ix.noShare = true
		}
	}
	w := ix.whiteout
	ix.whiteout = ""
	return ifd, w, nil
}

// indexTemp makes a temporary in the index directory with mk, under a
// name of the kernel's form ("#%x") that the next mount cleans.
func (fs *FS) indexTemp(mk func(name string) error) (string, error) {
	for {
		name := fs.work.TempName()
		if err := mk(name); err != unix.EEXIST {
			return name, err
		}
	}
}
