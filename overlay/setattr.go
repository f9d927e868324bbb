package overlay

import (
	"syscall"
	"time"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// SetAttrs are the attributes a setattr changes; nil fields stay.
type SetAttrs struct {
	Mode         *uint32 // permission bits
	Uid, Gid     *uint32
	Size         *uint64
	Atime, Mtime *time.Time
	// AtimeNow and MtimeNow set a time to the host's current time, as
	// utimensat's UTIME_NOW does (in place of Atime, Mtime).
	AtimeNow, MtimeNow bool
	// Handle is the open file the change comes through, if any (ftruncate,
	// fchmod): it still works on an unlinked file.
	Handle *uint64
	// KillPrivs, when set, is the caller of a truncate or chown
	// without CAP_FSETID (HANDLE_KILLPRIV_V2): setuid goes, and setgid
	// as the kernel drops it (killedPrivs), unless Mode is set.
	KillPrivs *Cred
}

// setAttrFd returns the open file a setattr of n goes through, or -1:
// the one the request names (ftruncate), or, for an unlinked node, any
// (the kernel sends fchmod without one). The fd stays the handle's or
// the node's. unlinked says whether n was unlinked.
func (fs *FS) setAttrFd(n *node, handle *uint64) (fd int, unlinked bool) {
	fd = -1
	n.mu.Lock()
	defer n.mu.Unlock()
	if handle != nil {
		if f, err := fs.fileHandle(*handle); err == nil && f.n == n && (n.unlinked || n.objects()[0].layer.Upper) {
			fd = f.file()
		}
	}
	if fd < 0 && n.unlinked {
		fd = n.openFd()
	}
	return fd, n.unlinked
}

// killPrivs adds to in, a setattr from a caller without CAP_FSETID
// (in.KillPrivs), the mode without the setuid and setgid bits the kernel
// would drop (HANDLE_KILLPRIV_V2 leaves that to the daemon). A chown for
// real needs none: the host clears them as the kernel would, the caller
// being allowed to chown only to a group it is in.
func (fs *FS) killPrivs(n *node, in *SetAttrs) {
	chown := (in.Uid != nil || in.Gid != nil) && !fs.writesOverride(n.kind())
	if in.KillPrivs == nil || in.Mode != nil || chown || n.privs.Load() == privsNone {
		return
	}
	if st, err := fs.stat(n); err == nil {
		a := fs.attr(n, &st)
		if m, kill := killedPrivs(a.Mode, a.Gid, *in.KillPrivs); kill {
			in.Mode = &m
		}
	}
}

// chownKill adds to in, an empty setattr of a non-directory, the mode
// without the setuid bit, and without setgid if the file is
// group-executable. An empty setattr is what chown(f, -1, -1) sends: the
// kernel drops those bits on every chown of a non-directory, whoever
// makes it (chown_common's ATTR_KILL_SUID), and FUSE leaves that to the
// daemon (HANDLE_KILLPRIV_V2) but tells it nothing of the chown.
func (fs *FS) chownKill(n *node, in *SetAttrs) {
	if n.privs.Load() == privsNone {
		return
	}
	st, err := fs.stat(n)
	if err != nil {
		return
	}
	m := fs.attr(n, &st).Mode & 0o7777
	kept := m &^ unix.S_ISUID
	if m&(unix.S_ISGID|unix.S_IXGRP) == unix.S_ISGID|unix.S_IXGRP {
		kept &^= unix.S_ISGID
	}
	if kept != m {
		in.Mode = &kept
	}
}

// SetAttr changes attributes of node id, copying it up first as the
// kernel does, and returns the new attributes.
func (fs *FS) SetAttr(id uint64, in SetAttrs) (Attr, error) {
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	n, err := fs.writable(id)
	if err != nil {
		return Attr{}, err
	}
	touch := in.Mode == nil && in.Uid == nil && in.Gid == nil && in.Size == nil && in.Atime == nil && in.Mtime == nil
	if err := fs.checkProt(n, touch); err != nil {
		return Attr{}, err
	}
	if fs.overrideWrite != "" && special(n.kind()) && (in.Uid != nil || in.Gid != nil || in.Mode != nil) {
		if err := fs.backWithFile(n, &in); err != nil {
			return Attr{}, err
		}
	}
	fd, unlinked := fs.setAttrFd(n, in.Handle)
	fs.killPrivs(n, &in)
	if touch && !in.AtimeNow && !in.MtimeNow && in.KillPrivs == nil && !n.isDir() {
		fs.chownKill(n, &in)
	}
	if fd < 0 && !unlinked && in.Size == nil && !fs.writesOverride(n.kind()) &&
		fs.opts.UIDs.Squash == nil && fs.opts.GIDs.Squash == nil {
		if st, ok, err := fs.setAttrsAt(n, in); ok {
			if err != nil {
				return Attr{}, err
			}
			return fs.attr(n, &st), nil
		}
	}
	if fd < 0 && in.Size != nil {
		// A truncate copies the data up first, as the kernel's
		// ovl_copy_up_with_data does (metacopy=on keeps it below
		// otherwise).
		cfd, err := fs.copyUpOpen(n, false)
		if err != nil {
			return Attr{}, err
		}
		if cfd >= 0 {
			unix.Close(cfd)
		}
	}
	if fd < 0 {
		pfd, err := fs.upperObject(n)
		if err != nil {
			return Attr{}, err
		}
		defer unix.Close(pfd)
		fd = pfd
	}
	if err := fs.setOwnerMode(n, fd, &in); err != nil {
		return Attr{}, err
	}
	if err := setAttrs(fd, n.kind(), in); err != nil {
		return Attr{}, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Attr{}, toErrno(err)
	}
	return fs.attr(n, &st), nil
}

// killedPrivs returns mode, shown for a file of group gid, with the bits a
// write or truncate by caller c, who lacks CAP_FSETID, clears, and whether
// there were any: setuid, and setgid when the file is group-executable or
// c is not in its group (the kernel's setattr_should_drop_suidgid).
func killedPrivs(mode, gid uint32, c Cred) (uint32, bool) {
	kill := uint32(unix.S_ISUID)
	if mode&unix.S_ISGID != 0 && (mode&unix.S_IXGRP != 0 || !c.inGroup(gid)) {
		kill |= unix.S_ISGID
	}
	return mode & 0o7777 &^ kill, mode&kill != 0
}

// setOwnerMode does the owner and mode part of a setattr that the
// mount's options change: with xattr_permissions it writes them to the
// override xattr of the upper object fd; otherwise it maps a new owner to
// stored ids, and under squash_to_* changes it without failing, as
// fuse-overlayfs does. It leaves in what is left to change for real.
// Preconditions: renameMu held; n copied up; n.mu not held.
func (fs *FS) setOwnerMode(n *node, fd int, in *SetAttrs) error {
	if in.Uid == nil && in.Gid == nil && in.Mode == nil {
		return nil
	}
	squashed := fs.opts.UIDs.Squash != nil || fs.opts.GIDs.Squash != nil
	if fs.writesOverride(n.kind()) {
		var st unix.Stat_t
		err := toErrno(unix.Fstat(fd, &st))
		if err == nil {
			err = fs.setOverride(n, fd, &st, in)
		}
		in.Uid, in.Gid, in.Mode = nil, nil, nil
		if squashed {
			return nil
		}
		return err
	}
	fs.storedOwner(in)
	if squashed && (in.Uid != nil || in.Gid != nil) {
		setAttrs(fd, n.kind(), SetAttrs{Uid: in.Uid, Gid: in.Gid})
		in.Uid, in.Gid = nil, nil
	}
	return nil
}

// setAttrsAt is SetAttr for owner, mode and times, on n's name in its
// parent's held upper fd: two syscalls (the change, then fstatat) where
// opening the object costs four. ok is false where it does not apply (the
// root), and nothing has been changed then.
// Preconditions: renameMu held; in.Size nil; no override or squash option.
func (fs *FS) setAttrsAt(n *node, in SetAttrs) (st unix.Stat_t, ok bool, err error) {
	if err := fs.copyUp(n); err != nil {
		return st, true, err
	}
	at := n.at.Load()
	if at.parent == n {
		return st, false, nil
	}
	fs.storedOwner(&in)
	ok = true
	err = fs.inDir(at.parent, fs.upper, func(dfd int) error {
		if err := changeAttrs(dfd, at.name, n.kind(), in); err != nil {
			return err
		}
		return unix.Fstatat(dfd, at.name, &st, unix.AT_SYMLINK_NOFOLLOW)
	})
	return st, ok, toErrno(err)
}

// upperObject copies n up and opens its upper object as an O_PATH fd;
// the caller closes it.
// Preconditions: renameMu held.
func (fs *FS) upperObject(n *node) (int, error) {
	if err := fs.copyUp(n); err != nil {
		return -1, err
	}
	fd, err := fs.openObj(n, fs.upper)
	return fd, toErrno(err)
}

// setAttrs applies in to the object of fd (an O_PATH or open fd of an
// upper object of type typ). Ownership goes first: chown clears setuid
// and setgid, which a chmod in the same request sets again.
func setAttrs(fd int, typ uint32, in SetAttrs) error {
	if in.Size != nil {
		if typ != unix.S_IFREG {
			return syscall.EINVAL
		}
		if err := layers.FdTruncate(fd, int64(*in.Size)); err != nil {
			return toErrno(err)
		}
	}
	return toErrno(changeAttrs(fd, "", typ, in))
}

// storedOwner maps a new owner in in to the ids stored (uidmapping,
// gidmapping).
func (fs *FS) storedOwner(in *SetAttrs) {
	if in.Uid != nil {
		u := fs.opts.UIDs.stored(*in.Uid)
		in.Uid = &u
	}
	if in.Gid != nil {
		g := fs.opts.GIDs.stored(*in.Gid)
		in.Gid = &g
	}
}

// changeAttrs applies in's owner, mode and times (in that order: chown
// clears setuid and setgid, which a chmod in the same request sets again)
// to entry name of directory dfd, or with name "" to the object of dfd, an
// O_PATH or open fd, never following a symlink.
func changeAttrs(dfd int, name string, typ uint32, in SetAttrs) error {
	flags := unix.AT_SYMLINK_NOFOLLOW
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	chowned := false
	if in.Uid != nil || in.Gid != nil {
		uid, gid := -1, -1
		if in.Uid != nil {
			uid = int(*in.Uid)
		}
		if in.Gid != nil {
			gid = int(*in.Gid)
		}
		if err := layers.Chown(dfd, name, uid, gid); err != nil {
			return err
		}
		chowned = true
	}
	if in.Mode != nil {
		if typ == unix.S_IFLNK {
			return unix.EOPNOTSUPP
		}
		mode := *in.Mode & 0o7777
		var st unix.Stat_t
		if chowned && unix.Fstatat(dfd, name, &st, flags) == nil && st.Mode&0o7777 == mode {
			// The kernel sends a chown of a setuid or setgid file with
			// the mode without those bits, which the host's chown has
			// already cleared: a chmod could only fail after the change
			// was made.
			return changeTimes(dfd, name, in)
		}
		if err := layers.Chmod(dfd, name, mode); err != nil {
			return err
		}
	}
	return changeTimes(dfd, name, in)
}

// changeTimes is the times part of changeAttrs.
func changeTimes(dfd int, name string, in SetAttrs) error {
	if in.Atime == nil && in.Mtime == nil && !in.AtimeNow && !in.MtimeNow {
		return nil
	}
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	if in.Atime != nil {
		ts[0] = unix.NsecToTimespec(in.Atime.UnixNano())
	}
	if in.Mtime != nil {
		ts[1] = unix.NsecToTimespec(in.Mtime.UnixNano())
	}
	if in.AtimeNow {
		ts[0] = unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	if in.MtimeNow {
		ts[1] = unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	return layers.SetTimes(dfd, name, ts[0], ts[1])
}
