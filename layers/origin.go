package layers

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The origin the kernel records on a copied-up object, overlay.origin, is
// a struct ovl_fb:
//
//	u8 version (0) | u8 magic (0xfb) | u8 len (of it all) | u8 flags |
//	u8 fid type | u8 uuid[16] | fid
//
// flags bit 0 says the fid was written on a big-endian host, bit 1 that
// its byte order does not matter. uuid is the lower filesystem's s_uuid
// (measured: the kernel writes zeros only with uuid=off, or for a
// filesystem without a uuid). The fid is the lower object's file handle as
// name_to_handle_at gives it.
const (
	fbVersion   = 0
	fbMagic     = 0xfb
	fbHeader    = 21
	fbBigEndian = 1 << 0
	fbAnyEndian = 1 << 1

	fidIno32Gen    = 1          // FILEID_INO32_GEN: u32 inode number, u32 generation
	fsIocGetFSUUID = 0x80111500 // FS_IOC_GETFSUUID
)

// Origin is a decoded overlay.origin.
type Origin struct {
	UUID   [16]byte
	Handle unix.FileHandle
	flags  uint8
}

// EncodeOrigin returns the overlay.origin value naming handle h of an
// object on the filesystem with the given uuid, as the kernel writes it.
func EncodeOrigin(uuid [16]byte, h unix.FileHandle) ([]byte, error) {
	fid := h.Bytes()
	if fbHeader+len(fid) > 255 {
		return nil, unix.EIO
	}
	fb := make([]byte, fbHeader, fbHeader+len(fid))
	fb[0], fb[1], fb[2], fb[4] = fbVersion, fbMagic, byte(fbHeader+len(fid)), byte(h.Type())
	fb[3] = nativeEndianFlag()
	copy(fb[5:fbHeader], uuid[:])
	return append(fb, fid...), nil
}

// DecodeOrigin parses an overlay.origin value; ok is false for anything
// else (including the kernel's empty "null" origin).
func DecodeOrigin(v []byte) (o Origin, ok bool) {
	if len(v) < fbHeader || v[0] != fbVersion || v[1] != fbMagic || int(v[2]) != len(v) {
		return o, false
	}
	copy(o.UUID[:], v[5:fbHeader])
	o.Handle = unix.NewFileHandle(int32(v[4]), v[fbHeader:])
	o.flags = v[3]
	return o, true
}

// isBigEndian reports whether this host is big-endian: the fid of an
// ovl_fb is in the writer's byte order, which its flags record.
func isBigEndian() bool { return binary.NativeEndian.Uint16([]byte{0, 1}) == 1 }

// Ino returns the inode number a FILEID_INO32_GEN handle carries, for
// when the handle cannot be opened (open_by_handle_at needs
// CAP_DAC_READ_SEARCH).
func (o Origin) Ino() (uint64, bool) {
	fid := o.Handle.Bytes()
	if o.Handle.Type() != fidIno32Gen || len(fid) < 8 {
		return 0, false
	}
	var order binary.ByteOrder = binary.LittleEndian
	if o.flags&fbBigEndian != 0 && o.flags&fbAnyEndian == 0 {
		order = binary.BigEndian
	}
	return uint64(order.Uint32(fid)), true
}

// FSUUID returns the uuid (s_uuid) of the filesystem holding fd, through
// FS_IOC_GETFSUUID; zero for a filesystem that has none. The ioctl
// refuses O_PATH fds (EBADF).
func FSUUID(fd int) ([16]byte, error) {
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
