package overlay

import (
	"encoding/binary"
	"unsafe"

	"github.com/ovlmount/ovlmount/inodes"
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// The kernel records where an upper object was copied up from in the
// xattr overlay.origin: a struct ovl_fb file handle of the lower object.
//
//	u8 version (0) | u8 magic (0xfb) | u8 len | u8 flags | u8 fid type |
//	u8 uuid[16] (the lower filesystem's s_uuid) | fid bytes
const (
	fbVersion      = 0
	fbMagic        = 0xfb
	fbHeader       = 21
	fbFlagBigEnd   = 1 << 0
	fbFlagAnyEnd   = 1 << 1
	fidIno32Gen    = 1 // FILEID_INO32_GEN: u32 inode number, u32 generation
	fsIocGetFSUUID = 0x80111500
)

// fsUUID returns the filesystem uuid (the kernel's s_uuid) of the
// filesystem holding fd, through FS_IOC_GETFSUUID.
func fsUUID(fd int) ([16]byte, error) {
	var arg struct {
		len  uint8
		uuid [16]byte
	}
	arg.len = 16
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocGetFSUUID, uintptr(unsafe.Pointer(&arg)))
	if e != 0 {
		return arg.uuid, e
	}
	return arg.uuid, nil
}

// originLayers returns the lower layers a handle with this uuid may come
// from. The kernel writes a null uuid when every layer shares one
// filesystem (its uuid=null and, on one filesystem, uuid=auto): the handle
// then belongs to the lower layers on the upper layer's filesystem, or to
// the lowers when they share one.
func (fs *FS) originLayers(uuid [16]byte) []*layers.Layer {
	if uuid != ([16]byte{}) {
		return fs.uuids[uuid]
	}
	var same, all []*layers.Layer
	devs := map[uint64]bool{}
	for _, l := range fs.stack {
		if l.Upper {
			continue
		}
		all = append(all, l)
		devs[l.Dev] = true
		if l.Dev == fs.upper.Dev {
			same = append(same, l)
		}
	}
	if len(same) > 0 {
		return same
	}
	if len(devs) == 1 {
		return all
	}
	return nil
}

// origin decodes the copy-up origin recorded on upper object rel and
// returns the lower object's identity and link count.
func (fs *FS) origin(rel string) (inodes.Key, uint64, bool) {
	var v []byte
	var err error
	for _, name := range []string{layers.TrustedPrefix + "origin", layers.UserPrefix + "origin"} {
		if v, err = fs.upper.Getxattr(rel, name); err == nil {
			break
		}
	}
	if err != nil || len(v) < fbHeader || v[0] != fbVersion || v[1] != fbMagic || int(v[2]) != len(v) {
		return inodes.Key{}, 0, false
	}
	flags, typ := v[3], v[4]
	var uuid [16]byte
	copy(uuid[:], v[5:21])
	fid := v[fbHeader:]
	for _, l := range fs.originLayers(uuid) {
		fd, err := unix.OpenByHandleAt(l.Root(), unix.NewFileHandle(int32(typ), fid), unix.O_PATH)
		if err == nil {
			var st unix.Stat_t
			err = unix.Fstat(fd, &st)
			unix.Close(fd)
			if err == nil {
				return inodes.Key{Dev: st.Dev, Ino: st.Ino}, st.Nlink, true
			}
			continue
		}
		if err == unix.EPERM && typ == fidIno32Gen && len(fid) >= 8 {
			// Without CAP_DAC_READ_SEARCH the handle cannot be opened;
			// this fid type carries the inode number itself. The link
			// count is then unknown and taken as 1.
			var order binary.ByteOrder = binary.LittleEndian
			if flags&fbFlagBigEnd != 0 && flags&fbFlagAnyEnd == 0 {
				order = binary.BigEndian
			}
			return inodes.Key{Dev: l.Dev, Ino: uint64(order.Uint32(fid))}, 1, true
		}
	}
	return inodes.Key{}, 0, false
}
