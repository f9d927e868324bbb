package copyup

import (
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// StandIn puts a regular file standing for entry name of directory sdir of
// layer src, a symlink, fifo, socket or device, at name in upper directory
// udir: its parent in the upper layer, and, when src is the upper layer,
// sdir itself, where the file replaces the object. It is for an upper
// layer whose owners, modes and types live in an override xattr, which
// such objects cannot carry (the kernel refuses user.* xattrs on them).
//
// The file holds a symlink's target (nothing for the others), the
// object's xattrs but the overlay's own, then opts.Xattrs (the override
// naming the type), and its atime and mtime; it keeps the daemon's owner
// and mode 0600, and gets no origin, whose type the kernel would find
// wrong. Like a copy it is built complete in the work directory and put
// in place with one rename, and udir's times are restored: after a crash
// the name shows the object or the whole file. opts.Fsync syncs it first;
// the other options do not apply. Every error is a syscall.Errno: EINVAL
// for a regular file or directory, EEXIST when name is taken in udir and
// src is a lower layer, EXDEV when udir is not on the work directory's
// filesystem.
func (w *Work) StandIn(src *layers.Layer, sdir, udir int, name string, opts Options) (unix.Stat_t, error) {
	st, err := w.standIn(src, sdir, udir, name, opts)
	if err != nil {
		return st, layers.Errno(err)
	}
	return st, nil
}

func (w *Work) standIn(src *layers.Layer, sdir, udir int, name string, opts Options) (unix.Stat_t, error) {
	var st unix.Stat_t
	if !layers.ValidName(name) {
		return st, unix.EINVAL
	}
	sfd, err := unix.Openat(sdir, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return st, err
	}
	defer unix.Close(sfd)
	var sst, pst unix.Stat_t
	if err := unix.Fstat(sfd, &sst); err != nil {
		return st, err
	}
	kind := sst.Mode & unix.S_IFMT
	if kind == unix.S_IFREG || kind == unix.S_IFDIR {
		return st, unix.EINVAL
	}
	if err := unix.Fstat(udir, &pst); err != nil {
		return st, err
	}
	if pst.Dev != w.dev {
		return st, unix.EXDEV
	}
	tmp := w.TempName()
	fd, err := layers.Create(w.fd, tmp, unix.O_RDWR, 0o600)
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	if err := w.fillStandIn(fd, sfd, &sst, opts); err != nil {
		layers.Unlink(w.fd, tmp)
		return st, err
	}
	if src.Upper {
		err = layers.Rename(w.fd, tmp, udir, name, 0)
	} else {
		err = layers.Rename(w.fd, tmp, udir, name, unix.RENAME_NOREPLACE)
		if err == unix.EINVAL {
			// A filesystem without RENAME_NOREPLACE.
			if err = free(udir, name); err == nil {
				err = layers.Rename(w.fd, tmp, udir, name, 0)
			}
		}
	}
	if err != nil {
		layers.Unlink(w.fd, tmp)
		return st, err
	}
	// Best effort, as after a copy: the file is in place.
	layers.SetTimes(udir, "", pst.Atim, pst.Mtim)
	return st, unix.Fstat(fd, &st)
}

// fillStandIn gives the file fd what StandIn says of the object of the
// O_PATH fd sfd, whose attributes are sst.
func (w *Work) fillStandIn(fd, sfd int, sst *unix.Stat_t, opts Options) error {
	if sst.Mode&unix.S_IFMT == unix.S_IFLNK {
		target, err := layers.ReadlinkAt(sfd, "")
		if err != nil {
			return err
		}
		if _, err := layers.Pwrite(fd, []byte(target), 0); err != nil {
			return err
		}
	}
	if err := copyXattrs(sfd, fd, private(opts.Reading)); err != nil {
		return err
	}
	for name, v := range opts.Xattrs {
		if err := layers.FdSetxattr(fd, name, []byte(v), 0); err != nil {
			return err
		}
	}
	if err := layers.SetTimes(fd, "", sst.Atim, sst.Mtim); err != nil {
		return err
	}
	if opts.Fsync {
		return layers.Fsync(fd)
	}
	return nil
}
