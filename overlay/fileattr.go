package overlay

import (
	"encoding/binary"
	"syscall"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// Inode flags (lsattr, chattr: FS_IOC_GETFLAGS and FS_IOC_SETFLAGS), as
// the kernel's overlay keeps them (ovl_fileattr_get, ovl_fileattr_set):
// they are the real object's, but append-only and immutable, which would
// keep an upper object from being changed or linked by the overlay
// itself, are recorded in overlay.protattr ("a", "i") and cleared on the
// upper object. The kernel enforces them on the overlay inode; on a FUSE
// inode it does not, so the engine refuses what they forbid (checkProt).

// Flags the engine knows by name (linux/fs.h).
const (
	flagImmutable = 0x10 // FS_IMMUTABLE_FL
	flagAppend    = 0x20 // FS_APPEND_FL
	protFlags     = flagAppend | flagImmutable

	xflagImmutable = 0x8  // FS_XFLAG_IMMUTABLE
	xflagAppend    = 0x10 // FS_XFLAG_APPEND
	protXflags     = xflagAppend | xflagImmutable
)

// The ioctls of struct fsxattr (FS_IOC_FSGETXATTR, FS_IOC_FSSETXATTR),
// which chattr's kernel side reads before it sets flags, as the kernel
// forwards them.
const (
	iocFsGetxattr = 0x801c581f
	iocFsSetxattr = 0x401c5820
	// FsxattrSize is the size of struct fsxattr; its first field is the
	// xflags.
	FsxattrSize = layers.FsxattrSize
)

// protBits pairs the FS_XFLAG_* and FS_*_FL bits of append-only and
// immutable.
var protBits = [...][2]uint32{{xflagAppend, flagAppend}, {xflagImmutable, flagImmutable}}

// mapProt maps the append-only and immutable bits of v from one flag
// word to the other: from column from of protBits to column to.
func mapProt(v uint32, from, to int) uint32 {
	var out uint32
	for _, b := range protBits {
		if v&b[from] != 0 {
			out |= b[to]
		}
	}
	return out
}

// xflagsProt maps append-only and immutable from FS_XFLAG_* to FS_*_FL.
func xflagsProt(xflags uint32) uint32 { return mapProt(xflags, 0, 1) }

// protXflagsOf maps append-only and immutable from FS_*_FL to FS_XFLAG_*.
func protXflagsOf(p uint32) uint32 { return mapProt(p, 1, 0) }

// node.prot holds a node's append-only and immutable flags once known.
const protKnown = 1 << 31

// prot returns the append-only and immutable flags of n: the upper
// object's overlay.protattr, or the lower object's own flags.
// Preconditions: renameMu held.
func (fs *FS) prot(n *node) uint32 {
	if p := n.prot.Load(); p&protKnown != 0 {
		return p &^ protKnown
	}
	var p uint32
	n.mu.Lock()
	objs, unlinked := n.objects(), n.unlinked
	n.mu.Unlock()
	switch {
	case unlinked:
	case objs[0].layer.Upper:
		if v, err := fs.getxattr(n, fs.upper, fs.xattrs.Name(layers.XattrProtattr)); err == nil {
			p = parseProt(v)
		}
	default:
		// statx reports the two flags without an open.
		var sx unix.Statx_t
		statx := func(dfd int, name string, flags int) error {
			return unix.Statx(dfd, name, flags|unix.AT_SYMLINK_NOFOLLOW, 0, &sx)
		}
		err := fs.inParent(n, objs[0].layer, func(dfd int, name string) error { return statx(dfd, name, 0) })
		if err == nil {
			if sx.Attributes&unix.STATX_ATTR_APPEND != 0 {
				p |= flagAppend
			}
			if sx.Attributes&unix.STATX_ATTR_IMMUTABLE != 0 {
				p |= flagImmutable
			}
		}
	}
	n.prot.Store(p | protKnown)
	return p
}

func parseProt(v []byte) uint32 {
	var p uint32
	for _, c := range v {
		switch c {
		case 'a':
			p |= flagAppend
		case 'i':
			p |= flagImmutable
		}
	}
	return p
}

// realFlags returns the inode flags of n's object o.
// Preconditions: renameMu held; n has object o.
func (fs *FS) realFlags(n *node, o obj) (uint32, error) {
	fd, err := fs.openForFlags(n, o)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	return unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
}

// openForFlags opens n's object o, a regular file or directory, for the
// flags ioctls: read-only, not blocking on a lease, never following a
// symlink.
// Preconditions: renameMu held; n has object o.
func (fs *FS) openForFlags(n *node, o obj) (int, error) {
	if n.kind() != unix.S_IFREG && n.kind() != unix.S_IFDIR {
		return -1, syscall.ENOTTY
	}
	flags := unix.O_RDONLY | unix.O_NONBLOCK | unix.O_NOFOLLOW | unix.O_CLOEXEC
	if n.isDir() {
		flags |= unix.O_DIRECTORY
	}
	fd := -1
	err := fs.inParent(n, o.layer, func(dfd int, name string) error {
		var err error
		fd, err = o.layer.OpenFileAt(dfd, name, flags)
		return err
	})
	return fd, err
}

// Getflags returns the inode flags of node id (FS_IOC_GETFLAGS).
func (fs *FS) Getflags(id uint64) (uint32, error) {
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	n, err := fs.get(id)
	if err != nil {
		return 0, err
	}
	f, err := fs.realFlags(n, n.layersOf()[0])
	if err != nil {
		return 0, toErrno(err)
	}
	return f&^protFlags | fs.prot(n), nil
}

// Setflags sets the inode flags of node id (FS_IOC_SETFLAGS), copying it
// up first: append-only and immutable go to overlay.protattr, the rest to
// the upper object, in the kernel's order, so that a flag the upper
// filesystem refuses fails the same way.
func (fs *FS) Setflags(id uint64, flags uint32) error {
	return fs.setFileattr(id, flags&protFlags, func(fd int) error {
		return layers.SetFlags(fd, flags&^protFlags)
	})
}

// Fsgetxattr returns node id's struct fsxattr (FS_IOC_FSGETXATTR): the
// real object's, with append-only and immutable as overlay.protattr says
// for an upper object.
func (fs *FS) Fsgetxattr(id uint64) ([FsxattrSize]byte, error) {
	var x [FsxattrSize]byte
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	n, err := fs.get(id)
	if err != nil {
		return x, err
	}
	fd, err := fs.openForFlags(n, n.layersOf()[0])
	if err != nil {
		return x, toErrno(err)
	}
	defer unix.Close(fd)
	if x, err = layers.Fsxattr(fd); err != nil {
		return x, toErrno(err)
	}
	xf := binary.NativeEndian.Uint32(x[:4])
	binary.NativeEndian.PutUint32(x[:4], xf&^protXflags|protXflagsOf(fs.prot(n)))
	return x, nil
}

// Fssetxattr sets node id's struct fsxattr (FS_IOC_FSSETXATTR), as
// Setflags sets flags.
func (fs *FS) Fssetxattr(id uint64, x [FsxattrSize]byte) error {
	xf := binary.NativeEndian.Uint32(x[:4])
	binary.NativeEndian.PutUint32(x[:4], xf&^protXflags)
	return fs.setFileattr(id, xflagsProt(xf), func(fd int) error { return layers.SetFsxattr(fd, &x) })
}

// setFileattr copies node id up, records its append-only and immutable
// flags prot in overlay.protattr (removing it when there are none left),
// then sets the rest on the upper object with set, as the kernel's
// ovl_fileattr_set does.
func (fs *FS) setFileattr(id uint64, prot uint32, set func(fd int) error) error {
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	n, err := fs.writable(id)
	if err != nil {
		return err
	}
	if err := fs.copyUp(n); err != nil {
		return err
	}
	old := fs.prot(n)
	var v []byte
	if prot&flagAppend != 0 {
		v = append(v, 'a')
	}
	if prot&flagImmutable != 0 {
		v = append(v, 'i')
	}
	fd, err := fs.openForFlags(n, n.layersOf()[0])
	if err != nil {
		return toErrno(err)
	}
	defer unix.Close(fd)
	name := fs.xattrs.Name(layers.XattrProtattr)
	switch {
	case len(v) > 0:
		if err := layers.FdSetxattr(fd, name, v, 0); err != nil {
			if err == unix.EOPNOTSUPP {
				err = unix.EPERM
			}
			return toErrno(err)
		}
	case old != 0:
		if err := layers.FdRemovexattr(fd, name); err != nil && err != unix.ENODATA && err != unix.EOPNOTSUPP {
			return toErrno(err)
		}
	}
	n.prot.Store(prot | protKnown)
	return toErrno(set(fd))
}

// protOf is prot for name of p, resolved as f: through the node the kernel
// holds for it, or one made for the occasion.
// Preconditions: renameMu held.
func (fs *FS) protOf(p *node, name string, f found) uint32 {
	n := fs.held(p, name, f)
	if n == nil {
		n = scratchFor(p, name, f)
	}
	return fs.prot(n)
}

// checkProt fails with EPERM where n's append-only or immutable flag
// forbids a change: any change (change set) when it is immutable, and,
// when it is append-only, one that is not an append.
// Preconditions: renameMu held.
func (fs *FS) checkProt(n *node, append bool) error {
	p := fs.prot(n)
	if p&flagImmutable != 0 || p&flagAppend != 0 && !append {
		return syscall.EPERM
	}
	return nil
}
