package overlay

import (
	"syscall"

	"github.com/ovlmount/ovlmount/copyup"
	"github.com/ovlmount/ovlmount/inodes"
	"golang.org/x/sys/unix"
)

// File-backed objects. Under xattr_permissions owners and modes live in
// the override xattr, which a symlink, fifo, socket or device cannot
// carry: the kernel refuses user.* xattrs on them, and fuse-overlayfs reads
// overrides only on regular files and directories. Such an object whose
// owner or mode is to differ from its own is stored as a regular file
// standing for it, as containers-storage stores what it cannot create: its
// override names the type (and a device's numbers) and a symlink's target
// is its content (override.go reads them). create.go makes new ones so;
// a chown or chmod makes one that is still itself file-backed here.

// special reports whether an object of type typ cannot carry an override:
// anything but a regular file or a directory.
func special(typ uint32) bool { return typ != unix.S_IFREG && typ != unix.S_IFDIR }

// backWithFile applies in's owner and mode to n, a symlink, fifo, socket
// or device that is still itself, under xattr_permissions: unless they
// leave n as it is, it puts a regular file standing for n, whose override
// is what n shows changed as in asks, in place of n's object
// (copyup.StandIn, which copies a lower one up so), and clears them from
// in; what is left of in (times) then applies to the file. The node
// becomes the file's: its type is S_IFREG and its inode number the file's
// (the file has no origin). An upper object with several links is left as
// it is, its owner and mode changed for real: replacing it at one name
// would break the link.
// Preconditions: renameMu held for reading; no node's mu held.
func (fs *FS) backWithFile(n *node, in *SetAttrs) error {
	st, err := fs.stat(n)
	if err != nil {
		return err
	}
	typ := st.Mode & unix.S_IFMT
	cur := override{uid: st.Uid, gid: st.Gid, perm: st.Mode & 0o7777, typ: typ, rdev: st.Rdev}
	want := cur
	if in.Uid != nil {
		want.uid = fs.opts.UIDs.stored(*in.Uid)
	}
	if in.Gid != nil {
		want.gid = fs.opts.GIDs.stored(*in.Gid)
	}
	if in.Mode != nil {
		if typ == unix.S_IFLNK {
			return syscall.EOPNOTSUPP
		}
		want.perm = *in.Mode & 0o7777
	}
	if !special(typ) || want == cur || st.Nlink > 1 && n.layersOf()[0].layer.Upper {
		return nil
	}
	p := n.parent()
	if err := fs.copyUp(p); err != nil {
		return err
	}
	p.aux.dirMu.Lock()
	defer p.aux.dirMu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.unlinked {
		return syscall.ENOENT
	}
	if n.kind() != typ {
		// Made file-backed meanwhile: in goes to its override.
		return nil
	}
	src := n.objects()[0]
	at := n.at.Load()
	sdir, err := fs.openObj(at.parent, src.layer)
	if err != nil {
		return toErrno(err)
	}
	defer unix.Close(sdir)
	udir, err := fs.upperDir(at.parent)
	if err != nil {
		return err
	}
	defer unix.Close(udir)
	opts := copyup.Options{Fsync: !fs.opts.NoFsync, Reading: fs.reading, Xattrs: map[string]string{fs.overrideWrite: want.String()}}
	nst, err := fs.work.StandIn(src.layer, sdir, udir, at.name, opts)
	if err != nil {
		return err
	}
	if !src.layer.Upper {
		fs.stats.copiedUp(typ, 0)
	}
	up := objOf(fs.upper, &nst)
	n.setObjs([]obj{up})
	n.typ.Store(unix.S_IFREG)
	key := up.key()
	fs.nodes.Rehash(n, inodes.Ident{Key: key})
	num, ok := fs.scheme.Ino(key.Dev, key.Ino)
	fs.setNumber(n, identity{Ident: inodes.Ident{Key: key}, num: num, ok: ok})
	in.Uid, in.Gid, in.Mode = nil, nil, nil
	return nil
}
