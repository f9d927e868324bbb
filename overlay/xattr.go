package overlay

import (
	"strings"
	"syscall"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// The overlay's own xattrs (trusted.overlay.*, and the user.overlay.* and
// user.fuseoverlayfs.* forms ovlmount also honours; with userxattr only
// user.overlay.*, as the kernel: layers.Reading) are never shown, nor
// are the override xattrs the mount reads or writes (override.go), which
// cannot be set or removed either. A user's trusted.overlay.X (with
// userxattr user.overlay.X) is stored escaped as trusted.overlay.overlay.X
// and shown un-escaped, as the kernel does.

// hostXattrName maps a name the user asks for to the name stored in the
// layer, as r reads them; ok is false for a private name the user cannot
// reach.
func hostXattrName(name string, r layers.Reading) (string, bool) {
	if host := r.Escape(name); host != name {
		return host, true
	}
	return name, !r.IsPrivate(name)
}

// userXattrName maps a name stored in a layer to the name shown, if any,
// as r reads them. trusted.* names are listed only to a privileged caller.
func userXattrName(name string, privileged bool, r layers.Reading) (string, bool) {
	if user, ok := r.Unescape(name); ok {
		name = user
	} else if r.IsPrivate(name) {
		return "", false
	}
	if strings.HasPrefix(name, "trusted.") {
		return name, privileged
	}
	return name, true
}

// Getxattr returns the value of xattr name of node id.
func (fs *FS) Getxattr(id uint64, name string) ([]byte, error) {
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	n, err := fs.get(id)
	if err != nil {
		return nil, err
	}
	host, ok := hostXattrName(name, fs.reading)
	if !ok || fs.overridden(name) {
		return nil, syscall.ENODATA
	}
	caps := name == capsXattr
	n.mu.Lock()
	known, gen := caps && n.noCaps, n.xattrGen()
	n.mu.Unlock()
	if known {
		return nil, syscall.ENODATA
	}
	v, err := fs.getxattr(n, n.layersOf()[0].layer, host)
	if caps && err == syscall.ENODATA {
		n.mu.Lock()
		n.noCaps = n.xattrGen() == gen
		n.mu.Unlock()
	}
	return v, toErrno(err)
}

// capsXattr holds file capabilities; only setxattr can add it.
const capsXattr = "security.capability"

// xattrsChanged forgets what is known of n's xattrs.
// Preconditions: the change is made.
func (n *node) xattrsChanged() {
	n.mu.Lock()
	n.more().xattrGen++
	n.noCaps = false
	n.mu.Unlock()
}

// Listxattr returns the xattr names of node id that the caller may see;
// privileged is whether the caller has CAP_SYS_ADMIN.
func (fs *FS) Listxattr(id uint64, privileged bool) ([]string, error) {
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	n, err := fs.get(id)
	if err != nil {
		return nil, err
	}
	fd, err := fs.openObj(n, n.layersOf()[0].layer)
	if err != nil {
		return nil, toErrno(err)
	}
	names, err := layers.FdListxattr(fd)
	unix.Close(fd)
	if err != nil {
		return nil, toErrno(err)
	}
	out := names[:0]
	for _, h := range names {
		if u, ok := userXattrName(h, privileged, fs.reading); ok && !fs.overridden(h) {
			out = append(out, u)
		}
	}
	return out, nil
}

// Setxattr sets xattr name of node id, copying it up first. killSgid
// clears setgid after an access ACL is set, which the kernel asks for
// when the caller is not in the file's group and lacks CAP_FSETID.
func (fs *FS) Setxattr(id uint64, name string, value []byte, flags int, killSgid bool) error {
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	n, err := fs.writable(id)
	if err != nil {
		return err
	}
	host, ok := hostXattrName(name, fs.reading)
	if !ok || fs.overridden(name) || fs.prot(n) != 0 {
		return syscall.EPERM
	}
	fd, err := fs.upperObject(n)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	err = layers.FdSetxattr(fd, host, value, flags)
	n.xattrsChanged()
	if err != nil {
		return toErrno(err)
	}
	if killSgid && name == aclAccess {
		// The daemon, which may keep setgid, set the ACL.
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return toErrno(err)
		}
		if m := fs.attr(n, &st).Mode & 0o7777; m&unix.S_ISGID != 0 {
			m &^= unix.S_ISGID
			in := SetAttrs{Mode: &m}
			if err := fs.setOwnerMode(n, fd, &in); err != nil {
				return err
			}
			return setAttrs(fd, n.kind(), in)
		}
	}
	return nil
}

// Removexattr removes xattr name of node id. An xattr the object does
// not have is ENODATA, without a copy-up.
func (fs *FS) Removexattr(id uint64, name string) error {
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	n, err := fs.writable(id)
	if err != nil {
		return err
	}
	host, ok := hostXattrName(name, fs.reading)
	if !ok || fs.overridden(name) {
		return syscall.ENODATA
	}
	if fs.prot(n) != 0 {
		return syscall.EPERM
	}
	if _, err := fs.getxattr(n, n.layersOf()[0].layer, host); err != nil {
		return toErrno(err)
	}
	fd, err := fs.upperObject(n)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return toErrno(layers.FdRemovexattr(fd, host))
}
