package copyup

import (
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// setOrigin records the lower object as the temporary's origin, on a
// directory, a non-directory with one link, or an index entry, as the
// kernel does (a hard link copied up without the index is broken). A lower
// filesystem that gives no file handles gets the kernel's null origin (an
// empty value): the object was copied up, from nothing it can name.
func (c *copier) setOrigin() error {
	if c.kind != unix.S_IFDIR && c.sst.Nlink != 1 && c.opts.Index == nil {
		return nil
	}
	fb, err := c.originValue()
	if err != nil {
		return err
	}
	err = layers.FdSetxattr(c.tfd, c.opts.xattrs().Name(layers.XattrOrigin), fb, 0)
	if err == unix.EPERM || err == unix.EOPNOTSUPP {
		// EPERM: user.* on a symlink or special file. The kernel ignores
		// both.
		return nil
	}
	return err
}

func (c *copier) originValue() ([]byte, error) {
	h, _, err := unix.NameToHandleAt(c.sfd, "", unix.AT_EMPTY_PATH)
	if err == unix.EOPNOTSUPP {
		return []byte{}, nil
	}
	if err != nil {
		return nil, err
	}
	uuid, err := c.lowerUUID()
	if err != nil {
		return []byte{}, nil
	}
	if c.opts.NullUUID {
		uuid = [16]byte{}
	}
	return layers.EncodeOrigin(uuid, h)
}

// lowerUUID returns the uuid of the lower filesystem, zero when it has
// none. The ioctl refuses O_PATH fds: the layer root is readable unless
// the process may not read it; then the lower object's own fd serves.
func (c *copier) lowerUUID() ([16]byte, error) {
	uuid, err := layers.FSUUID(c.src.Root())
	if err == unix.EBADF && c.rfd >= 0 {
		uuid, err = layers.FSUUID(c.rfd)
	}
	return uuid, err
}
