package copyup

import (
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// ClearDir empties directory name of upper directory dfd, which shows
// nothing through the overlay but still holds whiteouts, so that a rename
// can replace it, as the kernel's ovl_clear_empty does: an empty copy of
// it (owner, mode, times, xattrs but the overlay's own as r reads them) is
// built in the work directory and marked opaque with xattr opaque, then
// exchanged with
// it with one rename, and the old one, now in the work directory, is
// removed. The name never shows a directory half cleared: after a crash
// it holds the old directory or the empty one.
func (w *Work) ClearDir(dfd int, name, opaque string, r layers.Reading) error {
	old, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(old)
	var st unix.Stat_t
	if err := unix.Fstat(old, &st); err != nil {
		return err
	}
	tmp := w.TempName()
	if err := layers.Mkdir(w.fd, tmp, 0o700); err != nil {
		return err
	}
	err = w.fillClear(tmp, old, &st, opaque, r)
	if err == nil {
		err = layers.Rename(w.fd, tmp, dfd, name, unix.RENAME_EXCHANGE)
	}
	// Either the old directory or the unused copy is in work now.
	layers.RemoveAll(w.fd, tmp)
	return err
}

// fillClear gives the empty directory tmp in the work directory the
// attributes of the open directory old (st) and the opaque marker.
func (w *Work) fillClear(tmp string, old int, st *unix.Stat_t, opaque string, r layers.Reading) error {
	fd, err := openBeneath(w.fd, tmp, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := copyXattrs(old, fd, private(r)); err != nil {
		return err
	}
	if err := layers.FdSetxattr(fd, opaque, []byte("y"), 0); err != nil {
		return err
	}
	// Owner before mode: chown clears setgid.
	if err := layers.Chown(fd, "", int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := layers.Chmod(fd, "", st.Mode&0o7777); err != nil {
		return err
	}
	return layers.SetTimes(fd, "", st.Atim, st.Mtim)
}
