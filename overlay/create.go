package overlay

import (
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// Creating: a new object is built complete (type, owner, mode, opaque
// marker) before its name appears, so the name never shows a half-made
// object. A regular file or directory that replaces nothing and that the
// daemon creates complete (its own ids are the owner asked for, no
// override xattr, no setuid, setgid or sticky bit) is created in place, as
// the kernel's ovl_create_upper does. Another regular file that replaces
// nothing is made unnamed in its directory (O_TMPFILE), completed and
// linked in; anything else is built in workdir/work and moved into the
// upper layer with one rename, which over a whiteout replaces it, as the
// kernel's ovl_create_over_whiteout does.

// Cred is the caller of an operation.
type Cred struct {
	Uid, Gid uint32
	// Pid is the caller's process, whose supplementary groups FUSE does
	// not send (inGroup reads them).
	Pid uint32
	// Umask is the caller's umask, which a create applies unless the
	// directory has a default ACL.
	Umask uint32
}

// inGroup reports whether c is in group gid: its own group, or one of
// its process's supplementary groups.
func (c Cred) inGroup(gid uint32) bool {
	if c.Gid == gid {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(c.Pid), 10) + "/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if groups, ok := strings.CutPrefix(line, "Groups:"); ok {
			for _, g := range strings.Fields(groups) {
				if n, err := strconv.ParseUint(g, 10, 32); err == nil && uint32(n) == gid {
					return true
				}
			}
		}
	}
	return false
}

// placed is what create hands back: the new entry, and for a regular file
// the fd of the open object.
type placed struct {
	entry Entry
	fd    int
}

// make builds an object named tmp in the work directory wfd with the
// given permission bits; for a regular file it returns an open fd (else
// -1). On failure it leaves no tmp.
type maker func(wfd int, tmp string, perm uint32) (fd int, err error)

// spec is what create makes: its type and permission bits, a device's
// number, a symlink's target, and mk, which makes the object itself.
type spec struct {
	mode   uint32
	rdev   uint64
	target string
	mk     maker
}

// create makes name in directory parent as s says, owned by c.
func (fs *FS) create(parent uint64, name string, s spec, c Cred) (placed, error) {
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	p, err := fs.writable(parent)
	if err != nil {
		return placed{fd: -1}, err
	}
	if err := checkName(name); err != nil {
		return placed{fd: -1}, err
	}
	if strings.HasPrefix(name, layers.WhiteoutPrefix) {
		// Such a name would read back as a marker.
		return placed{fd: -1}, syscall.EPERM
	}
	if fs.prot(p)&flagImmutable != 0 {
		return placed{fd: -1}, syscall.EPERM
	}
	if err := fs.copyUp(p); err != nil {
		return placed{fd: -1}, err
	}
	p.aux.dirMu.Lock()
	defer p.aux.dirMu.Unlock()
	neg, err := fs.resolve(p, name)
	if err != syscall.ENOENT {
		if err == nil {
			err = syscall.EEXIST
		}
		return placed{fd: -1}, err
	}
	var f found
	fd := -1
	err = fs.inDir(p, fs.upper, func(pfd int) error {
		var err error
		f, fd, err = fs.build(p, pfd, name, s, c, neg.upperFree)
		return err
	})
	if err != nil {
		return placed{fd: -1}, toErrno(err)
	}
	return placed{entry: fs.acquire(p, name, f), fd: fd}, nil
}

// newObject is what create builds: the name, its type, owner and mode,
// and what the upper directory holds there now.
type newObject struct {
	name string
	typ  uint32
	rdev uint64 // a device's
	ow   ownership
	// backed says a regular file stands for the object, a symlink, fifo,
	// socket or device whose owner or mode goes to the override xattr,
	// which it could not carry itself (file-backed).
	backed bool
	// perm are the permission bits the object is made with: ow.ownPerm,
	// masked by an inherited ACL; access and def are the ACLs it gets
	// (def, a directory's default ACL, only for a directory).
	perm        uint32
	access, def []byte
	// over and aufs say the upper directory holds a kernel whiteout of
	// the name, and an AUFS one.
	over, aufs bool
	// opaque marks a directory opaque: over a whiteout, lest the lower
	// directory show through, or in a merged directory, as the kernel
	// marks it there (Options.opaqueNewDirs).
	opaque bool
}

// kind returns the type of the object made on disk.
func (o newObject) kind() uint32 {
	if o.backed {
		return unix.S_IFREG
	}
	return o.typ
}

// build makes name in p's upper directory pfd, for create, and returns
// what the name now shows and, for a regular file, its open fd. free
// says the upper directory is known to hold no whiteout of either kind
// for name.
//
// The object gets the caller's umask unless the directory has a default
// ACL, which it inherits instead, as on the kernel (posix_acl_create).
// Where the object is made in its directory, the host does that;
// through the workdir, it is done here.
// Preconditions: renameMu held for reading; p.dirMu held; name is free.
func (fs *FS) build(p *node, pfd int, name string, s spec, c Cred, free bool) (found, int, error) {
	mode := s.mode
	o := newObject{name: name, typ: mode & unix.S_IFMT, rdev: s.rdev}
	if !free {
		o.over, o.aufs = fs.whiteoutAt(p, pfd, name)
	}
	o.opaque = o.typ == unix.S_IFDIR && (o.over || o.aufs || fs.opts.opaqueNewDirs() && p.merged())
	var pst unix.Stat_t
	if err := unix.Fstat(pfd, &pst); err != nil {
		return found{}, -1, err
	}
	def := fs.defaultACL(p)
	if def == nil || o.typ == unix.S_IFLNK {
		mode &^= c.Umask & 0o777
		def = nil
	}
	o.ow = fs.ownership(p, &pst, mode, c)
	o.backed = o.ow.inXattr && special(o.typ)
	o.perm = o.ow.ownPerm
	if def != nil && !o.ow.inXattr {
		m, access, err := inheritACL(def, o.typ|o.perm)
		if err != nil {
			return found{}, -1, err
		}
		o.perm, o.access = m&0o7777, access
		if o.typ == unix.S_IFDIR {
			o.def = def
		}
	}
	if !o.over && !o.aufs && !o.opaque && !o.ow.inXattr && fs.made(o.ow.uid, o.ow.gid, pst.Gid, pst.Mode, o.ow.ownPerm) {
		// The host applies the default ACL, as it is here.
		if f, fd, ok, err := fs.inPlace(pfd, name, o.typ, o.ow.ownPerm); ok {
			return f, fd, err
		}
	}
	// A regular file that replaces nothing is made unnamed in its own
	// directory (O_TMPFILE) and linked in once complete: a crash leaves
	// nothing, and its inode is allocated near its siblings, as by the
	// kernel's own create, rather than all in the workdir's group. Where
	// the filesystem has no O_TMPFILE, through the workdir.
	if o.typ == unix.S_IFREG && !o.over && !o.aufs {
		if fd, err := layers.Tmpfile(pfd, unix.O_RDWR, o.ow.ownPerm); err == nil {
			return fs.buildUnnamed(pfd, fd, o)
		}
	}
	mk := s.mk
	if o.backed {
		mk = standIn(s.target)
	}
	return fs.buildInWork(pfd, o, mk)
}

// standIn returns the maker of a regular file that stands for a symlink
// to target, or with target "" for a fifo, socket or device: its content
// is the target (buildInWork gives it the override naming the type).
func standIn(target string) maker {
	return func(wfd int, tmp string, perm uint32) (int, error) {
		fd, err := layers.Create(wfd, tmp, unix.O_WRONLY, perm)
		if err != nil {
			return -1, err
		}
		_, err = layers.Pwrite(fd, []byte(target), 0)
		unix.Close(fd)
		if err != nil {
			layers.Unlink(wfd, tmp)
			return -1, err
		}
		return -1, nil
	}
}

// buildUnnamed completes the unnamed file fd (made with O_TMPFILE in upper
// directory pfd, where the host gave it the directory's default ACL) and
// links it in as o.name.
// Preconditions: as build's.
func (fs *FS) buildUnnamed(pfd, fd int, o newObject) (found, int, error) {
	fail := func(err error) (found, int, error) {
		unix.Close(fd)
		return found{}, -1, err
	}
	// Its attributes are read once, after the link changed them.
	if err := fs.ownUnnamed(fd, o); err != nil {
		return fail(err)
	}
	if err := layers.LinkFd(fd, pfd, o.name); err != nil {
		return fail(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fail(err)
	}
	return fs.fresh(st, o.typ, false), fd, nil
}

// buildInWork makes the object in workdir/work with mk, completes it
// there (owner, mode, ACLs, override, opaque marker) and moves it into
// upper directory pfd as o.name with one rename, which over a whiteout
// replaces it.
// Preconditions: as build's.
func (fs *FS) buildInWork(pfd int, o newObject, mk maker) (found, int, error) {
	wfd, tmp := fs.work.Fd(), fs.work.TempName()
	fd, err := mk(wfd, tmp, o.ow.ownPerm)
	if err != nil {
		return found{}, -1, err
	}
	fail := func(err error) (found, int, error) {
		if fd >= 0 {
			unix.Close(fd)
		}
		layers.RemoveAll(wfd, tmp)
		return found{}, -1, err
	}
	if o.ow.inXattr {
		ov := override{uid: o.ow.uid, gid: o.ow.gid, perm: o.ow.perm}
		if o.backed {
			ov.typ, ov.rdev = o.typ, o.rdev
		}
		if err := layers.SetxattrAt(wfd, tmp, fs.overrideWrite, []byte(ov.String())); err != nil {
			return fail(err)
		}
	}
	// With the override the object keeps the mount's own owner.
	st, err := fs.own(made{fd: fd, dir: wfd, name: tmp}, o)
	if err != nil {
		return fail(err)
	}
	if o.access != nil || o.def != nil {
		if err := setACLs(wfd, tmp, o.typ, o.def, o.access); err != nil {
			return fail(err)
		}
	}
	if o.opaque {
		if err := layers.SetOpaque(wfd, tmp, fs.xattrs); err != nil {
			return fail(err)
		}
	}
	flags := uint(unix.RENAME_NOREPLACE)
	if o.over {
		// rename(2) replaces a whiteout with a non-directory; a
		// directory is exchanged with it, and the whiteout, now in the
		// workdir, removed.
		flags = 0
		if o.typ == unix.S_IFDIR {
			flags = unix.RENAME_EXCHANGE
		}
	}
	if err := layers.Rename(wfd, tmp, pfd, o.name, flags); err != nil {
		return fail(err)
	}
	if flags == unix.RENAME_EXCHANGE {
		layers.Unlink(wfd, tmp)
	}
	if o.aufs {
		layers.Unlink(pfd, layers.WhiteoutPrefix+o.name)
	}
	return fs.fresh(st, o.kind(), o.opaque), fd, nil
}

// squashed reports whether owners are squashed (squash_to_*): a refused
// chown is then ignored, as fuse-overlayfs does.
func (fs *FS) squashed() bool { return fs.opts.UIDs.Squash != nil || fs.opts.GIDs.Squash != nil }

// ownership is the owner and mode a new object gets.
type ownership struct {
	uid, gid uint32 // as stored in the layer
	perm     uint32 // the permission bits it shows
	// ownPerm are the bits the object itself gets: perm, or with
	// inXattr (the owner and perm go to the override xattr) the bits
	// the mount's own owner needs.
	ownPerm uint32
	inXattr bool
}

// ownership returns what a new object of mode (type and permission
// bits) made by c in directory p, whose upper directory's attributes are
// pst, gets: the caller's ids, but a setgid directory's group, and its
// setgid bit to a new directory (the umask is already applied). Owners
// are stored mapped back (uidmapping); with xattr_permissions they and
// the mode go to the override xattr, and the object itself keeps the
// mount's own owner with the permissions it needs. A symlink, fifo,
// socket or device cannot carry the xattr (user.* is refused on them):
// one the daemon makes as it is to show (its own ids, no setuid, setgid
// or sticky bit) is made itself, as fuse-overlayfs makes it; any other
// becomes a regular file standing for it, its content the daemon's alone
// (mode 0600).
// Preconditions: renameMu held.
func (fs *FS) ownership(p *node, pst *unix.Stat_t, mode uint32, c Cred) ownership {
	pgid, pmode := pst.Gid, pst.Mode
	if o, ok := fs.overrideOf(p, unix.S_IFDIR); ok {
		pgid, pmode = o.gid, o.perm
	}
	typ := mode & unix.S_IFMT
	ow := ownership{uid: fs.opts.UIDs.stored(c.Uid), gid: fs.opts.GIDs.stored(c.Gid), perm: mode &^ unix.S_IFMT}
	if pmode&unix.S_ISGID != 0 {
		ow.gid = pgid
		if typ == unix.S_IFDIR {
			ow.perm |= unix.S_ISGID
		}
	}
	ow.ownPerm, ow.inXattr = ow.perm, fs.writesOverride(typ)
	if special(typ) && fs.overrideWrite != "" && (ow.uid != fs.euid || ow.gid != fs.egid || ow.perm&^0o777 != 0) {
		ow.inXattr = true
	}
	if ow.inXattr {
		ow.ownPerm = ow.perm&0o777 | 0o600
		switch {
		case typ == unix.S_IFDIR:
			ow.ownPerm |= 0o700
		case special(typ):
			ow.ownPerm = 0o600
		}
	}
	return ow
}

// made reports whether an object the daemon has just created, in an upper
// directory with group pgid and mode pmode on disk (what the host goes
// by), already has owner uid:gid and permission bits perm: the daemon's
// own ids (a setgid directory's group), no bit its umask takes away, and
// no setuid, setgid or sticky bit, which creation could drop.
func (fs *FS) made(uid, gid, pgid, pmode, perm uint32) bool {
	if perm&^0o777 != 0 || perm&fs.umask != 0 {
		return false
	}
	g := fs.egid
	if pmode&unix.S_ISGID != 0 {
		g = pgid
	}
	return uid == fs.euid && gid == g
}

// inPlace creates regular file or directory name in upper directory pfd
// with permission bits perm, complete as created (made), and returns what
// the name shows and a regular file's open fd. ok is false for other
// types.
// Preconditions: as build's.
func (fs *FS) inPlace(pfd int, name string, typ, perm uint32) (f found, fd int, ok bool, err error) {
	var st unix.Stat_t
	switch typ {
	case unix.S_IFREG:
		fd, err = layers.Create(pfd, name, unix.O_RDWR, perm)
		if err != nil {
			return found{}, -1, true, err
		}
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			layers.Unlink(pfd, name)
			return found{}, -1, true, err
		}
	case unix.S_IFDIR:
		if err := layers.Mkdir(pfd, name, perm); err != nil {
			return found{}, -1, true, err
		}
		if err := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			layers.Rmdir(pfd, name)
			return found{}, -1, true, err
		}
		fd = -1
	default:
		return found{}, -1, false, nil
	}
	return fs.fresh(st, typ, false), fd, true, nil
}

// fresh is what a name just created shows: it was negative in every
// layer, or now covers a whiteout (a directory then made opaque), so the
// new upper object is all it shows.
func (fs *FS) fresh(st unix.Stat_t, typ uint32, opaque bool) found {
	o := objOf(fs.upper, &st)
	o.marks.Opaque = opaque
	return found{typ: typ, objs: []obj{o}, st: st, fresh: true}
}

// made is a new object being completed: open as fd, or, with fd < 0,
// entry name of directory dir (the work directory).
type made struct {
	fd   int
	dir  int
	name string
}

func (m made) stat(st *unix.Stat_t) error {
	if m.fd >= 0 {
		return unix.Fstat(m.fd, st)
	}
	return unix.Fstatat(m.dir, m.name, st, unix.AT_SYMLINK_NOFOLLOW)
}

func (m made) chown(uid, gid uint32) error {
	if m.fd >= 0 {
		return layers.Chown(m.fd, "", int(uid), int(gid))
	}
	return layers.Chown(m.dir, m.name, int(uid), int(gid))
}

func (m made) chmod(perm uint32) error {
	if m.fd >= 0 {
		return layers.Chmod(m.fd, "", perm)
	}
	return layers.Chmod(m.dir, m.name, perm)
}

// own gives the new object m the owner o.ow says, unless that goes to the
// override xattr, and permission bits o.perm, and returns its attributes.
// It changes only what differs: the daemon, usually root with umask 0,
// mostly creates objects right already. Under squash_to_* a refused chown
// is ignored, as fuse-overlayfs does.
func (fs *FS) own(m made, o newObject) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := m.stat(&st); err != nil {
		return st, err
	}
	changed := false
	if !o.ow.inXattr && (st.Uid != o.ow.uid || st.Gid != o.ow.gid) {
		err := m.chown(o.ow.uid, o.ow.gid)
		if err != nil && !fs.squashed() {
			return st, err
		}
		changed = err == nil
	}
	// After chown, which clears setuid and setgid.
	if o.kind() != unix.S_IFLNK && (st.Mode&0o7777 != o.perm || changed && o.perm&(unix.S_ISUID|unix.S_ISGID) != 0) {
		if err := m.chmod(o.perm); err != nil {
			return st, err
		}
		changed = true
	}
	if changed {
		return st, m.stat(&st)
	}
	return st, nil
}

// ownUnnamed gives the unnamed file fd its owner and mode, or, with
// xattr_permissions, the override that holds them (the file then keeps
// the daemon's owner and the mode it was made with).
func (fs *FS) ownUnnamed(fd int, o newObject) error {
	if o.ow.inXattr {
		ov := override{uid: o.ow.uid, gid: o.ow.gid, perm: o.ow.perm}
		return layers.FdSetxattr(fd, fs.overrideWrite, []byte(ov.String()), 0)
	}
	_, err := fs.own(made{fd: fd}, o)
	return err
}

// whiteoutAt reports whether the upper directory pfd of p has a whiteout
// named name that a new object replaces (char: a kernel whiteout, or, in
// a directory marked opaque=x, an xwhiteout, which the kernel also hides
// in the upper layer), or an AUFS whiteout file for it.
// Preconditions: renameMu held; p copied up.
func (fs *FS) whiteoutAt(p *node, pfd int, name string) (char, aufs bool) {
	var st unix.Stat_t
	if unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		char = layers.IsWhiteout(&st) || p.layersOf()[0].marks.XWhiteouts && layers.IsXWhiteoutAt(pfd, name, &st, fs.reading)
	}
	if len(name)+len(layers.WhiteoutPrefix) <= maxName &&
		unix.Fstatat(pfd, layers.WhiteoutPrefix+name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		aufs = true
	}
	return char, aufs
}

// Create creates and opens regular file name in directory parent; flags
// are the open(2) flags.
func (fs *FS) Create(parent uint64, name string, mode uint32, flags int, c Cred) (Entry, Opened, error) {
	pl, err := fs.create(parent, name, spec{mode: unix.S_IFREG | mode&0o7777, mk: func(wfd int, tmp string, perm uint32) (int, error) {
		return layers.Create(wfd, tmp, unix.O_RDWR, perm)
	}}, c)
	if err != nil {
		return Entry{}, Opened{}, err
	}
	n, err := fs.get(pl.entry.ID)
	if err != nil {
		unix.Close(pl.fd)
		return Entry{}, Opened{}, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	// A new file has no file capabilities: the kernel's check before
	// each write needs no host call.
	n.noCaps = true
	return pl.entry, fs.attach(n, pl.fd, fs.passedThrough(n)), nil
}

// Tmpfile creates and opens a regular file without a name in directory
// parent (open(2) with O_TMPFILE), as the kernel's overlay does: in the
// parent's upper directory, copied up first. It is complete when made; a
// link(2) may give it a name later.
func (fs *FS) Tmpfile(parent uint64, mode uint32, c Cred) (Entry, Opened, error) {
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	p, err := fs.writable(parent)
	if err != nil {
		return Entry{}, Opened{}, err
	}
	if !p.isDir() {
		return Entry{}, Opened{}, syscall.ENOTDIR
	}
	if fs.prot(p)&flagImmutable != 0 {
		return Entry{}, Opened{}, syscall.EPERM
	}
	if err := fs.copyUp(p); err != nil {
		return Entry{}, Opened{}, err
	}
	fd := -1
	var st unix.Stat_t
	err = fs.inDir(p, fs.upper, func(pfd int) error {
		var pst unix.Stat_t
		if err := unix.Fstat(pfd, &pst); err != nil {
			return err
		}
		mode := unix.S_IFREG | mode&0o7777
		def := fs.defaultACL(p)
		if def == nil {
			mode &^= c.Umask & 0o777
		}
		ow := fs.ownership(p, &pst, mode, c)
		perm := ow.ownPerm
		if def != nil {
			// The host gives the file the directory's default ACL.
			m, _, err := inheritACL(def, unix.S_IFREG|perm)
			if err != nil {
				return err
			}
			perm = m & 0o7777
		}
		var err error
		if fd, err = layers.Tmpfile(pfd, unix.O_RDWR, ow.ownPerm); err != nil {
			return err
		}
		err = fs.ownUnnamed(fd, newObject{typ: unix.S_IFREG, ow: ow, perm: perm})
		if err == nil {
			err = unix.Fstat(fd, &st)
		}
		return err
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return Entry{}, Opened{}, toErrno(err)
	}
	f := fs.fresh(st, unix.S_IFREG, false)
	id := fs.identify(p, "", f)
	n, isNew := fs.nodes.Acquire(id.Ident, func(n *node) bool { return n.kind() == unix.S_IFREG }, func() *node {
		n := newNode(unix.S_IFREG, f.objs, p, "", nil)
		n.unlinked = true
		return n
	})
	if isNew {
		fs.setNumber(n, id)
	}
	n.mu.Lock()
	n.noCaps = true
	o := fs.attach(n, fd, fs.passedThrough(n))
	n.mu.Unlock()
	return Entry{ID: n.ID(), Attr: fs.attr(n, &st)}, o, nil
}

// Mkdir creates directory name in directory parent.
func (fs *FS) Mkdir(parent uint64, name string, perm uint32, c Cred) (Entry, error) {
	pl, err := fs.create(parent, name, spec{mode: unix.S_IFDIR | perm&0o7777, mk: func(wfd int, tmp string, perm uint32) (int, error) {
		return -1, layers.Mkdir(wfd, tmp, perm)
	}}, c)
	return pl.entry, err
}

// Mknod creates a fifo, socket or device node. A char device 0/0 is a
// whiteout on disk and is refused with EPERM, as the kernel does.
func (fs *FS) Mknod(parent uint64, name string, mode uint32, rdev uint64, c Cred) (Entry, error) {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO, unix.S_IFSOCK, unix.S_IFBLK, unix.S_IFREG:
	case unix.S_IFCHR:
		if rdev == 0 {
			return Entry{}, syscall.EPERM
		}
	default:
		return Entry{}, syscall.EINVAL
	}
	pl, err := fs.create(parent, name, spec{mode: mode, rdev: rdev, mk: func(wfd int, tmp string, perm uint32) (int, error) {
		return -1, layers.Mknod(wfd, tmp, mode&unix.S_IFMT|perm, rdev)
	}}, c)
	return pl.entry, err
}

// Symlink creates symlink name to target in directory parent.
func (fs *FS) Symlink(parent uint64, name, target string, c Cred) (Entry, error) {
	pl, err := fs.create(parent, name, spec{mode: unix.S_IFLNK | 0o777, target: target, mk: func(wfd int, tmp string, _ uint32) (int, error) {
		return -1, layers.Symlink(target, wfd, tmp)
	}}, c)
	return pl.entry, err
}

// Link makes name in directory parent a new link to node target, which
// is copied up first.
func (fs *FS) Link(target, parent uint64, name string) (Entry, error) {
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	t, err := fs.writable(target)
	if err != nil {
		return Entry{}, err
	}
	p, err := fs.get(parent)
	if err != nil {
		return Entry{}, err
	}
	if err := fs.mayLink(t, p, name); err != nil {
		return Entry{}, err
	}
	if err := fs.copyUp(t); err != nil {
		return Entry{}, err
	}
	if err := fs.linkRedirect(t); err != nil {
		return Entry{}, err
	}
	if err := fs.copyUp(p); err != nil {
		return Entry{}, err
	}
	p.aux.dirMu.Lock()
	defer p.aux.dirMu.Unlock()
	if _, err := fs.resolve(p, name); err != syscall.ENOENT {
		if err == nil {
			err = syscall.EEXIST
		}
		return Entry{}, err
	}
	pfd, err := fs.upperDir(p)
	if err != nil {
		return Entry{}, err
	}
	defer unix.Close(pfd)
	tfd, err := fs.upperFd(t)
	if err != nil {
		return Entry{}, err
	}
	defer unix.Close(tfd)
	over, aufs := fs.whiteoutAt(p, pfd, name)
	link := func() error { return fs.linkIn(tfd, pfd, name, over, aufs) }
	t.mu.Lock()
	x := t.indexOf()
	t.mu.Unlock()
	if x != nil {
		// With the index, the overlay's link count is kept relative to
		// the upper inode's, which the link moves with it
		// (ovl_nlink_start).
		fs.index.mu.Lock()
		if _, err = fs.nlinkStart(x); err == nil {
			err = link()
		}
		fs.index.mu.Unlock()
	} else {
		err = link()
	}
	if err != nil {
		return Entry{}, toErrno(err)
	}
	if _, err := layers.FdGetxattr(tfd, fs.xattrs.Name(layers.XattrOrigin)); err == nil {
		// As ovl_link: the parent now holds an object whose number comes
		// from its origin, so it is impure.
		layers.SetImpure(pfd, fs.xattrs)
	}
	f, err := fs.resolve(p, name)
	if err != nil {
		return Entry{}, err
	}
	return fs.acquire(p, name, f), nil
}

// mayLink checks that a link of t named name may be made in p: t is no
// directory, the name is one the overlay may show, and neither t nor p
// forbids it (append-only or immutable t, immutable p).
func (fs *FS) mayLink(t, p *node, name string) error {
	if t.isDir() {
		return syscall.EPERM
	}
	if err := checkName(name); err != nil {
		return err
	}
	if strings.HasPrefix(name, layers.WhiteoutPrefix) {
		return syscall.EPERM
	}
	if fs.prot(t) != 0 || fs.prot(p)&flagImmutable != 0 {
		return syscall.EPERM
	}
	return nil
}

// linkIn links the upper object open as tfd into the upper directory pfd
// as name: directly, or, over a whiteout (over), in the workdir first and
// then over the whiteout with one rename. An AUFS whiteout of the name
// (aufs) goes after.
func (fs *FS) linkIn(tfd, pfd int, name string, over, aufs bool) error {
	if over {
		wfd, tmp := fs.work.Fd(), fs.work.TempName()
		if err := layers.LinkFd(tfd, wfd, tmp); err != nil {
			return toErrno(err)
		}
		if err := layers.Rename(wfd, tmp, pfd, name, 0); err != nil {
			layers.Unlink(wfd, tmp)
			return toErrno(err)
		}
	} else if err := layers.LinkFd(tfd, pfd, name); err != nil {
		return toErrno(err)
	}
	if aufs {
		layers.Unlink(pfd, layers.WhiteoutPrefix+name)
	}
	return nil
}

// upperFd returns an fd of n's upper object, which the caller closes:
// through its name, or, for a node without one (O_TMPFILE), a copy of
// an open file's fd.
// Preconditions: renameMu held; n copied up.
func (fs *FS) upperFd(n *node) (int, error) {
	n.mu.Lock()
	unlinked, fd := n.unlinked, n.openFd()
	n.mu.Unlock()
	if !unlinked {
		fd, err := fs.openObj(n, fs.upper)
		return fd, toErrno(err)
	}
	if fd < 0 {
		return -1, syscall.ENOENT
	}
	fd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	return fd, toErrno(err)
}
