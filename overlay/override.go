package overlay

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// An override xattr keeps the owner, mode and type an object shows when
// the layer's files cannot have them for real (a rootless user cannot
// chown, containers-storage's force_mask keeps every file 0755 for
// itself). The value is "uid:gid:mode[:type]", mode in octal, type one of
// file dir symlink pipe socket block-MAJ-MIN char-MAJ-MIN; a regular file
// with another type stands for that object (a symlink's target is the
// file's content).
//
// As in fuse-overlayfs, a layer whose root directory carries one of the
// names is read with that name (the privileged one first, then
// containers-storage's, then the user one), and xattr_permissions=N makes
// the mount write overrides under one name in the upper layer instead of
// changing owners and modes.
const (
	OverridePrivileged = "security.fuseoverlayfs.override_stat"         // xattr_permissions=1
	OverrideUser       = string(layers.FuseOverlayfs) + "override_stat" // xattr_permissions=2
	OverrideContainers = "user.containers.override_stat"
)

// override is a parsed override value; ids are stored ones.
type override struct {
	uid, gid uint32
	perm     uint32 // permission bits
	typ      uint32 // S_IFMT bits; 0 when the value names none
	rdev     uint64
}

// parseOverride parses an override value. A value that does not parse
// is ignored.
func parseOverride(v string) (override, bool) {
	var o override
	f := strings.Split(strings.TrimRight(v, "\x00\n"), ":")
	if len(f) != 3 && len(f) != 4 {
		return o, false
	}
	uid, err1 := strconv.ParseUint(f[0], 10, 32)
	gid, err2 := strconv.ParseUint(f[1], 10, 32)
	mode, err3 := strconv.ParseUint(f[2], 8, 32)
	if err1 != nil || err2 != nil || err3 != nil {
		return o, false
	}
	o.uid, o.gid, o.perm = uint32(uid), uint32(gid), uint32(mode)&0o7777
	if len(f) == 4 {
		t, rdev, ok := parseType(f[3])
		if !ok {
			return o, false
		}
		o.typ, o.rdev = t, rdev
	} else if t := uint32(mode) & unix.S_IFMT; validType(t) {
		// fuse-overlayfs writes the type bits in the mode ("100644"),
		// and its chown of a file standing for a symlink keeps them
		// ("120777") but drops a type field.
		o.typ = t
	}
	return o, true
}

// validType reports whether t, S_IFMT bits, names a type of object.
func validType(t uint32) bool {
	switch t {
	case unix.S_IFREG, unix.S_IFDIR, unix.S_IFLNK, unix.S_IFIFO, unix.S_IFSOCK, unix.S_IFCHR, unix.S_IFBLK:
		return true
	}
	return false
}

var overrideTypes = map[string]uint32{
	"file": unix.S_IFREG, "dir": unix.S_IFDIR, "symlink": unix.S_IFLNK,
	"pipe": unix.S_IFIFO, "socket": unix.S_IFSOCK,
}

// parseType parses the type field: a name, or block-MAJ-MIN/char-MAJ-MIN.
func parseType(s string) (typ uint32, rdev uint64, ok bool) {
	if t, ok := overrideTypes[s]; ok {
		return t, 0, true
	}
	f := strings.Split(s, "-")
	if len(f) != 3 || (f[0] != "block" && f[0] != "char") {
		return 0, 0, false
	}
	maj, err1 := strconv.ParseUint(f[1], 10, 32)
	min, err2 := strconv.ParseUint(f[2], 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	typ = unix.S_IFCHR
	if f[0] == "block" {
		typ = unix.S_IFBLK
	}
	return typ, unix.Mkdev(uint32(maj), uint32(min)), true
}

// String formats o as containers-storage does, but for a symlink or a
// socket with the type bits in the mode as well ("0120777:symlink"):
// fuse-overlayfs before 1.15 reads no type field and ORs the mode onto the
// type of the file itself, a regular file's, which gives these two types
// (and wrong or invalid ones for the others, left without).
func (o override) String() string {
	mode := o.perm
	if o.typ == unix.S_IFLNK || o.typ == unix.S_IFSOCK {
		mode |= o.typ
	}
	s := fmt.Sprintf("%d:%d:0%o", o.uid, o.gid, mode)
	switch o.typ {
	case 0:
		return s
	case unix.S_IFCHR, unix.S_IFBLK:
		kind := "char"
		if o.typ == unix.S_IFBLK {
			kind = "block"
		}
		return fmt.Sprintf("%s:%s-%d-%d", s, kind, unix.Major(o.rdev), unix.Minor(o.rdev))
	}
	for name, t := range overrideTypes {
		if t == o.typ {
			return s + ":" + name
		}
	}
	return s
}

// overrideWriteName returns the xattr xattr_permissions=n writes.
func overrideWriteName(n int) string {
	switch n {
	case 1:
		return OverridePrivileged
	case 2:
		return OverrideUser
	}
	return ""
}

// probeOverrides finds the override name each layer is read with, and,
// with xattr_permissions, marks the upper root so that a later mount
// reads the upper layer the same way (fuse-overlayfs does the same).
func (fs *FS) probeOverrides() error {
	fs.overrideWrite = overrideWriteName(fs.opts.XattrPermissions)
	for _, l := range fs.stack {
		var names []string
		if l.Upper && fs.overrideWrite != "" {
			names = append(names, fs.overrideWrite)
			if _, err := layers.FdGetxattr(l.Root(), fs.overrideWrite); err != nil {
				var st unix.Stat_t
				if err := unix.Fstat(l.Root(), &st); err != nil {
					return err
				}
				o := override{uid: st.Uid, gid: st.Gid, perm: st.Mode & 0o7777}
				if err := layers.FdSetxattr(l.Root(), fs.overrideWrite, []byte(o.String()), 0); err != nil {
					return fmt.Errorf("upper layer: writing %s: %v", fs.overrideWrite, err)
				}
			}
		}
		for _, name := range []string{OverridePrivileged, OverrideContainers, OverrideUser} {
			if _, err := layers.FdGetxattr(l.Root(), name); err == nil {
				if len(names) == 0 || names[0] != name {
					names = append(names, name)
				}
				break
			}
		}
		if len(names) > 0 {
			if fs.overrideRead == nil {
				fs.overrideRead = make(map[*layers.Layer][]string)
			}
			fs.overrideRead[l] = names
		}
	}
	return nil
}

// overridden reports whether xattr name is an override this mount reads
// or writes: those are not shown, and users cannot set them (which would
// let anyone make a file setuid root).
func (fs *FS) overridden(name string) bool {
	if name == fs.overrideWrite {
		return true
	}
	for _, names := range fs.overrideRead {
		for _, n := range names {
			if n == name {
				return true
			}
		}
	}
	return false
}

// overrideOf returns the override of n's winning object, if its layer is
// read with one; typ is the object's type on disk. Only directories and
// regular files have one, as in fuse-overlayfs.
// Preconditions: renameMu held; n.mu not held.
func (fs *FS) overrideOf(n *node, typ uint32) (override, bool) {
	if fs.overrideRead == nil || (typ != unix.S_IFREG && typ != unix.S_IFDIR) {
		return override{}, false
	}
	n.mu.Lock()
	objs, unlinked, fd := n.objects(), n.unlinked, n.openFd()
	n.mu.Unlock()
	for _, name := range fs.overrideRead[objs[0].layer] {
		var v []byte
		var err error
		switch {
		case !unlinked:
			v, err = fs.getxattr(n, objs[0].layer, name)
		case fd >= 0:
			v, err = layers.FdGetxattr(fd, name)
		default:
			return override{}, false
		}
		if err == nil {
			o, ok := parseOverride(string(v))
			if ok && (typ == unix.S_IFDIR || o.typ == unix.S_IFDIR || o.typ == typ) {
				// Only a regular file stands for another type.
				o.typ = 0
			}
			return o, ok
		}
	}
	return override{}, false
}

// overrideDirentType returns the d_type of regular file name of directory
// p's object in layer l: that of the type its override names, so that a
// listing agrees with stat.
// Preconditions: renameMu held.
func (fs *FS) overrideDirentType(p *node, l *layers.Layer, name string) uint8 {
	for _, attr := range fs.overrideRead[l] {
		var v []byte
		err := fs.inDir(p, l, func(dfd int) error {
			var err error
			v, err = layers.GetxattrAt(dfd, name, attr)
			return err
		})
		if err == nil {
			if o, ok := parseOverride(string(v)); ok && o.typ != 0 && o.typ != unix.S_IFDIR {
				return uint8(o.typ >> 12)
			}
			break
		}
	}
	return unix.DT_REG
}

// writesOverride reports whether a change of owner or mode of an object
// of type typ goes to the override xattr.
func (fs *FS) writesOverride(typ uint32) bool {
	return fs.overrideWrite != "" && (typ == unix.S_IFREG || typ == unix.S_IFDIR)
}

// setOverride changes the override of the upper object of fd (an O_PATH
// or open fd) of node n: in's owner and mode replace those it shows now,
// in stored ids. The object's own owner and mode stay.
// Preconditions: renameMu held; n copied up.
func (fs *FS) setOverride(n *node, fd int, st *unix.Stat_t, in *SetAttrs) error {
	o, ok := fs.overrideOf(n, st.Mode&unix.S_IFMT)
	if !ok {
		o = override{uid: st.Uid, gid: st.Gid, perm: st.Mode & 0o7777}
	}
	if in.Uid != nil {
		o.uid = fs.opts.UIDs.stored(*in.Uid)
	}
	if in.Gid != nil {
		o.gid = fs.opts.GIDs.stored(*in.Gid)
	}
	if in.Mode != nil {
		if o.typ == unix.S_IFLNK {
			// A symlink's mode does not change (the VFS refuses).
			return syscall.EOPNOTSUPP
		}
		o.perm = *in.Mode & 0o7777
	}
	err := layers.FdSetxattr(fd, fs.overrideWrite, []byte(o.String()), 0)
	return toErrno(err)
}

// readOverrideLink returns the target of a regular file that stands for
// a symlink: its content.
// Preconditions: renameMu held.
func (fs *FS) readOverrideLink(n *node) (string, error) {
	o, ok := fs.overrideOf(n, n.kind())
	if !ok || o.typ != unix.S_IFLNK {
		return "", syscall.EINVAL
	}
	fd, err := fs.openFile(n, n.layersOf()[0].layer, unix.O_RDONLY)
	if err != nil {
		return "", toErrno(err)
	}
	f := os.NewFile(uintptr(fd), "")
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, unix.PathMax))
	if err != nil {
		return "", syscall.EIO
	}
	return string(b), nil
}
