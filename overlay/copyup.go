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
//
// With metacopy=on a regular file's data stays below, as the kernel's
// ovl_copy_up_meta_inode: the copy holds its metadata, a hole as big as
// its data, and overlay.metacopy, until it is opened for writing or
// truncated (copyUpOpen).
func (fs *FS) copyUp(n *node) error {
	_, err := fs.copyUpWith(n, fs.opts.Metacopy && n.kind() == unix.S_IFREG, false)
	return err
}

// copyUpOpen is copyUp for an open for writing or a truncate, which copy
// the data too: it returns an fd of a regular file's copy, open for
// reading and writing, when it made the copy or copied its data (else
// -1), and with trunc copies it empty, for an open with O_TRUNC (as the
// kernel does).
func (fs *FS) copyUpOpen(n *node, trunc bool) (int, error) {
	return fs.copyUpWith(n, false, trunc)
}

// copyUpWith is copyUp (meta: without the data) or copyUpOpen.
// Preconditions: renameMu held; no node's mu held.
func (fs *FS) copyUpWith(n *node, meta, trunc bool) (int, error) {
	if fs.upper == nil {
		return -1, syscall.EROFS
	}
	if err := fs.verifyCopied(n); err != nil {
		return -1, err
	}
	if fs.needsLinkUp(n) {
		return fs.copyUpIndexed(n, meta, trunc)
	}
	if meta && n.layersOf()[0].layer.Upper || n.upperData() {
		return -1, nil
	}
	if p := n.parent(); p != n {
		if err := fs.copyUp(p); err != nil {
			return -1, err
		}
	}
	fd := -1
	opts := fs.copyOptions(n, meta, trunc, &fd)
	n.mu.Lock()
	if err := fs.lazyData(n); err != nil {
		n.mu.Unlock()
		return -1, err
	}
	if meta {
		meta = fs.verityMarker(n, &opts)
	}
	if n.unlinked {
		n.mu.Unlock()
		return -1, syscall.ENOENT
	}
	objs := n.objects()
	data, own := dataOf(objs, n.kind())
	if objs[0].layer.Upper {
		if !own && !meta {
			fd, err := fs.fillData(n, data, trunc)
			n.mu.Unlock()
			return fd, toErrno(err)
		}
		n.mu.Unlock()
		return -1, nil
	}
	if !own && !meta {
		// A lower metacopy file: the data comes from below it.
		dfd, err := fs.openFile(n, data.layer, unix.O_RDONLY)
		if err != nil {
			n.mu.Unlock()
			return -1, toErrno(err)
		}
		defer unix.Close(dfd)
		opts.DataFrom = &dfd
	}
	st, err := fs.copyObj(n, objs[0].layer, opts)
	if err != nil {
		n.mu.Unlock()
		return -1, toErrno(err)
	}
	fs.stats.copiedUp(n.kind(), st.Size)
	changed, renumbered := fs.placeCopy(n, objOf(fs.upper, &st), data, meta)
	n.mu.Unlock()
	fs.invalidateCopied(n, changed, renumbered)
	return fd, nil
}

// invalidateAttrs drops the kernel's cached attributes of n, which
// changed other than through a request about it.
func (fs *FS) invalidateAttrs(n *node) {
	if fs.invalidate != nil && n.ID() != 0 {
		fs.invalidate(n.ID(), false)
	}
}

// invalidateCopied drops what the kernel caches about n, copied up, that
// no longer holds (placeCopy).
func (fs *FS) invalidateCopied(n *node, changed, renumbered bool) {
	if changed {
		// A merged directory shows nlink 1, a broken link its own
		// number and nlink: the kernel's cached attributes of the node,
		// which the request may not be about (a parent), would not
		// know.
		fs.invalidateAttrs(n)
	}
	if p := n.parent(); renumbered && fs.invalidate != nil && p.ID() != 0 {
		// The kernel caches listings (CACHE_DIR) and drops them only
		// when it changes the directory itself: the parent's would
		// keep the old d_ino, which readdir of a kernel overlay
		// changes with st_ino.
		fs.invalidate(p.ID(), true)
	}
}

// verityMarker fills in the metacopy marker of a metadata-only copy of n
// (opts.Metacopy): with verity, the data's digest, or, when the data
// must be copied too (verity=require, no fs-verity), no marker. It
// returns whether the copy stays metadata-only.
//
// Preconditions: n.mu is held.
func (fs *FS) verityMarker(n *node, opts *copyup.Options) bool {
	data, _ := dataOf(n.objects(), n.kind())
	dfd, err := fs.openFile(n, data.layer, unix.O_RDONLY)
	if err != nil {
		return true // the copy-up meets the error itself
	}
	value, keep := fs.dataMarker(dfd)
	unix.Close(dfd)
	if !keep {
		opts.Metacopy = nil
		return false
	}
	opts.Metacopy.Value = value
	return true
}

// placeCopy gives n its upper object up after a copy-up: before the lower
// directories it merges, or, for a non-directory, alone or (a metadata
// copy, meta) before the data object. It returns whether the kernel's
// cached attributes of n no longer hold (a merged directory shows nlink
// 1, a broken hard link its own number), and whether n's number changed
// (the broken link).
//
// Preconditions: n.mu is held.
func (fs *FS) placeCopy(n *node, up, data obj, meta bool) (changed, renumbered bool) {
	switch {
	case n.isDir():
		// The copied directory is empty: the lower ones stay merged.
		n.setObjs(append([]obj{up}, n.objects()...))
		return true, false
	case meta:
		// The data stays where it is.
		n.setObjs([]obj{up, data})
	default:
		n.setObjs([]obj{up})
	}
	if !fs.nodes.IdentOf(n).ByName {
		return false, false
	}
	// One name of a lower hard link, copied up alone: the link is
	// broken, as the kernel breaks it without index, and the copy is an
	// object of its own, with its own number (no origin is recorded for
	// it).
	key := up.key()
	fs.nodes.Rehash(n, inodes.Ident{Key: key})
	num, ok := fs.scheme.Ino(key.Dev, key.Ino)
	fs.setNumber(n, identity{Ident: inodes.Ident{Key: key}, num: num, ok: ok})
	return true, true
}

// copyOptions returns the options of a copy of n (meta: without its
// data; trunc: empty), which sets *fd to a regular file's copy.
// Preconditions: renameMu held.
func (fs *FS) copyOptions(n *node, meta, trunc bool, fd *int) copyup.Options {
	opts := copyup.Options{Fsync: !fs.opts.NoFsync, Trusted: fs.xattrs == layers.Trusted, Reading: fs.reading, Truncate: trunc && n.kind() == unix.S_IFREG, Keep: fd, NullUUID: fs.opts.UUID == UUIDOff}
	opts.Xattrs = map[string]string{}
	if names := fs.overrideRead[fs.upper]; len(names) > 0 {
		// The copy shows what the lower object shows, under the name
		// the upper layer is read with.
		if o, ok := fs.overrideOf(n, n.kind()); ok {
			opts.Xattrs[names[0]] = o.String()
		}
	}
	if meta {
		opts.Metacopy = &copyup.Marker{Name: fs.xattrs.Name(layers.XattrMetacopy)}
	}
	return opts
}

// fillData copies the data of upper metacopy file n up from data, the
// object below that holds it (none with trunc, for an open with O_TRUNC),
// and drops the metacopy marker; the redirect stays. It returns the upper
// file open for reading and writing.
//
// A file with one link is rebuilt whole in the work directory and renamed
// over the metacopy file (copyup.Work.Refill): a crash leaves one or the
// other. One with more links, or whose number is its own, keeps its inode:
// the data is written in place, synced, and only then is the marker
// dropped, as the kernel's ovl_copy_up_meta_inode_data does.
// Preconditions: renameMu held; n.mu held.
func (fs *FS) fillData(n *node, data obj, trunc bool) (int, error) {
	up := n.objects()[0]
	fd, err := fs.openFile(n, up.layer, unix.O_RDWR)
	if err != nil {
		return -1, err
	}
	fail := func(err error) (int, error) {
		unix.Close(fd)
		return -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fail(err)
	}
	markers := []string{fs.xattrs.Name(layers.XattrMetacopy)}
	if fs.xattrs == layers.Trusted {
		// A user.overlay.metacopy a rootless mount wrote.
		markers = append(markers, layers.User.Name(layers.XattrMetacopy))
	}
	var dfd int
	if !trunc {
		if dfd, err = fs.openFile(n, data.layer, unix.O_RDONLY); err != nil {
			return fail(err)
		}
		defer unix.Close(dfd)
		if st.Nlink == 1 && fs.nodes.IdentOf(n).Key != up.key() {
			nfd, err := fs.refill(n, fd, dfd, markers)
			unix.Close(fd)
			if err != nil {
				return -1, err
			}
			fs.stats.copiedUp(n.kind(), st.Size)
			return nfd, nil
		}
	}
	if !trunc {
		// Data written in place changes the times: a fill that fails
		// leaves the file as it showed, its data still read from below.
		fail = func(err error) (int, error) {
			layers.SetTimes(fd, "", st.Atim, st.Mtim)
			unix.Close(fd)
			return -1, err
		}
	}
	if trunc {
		err = layers.FdTruncate(fd, 0)
	} else {
		_, err = copyup.FillData(fd, dfd, st.Size, !fs.opts.NoFsync)
	}
	if err == nil && !fs.opts.NoFsync {
		err = layers.Fsync(fd)
	}
	if err != nil {
		return fail(err)
	}
	for i, name := range markers {
		if err := layers.FdRemovexattr(fd, name); err != nil && err != unix.ENODATA && i == 0 {
			return fail(err)
		}
	}
	fs.stats.copiedUp(n.kind(), st.Size)
	n.setObjs([]obj{up})
	return fd, nil
}

// refill replaces upper metacopy file n, open as meta, with a full copy
// whose data comes from open file data, and returns the copy open for
// reading and writing.
// Preconditions: renameMu held; n.mu held; n's upper file has one link.
func (fs *FS) refill(n *node, meta, data int, markers []string) (int, error) {
	at := n.at.Load()
	udir, err := fs.openObj(at.parent, fs.upper)
	if err != nil {
		return -1, err
	}
	defer unix.Close(udir)
	fd, err := fs.work.Refill(udir, at.name, meta, data, markers, !fs.opts.NoFsync)
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	n.setObjs([]obj{objOf(fs.upper, &st)})
	return fd, nil
}

// upperDir opens directory node p's upper directory as an O_PATH fd for
// *at calls on its entries; the caller closes it.
// Preconditions: renameMu held; p copied up.
func (fs *FS) upperDir(p *node) (int, error) {
	fd, err := fs.openObj(p, fs.upper)
	return fd, toErrno(err)
}

// copyObj copies n's object in lower layer l into the upper layer, as n's
// name in its parent's upper directory, through fds of the directories
// that hold them.
// Preconditions: renameMu held; n's parent copied up; n.mu held.
func (fs *FS) copyObj(n *node, l *layers.Layer, opts copyup.Options) (unix.Stat_t, error) {
	at := n.at.Load()
	udir, err := fs.openObj(at.parent, fs.upper)
	if err != nil {
		return unix.Stat_t{}, err
	}
	defer unix.Close(udir)
	var st unix.Stat_t
	err = fs.inParent(n, l, func(sdir int, sname string) error {
		var err error
		st, err = fs.work.Copy(l, sdir, sname, fs.upper, udir, at.name, opts)
		return err
	})
	return st, err
}
