package copyup

import (
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// Test hooks, set only by tests while no copy runs.
var (
	// failAt is called before each step of a copy; an error it returns
	// fails the copy there.
	failAt func(step string) error
	// noTmpfile makes regular files take the temporary-name path, as on
	// a filesystem without O_TMPFILE.
	noTmpfile bool
)

// Copy copies entry sname of directory sdir (an fd of a directory of
// lower layer src; O_PATH will do) as name into directory udir (an fd of
// a directory of the upper layer), and returns the new upper object's
// attributes. The two names differ where a redirect put the lower object
// elsewhere. name must not exist in udir (EEXIST). A directory is copied empty: its lower
// entries stay merged. The caller keeps sdir and udir: with them Copy
// needs no path longer than one name, however deep the object.
//
// Copy changes the upper parent directory (its entry, its impure marker,
// its times): two copies of the same name, or a copy racing another change
// of name in the upper layer, are the caller's to prevent. Copies into one
// parent may run concurrently. The parent's atime and mtime are set back
// to what they were when Copy began, as the kernel does, so a change to
// the parent made meanwhile by another operation loses its mtime update
// unless the caller orders the two.
//
// Every error is a syscall.Errno. On failure the upper layer is unchanged
// and no temporary is left in the work directory. The errnos of note:
// EEXIST (name is in udir), ENOENT (name is missing in sdir), ENOTDIR
// (udir is not a directory), EOVERFLOW or EPERM (the lower owner cannot be
// set), EXDEV (the work directory is not on the upper layer's
// filesystem), EINVAL (a bad name).
func (w *Work) Copy(src *layers.Layer, sdir int, sname string, upper *layers.Layer, udir int, name string, opts Options) (unix.Stat_t, error) {
	c := copier{w: w, src: src, upper: upper, sname: sname, name: name, opts: opts, sfd: -1, rfd: -1, pfd: -1, tfd: -1}
	err := c.run(sdir, udir)
	st := c.result
	if err != nil {
		c.removeTemp()
	}
	if opts.Keep != nil {
		*opts.Keep = -1
		if err == nil && c.kind == unix.S_IFREG {
			*opts.Keep, c.tfd = c.tfd, -1
		}
	}
	c.closeAll()
	if err != nil {
		return unix.Stat_t{}, layers.Errno(err)
	}
	return st, nil
}

// copier is one copy in progress.
type copier struct {
	w          *Work
	src, upper *layers.Layer
	opts       Options
	sname      string // of the object in the lower parent
	name       string // of the copy in the upper parent

	sfd   int         // O_PATH fd of the lower object
	sst   unix.Stat_t // its attributes
	rfd   int         // the lower regular file or directory, opened for reading; -1 otherwise
	pfd   int         // O_PATH fd of the upper parent
	pst   unix.Stat_t // its attributes before the copy
	tfd   int         // the temporary: an O_TMPFILE, an open directory, or O_PATH
	temp  string      // its name in work; "" for an O_TMPFILE or once placed
	kind  uint32      // S_IFMT of the object
	buf   []byte      // read/write buffer when copy_file_range cannot be used
	wrote bool        // whether copyData wrote any data

	result unix.Stat_t
}

func step(name string) error {
	if failAt != nil {
		return failAt(name)
	}
	return nil
}

func (c *copier) run(sdir, udir int) error {
	if !layers.ValidName(c.name) || !layers.ValidName(c.sname) {
		return unix.EINVAL
	}
	if !c.upper.Upper {
		return unix.EROFS
	}
	if c.src.Upper || c.src == c.upper {
		return unix.EINVAL
	}
	if c.upper.Dev != c.w.dev {
		return unix.EXDEV
	}
	if err := c.open(sdir, udir); err != nil {
		return err
	}
	if err := step("create"); err != nil {
		return err
	}
	var err error
	switch c.kind {
	case unix.S_IFREG:
		err = c.createFile()
	case unix.S_IFDIR:
		err = c.createDir()
	case unix.S_IFLNK:
		err = c.createSymlink()
	default:
		err = c.createNode()
	}
	if err != nil {
		return err
	}
	if err := c.metadata(); err != nil {
		return err
	}
	return c.place()
}

// open opens the lower object, takes a copy of the upper parent's fd, and
// checks that the name is free in the upper parent.
func (c *copier) open(sdir, udir int) error {
	if err := step("open"); err != nil {
		return err
	}
	var err error
	if c.sfd, err = unix.Openat(sdir, c.sname, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
		return err
	}
	if err := unix.Fstat(c.sfd, &c.sst); err != nil {
		return err
	}
	c.kind = c.sst.Mode & unix.S_IFMT
	switch {
	case c.kind == unix.S_IFREG && c.opts.DataFrom != nil:
		c.rfd, err = unix.FcntlInt(uintptr(*c.opts.DataFrom), unix.F_DUPFD_CLOEXEC, 0)
	case c.kind == unix.S_IFREG:
		c.rfd, err = c.src.Reopen(c.sfd, unix.O_RDONLY)
	case c.kind == unix.S_IFDIR:
		// Only for the inode flags: an unreadable directory is copied
		// without them.
		if c.rfd, err = c.src.Reopen(c.sfd, unix.O_RDONLY|unix.O_DIRECTORY); err == unix.EACCES {
			err = nil
		}
	}
	if err != nil {
		return err
	}
	if c.pfd, err = unix.FcntlInt(uintptr(udir), unix.F_DUPFD_CLOEXEC, 0); err != nil {
		return err
	}
	if err := unix.Fstat(c.pfd, &c.pst); err != nil {
		return err
	}
	if c.pst.Mode&unix.S_IFMT != unix.S_IFDIR {
		return unix.ENOTDIR
	}
	return free(c.pfd, c.name)
}

// free returns nil if dir has no entry name, EEXIST if it has one.
func free(dir int, name string) error {
	var st unix.Stat_t
	switch err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err {
	case nil:
		return unix.EEXIST
	case unix.ENOENT:
		return nil
	default:
		return err
	}
}

// createFile makes the temporary of a regular file and copies the data.
func (c *copier) createFile() error {
	var err error
	c.tfd = -1
	if !noTmpfile {
		c.tfd, err = layers.Tmpfile(c.w.fd, unix.O_RDWR, 0o600)
	}
	if noTmpfile || err == unix.EOPNOTSUPP || err == unix.EISDIR || err == unix.EINVAL {
		err = c.named(func(name string) (err error) {
			c.tfd, err = layers.Create(c.w.fd, name, unix.O_RDWR, 0o600)
			return err
		})
	}
	if err != nil {
		c.tfd = -1
		return err
	}
	if err := step("data"); err != nil {
		return err
	}
	size := c.sst.Size
	if c.opts.Truncate {
		size = 0
	}
	if size > 0 && c.opts.Metacopy == nil {
		if err := c.copyData(size); err != nil {
			return err
		}
	}
	// The size the lower file had, even if the data ends in a hole or
	// the file changed meanwhile (the kernel's ovl_set_size).
	return layers.FdTruncate(c.tfd, size)
}

// named creates a temporary in work under a fresh name with create,
// retrying while the name is taken, and records the name.
func (c *copier) named(create func(name string) error) error {
	for {
		name := c.w.TempName()
		err := create(name)
		if err == unix.EEXIST {
			continue
		}
		if err == nil {
			c.temp = name
		}
		return err
	}
}

func (c *copier) createDir() error {
	err := c.named(func(name string) error { return layers.Mkdir(c.w.fd, name, 0o700) })
	if err != nil {
		return err
	}
	c.tfd, err = openBeneath(c.w.fd, c.temp, unix.O_RDONLY|unix.O_DIRECTORY)
	return err
}

func (c *copier) createSymlink() error {
	target, err := layers.ReadlinkAt(c.sfd, "")
	if err != nil {
		return err
	}
	err = c.named(func(name string) error { return layers.Symlink(target, c.w.fd, name) })
	if err != nil {
		return err
	}
	c.tfd, err = openBeneath(c.w.fd, c.temp, unix.O_PATH)
	return err
}

// createNode makes the temporary of a fifo, socket or device, mode 0
// until the metadata step.
func (c *copier) createNode() error {
	err := c.named(func(name string) error {
		return layers.Mknod(c.w.fd, name, c.kind, c.sst.Rdev)
	})
	if err != nil {
		return err
	}
	c.tfd, err = openBeneath(c.w.fd, c.temp, unix.O_PATH)
	return err
}

// metadata gives the temporary the lower object's owner, xattrs, inode
// flags, origin, mode and times, in an order that keeps each: chown
// clears setuid, setgid and security.capability, so it comes first; the
// mode after the ACLs, which would change it.
func (c *copier) metadata() error {
	if err := step("chown"); err != nil {
		return err
	}
	err := layers.Chown(c.tfd, "", int(c.sst.Uid), int(c.sst.Gid))
	if err == unix.EINVAL {
		// The owner has no mapping in this user namespace.
		err = unix.EOVERFLOW
	}
	if err != nil {
		return err
	}
	if err := step("xattr"); err != nil {
		return err
	}
	if err := c.copyXattrs(); err != nil {
		return err
	}
	if err := step("fileattr"); err != nil {
		return err
	}
	if err := c.copyFlags(); err != nil {
		return err
	}
	if err := step("origin"); err != nil {
		return err
	}
	if err := c.setOrigin(); err != nil {
		return err
	}
	if m := c.opts.Metacopy; m != nil && c.kind == unix.S_IFREG {
		if err := layers.FdSetxattr(c.tfd, m.Name, m.Value, 0); err != nil {
			return err
		}
	}
	if m := c.opts.Index; m != nil {
		if err := layers.FdSetxattr(c.tfd, m.Name, m.Value, 0); err != nil {
			return err
		}
	}
	if c.kind != unix.S_IFLNK {
		if err := step("chmod"); err != nil {
			return err
		}
		if err := layers.Chmod(c.tfd, "", c.sst.Mode&0o7777); err != nil {
			return err
		}
	}
	if err := step("times"); err != nil {
		return err
	}
	mtime := c.sst.Mtim
	if c.opts.Truncate {
		// The truncation that asked for the copy changes the mtime; done
		// here, the copy is the file as the truncation leaves it, and a
		// crash before the truncation proper shows it whole.
		mtime = unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	if err := layers.SetTimes(c.tfd, "", c.sst.Atim, mtime); err != nil {
		return err
	}
	if c.opts.Fsync && (c.kind == unix.S_IFREG || c.kind == unix.S_IFDIR) {
		if err := step("fsync"); err != nil {
			return err
		}
		if err := layers.Fsync(c.tfd); err != nil {
			return err
		}
	}
	return nil
}

// place puts the temporary at its name in the upper parent with one link or
// rename, after marking the parent impure (undone if the link fails), and
// restores the parent's times; an index entry just goes in.
func (c *copier) place() error {
	if c.opts.Index != nil {
		if err := step("place"); err != nil {
			return err
		}
		if err := c.link(); err != nil {
			return err
		}
		unix.Fstat(c.tfd, &c.result)
		return nil
	}
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	if err := step("impure"); err != nil {
		return err
	}
	impure := c.opts.xattrs().Name(layers.XattrImpure)
	old, err := layers.FdGetxattr(c.pfd, impure)
	set := false
	if err != nil || string(old) != "y" {
		if err != nil {
			old = nil
		}
		switch err := layers.FdSetxattr(c.pfd, impure, []byte("y"), 0); err {
		case nil:
			set = true
		case unix.EOPNOTSUPP:
			// The kernel goes on without xattrs on such an upper layer.
		default:
			return err
		}
	}
	err = step("place")
	if err == nil {
		err = c.link()
	}
	if err != nil {
		if set {
			if old == nil {
				layers.FdRemovexattr(c.pfd, impure)
			} else {
				layers.FdSetxattr(c.pfd, impure, old, 0)
			}
		}
		return err
	}
	// Best effort, as in the kernel: the object is in place.
	layers.SetTimes(c.pfd, "", c.pst.Atim, c.pst.Mtim)
	unix.Fstat(c.tfd, &c.result)
	return nil
}

// link puts the temporary at its name, failing with EEXIST if the name is
// taken.
func (c *copier) link() error {
	if c.temp == "" {
		// An O_TMPFILE.
		return layers.LinkFd(c.tfd, c.pfd, c.name)
	}
	err := layers.Rename(c.w.fd, c.temp, c.pfd, c.name, unix.RENAME_NOREPLACE)
	if err == unix.EINVAL {
		// A filesystem without RENAME_NOREPLACE.
		if err = free(c.pfd, c.name); err == nil {
			err = layers.Rename(c.w.fd, c.temp, c.pfd, c.name, 0)
		}
	}
	if err == nil {
		c.temp = ""
	}
	return err
}

// removeTemp removes a named temporary after a failure; an O_TMPFILE goes
// with its fd.
func (c *copier) removeTemp() {
	if c.temp == "" {
		return
	}
	if c.kind == unix.S_IFDIR {
		layers.Rmdir(c.w.fd, c.temp)
	} else {
		layers.Unlink(c.w.fd, c.temp)
	}
	c.temp = ""
}

func (c *copier) closeAll() {
	for _, fd := range []int{c.sfd, c.rfd, c.pfd, c.tfd} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}
