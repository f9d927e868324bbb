package overlay

import (
	"strings"
	"syscall"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// Rename moves oldName of directory oldParent to newName of newParent,
// with the kernel's rules: a non-directory is copied up and renamed in the
// upper layer, leaving a whiteout at the old name when a lower object
// would show there (one renameat2 with RENAME_WHITEOUT); a directory must
// be purely upper, or the answer is EXDEV and mv copies instead; a
// directory moved where a lower one would show through becomes opaque; a
// directory replaced must be empty in the merged view.
//
// It holds renameMu for writing, so no other operation runs meanwhile.
func (fs *FS) Rename(oldParent uint64, oldName string, newParent uint64, newName string) error {
	fs.renameMu.Lock()
	defer fs.renameMu.Unlock()
	if fs.upper == nil {
		return syscall.EROFS
	}
	op, err := fs.get(oldParent)
	if err != nil {
		return err
	}
	np, err := fs.get(newParent)
	if err != nil {
		return err
	}
	if err := checkName(newName); err != nil {
		return err
	}
	if strings.HasPrefix(newName, layers.WhiteoutPrefix) {
		return syscall.EPERM
	}
	src, err := fs.resolve(op, oldName)
	if err != nil {
		return err
	}
	dst, err := fs.resolve(np, newName)
	dstExists := err == nil
	if err != nil && err != syscall.ENOENT {
		return err
	}
	srcDir := src.typ == unix.S_IFDIR
	if dstExists {
		sn, sok, skey := fs.number(op, oldName, src)
		dn, dok, dkey := fs.number(np, newName, dst)
		if sok == dok && sn == dn && skey == dkey {
			return nil // the same object: rename(2) does nothing
		}
		dstDir := dst.typ == unix.S_IFDIR
		switch {
		case srcDir && !dstDir:
			return syscall.ENOTDIR
		case !srcDir && dstDir:
			return syscall.EISDIR
		case dstDir:
			if err := fs.checkEmpty(np, newName, dst); err != nil {
				return err
			}
		}
	}
	if srcDir && (len(src.objs) > 1 || !src.objs[0].layer.Upper) {
		return syscall.EXDEV
	}
	if err := fs.copyUp(op); err != nil {
		return err
	}
	if err := fs.copyUp(np); err != nil {
		return err
	}
	fromLower := !src.objs[0].layer.Upper
	sn := fs.held(op, oldName, src)
	if !srcDir {
		// Copy the source up through its node, or a node made for the
		// occasion when the kernel holds none.
		if sn == nil {
			sn = &node{typ: src.typ, objs: src.objs}
			sn.at.Store(&place{parent: op, name: oldName})
		}
		if err := fs.copyUp(sn); err != nil {
			return err
		}
	}
	whiteout, err := fs.lowerPositive(op, oldName)
	if err != nil {
		return err
	}
	ofd, err := fs.upperDir(op)
	if err != nil {
		return err
	}
	defer unix.Close(ofd)
	nfd, err := fs.upperDir(np)
	if err != nil {
		return err
	}
	defer unix.Close(nfd)
	// A purely upper directory moving into a merged directory becomes
	// opaque, lest a lower directory of the same name show through
	// later (the kernel's ovl_rename does this whatever lies below the
	// new name).
	opaque := srcDir && !src.objs[0].marks.Opaque && np.merged()
	if opaque {
		if err := setxattrAt(ofd, oldName, fs.privateXattr("opaque"), "y"); err != nil {
			return errno(err)
		}
	}
	if dstExists && dst.typ == unix.S_IFDIR && dst.objs[0].layer.Upper {
		if err := fs.emptyUpperDir(nfd, newName); err != nil {
			return err
		}
	}
	var replaced *node
	if dstExists {
		replaced = fs.held(np, newName, dst)
	}
	over, aufs := fs.whiteoutAt(nfd, newName)
	if over && srcDir {
		// rename(2) cannot put a directory over the char-device
		// whiteout: exchange the two, then the whiteout, now at the old
		// name, stays if a lower object shows there and goes if not.
		if err := unix.Renameat2(ofd, oldName, nfd, newName, unix.RENAME_EXCHANGE); err != nil {
			return errno(err)
		}
		if !whiteout {
			unix.Unlinkat(ofd, oldName, 0)
		}
	} else if err := fs.renameUpper(ofd, oldName, nfd, newName, whiteout); err != nil {
		return err
	}
	if aufs {
		unix.Unlinkat(nfd, layers.WhiteoutPrefix+newName, 0)
	}
	if whiteout || fromLower || (op != np && hasOrigin(nfd, newName, fs.privateXattr("origin"))) {
		// The new parent now holds an object whose number comes from a
		// lower layer: the kernel marks such a directory impure.
		setxattrAt(nfd, ".", fs.privateXattr("impure"), "y")
	}
	unlinked(replaced)
	if sn != nil {
		sn.at.Store(&place{parent: np, name: newName})
		if opaque {
			sn.mu.Lock()
			objs := append([]obj(nil), sn.objs...)
			objs[0].marks.Opaque = true
			sn.objs = objs
			sn.mu.Unlock()
		}
	}
	return nil
}

// renameUpper renames in the upper layer, leaving a whiteout at the old
// name when whiteout is set: atomically with RENAME_WHITEOUT where char
// whiteouts can be made, else an AUFS .wh. file made first.
func (fs *FS) renameUpper(ofd int, oldName string, nfd int, newName string, whiteout bool) error {
	if !whiteout {
		return errno(unix.Renameat(ofd, oldName, nfd, newName))
	}
	if fs.charWhiteouts {
		return errno(unix.Renameat2(ofd, oldName, nfd, newName, unix.RENAME_WHITEOUT))
	}
	wfd, tmp := fs.work.Fd(), fs.work.TempName()
	fd, err := unix.Openat(wfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return errno(err)
	}
	unix.Close(fd)
	if err := unix.Renameat(wfd, tmp, ofd, layers.WhiteoutPrefix+oldName); err != nil {
		unix.Unlinkat(wfd, tmp, 0)
		return errno(err)
	}
	return errno(unix.Renameat(ofd, oldName, nfd, newName))
}

// emptyUpperDir prepares upper directory name of dfd, empty in the merged
// view, to be replaced by a rename: it is made opaque (the view stays
// empty), then the whiteouts it holds are removed.
func (fs *FS) emptyUpperDir(dfd int, name string) error {
	if err := setxattrAt(dfd, name, fs.privateXattr("opaque"), "y"); err != nil {
		return errno(err)
	}
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return errno(err)
	}
	defer unix.Close(fd)
	ents, err := layers.ReadDirFd(fd)
	if err != nil {
		return errno(err)
	}
	for _, e := range ents {
		// A marker left would fail the rename with ENOTEMPTY, though
		// the directory shows nothing: the caller gets the real error.
		err := unix.Unlinkat(fd, e.Name, 0)
		if err == unix.EISDIR {
			removeAll(fd, e.Name)
		} else if err != nil && err != unix.ENOENT {
			return errno(err)
		}
	}
	return nil
}

// held returns the node the kernel holds for name of p, resolved as f, if
// any.
// Preconditions: renameMu held.
func (fs *FS) held(p *node, name string, f found) *node {
	num, ok, key := fs.number(p, name, f)
	n, held := fs.nodes.Get(fs.nodes.Peek(num, ok, key))
	if !held {
		return nil
	}
	if at := n.at.Load(); at.parent != p || at.name != name {
		return nil
	}
	return n
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
