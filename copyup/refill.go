package copyup

import (
	"slices"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// Refill gives upper metacopy file name of upper directory udir (an fd of
// it; O_PATH will do), open as meta, its data: the first size bytes of
// open file data, the object below that holds them, with size meta's
// size. It returns the file that replaced it, open for reading and
// writing.
//
// The kernel (ovl_copy_up_meta_inode_data) writes the data into the
// upper file in place and then removes the metacopy marker; a crash
// while it writes leaves a file whose mtime has changed but whose data is
// still read from below, neither the old state nor the new. Refill builds
// the whole file in the work directory instead, with meta's owner, mode,
// times, inode flags and xattrs but those named in drop (the metacopy
// markers), its mtime changed if data was written, as the kernel's copy
// changes it, syncs it when fsync is set, and renames it over name: after a
// crash name holds the metacopy file or the full one. The origin and
// redirect xattrs come along, so the file keeps its number and its
// place. The upper directory's times are set back, as copy-up does.
//
// The caller holds name still (no rename or unlink of it meanwhile), and
// refills only a file with one link: a rename would split a hard link.
// Every error is a syscall.Errno; on failure the upper layer is unchanged.
func (w *Work) Refill(udir int, name string, meta, data int, drop []string, fsync bool) (int, error) {
	var st, pst unix.Stat_t
	if err := unix.Fstat(meta, &st); err != nil {
		return -1, err
	}
	if err := unix.Fstat(udir, &pst); err != nil {
		return -1, err
	}
	if err := step("create"); err != nil {
		return -1, err
	}
	temp := w.TempName()
	fd, err := layers.Create(w.fd, temp, unix.O_RDWR, 0o600)
	if err != nil {
		return -1, layers.Errno(err)
	}
	if err = w.fillRefill(fd, &st, meta, data, drop, fsync); err == nil {
		err = w.replace(temp, fd, udir, name, &pst)
	}
	if err != nil {
		layers.Unlink(w.fd, temp)
		unix.Close(fd)
		return -1, layers.Errno(err)
	}
	return fd, nil
}

// fillRefill writes the data and metadata of metacopy file meta (st) into
// the new file fd.
func (w *Work) fillRefill(fd int, st *unix.Stat_t, meta, data int, drop []string, fsync bool) error {
	if err := step("data"); err != nil {
		return err
	}
	wrote, err := FillData(fd, data, st.Size, fsync)
	if err != nil {
		return err
	}
	if err := layers.FdTruncate(fd, st.Size); err != nil {
		return err
	}
	// Owner first: chown clears setuid, setgid and security.capability.
	if err := step("chown"); err != nil {
		return err
	}
	if err := layers.Chown(fd, "", int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := step("xattr"); err != nil {
		return err
	}
	if err := copyXattrs(meta, fd, func(name string) bool { return slices.Contains(drop, name) }); err != nil {
		return err
	}
	if flags, err := unix.IoctlGetUint32(meta, unix.FS_IOC_GETFLAGS); err == nil && flags&copyFlags != 0 {
		if err := layers.SetFlags(fd, flags&copyFlags); err != nil {
			return err
		}
	}
	if err := step("chmod"); err != nil {
		return err
	}
	if err := layers.Chmod(fd, "", st.Mode&0o7777); err != nil {
		return err
	}
	if err := step("times"); err != nil {
		return err
	}
	mtime := st.Mtim
	if wrote {
		// The kernel's copy writes into the upper file.
		mtime = unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	if err := layers.SetTimes(fd, "", st.Atim, mtime); err != nil {
		return err
	}
	if !fsync {
		return nil
	}
	if err := step("fsync"); err != nil {
		return err
	}
	return layers.Fsync(fd)
}

// replace renames temporary temp (open as fd) over name in udir, after
// checking that name is still a regular file with one link, and sets
// udir's times back to pst's.
func (w *Work) replace(temp string, fd, udir int, name string, pst *unix.Stat_t) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	var st unix.Stat_t
	if err := unix.Fstatat(udir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
		return unix.EINVAL
	}
	if err := step("place"); err != nil {
		return err
	}
	if err := layers.Rename(w.fd, temp, udir, name, 0); err != nil {
		return err
	}
	// Best effort, as in copy-up: the file is in place.
	layers.SetTimes(udir, "", pst.Atim, pst.Mtim)
	return nil
}
