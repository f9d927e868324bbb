package overlay

import (
	"syscall"
	"time"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// Attr is what stat shows for a node.
type Attr struct {
	Ino     uint64
	Mode    uint32 // type and permission bits, as in st_mode
	Nlink   uint32
	Uid     uint32
	Gid     uint32
	Rdev    uint64
	Size    uint64
	Blocks  uint64 // 512-byte blocks allocated
	Blksize uint32
	// Btime, when HasBtime, is the host object's birth time (statx).
	Btime    time.Time
	HasBtime bool
	// Attributes and AttributesMask are statx's attribute flags of the
	// host object (append-only, immutable...).
	Attributes, AttributesMask uint64
	Atime                      time.Time
	Mtime                      time.Time
	Ctime                      time.Time
	// Shared says other nodes show the same object (the names of a lower
	// hard link with the inodes index; index.go) and change it: the
	// kernel must not keep these attributes.
	Shared bool
}

// GetAttr returns the current attributes of node id, read from the layer
// object that wins.
func (fs *FS) GetAttr(id uint64) (Attr, error) {
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	n, err := fs.get(id)
	if err != nil {
		return Attr{}, err
	}
	st, err := fs.stat(n)
	if err != nil {
		return Attr{}, err
	}
	return fs.attr(n, &st), nil
}

// Statx returns the attributes of node id as GetAttr does, with what only
// statx(2) gives: the birth time and attribute flags of the object that
// wins, as the kernel's overlay passes them on from the real object.
func (fs *FS) Statx(id uint64) (Attr, error) {
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	n, err := fs.get(id)
	if err != nil {
		return Attr{}, err
	}
	var sx unix.Statx_t
	statx := func(dfd int, name string) error {
		flags := unix.AT_SYMLINK_NOFOLLOW | unix.AT_STATX_SYNC_AS_STAT
		if name == "" {
			flags |= unix.AT_EMPTY_PATH
		}
		return unix.Statx(dfd, name, flags, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &sx)
	}
	n.mu.Lock()
	objs, unlinked, fd := n.objects(), n.unlinked, n.openFd()
	n.mu.Unlock()
	switch {
	case unlinked && fd >= 0:
		err = statx(fd, "")
	case unlinked:
		err = syscall.ENOENT
	default:
		err = fs.inParent(n, objs[0].layer, statx)
	}
	if err != nil {
		return Attr{}, toErrno(err)
	}
	st := unix.Stat_t{
		Dev: unix.Mkdev(sx.Dev_major, sx.Dev_minor), Ino: sx.Ino, Nlink: uint64(sx.Nlink),
		Mode: uint32(sx.Mode), Uid: sx.Uid, Gid: sx.Gid, Rdev: unix.Mkdev(sx.Rdev_major, sx.Rdev_minor),
		Size: int64(sx.Size), Blksize: int64(sx.Blksize), Blocks: int64(sx.Blocks),
		Atim: unix.Timespec{Sec: sx.Atime.Sec, Nsec: int64(sx.Atime.Nsec)},
		Mtim: unix.Timespec{Sec: sx.Mtime.Sec, Nsec: int64(sx.Mtime.Nsec)},
		Ctim: unix.Timespec{Sec: sx.Ctime.Sec, Nsec: int64(sx.Ctime.Nsec)},
	}
	a := fs.attr(n, &st)
	if sx.Mask&unix.STATX_BTIME != 0 {
		a.Btime, a.HasBtime = time.Unix(sx.Btime.Sec, int64(sx.Btime.Nsec)), true
	}
	a.Attributes, a.AttributesMask = sx.Attributes, sx.Attributes_mask
	return a, nil
}

// stat returns the host attributes of n's winning object; for an
// unlinked node, through one of its open fds.
// Preconditions: renameMu held.
func (fs *FS) stat(n *node) (unix.Stat_t, error) {
	var st unix.Stat_t
	n.mu.Lock()
	objs, unlinked, fd := n.objects(), n.unlinked, n.openFd()
	if unlinked && fd >= 0 {
		err := unix.Fstat(fd, &st)
		n.mu.Unlock()
		return st, toErrno(err)
	}
	var gone *unix.Stat_t
	if n.aux != nil {
		gone = n.aux.gone
	}
	n.mu.Unlock()
	switch {
	case unlinked && gone != nil:
		return *gone, nil
	case unlinked:
		return st, syscall.ENOENT
	}
	st, err := fs.lstat(n, objs[0].layer)
	return st, toErrno(err)
}

// attr turns the host attributes of n's winning object into those shown:
// its override xattr, if read, then the owner mapping.
// Preconditions: renameMu held; n.mu not held.
func (fs *FS) attr(n *node, st *unix.Stat_t) Attr {
	a := Attr{
		Ino:     n.Num(),
		Mode:    st.Mode,
		Nlink:   uint32(st.Nlink),
		Uid:     st.Uid,
		Gid:     st.Gid,
		Rdev:    st.Rdev,
		Size:    uint64(st.Size),
		Blocks:  uint64(st.Blocks),
		Blksize: uint32(st.Blksize),
		Atime:   time.Unix(st.Atim.Unix()),
		Mtime:   time.Unix(st.Mtim.Unix()),
		Ctime:   time.Unix(st.Ctim.Unix()),
	}
	if n.isDir() && (n.merged() || fs.opts.StaticNlink) {
		a.Nlink = 1
	}
	n.mu.Lock()
	data, own := dataOf(n.objects(), n.kind())
	lazy := n.aux != nil && n.aux.lazy != ""
	x, upper := n.indexOf(), n.objects()[0].layer.Upper && !n.unlinked
	n.mu.Unlock()
	if x != nil {
		a.Shared = true
		if upper {
			// The overlay's link count, which the upper inode's
			// overlay.nlink keeps (index.go).
			v, _ := fs.getxattr(n, fs.upper, fs.xattrs.Name(layers.XattrNlink))
			a.Nlink = uint32(overlayNlink(v, st.Nlink, x.lowerNlink))
		}
	}
	switch {
	case !own:
		// A metacopy file's blocks are those of its data, as the
		// kernel's ovl_getattr shows them...
		if dst, err := fs.lstat(n, data.layer); err == nil {
			a.Blocks = uint64(dst.Blocks)
		}
	case lazy && st.Blksize > 0:
		// ...guessed from its size while the data is not looked up.
		b := uint64(st.Blksize)
		a.Blocks = (a.Size + b - 1) / b * b >> 9
	}
	if o, ok := fs.overrideOf(n, st.Mode&unix.S_IFMT); ok {
		a.Uid, a.Gid = o.uid, o.gid
		typ := a.Mode & unix.S_IFMT
		if o.typ != 0 && o.typ != typ {
			// A regular file standing for another type.
			typ, a.Rdev = o.typ, o.rdev
			if typ != unix.S_IFLNK {
				a.Size = 0
			}
		}
		a.Mode = typ | o.perm
	}
	a.Uid = fs.opts.UIDs.shown(a.Uid)
	a.Gid = fs.opts.GIDs.shown(a.Gid)
	if a.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
		n.privs.Store(privsSome)
	} else {
		n.privs.Store(privsNone)
	}
	return a
}
