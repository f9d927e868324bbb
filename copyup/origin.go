package copyup

import (
	"encoding/binary"
	"unsafe"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// The origin the kernel records on a copy, overlay.origin, is a struct
// ovl_fb:
//
//	u8 version (0) | u8 magic (0xfb) | u8 len (of it all) | u8 flags |
//	u8 fid type | u8 uuid[16] | fid
//
// flags is 0 on a little-endian host, 1 (OVL_FH_FLAG_BIG_ENDIAN) on a
// big-endian one. uuid is the lower filesystem's s_uuid, also when every
// layer is on one filesystem (measured: the kernel writes zeros only with
// uuid=off, or for a filesystem without a uuid). The fid is the lower
// object's file handle as name_to_handle_at gives it (not connectable,
// like the kernel's).
const (
	fbVersion   = 0
	fbMagic     = 0xfb
	fbHeader    = 21
	fbBigEndian = 1

	fsIocGetFSUUID = 0x80111500 // FS_IOC_GETFSUUID
)

// setOrigin records the lower object as the temporary's origin, on a
// directory or a non-directory with one link, as the kernel does. A lower
// filesystem that gives no file handles gets the kernel's null origin (an
// empty value): the object was copied up, from nothing it can name.
func (c *copier) setOrigin() error {
	if c.kind != unix.S_IFDIR && c.sst.Nlink != 1 {
		return nil
	}
	fb, err := c.originValue()
	if err != nil {
		return err
	}
	err = layers.FdSetxattr(c.tfd, c.opts.xattr("origin"), fb, 0)
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
	fid := h.Bytes()
	if fbHeader+len(fid) > 255 {
		return nil, unix.EIO
	}
	fb := make([]byte, fbHeader, fbHeader+len(fid))
	fb[0], fb[1], fb[2], fb[4] = fbVersion, fbMagic, byte(fbHeader+len(fid)), byte(h.Type())
	if binary.NativeEndian.Uint16([]byte{0, 1}) == 1 {
		fb[3] = fbBigEndian
	}
	copy(fb[5:fbHeader], uuid[:])
	return append(fb, fid...), nil
}

// lowerUUID returns the uuid of the lower filesystem, zero when it has
// none. The ioctl refuses O_PATH fds: the layer root is readable unless
// the process may not read it; then the lower object's own fd serves.
func (c *copier) lowerUUID() ([16]byte, error) {
	uuid, err := fsUUID(c.src.Root())
	if err == unix.EBADF && c.rfd >= 0 {
		uuid, err = fsUUID(c.rfd)
	}
	return uuid, err
}

// fsUUID returns the uuid (s_uuid) of the filesystem holding fd through
// FS_IOC_GETFSUUID; zero for a filesystem that has none.
func fsUUID(fd int) ([16]byte, error) {
	var arg struct {
		len  uint8
		uuid [16]byte
	}
	arg.len = 16
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocGetFSUUID, uintptr(unsafe.Pointer(&arg)))
	switch e {
	case 0:
		return arg.uuid, nil
	case unix.ENOTTY, unix.EOPNOTSUPP, unix.EINVAL:
		return [16]byte{}, nil
	default:
		return [16]byte{}, e
	}
}
