package overlay

import (
	"github.com/ovlmount/ovlmount/inodes"
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// originLayers returns the lower layers a handle with this uuid may come
// from. The uuid is null when the lower filesystem has none (or the
// kernel's uuid=off): the handle then belongs to the lower layers on the
// upper layer's filesystem, or to the lowers when they share one.
func (fs *FS) originLayers(uuid [16]byte) []*layers.Layer {
	if uuid != ([16]byte{}) {
		if fs.opts.UUID == UUIDOff {
			// Only null uuids are followed, as the kernel's
			// ovl_decode_real_fh with uuid=off.
			return nil
		}
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

// originOf is a decoded copy-up origin: the lower object's identity, link
// count and type (0 when unknown), the layer that holds it and its file
// handle.
type originOf struct {
	key    inodes.Key
	nlink  uint64
	typ    uint32
	layer  *layers.Layer
	handle unix.FileHandle
}

// origin decodes the copy-up origin (layers.Origin) recorded on the upper
// object name of directory p.
// Preconditions: renameMu held; p has an upper object.
func (fs *FS) origin(p *node, name string) (originOf, bool) {
	ofd, err := fs.openAt(p, fs.upper, name)
	if err != nil {
		return originOf{}, false
	}
	var v []byte
	for _, ns := range fs.reading.Namespaces() {
		if v, err = layers.FdGetxattr(ofd, ns.Name(layers.XattrOrigin)); err == nil {
			break
		}
	}
	unix.Close(ofd)
	if err != nil {
		return originOf{}, false
	}
	o, ok := layers.DecodeOrigin(v)
	if !ok {
		return originOf{}, false
	}
	return fs.decode(o)
}

// decode finds the lower object an origin names, in the lower layers of
// its uuid.
func (fs *FS) decode(o layers.Origin) (originOf, bool) {
	for _, l := range fs.originLayers(o.UUID) {
		fd, err := unix.OpenByHandleAt(l.Root(), o.Handle, unix.O_PATH)
		if err == nil {
			var st unix.Stat_t
			err = unix.Fstat(fd, &st)
			unix.Close(fd)
			if err == nil {
				return originOf{key: inodes.Key{Dev: st.Dev, Ino: st.Ino}, nlink: st.Nlink, typ: st.Mode & unix.S_IFMT, layer: l, handle: o.Handle}, true
			}
			continue
		}
		if ino, ok := o.Ino(); ok && err == unix.EPERM {
			// Without CAP_DAC_READ_SEARCH the handle cannot be opened;
			// this fid type carries the inode number itself. The link
			// count is then unknown and taken as 1.
			return originOf{key: inodes.Key{Dev: l.Dev, Ino: ino}, nlink: 1, layer: l, handle: o.Handle}, true
		}
	}
	return originOf{}, false
}
