package overlay

// This file and serve.go are the only ones that know the FUSE library,
// github.com/hanwen/go-fuse/v2: rawFS turns the requests its
// ProtocolServer decodes into calls on FS, and FS's answers into replies.
// The version is pinned in go.mod: ProtocolServer is marked experimental.

import (
	"encoding/binary"
	"log"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/ovlmount/ovlmount/inodes"
	"golang.org/x/sys/unix"
)

// mountOptions are the go-fuse options the connection is served with:
// they decide what INIT offers the kernel.
func (fs *FS) mountOptions(maxWrite int, errLog *log.Logger) *fuse.MountOptions {
	o := &fuse.MountOptions{
		MaxWrite:             maxWrite,
		Logger:               errLog,
		EnableSymlinkCaching: true,
		// NO_OPENDIR_SUPPORT: directories are opened by the kernel
		// alone (OpenDir); READDIRPLUS_AUTO: plain READDIR once a
		// listing's entries are cached; ASYNC_DIO: direct I/O in
		// parallel; HANDLE_KILLPRIV_V2: the daemon clears setuid and
		// setgid on a write or truncate the caller could not keep them
		// through (Write, SetAttr), sparing the kernel a getxattr of
		// security.capability before every write; SETXATTR_EXT: the
		// setxattr of an ACL says when setgid must go; ATOMIC_O_TRUNC:
		// O_TRUNC comes with the open, so a copy-up for it copies no data,
		// as the kernel's does; DIRECT_IO_ALLOW_MMAP: a file opened for
		// direct I/O (Opened.Direct) can still be mapped shared, as on
		// the kernel's overlay.
		ExtraCapabilities: fuse.CAP_NO_OPENDIR_SUPPORT | fuse.CAP_READDIRPLUS_AUTO | fuse.CAP_ASYNC_DIO |
			fuse.CAP_HANDLE_KILLPRIV_V2 | fuse.CAP_SETXATTR_EXT | fuse.CAP_ATOMIC_O_TRUNC | fuse.CAP_DIRECT_IO_ALLOW_MMAP,
		// Layers change only through this mount, and the kernel's page
		// cache follows those changes: no invalidation by mtime.
		DisabledCapabilities: fuse.CAP_AUTO_INVAL_DATA,
		// A backing file may itself live on one stacking filesystem.
		MaxStackDepth: 1,
	}
	if !fs.opts.Passthrough || !mayRegisterBacking() {
		// Negotiated, passthrough would stack the mount one level
		// higher for nothing.
		o.DisabledCapabilities |= fuse.CAP_PASSTHROUGH
	}
	if fs.opts.ACL {
		// The kernel enforces ACLs; DONT_MASK: modes arrive without the
		// umask, which the engine applies unless a default ACL applies
		// instead (build).
		o.EnableAcl = true
		o.ExtraCapabilities |= fuse.CAP_DONT_MASK
	}
	return o
}

// mayRegisterBacking reports whether this process may register passthrough
// backing files: the kernel asks for CAP_SYS_ADMIN in the initial user
// namespace, so root outside a user namespace.
func mayRegisterBacking() bool {
	if os.Geteuid() != 0 {
		return false
	}
	b, err := os.ReadFile("/proc/self/uid_map")
	return err == nil && strings.Join(strings.Fields(string(b)), " ") == "0 0 4294967295"
}

// rawFS adapts FS to go-fuse's RawFileSystem. On a read-only mount the
// kernel refuses writes with EROFS before they reach it; any request it
// does not serve gets ENOSYS from the embedded default.
type rawFS struct {
	fuse.RawFileSystem
	fs *FS
	c  *Conn
}

func (r *rawFS) String() string { return "ovlmount" }

// nodeID maps a request's node id to the engine's: the loop sends the
// root as rootAlias (serve.go).
func nodeID(id uint64) uint64 {
	if id == rootAlias {
		return inodes.RootID
	}
	return id
}

// status turns an engine error into a FUSE status: every engine error is
// a syscall.Errno already.
func status(err error) fuse.Status {
	if err == nil {
		return fuse.OK
	}
	if e, ok := err.(syscall.Errno); ok {
		return fuse.Status(e)
	}
	return fuse.EIO
}

func cred(h *fuse.InHeader, umask uint32) Cred {
	return Cred{Uid: h.Uid, Gid: h.Gid, Pid: h.Pid, Umask: umask}
}

// killer returns the caller when flag is set in flags: the kernel's word
// that the caller cannot keep setuid and setgid through a write or
// truncate.
func killer(h *fuse.InHeader, flags, flag uint32) *Cred {
	if flags&flag == 0 {
		return nil
	}
	c := cred(h, 0)
	return &c
}

func (r *rawFS) timeout() time.Duration { return r.fs.Timeout() }

func (r *rawFS) entry(e Entry, out *fuse.EntryOut) {
	out.NodeId = e.ID
	out.Generation = 0
	out.SetEntryTimeout(r.timeout())
	out.SetAttrTimeout(r.attrTimeout(&e.Attr))
	fillAttr(&e.Attr, &out.Attr)
}

// attrTimeout is how long the kernel may keep attributes a: not at all
// when other nodes change the object too (Attr.Shared).
func (r *rawFS) attrTimeout(a *Attr) time.Duration {
	if a.Shared {
		return 0
	}
	return r.timeout()
}

// fillAttr converts attributes. FUSE carries rdev in the kernel's 32-bit
// new_encode_dev form.
func fillAttr(a *Attr, out *fuse.Attr) {
	maj, min := unix.Major(a.Rdev), unix.Minor(a.Rdev)
	*out = fuse.Attr{
		Ino:     a.Ino,
		Size:    a.Size,
		Blocks:  a.Blocks,
		Mode:    a.Mode,
		Nlink:   a.Nlink,
		Owner:   fuse.Owner{Uid: a.Uid, Gid: a.Gid},
		Rdev:    min&0xff | maj<<8 | (min&^0xff)<<12,
		Blksize: a.Blksize,
	}
	out.SetTimes(&a.Atime, &a.Mtime, &a.Ctime)
}

// decodeDev undoes new_encode_dev.
func decodeDev(rdev uint32) uint64 {
	maj := (rdev & 0xfff00) >> 8
	min := rdev&0xff | (rdev>>12)&0xfff00
	return unix.Mkdev(maj, min)
}

func (r *rawFS) Lookup(_ <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	e, err := r.fs.Lookup(nodeID(h.NodeId), name)
	if err == syscall.ENOENT {
		r.fs.stats.negative.Add(1)
		// A negative entry the kernel may cache.
		*out = fuse.EntryOut{}
		out.SetEntryTimeout(r.timeout())
		return fuse.OK
	}
	if err != nil {
		return status(err)
	}
	r.entry(e, out)
	return fuse.OK
}

func (r *rawFS) Forget(id, n uint64) {
	r.fs.Forget(nodeID(id), n)
	r.fs.Forgotten()
}

func (r *rawFS) GetAttr(_ <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	a, err := r.fs.GetAttr(nodeID(in.NodeId))
	if err != nil {
		return status(err)
	}
	fillAttr(&a, &out.Attr)
	out.SetTimeout(r.attrTimeout(&a))
	return fuse.OK
}

// Statx comes for statx(2) calls that ask for more than stat(2) gives
// (the birth time).
func (r *rawFS) Statx(_ <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	a, err := r.fs.Statx(nodeID(in.NodeId))
	if err != nil {
		return status(err)
	}
	out.SetTimeout(r.attrTimeout(&a))
	sx := &out.Statx
	sx.Mask = unix.STATX_BASIC_STATS
	sx.Blksize = a.Blksize
	sx.Attributes, sx.AttributesMask = a.Attributes, a.AttributesMask
	sx.Nlink, sx.Uid, sx.Gid, sx.Mode = a.Nlink, a.Uid, a.Gid, uint16(a.Mode)
	sx.Ino, sx.Size, sx.Blocks = a.Ino, a.Size, a.Blocks
	sx.RdevMajor, sx.RdevMinor = unix.Major(a.Rdev), unix.Minor(a.Rdev)
	sx.Atime = sxTime(a.Atime)
	sx.Mtime = sxTime(a.Mtime)
	sx.Ctime = sxTime(a.Ctime)
	if a.HasBtime {
		sx.Mask |= unix.STATX_BTIME
		sx.Btime = sxTime(a.Btime)
	}
	return fuse.OK
}

func sxTime(t time.Time) fuse.SxTime {
	return fuse.SxTime{Sec: uint64(t.Unix()), Nsec: uint32(t.Nanosecond())}
}

func (r *rawFS) SetAttr(_ <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	var s SetAttrs
	if m, ok := in.GetMode(); ok {
		s.Mode = &m
	}
	if u, ok := in.GetUID(); ok {
		s.Uid = &u
	}
	if g, ok := in.GetGID(); ok {
		s.Gid = &g
	}
	if sz, ok := in.GetSize(); ok {
		s.Size = &sz
	}
	switch {
	case in.Valid&fuse.FATTR_ATIME_NOW != 0:
		s.AtimeNow = true
	case in.Valid&fuse.FATTR_ATIME != 0:
		t := time.Unix(int64(in.Atime), int64(in.Atimensec))
		s.Atime = &t
	}
	switch {
	case in.Valid&fuse.FATTR_MTIME_NOW != 0:
		s.MtimeNow = true
	case in.Valid&fuse.FATTR_MTIME != 0:
		t := time.Unix(int64(in.Mtime), int64(in.Mtimensec))
		s.Mtime = &t
	}
	if fh, ok := in.GetFh(); ok {
		s.Handle = &fh
	}
	s.KillPrivs = killer(&in.InHeader, in.Valid, fuse.FATTR_KILL_SUIDGID)
	a, err := r.fs.SetAttr(nodeID(in.NodeId), s)
	if err != nil {
		return status(err)
	}
	fillAttr(&a, &out.Attr)
	out.SetTimeout(r.attrTimeout(&a))
	return fuse.OK
}

// changed tells the kernel that directories ids (node ids of requests)
// changed by a change of their entries, once it is made.
// The kernel drops their cached attributes itself when the request
// returns, but a LOOKUP, READDIRPLUS or GETATTR reply about them built
// before the change and applied after it (those requests do not lock the
// directory) would bring the old ones back, for as long as the attribute
// timeout: a notification also moves the directory's attribute version
// past such replies, which the kernel then leaves unapplied.
func (r *rawFS) changed(ids ...uint64) {
	if r.fs.invalidate == nil {
		return
	}
	for _, id := range ids {
		r.fs.invalidate(nodeID(id), false)
	}
}

func (r *rawFS) Mknod(_ <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	e, err := r.fs.Mknod(nodeID(in.NodeId), name, in.Mode, decodeDev(in.Rdev), cred(&in.InHeader, in.Umask))
	if err != nil {
		return status(err)
	}
	r.changed(in.NodeId)
	r.entry(e, out)
	return fuse.OK
}

func (r *rawFS) Mkdir(_ <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	e, err := r.fs.Mkdir(nodeID(in.NodeId), name, in.Mode&0o7777, cred(&in.InHeader, in.Umask))
	if err != nil {
		return status(err)
	}
	r.changed(in.NodeId)
	r.entry(e, out)
	return fuse.OK
}

func (r *rawFS) Unlink(_ <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if err := r.fs.Unlink(nodeID(h.NodeId), name); err != nil {
		return status(err)
	}
	r.changed(h.NodeId)
	return fuse.OK
}

func (r *rawFS) Rmdir(_ <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if err := r.fs.Rmdir(nodeID(h.NodeId), name); err != nil {
		return status(err)
	}
	r.changed(h.NodeId)
	return fuse.OK
}

func (r *rawFS) Rename(_ <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if err := r.fs.Rename(nodeID(in.NodeId), oldName, nodeID(in.Newdir), newName, in.Flags); err != nil {
		return status(err)
	}
	r.changed(in.NodeId, in.Newdir)
	return fuse.OK
}

func (r *rawFS) Link(_ <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	e, err := r.fs.Link(nodeID(in.Oldnodeid), nodeID(in.NodeId), name)
	if err != nil {
		return status(err)
	}
	r.changed(in.NodeId)
	r.entry(e, out)
	return fuse.OK
}

func (r *rawFS) Symlink(_ <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	e, err := r.fs.Symlink(nodeID(h.NodeId), name, target, cred(h, 0))
	if err != nil {
		return status(err)
	}
	r.changed(h.NodeId)
	r.entry(e, out)
	return fuse.OK
}

func (r *rawFS) Readlink(_ <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	t, err := r.fs.Readlink(nodeID(h.NodeId))
	if err != nil {
		return nil, status(err)
	}
	return []byte(t), fuse.OK
}

// Access never comes while the kernel checks permissions itself
// (default_permissions): it is the kernel asking the daemon to check, and
// the daemon checks nothing. A mount that sends it is one the kernel
// does not guard, and must not be served.
func (r *rawFS) Access(_ <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	r.c.errLog.Fatalf("the kernel asked for a permission check (ACCESS): the mount has no default_permissions; stopping")
	return fuse.EACCES
}

func (r *rawFS) GetXAttr(_ <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	v, err := r.fs.Getxattr(nodeID(h.NodeId), attr)
	if err != nil {
		return 0, status(err)
	}
	if len(dest) == 0 {
		return uint32(len(v)), fuse.OK // a size query
	}
	if len(v) > len(dest) {
		return uint32(len(v)), fuse.ERANGE
	}
	return uint32(copy(dest, v)), fuse.OK
}

func (r *rawFS) ListXAttr(_ <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	names, err := r.fs.Listxattr(nodeID(h.NodeId), h.Uid == 0)
	if err != nil {
		return 0, status(err)
	}
	size := 0
	for _, n := range names {
		size += len(n) + 1
	}
	if len(dest) == 0 {
		return uint32(size), fuse.OK
	}
	if size > len(dest) {
		return uint32(size), fuse.ERANGE
	}
	off := 0
	for _, n := range names {
		off += copy(dest[off:], n)
		dest[off] = 0
		off++
	}
	return uint32(size), fuse.OK
}

func (r *rawFS) SetXAttr(_ <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	return status(r.fs.Setxattr(nodeID(in.NodeId), attr, data, int(in.Flags), in.SetXAttrFlags&fuse.SETXATTR_ACL_KILL_SGID != 0))
}

func (r *rawFS) RemoveXAttr(_ <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	return status(r.fs.Removexattr(nodeID(h.NodeId), attr))
}

func (r *rawFS) Create(_ <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	e, fh, err := r.fs.Create(nodeID(in.NodeId), name, in.Mode&0o7777, int(in.Flags), cred(&in.InHeader, in.Umask))
	if err != nil {
		return status(err)
	}
	r.changed(in.NodeId)
	r.entry(e, &out.EntryOut)
	opened(fh, &out.OpenOut)
	return fuse.OK
}

// opened fills an open reply: a handle passed through to its backing
// file, or one whose data the daemon serves and whose pages the kernel
// keeps across opens (a file changes only through this mount, layers
// must not change behind it, and the kernel's page cache follows those
// changes), but for a file other nodes change too (Opened.Shared), or
// for one whose reads must go past its size (Opened.Direct: direct I/O
// sends them whatever the size). The kernel refuses KEEP_CACHE with
// passthrough.
func opened(o Opened, out *fuse.OpenOut) {
	out.Fh = o.Handle
	switch {
	case o.Backing >= 0:
		out.OpenFlags = fuse.FOPEN_PASSTHROUGH
		out.BackingID = o.Backing
	case o.Direct:
		out.OpenFlags = fuse.FOPEN_DIRECT_IO
	case !o.Shared:
		out.OpenFlags = fuse.FOPEN_KEEP_CACHE
	}
}

func (r *rawFS) Tmpfile(_ <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	e, fh, err := r.fs.Tmpfile(nodeID(in.NodeId), in.Mode&0o7777, cred(&in.InHeader, in.Umask))
	if err != nil {
		return status(err)
	}
	r.entry(e, &out.EntryOut)
	opened(fh, &out.OpenOut)
	return fuse.OK
}

func (r *rawFS) Open(_ <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	// OpenIn.Mode is the kernel's open_flags.
	fh, err := r.fs.Open(nodeID(in.NodeId), int(in.Flags), killer(&in.InHeader, in.Mode, fuse.OPEN_KILL_SUIDGID))
	if err != nil {
		return status(err)
	}
	opened(fh, out)
	return fuse.OK
}

// Read answers with the host file's data read straight into the reply
// (ReadResultFd reads with preadv into the reply buffer).
func (r *rawFS) Read(_ <-chan struct{}, in *fuse.ReadIn, _ []byte) (fuse.ReadResult, fuse.Status) {
	fd, err := r.fs.ReadFd(in.Fh)
	if err != nil {
		return nil, status(err)
	}
	return fuse.ReadResultFd(uintptr(fd), int64(in.Offset), int(in.Size)), fuse.OK
}

func (r *rawFS) Lseek(_ <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	off, err := r.fs.Lseek(in.Fh, int64(in.Offset), int(in.Whence))
	if err != nil {
		return status(err)
	}
	out.Offset = uint64(off)
	return fuse.OK
}

func (r *rawFS) CopyFileRange(_ <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	// The reply counts in 32 bits.
	n, err := r.fs.CopyFileRange(in.FhIn, int64(in.OffIn), in.FhOut, int64(in.OffOut), int(min(in.Len, 1<<30)), int(in.Flags))
	return uint32(n), status(err)
}

// The inode-flag ioctls the kernel sends for lsattr and chattr
// (fuse_fileattr_get, fuse_fileattr_set), with 4 bytes of flags.
const (
	iocGetflags   = 0x80086601 // FS_IOC_GETFLAGS
	iocSetflags   = 0x40086602 // FS_IOC_SETFLAGS
	iocGetflags32 = 0x80046601 // FS_IOC32_GETFLAGS
	iocSetflags32 = 0x40046602 // FS_IOC32_SETFLAGS
)

// Ioctl answers the inode-flag ioctls; any other is ENOTTY, as on the
// kernel's overlay, which passes on no other.
func (r *rawFS) Ioctl(_ <-chan struct{}, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	id := nodeID(in.NodeId)
	switch in.Cmd {
	case iocGetflags, iocGetflags32:
		if len(outbuf) < 4 {
			return fuse.EINVAL
		}
		f, err := r.fs.Getflags(id)
		if err != nil {
			return status(err)
		}
		binary.NativeEndian.PutUint32(outbuf, f)
		return fuse.OK
	case iocSetflags, iocSetflags32:
		if len(inbuf) < 4 {
			return fuse.EINVAL
		}
		return status(r.fs.Setflags(id, binary.NativeEndian.Uint32(inbuf)))
	case iocFsGetxattr:
		if len(outbuf) < FsxattrSize {
			return fuse.EINVAL
		}
		x, err := r.fs.Fsgetxattr(id)
		if err != nil {
			return status(err)
		}
		copy(outbuf, x[:])
		return fuse.OK
	case iocFsSetxattr:
		var x [FsxattrSize]byte
		if len(inbuf) < FsxattrSize {
			return fuse.EINVAL
		}
		copy(x[:], inbuf)
		return status(r.fs.Fssetxattr(id, x))
	}
	return fuse.Status(syscall.ENOTTY)
}

func (r *rawFS) Release(_ <-chan struct{}, in *fuse.ReleaseIn) {
	r.fs.Release(in.Fh)
}

func (r *rawFS) Write(_ <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	n, err := r.fs.Write(in.Fh, data, int64(in.Offset), killer(&in.InHeader, in.WriteFlags, fuse.WRITE_KILL_SUIDGID))
	return uint32(n), status(err)
}

// Flush is answered ENOSYS: there is nothing to do at close, and the
// kernel then stops sending FLUSH, one request less per close.
func (r *rawFS) Flush(<-chan struct{}, *fuse.FlushIn) fuse.Status { return fuse.ENOSYS }

func (r *rawFS) Fsync(_ <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return status(r.fs.Fsync(in.Fh))
}

func (r *rawFS) Fallocate(_ <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	return status(r.fs.Fallocate(in.Fh, in.Mode, int64(in.Offset), int64(in.Length)))
}

// OpenDir is answered ENOSYS: the kernel then stops sending OPENDIR and
// RELEASEDIR, and opens directories itself with KEEP_CACHE and CACHE_DIR,
// so it keeps a listing across opens. That is right because layers change
// only through this mount, and the kernel drops its copy when it changes
// the directory itself (a create, remove or rename in it).
func (r *rawFS) OpenDir(<-chan struct{}, *fuse.OpenIn, *fuse.OpenOut) fuse.Status {
	return fuse.ENOSYS
}

func (r *rawFS) ReadDir(_ <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	// A name of 16 bytes takes 40 bytes of the reply.
	ents, err := r.fs.ReadDir(nodeID(in.NodeId), in.Offset, int(in.Size)/40+1)
	if err != nil {
		return status(err)
	}
	for _, e := range ents {
		if !out.AddDirEntry(fuse.DirEntry{Name: e.Name, Ino: e.Ino, Mode: uint32(e.Type) << 12, Off: e.Off}) {
			break
		}
	}
	return fuse.OK
}

// ReadDirPlus answers entries with their attributes. Each entry but "."
// and ".." that reaches the kernel with a node counts as a lookup; an
// entry gone since the listing was built goes without one (node id 0).
func (r *rawFS) ReadDirPlus(_ <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	dir := nodeID(in.NodeId)
	// An entry with attributes takes about 170 bytes of the reply.
	ents, err := r.fs.ReadDir(dir, in.Offset, int(in.Size)/170+1)
	if err != nil {
		return status(err)
	}
	for _, e := range ents {
		eo := out.AddDirLookupEntry(fuse.DirEntry{Name: e.Name, Ino: e.Ino, Mode: uint32(e.Type) << 12, Off: e.Off})
		if eo == nil {
			break
		}
		if e.Name == "." || e.Name == ".." {
			continue
		}
		le, err := r.fs.Lookup(dir, e.Name)
		if err != nil {
			continue // gone meanwhile
		}
		r.entry(le, eo)
		out.FixMode(le.Attr.Mode)
	}
	return fuse.OK
}

func (r *rawFS) StatFs(_ <-chan struct{}, _ *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	st, err := r.fs.StatFS()
	if err != nil {
		return status(err)
	}
	*out = fuse.StatfsOut{
		Blocks: st.Blocks, Bfree: st.Bfree, Bavail: st.Bavail,
		Files: st.Files, Ffree: st.Ffree,
		Bsize: uint32(st.Bsize), Frsize: uint32(st.Frsize), NameLen: uint32(st.Namelen),
	}
	return fuse.OK
}
