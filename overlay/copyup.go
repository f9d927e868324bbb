package overlay

import (
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ovlmount/ovlmount/copyup"
	"github.com/ovlmount/ovlmount/inodes"
	"github.com/ovlmount/ovlmount/layers"
)

// copyUp makes n's winning object an upper one, copying its parents up
// first, top down, as the kernel's ovl_copy_up does. The copy is atomic
// (package copyup): after a crash the upper layer holds the whole object
// or none of it. A second caller waits on n.mu and finds the work done.
// Preconditions: renameMu held; no node's mu held.
func (fs *FS) copyUp(n *node) error {
	_, err := fs.copyUpOpen(n, false)
	return err
}

// copyUpOpen is copyUp for an open for writing: it returns an fd of a
// regular file's copy, open for reading and writing, when it made the
// copy (else -1), and with trunc copies it empty, for an open with
// O_TRUNC (as the kernel does).
func (fs *FS) copyUpOpen(n *node, trunc bool) (int, error) {
	if fs.upper == nil {
		return -1, syscall.EROFS
	}
	if n.upper() {
		return -1, nil
	}
	if p := n.parent(); p != n {
		if err := fs.copyUp(p); err != nil {
			return -1, err
		}
	}
	fd := -1
	opts := copyup.Options{Fsync: !fs.opts.NoFsync, Trusted: fs.xattrs == layers.Trusted, Truncate: trunc && n.kind() == unix.S_IFREG, Keep: &fd}
	if names := fs.overrideRead[fs.upper]; len(names) > 0 {
		// The copy shows what the lower object shows, under the name
		// the upper layer is read with.
		if o, ok := fs.overrideOf(n, n.kind()); ok {
			opts.Xattrs = map[string]string{names[0]: o.String()}
		}
	}
	n.mu.Lock()
	if n.unlinked {
		n.mu.Unlock()
		return -1, syscall.ENOENT
	}
	if n.objects()[0].layer.Upper {
		n.mu.Unlock()
		return -1, nil
	}
	st, err := fs.copyObj(n, n.objects()[0].layer, opts)
	if err != nil {
		n.mu.Unlock()
		return -1, toErrno(err)
	}
	fs.stats.copiedUp(n.kind(), st.Size)
	up := objOf(fs.upper, &st)
	changed := n.isDir()
	if n.isDir() {
		// The copied directory is empty: the lower ones stay merged.
		n.setObjs(append([]obj{up}, n.objects()...))
	} else {
		n.setObjs([]obj{up})
		if fs.nodes.IdentOf(n).ByName {
			// One name of a lower hard link, copied up alone: the
			// link is broken, as the kernel breaks it without index,
			// and the copy is an object of its own, with its own
			// number (no origin is recorded for it).
			key := up.key()
			fs.nodes.Rehash(n, inodes.Ident{Key: key})
			num, ok := fs.scheme.Ino(key.Dev, key.Ino)
			fs.setNumber(n, identity{Ident: inodes.Ident{Key: key}, num: num, ok: ok})
			changed = true
		}
	}
	n.mu.Unlock()
	if changed && fs.invalidate != nil && n.ID() != 0 {
		// A merged directory shows nlink 1, a broken link its own
		// number and nlink: the kernel's cached attributes of the node,
		// which the request may not be about (a parent), would not
		// know.
		fs.invalidate(n.ID())
	}
	return fd, nil
}

// upperDir opens directory node p's upper directory as an O_PATH fd for
// *at calls on its entries; the caller closes it.
// Preconditions: renameMu held; p copied up.
func (fs *FS) upperDir(p *node) (int, error) {
	fd, err := fs.openObj(p, fs.upper)
	return fd, toErrno(err)
}

// copyObj copies n's object in lower layer l into the upper layer,
// through fds of n's parent in both.
// Preconditions: renameMu held; n's parent copied up; n.mu held.
func (fs *FS) copyObj(n *node, l *layers.Layer, opts copyup.Options) (unix.Stat_t, error) {
	at := n.at.Load()
	sdir, err := fs.openObj(at.parent, l)
	if err != nil {
		return unix.Stat_t{}, err
	}
	defer unix.Close(sdir)
	udir, err := fs.openObj(at.parent, fs.upper)
	if err != nil {
		return unix.Stat_t{}, err
	}
	defer unix.Close(udir)
	return fs.work.Copy(l, sdir, fs.upper, udir, at.name, opts)
}
