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
	if fs.upper == nil {
		return syscall.EROFS
	}
	p, err := fs.get(parent)
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
	inUpper := f.objs[0].layer.Upper
	err = fs.inDir(p, fs.upper, func(pfd int) error {
		switch {
		case lower:
			return fs.putWhiteout(pfd, name, inUpper && dir)
		case dir:
			// Out of sight with one rename, then emptied of any
			// whiteouts it still holds.
			wfd, tmp := fs.work.Fd(), fs.work.TempName()
			if err := layers.Rename(pfd, name, wfd, tmp, 0); err != nil {
				return err
			}
			layers.RemoveAll(wfd, tmp)
			return nil
		}
		return layers.Unlink(pfd, name)
	})
	if err != nil {
		return toErrno(err)
	}
	// The object lives on under its other names, if it has any: an
	// upper non-directory with links left (a lower one just goes out of
	// sight).
	fs.unname(p, name, id, dir || !inUpper || f.st.Nlink <= 1)
	return nil
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
// f, shows no entry in the merged view.
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
	return nil
}

// putWhiteout makes name in upper directory pfd a whiteout, replacing the
// upper object there, if any (exchange says it is a directory). The
// whiteout is made in the workdir and moved in with one rename. Where
// mknod is refused (rootless), it is an AUFS .wh.NAME file instead,
// created before the upper object goes, so that the lower one never
// shows.
func (fs *FS) putWhiteout(pfd int, name string, exchange bool) error {
	wfd, tmp := fs.work.Fd(), fs.work.TempName()
	if !fs.charWhiteouts {
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
	if err := layers.Whiteout(wfd, tmp); err != nil {
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
