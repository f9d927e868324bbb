package copyup

import (
	"strings"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// copyXattrs copies the lower object's extended attributes to the
// temporary, ACLs and security.capability included, but not the overlay's
// own. A user's escaped overlay xattr (trusted.overlay.overlay.X, which
// the mount shows as trusted.overlay.X) is copied as it is, as the kernel
// does.
//
// The kernel skips only the private namespace of the mount
// (trusted.overlay.* or, with userxattr, user.overlay.*) and copies the
// other one. Without userxattr ovlmount reads the markers of every
// namespace (layers.EveryForm), so it copies none of them: a lower
// user.overlay.opaque copied onto a directory would hide that directory's
// own lower entries, a stale user.overlay.origin would give a hard link's
// copy a wrong inode number. With userxattr it copies what the kernel
// copies: trusted.overlay.* is then a plain xattr, read by no one.
func (c *copier) copyXattrs() error {
	if err := copyXattrs(c.sfd, c.tfd, private(c.opts.Reading)); err != nil {
		return err
	}
	for name, v := range c.opts.Xattrs {
		if err := layers.FdSetxattr(c.tfd, name, []byte(v), 0); err != nil {
			return err
		}
	}
	return nil
}

// copyXattrs copies the xattrs of the object of fd src to that of fd dst,
// but those skip names (the overlay's own for a copy from below, see
// copier.copyXattrs).
func copyXattrs(src, dst int, skip func(name string) bool) error {
	names, err := layers.FdListxattr(src)
	if err == unix.EOPNOTSUPP {
		return nil
	}
	if err != nil {
		return err
	}
	for _, name := range names {
		if skip(name) {
			continue
		}
		v, err := layers.FdGetxattr(src, name)
		if err == unix.ENODATA {
			// Removed since the listing.
			continue
		}
		if err != nil {
			return err
		}
		err = layers.FdSetxattr(dst, name, v, 0)
		if err == unix.EOPNOTSUPP && !mustCopy(name) {
			// The kernel ignores xattrs the upper filesystem does not
			// know, but not ACLs and security.*.
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// private returns the test of the names a copy leaves out: the overlay's
// own as r reads them, but not a user's escaped ones.
func private(r layers.Reading) func(name string) bool {
	return func(name string) bool { return r.IsPrivate(name) && !r.IsEscaped(name) }
}

func mustCopy(name string) bool {
	return name == "system.posix_acl_access" || name == "system.posix_acl_default" || strings.HasPrefix(name, "security.")
}

// Inode flags the kernel copies up (OVL_COPY_FS_FLAGS_MASK), and those it
// records in overlay.protattr instead of setting them, since the upper
// object could not be linked or changed afterwards
// (OVL_PROT_FS_FLAGS_MASK).
const (
	flagSync      = 0x8  // FS_SYNC_FL
	flagImmutable = 0x10 // FS_IMMUTABLE_FL
	flagAppend    = 0x20 // FS_APPEND_FL
	flagNoatime   = 0x80 // FS_NOATIME_FL

	copyFlags = flagSync | flagNoatime
	protFlags = flagAppend | flagImmutable
)

// copyFlags copies the inode flags of a regular file or directory, as the
// kernel's ovl_copy_fileattr: sync and noatime are set on the temporary;
// append-only and immutable become overlay.protattr, "a" and/or "i".
func (c *copier) copyFlags() error {
	if c.rfd < 0 || c.tfd < 0 || (c.kind != unix.S_IFREG && c.kind != unix.S_IFDIR) {
		return nil
	}
	flags, err := unix.IoctlGetUint32(c.rfd, unix.FS_IOC_GETFLAGS)
	if err != nil || flags&(copyFlags|protFlags) == 0 {
		// No flags on the lower filesystem: nothing to copy.
		return nil
	}
	if flags&protFlags != 0 {
		var prot []byte
		if flags&flagAppend != 0 {
			prot = append(prot, 'a')
		}
		if flags&flagImmutable != 0 {
			prot = append(prot, 'i')
		}
		err := layers.FdSetxattr(c.tfd, c.opts.xattrs().Name(layers.XattrProtattr), prot, 0)
		if err != nil && err != unix.EPERM {
			// EPERM: user.* on an upper layer that refuses it; the kernel
			// goes on without.
			return err
		}
	}
	if flags&copyFlags == 0 {
		return nil
	}
	upper, err := unix.IoctlGetUint32(c.tfd, unix.FS_IOC_GETFLAGS)
	if err == unix.ENOTTY || err == unix.EINVAL || err == unix.EOPNOTSUPP {
		return nil
	}
	if err != nil {
		return err
	}
	upper = upper&^copyFlags | flags&copyFlags
	return layers.SetFlags(c.tfd, upper)
}
