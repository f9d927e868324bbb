package overlay

import (
	"strings"
	"syscall"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// renaming is a rename checked and ready: both parents and what both
// names resolved to.
type renaming struct {
	op, np           *node
	oldName, newName string
	src, dst         found
	dstExists        bool
	srcID, dstID     identity
}

// Rename moves oldName of directory oldParent to newName of newParent,
// with the kernel's rules: a non-directory is copied up and renamed in the
// upper layer, leaving a whiteout at the old name when a lower object
// would show there (one renameat2 with RENAME_WHITEOUT); a directory must
// be purely upper, or the answer is EXDEV and mv copies instead; a
// directory moved where a lower one would show through becomes opaque; a
// directory replaced must be empty in the merged view. flags may be
// RENAME_NOREPLACE or RENAME_EXCHANGE, as on the kernel's overlay; any
// other flag (RENAME_WHITEOUT included) is EINVAL.
//
// It holds renameMu for writing, so no other operation runs meanwhile.
func (fs *FS) Rename(oldParent uint64, oldName string, newParent uint64, newName string, flags uint32) error {
	fs.renameMu.Lock()
	defer fs.renameMu.Unlock()
	if fs.upper == nil {
		return syscall.EROFS
	}
	r, noop, err := fs.checkRename(oldParent, oldName, newParent, newName, flags)
	if err != nil || noop {
		return err
	}
	if err := fs.copyUp(r.op); err != nil {
		return err
	}
	if err := fs.copyUp(r.np); err != nil {
		return err
	}
	if flags&unix.RENAME_EXCHANGE != 0 {
		return fs.exchange(r)
	}
	return fs.move(r)
}

// checkRename resolves both names of a rename, once each, and fails as the
// kernel would, in its order: the names (ENOENT, EEXIST), their types
// (ENOTDIR, EISDIR), the flags (EINVAL), what cannot move (EXDEV), and a
// directory replaced that is not empty (ENOTEMPTY). noop is set when both
// names are one object.
// Preconditions: renameMu held for writing.
func (fs *FS) checkRename(oldParent uint64, oldName string, newParent uint64, newName string, flags uint32) (r renaming, noop bool, err error) {
	r.oldName, r.newName = oldName, newName
	if r.op, err = fs.get(oldParent); err != nil {
		return r, false, err
	}
	if r.np, err = fs.get(newParent); err != nil {
		return r, false, err
	}
	if err := checkName(newName); err != nil {
		return r, false, err
	}
	if strings.HasPrefix(newName, layers.WhiteoutPrefix) {
		return r, false, syscall.EPERM
	}
	if r.src, err = fs.resolve(r.op, oldName); err != nil {
		return r, false, err
	}
	r.dst, err = fs.resolve(r.np, newName)
	r.dstExists = err == nil
	if err != nil && err != syscall.ENOENT {
		return r, false, err
	}
	exchange := flags&unix.RENAME_EXCHANGE != 0
	switch {
	case flags&unix.RENAME_NOREPLACE != 0 && r.dstExists:
		return r, false, syscall.EEXIST
	case exchange && !r.dstExists:
		return r, false, syscall.ENOENT
	}
	r.srcID = fs.identify(r.op, oldName, r.src)
	srcDir, dstDir := r.src.typ == unix.S_IFDIR, r.dst.typ == unix.S_IFDIR
	if r.dstExists {
		r.dstID = fs.identify(r.np, newName, r.dst)
		if r.srcID.Ident == r.dstID.Ident || r.src.index != nil && r.dst.index != nil && r.src.index.name == r.dst.index.name {
			// One inode (a hard link; with the index, names of one
			// lower hard link too): rename(2) does nothing.
			return r, true, nil
		}
		switch {
		case exchange:
		case srcDir && !dstDir:
			return r, false, syscall.ENOTDIR
		case !srcDir && dstDir:
			return r, false, syscall.EISDIR
		}
	}
	// Append-only or immutable parents keep their entries, such objects
	// their names; an append-only directory takes new ones.
	if fs.prot(r.op) != 0 || fs.protOf(r.op, oldName, r.src) != 0 || fs.prot(r.np)&flagImmutable != 0 ||
		r.dstExists && (fs.prot(r.np) != 0 || fs.protOf(r.np, newName, r.dst) != 0) {
		return r, false, syscall.EPERM
	}
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return r, false, syscall.EINVAL
	}
	if (srcDir && !pureUpper(r.src) || exchange && dstDir && !pureUpper(r.dst)) && !fs.opts.Redirects.Create {
		// Its lower part cannot move; with redirect_dir=on a redirect
		// says where it lies (redirect.go).
		return r, false, syscall.EXDEV
	}
	if r.dstExists && dstDir && !exchange && !fs.pureUpperDir(r.np, newName, r.dst) {
		// A purely upper directory replaced is left to the upper
		// filesystem's rename, after the changes that come before it
		// (markMoving), as the kernel's ovl_rename leaves it.
		if err := fs.checkEmpty(r.np, newName, r.dst); err != nil {
			return r, false, err
		}
	}
	return r, false, nil
}

// pureUpperDir reports whether directory name of p, resolved as f, is
// what the kernel's ovl_pure_upper calls purely upper: no lower directory
// merged, and no origin (a copied-up directory may hold whiteouts).
// Preconditions: renameMu held.
func (fs *FS) pureUpperDir(p *node, name string, f found) bool {
	if !pureUpper(f) {
		return false
	}
	origin := fs.xattrs.Name(layers.XattrOrigin)
	return fs.inDir(p, fs.upper, func(dfd int) error {
		if hasOrigin(dfd, name, origin) {
			return syscall.EEXIST
		}
		return nil
	}) == nil
}

// pureUpper reports whether a resolved name is an upper object with
// nothing merged below it: the only kind of directory that can move.
func pureUpper(f found) bool { return len(f.objs) == 1 && f.objs[0].layer.Upper }

// copiedUp copies up what name of p resolved to (f), through the node the
// kernel holds for it, or through one made for the occasion, and returns
// the held node (nil if none), and whether the copy is a metacopy file
// (metacopy=on), whose data stays where it lies.
// Preconditions: renameMu held; p copied up.
func (fs *FS) copiedUp(p *node, name string, f found) (*node, bool, error) {
	held := fs.held(p, name, f)
	n := held
	if n == nil {
		n = scratchFor(p, name, f)
	}
	if err := fs.copyUp(n); err != nil {
		return held, false, err
	}
	_, own := dataOf(n.layersOf(), n.kind())
	return held, !own, nil
}

// move is a rename that puts the source in the new name's place,
// replacing what is there.
// Preconditions: renameMu held for writing; checkRename passed; both
// parents copied up.
func (fs *FS) move(r renaming) error {
	op, np, oldName, newName, src, dst := r.op, r.np, r.oldName, r.newName, r.src, r.dst
	srcDir := src.typ == unix.S_IFDIR
	sn, metacopy, err := fs.copiedUp(op, oldName, src)
	if err != nil {
		return err
	}
	x := dst.index
	if r.dstExists && x != nil && !x.alias {
		// A name of a lower hard link, replaced: its upper object first,
		// as for an unlink (remove).
		if _, _, err := fs.copiedUp(np, newName, dst); err != nil {
			return err
		}
	}
	// A directory whose lower part cannot move, and a metacopy file,
	// whose data stays below, are found again through a redirect.
	redirected := srcDir && !pureUpper(src) || metacopy
	redirect := ""
	if redirected {
		if redirect, err = fs.redirectFor(op, oldName, src, op == np); err != nil {
			return err
		}
	}
	whiteout, err := fs.lowerPositive(op, oldName)
	if err != nil {
		return err
	}
	ofd, nfd, err := fs.upperDirs(op, np)
	if err != nil {
		return err
	}
	defer unix.Close(ofd)
	defer unix.Close(nfd)
	// A purely upper directory moving into a merged directory becomes
	// opaque, lest a lower directory of the same name show through
	// later (the kernel's ovl_rename does this whatever lies below the
	// new name).
	opaque := srcDir && !redirected && !src.objs[0].marks.Opaque && np.merged()
	if err := fs.markMoving(ofd, oldName, opaque, redirect); err != nil {
		return err
	}
	if err := fs.clearReplaced(r, nfd); err != nil {
		return err
	}
	srcOrigin, dstOrigin := fs.originsOf(ofd, oldName, nfd, newName, r.dstExists)
	if op != np && srcOrigin {
		// The kernel's ovl_rename marks the new parent impure first,
		// and leaves it so should the rename fail.
		layers.SetImpure(nfd, fs.xattrs)
	}
	over, aufs := fs.whiteoutAt(np, nfd, newName)
	// The replaced name's link goes, if it is indexed.
	err = fs.countedRemoval(x, func() error {
		if over && (srcDir || whiteout) {
			return renameOverWhiteout(ofd, oldName, nfd, newName, whiteout)
		}
		return fs.renameUpper(ofd, oldName, nfd, newName, whiteout)
	})
	if err != nil {
		// A failed rename may still have changed a parent: ext4 puts
		// the source back after a RENAME_WHITEOUT that fails, which
		// sets the old directory's times.
		fs.invalidateAttrs(op)
		return toErrno(err)
	}
	versionsChanged(op, np, srcOrigin, dstOrigin, true)
	if aufs {
		layers.Unlink(nfd, layers.WhiteoutPrefix+newName)
	}
	if r.dstExists {
		fs.replaced(np, newName, r.dstID, dst)
	}
	fs.moved(sn, op, oldName, np, newName, opaque)
	if redirected {
		fs.reresolved(sn, np, newName)
	}
	return nil
}

// clearReplaced swaps the merged directory a rename replaces, which shows
// nothing but still holds whiteouts, for an empty opaque copy: rename(2)
// replaces only an empty directory. Other targets need nothing.
func (fs *FS) clearReplaced(r renaming, nfd int) error {
	if !r.dstExists || r.dst.typ != unix.S_IFDIR || !r.dst.objs[0].layer.Upper || len(r.dst.objs) < 2 {
		return nil
	}
	return toErrno(fs.work.ClearDir(nfd, r.newName, fs.xattrs.Name(layers.XattrOpaque), fs.reading))
}

// originsOf reports whether oldName of ofd, and newName of nfd when dst
// says there is one, have an origin: the kernel's ovl_rename marks the
// new parent impure for a source with one, and counts a change of either
// in the parents' versions (versionsChanged). In the same directory a
// copy without an origin (a lower hard link's, without the index) counts
// for nothing.
func (fs *FS) originsOf(ofd int, oldName string, nfd int, newName string, dst bool) (src, dstOrigin bool) {
	origin := fs.xattrs.Name(layers.XattrOrigin)
	return hasOrigin(ofd, oldName, origin), dst && hasOrigin(nfd, newName, origin)
}

// versionsChanged counts a rename between op and np in their versions as
// the kernel's ovl_rename does (ovl_dir_modified with impurity): the old
// parent's when the source has an origin, or, unless the rename replaced
// its target (overwrite), the target; the new parent's when the source or
// the target it had has one.
func versionsChanged(op, np *node, src, dst, overwrite bool) {
	if src || !overwrite && dst {
		op.aux.version.Add(1)
	}
	if src || dst {
		np.aux.version.Add(1)
	}
}

// markMoving marks the upper object oldName of directory ofd before it
// moves: opaque, and with redirect when not "".
func (fs *FS) markMoving(ofd int, oldName string, opaque bool, redirect string) error {
	if opaque {
		if err := layers.SetOpaque(ofd, oldName, fs.xattrs); err != nil {
			return toErrno(err)
		}
	}
	if redirect != "" {
		return fs.setRedirect(ofd, oldName, redirect)
	}
	return nil
}

// renameOverWhiteout moves oldName of ofd to newName of nfd, where a
// char-device whiteout is, as the kernel's ovl_rename does: the two are
// exchanged (rename(2) cannot put a directory over a whiteout, and a
// name a lower object shows through keeps the whiteout it needs, with
// the owner it had), then the whiteout, now at the old name, stays if a
// lower object shows there (whiteout) and goes if not.
func renameOverWhiteout(ofd int, oldName string, nfd int, newName string, whiteout bool) error {
	if err := layers.Rename(ofd, oldName, nfd, newName, unix.RENAME_EXCHANGE); err != nil {
		return toErrno(err)
	}
	if !whiteout {
		layers.Unlink(ofd, oldName)
	}
	return nil
}

// upperDirs opens the upper directories of op and np, which the caller
// closes.
// Preconditions: renameMu held; op and np copied up.
func (fs *FS) upperDirs(op, np *node) (ofd, nfd int, err error) {
	if ofd, err = fs.upperDir(op); err != nil {
		return -1, -1, err
	}
	if nfd, err = fs.upperDir(np); err != nil {
		unix.Close(ofd)
		return -1, -1, err
	}
	return ofd, nfd, nil
}

// replaced records that name of p, whose identity was id and which held
// f, was renamed over: its node loses the name, and is found by no later
// lookup when that ended its object.
// Preconditions: renameMu held for writing, which kept lookups out since
// the change (so no other object has taken id's inode number).
func (fs *FS) replaced(p *node, name string, id identity, f found) {
	n := fs.nodeOf(id)
	fs.unname(p, name, n, f)
	if n != nil && endsObject(id, f) {
		fs.nodes.Unhash(n)
	}
}

// moved records that n (nil: a name the kernel holds no node for) moved
// from name of from to toName of to, and was made opaque there if opaque.
// A node found by its name is found by the new one.
// Preconditions: renameMu held for writing.
func (fs *FS) moved(n *node, from *node, name string, to *node, toName string, opaque bool) {
	if n == nil {
		return
	}
	if id := fs.nodes.IdentOf(n); id.ByName {
		id.Dir, id.Name = to.ID(), toName
		fs.nodes.Rehash(n, id)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.moveName(from, name, to, toName)
	if opaque {
		n.setOpaque()
	}
}

// exchange is a rename with RENAME_EXCHANGE: both names exist, both are
// copied up, and one renameat2 swaps them in the upper layer. Each purely
// upper directory that lands in a merged parent becomes opaque.
// Preconditions: as move's.
func (fs *FS) exchange(r renaming) error {
	op, np := r.op, r.np
	sn, srcMeta, err := fs.copiedUp(op, r.oldName, r.src)
	if err != nil {
		return err
	}
	dn, dstMeta, err := fs.copiedUp(np, r.newName, r.dst)
	if err != nil {
		return err
	}
	srcRedirected := r.src.typ == unix.S_IFDIR && !pureUpper(r.src) || srcMeta
	dstRedirected := r.dst.typ == unix.S_IFDIR && !pureUpper(r.dst) || dstMeta
	var srcRedirect, dstRedirect string
	if srcRedirected {
		if srcRedirect, err = fs.redirectFor(op, r.oldName, r.src, op == np); err != nil {
			return err
		}
	}
	if dstRedirected {
		if dstRedirect, err = fs.redirectFor(np, r.newName, r.dst, op == np); err != nil {
			return err
		}
	}
	ofd, nfd, err := fs.upperDirs(op, np)
	if err != nil {
		return err
	}
	defer unix.Close(ofd)
	defer unix.Close(nfd)
	srcOpaque := r.src.typ == unix.S_IFDIR && !srcRedirected && !r.src.objs[0].marks.Opaque && np.merged()
	dstOpaque := r.dst.typ == unix.S_IFDIR && !dstRedirected && !r.dst.objs[0].marks.Opaque && op.merged()
	if srcRedirect != "" {
		if err := fs.setRedirect(ofd, r.oldName, srcRedirect); err != nil {
			return err
		}
	}
	if dstRedirect != "" {
		if err := fs.setRedirect(nfd, r.newName, dstRedirect); err != nil {
			return err
		}
	}
	if srcOpaque {
		if err := layers.SetOpaque(ofd, r.oldName, fs.xattrs); err != nil {
			return toErrno(err)
		}
	}
	if dstOpaque {
		if err := layers.SetOpaque(nfd, r.newName, fs.xattrs); err != nil {
			return toErrno(err)
		}
	}
	if err := layers.Rename(ofd, r.oldName, nfd, r.newName, unix.RENAME_EXCHANGE); err != nil {
		return toErrno(err)
	}
	// The names have swapped their objects.
	srcOrigin, dstOrigin := fs.originsOf(nfd, r.newName, ofd, r.oldName, true)
	if op != np {
		// A parent that now holds an object whose number comes from a
		// lower layer is impure, as the kernel marks it.
		if srcOrigin {
			layers.SetImpure(nfd, fs.xattrs)
		}
		if dstOrigin {
			layers.SetImpure(ofd, fs.xattrs)
		}
	}
	versionsChanged(op, np, srcOrigin, dstOrigin, false)
	fs.moved(sn, op, r.oldName, np, r.newName, srcOpaque)
	fs.moved(dn, np, r.newName, op, r.oldName, dstOpaque)
	if srcRedirected {
		fs.reresolved(sn, np, r.newName)
	}
	if dstRedirected {
		fs.reresolved(dn, op, r.oldName)
	}
	return nil
}

// renameUpper renames in the upper layer, leaving a whiteout at the old
// name when whiteout is set: atomically with RENAME_WHITEOUT where char
// whiteouts can be made, else an AUFS .wh. file made first.
func (fs *FS) renameUpper(ofd int, oldName string, nfd int, newName string, whiteout bool) error {
	if !whiteout {
		return toErrno(layers.Rename(ofd, oldName, nfd, newName, 0))
	}
	if fs.charWhiteouts {
		return toErrno(layers.Rename(ofd, oldName, nfd, newName, unix.RENAME_WHITEOUT))
	}
	if err := layers.AUFSWhiteout(fs.work.Fd(), fs.work.TempName(), ofd, oldName); err != nil {
		return toErrno(err)
	}
	return toErrno(layers.Rename(ofd, oldName, nfd, newName, 0))
}

// hasOrigin reports whether entry of directory dfd (not followed if a
// symlink) has the origin xattr name: a copied-up object, whose number
// comes from a lower layer.
func hasOrigin(dfd int, entry, name string) bool {
	fd, err := unix.Openat(dfd, entry, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	_, err = layers.FdGetxattr(fd, name)
	return err == nil
}
