package overlay

// This file is the only one that knows github.com/jacobsa/fuse: it turns
// FUSE operations into calls on FS and FS's answers into replies.

import (
	"context"
	"errors"
	"io"
	"log"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jacobsa/fuse"
	"github.com/jacobsa/fuse/fuseops"
	"github.com/jacobsa/fuse/fuseutil"
	"golang.org/x/sys/unix"
)

// Server returns the FUSE server for fs, serving at most workers
// requests at once (at least one). Errors the library cannot hand to the
// kernel go to errLog.
//
// Why not a fixed pool of readers: the kernel hands each request to the
// reader that has waited longest, so with a pool every request lands on a
// thread the Go runtime has parked and must wake again, and that cost more
// than most operations themselves (a getxattr round trip took 46-62 µs of
// daemon CPU with 16 readers, 27-40 µs with one). So one goroutine reads
// and serves requests in turn, keeping its thread and P; a watcher adds a
// reader when no reader has taken a request for a whole tick (a disk read,
// a copy-up), up to workers, and extra readers leave once another is
// waiting for requests again.
func (fs *FS) Server(workers int, errLog *log.Logger) fuse.Server {
	n := fuse.NewNotifier()
	fs.invalidate = func(id uint64) {
		// A negative offset drops the attributes, not the pages.
		n.InvalidateInode(fuseops.InodeID(id), -1, 0)
	}
	spin := spinFor
	if runtime.NumCPU() < 2 {
		spin = 0
	}
	return fuse.NewServerWithNotifier(n, &server{
		f:       &fuseFS{fs: fs},
		workers: int32(max(workers, 1)),
		spin:    spin,
		errLog:  errLog,
		done:    make(chan struct{}),
		wake:    make(chan struct{}, 1),
	})
}

// stallTick is how long every reader may be busy before the watcher adds
// one: long enough that a burst of fast requests never starts one, short
// against a disk read or a copy-up.
const stallTick = 5 * time.Millisecond

// spinFor is how long a reader with nothing to do polls before it sleeps
// (await).
const spinFor = 10 * time.Microsecond

// yieldEvery is how often a busy reader passes through the scheduler.
const yieldEvery = 5 * time.Millisecond

type server struct {
	// fd is the connection's /dev/fuse fd, made non-blocking so that a
	// reader can wait for requests its own way (await); -1 without
	// polling (spin 0) or if it could not be told apart, and readers
	// then block in read(2).
	fd int
	// spin is how long await polls before it sleeps: spinFor, or 0 when
	// the daemon may use a single CPU, where polling only keeps the
	// caller from running (and readers then block in read(2)).
	spin    time.Duration
	f       *fuseFS
	workers int32
	errLog  *log.Logger

	readers atomic.Int32  // goroutines serving the connection
	waiting atomic.Int32  // readers blocked reading a request
	taken   atomic.Uint64 // requests read so far
	parked  atomic.Bool   // the watcher waits on wake
	wake    chan struct{}
	done    chan struct{} // closed when the connection ends
	once    sync.Once
	wg      sync.WaitGroup
}

// ServeOps serves c until the kernel ends the connection (unmount).
func (s *server) ServeOps(c *fuse.Connection) {
	s.fd = -1
	if s.spin > 0 {
		// Without polling a blocking read(2) is one call where
		// await would take three.
		s.fd = connFd()
	}
	s.wg.Add(2)
	s.readers.Store(1)
	go s.serve(c)
	go s.watch(c)
	s.wg.Wait()
}

// serve reads and serves requests until the connection ends, or until it
// is an extra reader and another reader is waiting.
func (s *server) serve(c *fuse.Connection) {
	defer s.wg.Done()
	yielded := time.Now()
	for {
		if now := time.Now(); now.Sub(yielded) > yieldEvery {
			// The runtime takes a goroutine that has run for 10 ms
			// without passing through the scheduler for a CPU hog:
			// it takes the P away while the reader waits for a request
			// and keeps its monitor thread polling every 20 µs.
			runtime.Gosched()
			yielded = now
		}
		s.waiting.Add(1)
		ctx, op, err := c.ReadOp()
		if err != nil && s.fd >= 0 && errors.Is(err, syscall.EAGAIN) {
			s.await()
			s.waiting.Add(-1)
			continue
		}
		s.waiting.Add(-1)
		if err != nil {
			if err != io.EOF {
				// The connection is unusable (a request the
				// library could not decode has been answered).
				s.errLog.Printf("reading a request: %v", err)
			}
			s.once.Do(func() { close(s.done) })
			return
		}
		s.taken.Add(1)
		if s.parked.CompareAndSwap(true, false) {
			s.wake <- struct{}{}
		}
		c.Reply(ctx, s.f.dispatch(ctx, op))
		if s.waiting.Load() > 0 && s.leave() {
			return
		}
	}
}

// leave reports whether the calling reader may stop: it may unless it is
// the last.
func (s *server) leave() bool {
	for {
		n := s.readers.Load()
		if n <= 1 {
			return false
		}
		if s.readers.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// watch adds a reader when no reader has taken a request for a tick while
// none is waiting for one, and sleeps while the connection is idle.
func (s *server) watch(c *fuse.Connection) {
	defer s.wg.Done()
	last, quiet := s.taken.Load(), 0
	for {
		select {
		case <-s.done:
			return
		case <-time.After(stallTick):
		}
		n := s.taken.Load()
		if n != last {
			last, quiet = n, 0
			continue
		}
		if s.waiting.Load() == 0 {
			if r := s.readers.Load(); r < s.workers && s.readers.CompareAndSwap(r, r+1) {
				s.wg.Add(1)
				go s.serve(c)
			}
			continue
		}
		if quiet++; quiet < 100 {
			continue
		}
		// Idle: wait for the next request rather than tick.
		s.parked.Store(true)
		if s.taken.Load() != last && s.parked.CompareAndSwap(true, false) {
			continue
		}
		select {
		case <-s.done:
			return
		case <-s.wake:
		}
		quiet = 0
	}
}

// fuseFS adapts FS to FUSE operations. On a read-only mount the kernel
// refuses writes with EROFS before they reach it; any other operation it
// does not serve gets ENOSYS.
type fuseFS struct {
	fs *FS
}

// dispatch serves one operation and returns the error for the reply.
func (f *fuseFS) dispatch(ctx context.Context, op any) error {
	switch o := op.(type) {
	case *fuseops.StatFSOp:
		return f.StatFS(ctx, o)
	case *fuseops.LookUpInodeOp:
		return f.LookUpInode(ctx, o)
	case *fuseops.GetInodeAttributesOp:
		return f.GetInodeAttributes(ctx, o)
	case *fuseops.ForgetInodeOp:
		return f.ForgetInode(ctx, o)
	case *fuseops.BatchForgetOp:
		return f.BatchForget(ctx, o)
	case *fuseops.OpenDirOp:
		return f.OpenDir(ctx, o)
	case *fuseops.ReadDirOp:
		return f.ReadDir(ctx, o)
	case *fuseops.ReadDirPlusOp:
		return f.ReadDirPlus(ctx, o)
	case *fuseops.OpenFileOp:
		return f.OpenFile(ctx, o)
	case *fuseops.ReadFileOp:
		return f.ReadFile(ctx, o)
	case *fuseops.ReleaseFileHandleOp:
		return f.ReleaseFileHandle(ctx, o)
	case *fuseops.ReadSymlinkOp:
		return f.ReadSymlink(ctx, o)
	case *fuseops.GetXattrOp:
		return f.GetXattr(ctx, o)
	case *fuseops.ListXattrOp:
		return f.ListXattr(ctx, o)
	case *fuseops.SetInodeAttributesOp:
		return f.SetInodeAttributes(ctx, o)
	case *fuseops.MkDirOp:
		return f.MkDir(ctx, o)
	case *fuseops.MkNodeOp:
		return f.MkNode(ctx, o)
	case *fuseops.CreateFileOp:
		return f.CreateFile(ctx, o)
	case *fuseops.CreateSymlinkOp:
		return f.CreateSymlink(ctx, o)
	case *fuseops.CreateLinkOp:
		return f.CreateLink(ctx, o)
	case *fuseops.RenameOp:
		return f.fs.Rename(uint64(o.OldParent), o.OldName, uint64(o.NewParent), o.NewName)
	case *fuseops.RmDirOp:
		return f.fs.Rmdir(uint64(o.Parent), o.Name)
	case *fuseops.UnlinkOp:
		return f.fs.Unlink(uint64(o.Parent), o.Name)
	case *fuseops.WriteFileOp:
		return f.fs.Write(uint64(o.Handle), o.Data, o.Offset)
	case *fuseops.SyncFileOp:
		return f.fs.Fsync(uint64(o.Handle))
	case *fuseops.FlushFileOp:
		// Nothing to do at close; ENOSYS tells the kernel to stop
		// sending FLUSH, one request less per close.
		return syscall.ENOSYS
	case *fuseops.FallocateOp:
		return f.fs.Fallocate(uint64(o.Handle), o.Mode, int64(o.Offset), int64(o.Length))
	case *fuseops.SetXattrOp:
		return f.fs.Setxattr(uint64(o.Inode), o.Name, o.Value, int(o.Flags))
	case *fuseops.RemoveXattrOp:
		return f.fs.Removexattr(uint64(o.Inode), o.Name)
	case *fuseops.SyncFSOp:
		return f.fs.SyncFS()
	}
	return syscall.ENOSYS
}

// cred returns the caller of the operation in ctx. The request header
// carries the gid that OpContext lacks; GetFuseContext reads only ctx.
func cred(ctx context.Context) Cred {
	uid, gid, _, err := new(fuse.MountedFileSystem).GetFuseContext(ctx)
	if err != nil {
		return Cred{}
	}
	return Cred{Uid: uid, Gid: gid}
}

// perm returns the permission bits of a mode from the library: the type
// bits it sets (MkDirOp carries a stray os.ModeDevice) are dropped.
func perm(m os.FileMode) uint32 {
	return fuse.ConvertGoMode(m) & 0o7777
}

func (f *fuseFS) SetInodeAttributes(_ context.Context, op *fuseops.SetInodeAttributesOp) error {
	in := SetAttrs{Uid: op.Uid, Gid: op.Gid, Size: op.Size, Atime: op.Atime, Mtime: op.Mtime}
	if op.Mode != nil {
		m := perm(*op.Mode)
		in.Mode = &m
	}
	if op.Handle != nil {
		h := uint64(*op.Handle)
		in.Handle = &h
	}
	a, err := f.fs.SetAttr(uint64(op.Inode), in)
	if err != nil {
		return err
	}
	op.Attributes = fuseAttr(&a)
	op.AttributesExpiration = f.expiry()
	return nil
}

func (f *fuseFS) MkDir(ctx context.Context, op *fuseops.MkDirOp) error {
	e, err := f.fs.Mkdir(uint64(op.Parent), op.Name, perm(op.Mode), cred(ctx))
	if err != nil {
		return err
	}
	op.Entry = f.entry(e)
	return nil
}

func (f *fuseFS) MkNode(ctx context.Context, op *fuseops.MkNodeOp) error {
	mode := fuse.ConvertGoMode(op.Mode)
	maj, min := op.Rdev>>8&0xfff, op.Rdev&0xff|op.Rdev>>12&0xfff00
	e, err := f.fs.Mknod(uint64(op.Parent), op.Name, mode, unix.Mkdev(maj, min), cred(ctx))
	if err != nil {
		return err
	}
	op.Entry = f.entry(e)
	return nil
}

func (f *fuseFS) CreateFile(ctx context.Context, op *fuseops.CreateFileOp) error {
	e, h, err := f.fs.Create(uint64(op.Parent), op.Name, perm(op.Mode), int(op.OpenFlags), cred(ctx))
	if err != nil {
		return err
	}
	op.Entry = f.entry(e)
	op.Handle = fuseops.HandleID(h)
	return nil
}

func (f *fuseFS) CreateSymlink(ctx context.Context, op *fuseops.CreateSymlinkOp) error {
	e, err := f.fs.Symlink(uint64(op.Parent), op.Name, op.Target, cred(ctx))
	if err != nil {
		return err
	}
	op.Entry = f.entry(e)
	return nil
}

func (f *fuseFS) CreateLink(_ context.Context, op *fuseops.CreateLinkOp) error {
	e, err := f.fs.Link(uint64(op.Target), uint64(op.Parent), op.Name)
	if err != nil {
		return err
	}
	op.Entry = f.entry(e)
	return nil
}

func (f *fuseFS) expiry() time.Time { return time.Now().Add(f.fs.Timeout()) }

func (f *fuseFS) entry(e Entry) fuseops.ChildInodeEntry {
	exp := f.expiry()
	return fuseops.ChildInodeEntry{
		Child:                fuseops.InodeID(e.ID),
		Attributes:           fuseAttr(&e.Attr),
		AttributesExpiration: exp,
		EntryExpiration:      exp,
	}
}

// fuseAttr converts attributes. FUSE carries rdev in the kernel's 32-bit
// new_encode_dev form.
func fuseAttr(a *Attr) fuseops.InodeAttributes {
	maj, min := unix.Major(a.Rdev), unix.Minor(a.Rdev)
	return fuseops.InodeAttributes{
		Size:  a.Size,
		Nlink: a.Nlink,
		Mode:  fuse.ConvertFileMode(a.Mode),
		Rdev:  min&0xff | maj<<8 | (min&^0xff)<<12,
		Atime: a.Atime,
		Mtime: a.Mtime,
		Ctime: a.Ctime,
		Uid:   a.Uid,
		Gid:   a.Gid,
	}
}

func (f *fuseFS) StatFS(_ context.Context, op *fuseops.StatFSOp) error {
	st, err := f.fs.StatFS()
	if err != nil {
		return err
	}
	op.BlockSize = uint32(st.Frsize)
	op.IoSize = uint32(st.Bsize)
	op.Blocks, op.BlocksFree, op.BlocksAvailable = st.Blocks, st.Bfree, st.Bavail
	op.Inodes, op.InodesFree = st.Files, st.Ffree
	return nil
}

func (f *fuseFS) LookUpInode(_ context.Context, op *fuseops.LookUpInodeOp) error {
	e, err := f.fs.Lookup(uint64(op.Parent), op.Name)
	if err == syscall.ENOENT {
		// A negative entry the kernel may cache.
		op.Entry = fuseops.ChildInodeEntry{EntryExpiration: f.expiry()}
		return nil
	}
	if err != nil {
		return err
	}
	op.Entry = f.entry(e)
	return nil
}

func (f *fuseFS) GetInodeAttributes(_ context.Context, op *fuseops.GetInodeAttributesOp) error {
	a, err := f.fs.GetAttr(uint64(op.Inode))
	if err != nil {
		return err
	}
	op.Attributes = fuseAttr(&a)
	op.AttributesExpiration = f.expiry()
	return nil
}

func (f *fuseFS) ForgetInode(_ context.Context, op *fuseops.ForgetInodeOp) error {
	f.fs.Forget(uint64(op.Inode), op.N)
	f.fs.Forgotten()
	return nil
}

func (f *fuseFS) BatchForget(_ context.Context, op *fuseops.BatchForgetOp) error {
	for _, e := range op.Entries {
		f.fs.Forget(uint64(e.Inode), e.N)
	}
	f.fs.Forgotten()
	return nil
}

// OpenDir is answered ENOSYS: the kernel then stops sending OPENDIR and
// RELEASEDIR, and opens directories itself with KEEP_CACHE and CACHE_DIR,
// so it keeps a listing across opens. That is right because layers change
// only through this mount, and the kernel drops its copy when it changes
// the directory itself (a create, remove or rename in it).
func (f *fuseFS) OpenDir(context.Context, *fuseops.OpenDirOp) error {
	return syscall.ENOSYS
}

func (f *fuseFS) ReadDir(_ context.Context, op *fuseops.ReadDirOp) error {
	ents, err := f.fs.ReadDir(uint64(op.Inode), uint64(op.Offset))
	if err != nil {
		return err
	}
	for _, e := range ents {
		n := fuseutil.WriteDirent(op.Dst[op.BytesRead:], fuseutil.Dirent{
			Offset: fuseops.DirOffset(e.Off),
			Inode:  fuseops.InodeID(e.Ino),
			Name:   e.Name,
			Type:   fuseutil.DirentType(e.Type),
		})
		if n == 0 {
			break
		}
		op.BytesRead += n
	}
	return nil
}

// ReadDirPlus answers entries with their attributes. Each entry but "."
// and ".." that reaches the kernel counts as a lookup, so a lookup that
// does not fit in the reply is given back at once.
func (f *fuseFS) ReadDirPlus(_ context.Context, op *fuseops.ReadDirPlusOp) error {
	dir := uint64(op.Inode)
	ents, err := f.fs.ReadDir(dir, uint64(op.Offset))
	if err != nil {
		return err
	}
	for _, e := range ents {
		d := fuseutil.DirentPlus{Dirent: fuseutil.Dirent{
			Offset: fuseops.DirOffset(e.Off),
			Inode:  fuseops.InodeID(e.Ino),
			Name:   e.Name,
			Type:   fuseutil.DirentType(e.Type),
		}}
		var looked *Entry
		if e.Name != "." && e.Name != ".." {
			le, err := f.fs.Lookup(dir, e.Name)
			if err != nil {
				continue // gone meanwhile
			}
			looked = &le
			d.Entry = f.entry(le)
			d.Dirent.Inode = fuseops.InodeID(le.ID)
		}
		n := fuseutil.WriteDirentPlus(op.Dst[op.BytesRead:], d)
		if n == 0 {
			if looked != nil {
				f.fs.Forget(looked.ID, 1)
			}
			break
		}
		op.BytesRead += n
	}
	return nil
}

func (f *fuseFS) OpenFile(_ context.Context, op *fuseops.OpenFileOp) error {
	h, err := f.fs.Open(uint64(op.Inode), int(op.OpenFlags))
	if err != nil {
		return err
	}
	op.Handle = fuseops.HandleID(h)
	// A file changes only through this mount (layers must not change
	// behind it), and the kernel's page cache follows those changes.
	op.KeepPageCache = true
	return nil
}

func (f *fuseFS) ReadFile(_ context.Context, op *fuseops.ReadFileOp) error {
	n, err := f.fs.Read(uint64(op.Handle), op.Dst, op.Offset)
	op.BytesRead = n
	return err
}

func (f *fuseFS) ReleaseFileHandle(_ context.Context, op *fuseops.ReleaseFileHandleOp) error {
	f.fs.Release(uint64(op.Handle))
	return nil
}

func (f *fuseFS) ReadSymlink(_ context.Context, op *fuseops.ReadSymlinkOp) error {
	t, err := f.fs.Readlink(uint64(op.Inode))
	op.Target = t
	return err
}

func (f *fuseFS) GetXattr(_ context.Context, op *fuseops.GetXattrOp) error {
	v, err := f.fs.Getxattr(uint64(op.Inode), op.Name)
	if err != nil {
		return err
	}
	op.BytesRead = len(v)
	if len(op.Dst) == 0 {
		return nil // a size query
	}
	if len(v) > len(op.Dst) {
		return syscall.ERANGE
	}
	copy(op.Dst, v)
	return nil
}

func (f *fuseFS) ListXattr(_ context.Context, op *fuseops.ListXattrOp) error {
	names, err := f.fs.Listxattr(uint64(op.Inode), op.OpContext.Uid == 0)
	if err != nil {
		return err
	}
	size := 0
	for _, n := range names {
		size += len(n) + 1
	}
	op.BytesRead = size
	if len(op.Dst) == 0 {
		return nil
	}
	if size > len(op.Dst) {
		return syscall.ERANGE
	}
	off := 0
	for _, n := range names {
		off += copy(op.Dst[off:], n)
		op.Dst[off] = 0
		off++
	}
	return nil
}

// connFd finds the connection's /dev/fuse fd, which the library does not
// show, and makes it non-blocking. It returns -1 unless the process has
// exactly one such fd.
func connFd() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	fd := -1
	for _, e := range ents {
		if t, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && t == "/dev/fuse" {
			if fd >= 0 {
				return -1
			}
			if fd, err = strconv.Atoi(e.Name()); err != nil {
				return -1
			}
		}
	}
	if fd < 0 || unix.SetNonblock(fd, true) != nil {
		return -1
	}
	return fd
}

// await returns when a request may be waiting: it polls without
// blocking for a while first, because the next request of a busy caller
// usually follows within microseconds, and a reader asleep in the kernel
// costs a wake-up per request (a context switch and, across CPUs, an
// interrupt), which on a virtual machine is the larger part of a small
// request's cost.
func (s *server) await() {
	pfd := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
	for start := time.Now(); time.Since(start) < s.spin; {
		if n, _ := unix.Poll(pfd, 0); n != 0 {
			return
		}
	}
	for {
		if _, err := unix.Poll(pfd, -1); err != unix.EINTR {
			return
		}
	}
}
