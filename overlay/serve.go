package overlay

// This file owns the FUSE connection: mounting it (package fusemount),
// the loop that reads requests from /dev/fuse and writes replies, and the
// notifications the daemon writes to the kernel. go-fuse's ProtocolServer
// decodes each request and encodes its reply (fuse.go); everything around
// it is ovlmount's, because go-fuse's own Server wakes a different parked
// reader for every request, which measured at 1.5 times the cost of this
// loop per request (docs/design.md).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/ovlmount/ovlmount/internal/fusemount"
	"golang.org/x/sys/unix"
)

// MountConfig says how to mount and serve an FS.
type MountConfig struct {
	// Source is the mount's source, as mountinfo shows it.
	Source string
	// Flags are mount(8) flag words: ro, nosuid, nodev, noexec,
	// noatime, and their opposites.
	Flags []string
	// AllowOther lets other users than the mounter use the mount.
	AllowOther bool
	// MaxWrite is the largest write request in bytes (0: 1 MiB).
	MaxWrite int
	// Workers bounds how many requests are served at once (at least 1).
	Workers int
	// Fd, when 0 or more, is a /dev/fuse connection someone else
	// mounted (mount.fuse3's /dev/fd/N), served as it is; the mount
	// directory is then unknown.
	Fd int
	// ErrorLog receives what cannot reach a caller as an errno.
	ErrorLog *log.Logger
	// Trace, when set, receives a line for every request served but
	// those the daemon declines on purpose or does not answer
	// (trace.go).
	Trace *log.Logger
}

// defaultMaxWrite is the write size asked for: FUSE's largest (256 pages).
const defaultMaxWrite = 1 << 20

// Conn is a live FUSE connection serving an FS.
type Conn struct {
	fd      int
	fs      *FS
	ps      *fuse.ProtocolServer
	errLog  *log.Logger
	bufSize int

	// spin is how long await polls before it sleeps: spinFor, or 0 when
	// the daemon may use a single CPU, where polling only keeps the
	// caller from running (readers then block in read(2)).
	spin    time.Duration
	workers int32

	spliced  atomic.Uint64 // read replies spliced (read.go)
	backings atomic.Int64  // passthrough backing files registered
	reqs     requestStats  // the requests served (stats.go)
	trace    *log.Logger   // MountConfig.Trace

	readers atomic.Int32  // goroutines serving the connection
	waiting atomic.Int32  // readers waiting for a request
	taken   atomic.Uint64 // requests read so far
	queued  atomic.Uint64 // of them, sampled, those behind which another waited
	cpus    int32         // readers that may run at once without waiting for a CPU
	keep    atomic.Int32  // readers that stay even when one waits: 1, or cpus under a backlog
	spareMu sync.Mutex
	spare   []*readerState // of readers that left, for the next (spareMu)
	parked  atomic.Bool    // the watcher waits on wake
	wake    chan struct{}
	done    chan struct{} // closed when the connection ends
	once    sync.Once
	wg      sync.WaitGroup

	// inited is closed once the kernel's INIT has been answered; initErr
	// says why not if the connection ended first.
	inited  chan struct{}
	initErr error
	// flags are the capabilities the INIT reply granted; proto the
	// protocol version it agreed on and kernelProto the kernel's, each
	// {major, minor}.
	flags       uint64
	proto       [2]uint32
	kernelProto [2]uint32
	// setxattrExt says that SETXATTR requests carry the longer
	// fuse_setxattr_in (trace.go).
	setxattrExt atomic.Bool
}

// Mount mounts fs at dir (unless cfg.Fd names a mounted connection) and
// serves it. It returns once the kernel's INIT has been answered: the
// mount is live then.
func (fs *FS) Mount(dir string, cfg MountConfig) (*Conn, error) {
	maxWrite := cfg.MaxWrite
	if maxWrite <= 0 {
		maxWrite = defaultMaxWrite
	}
	fd := cfg.Fd
	if fd < 0 {
		data := []string{"default_permissions", fmt.Sprintf("max_read=%d", maxRead(maxWrite))}
		if cfg.AllowOther {
			data = append(data, "allow_other")
		}
		var err error
		fd, err = fusemount.Mount(dir, fusemount.Options{Source: cfg.Source, Subtype: "ovlmount", Flags: cfg.Flags, Data: data})
		if err != nil {
			return nil, err
		}
	}
	c := fs.serve(fd, maxWrite, cfg)
	select {
	case <-c.inited:
		return c, nil
	case <-c.done:
		c.wg.Wait()
		unix.Close(fd)
		if c.initErr == nil {
			c.initErr = errors.New("the connection ended before INIT")
		}
		return nil, c.initErr
	}
}

// Spliced returns how many read replies went from a host file to the
// kernel without passing through the daemon's memory.
func (c *Conn) Spliced() uint64 { return c.spliced.Load() }

// maxRead is the largest read the kernel is asked to send: as large as a
// write, but small enough that a reply fits in a pipe, header included,
// so that it can be spliced (read.go); pipes hold at most pipe-max-size
// (1 MiB), root's too where CAP_SYS_RESOURCE is not granted.
func maxRead(maxWrite int) int {
	limit := 1 << 20
	if b, err := os.ReadFile("/proc/sys/fs/pipe-max-size"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			limit = n
		}
	}
	return min(maxWrite, limit-os.Getpagesize())
}

// Unmount ends the mount at dir, lazily if it is busy.
func Unmount(dir string) error { return fusemount.Unmount(dir) }

// Wait serves until the kernel ends the connection (unmount or abort)
// and every request in flight has been answered.
func (c *Conn) Wait() {
	c.wg.Wait()
	c.spareMu.Lock()
	for _, st := range c.spare {
		st.release()
	}
	c.spare = nil
	c.spareMu.Unlock()
	unix.Close(c.fd)
}

// serve starts serving connection fd.
func (fs *FS) serve(fd, maxWrite int, cfg MountConfig) *Conn {
	errLog := cfg.ErrorLog
	if errLog == nil {
		errLog = log.New(nopWriter{}, "", 0)
	}
	c := &Conn{
		fd: fd, fs: fs, errLog: errLog,
		// A request holds a header and a write of maxWrite bytes; a
		// reply a header and a read of as much.
		bufSize: maxWrite + 4096,
		spin:    spinFor,
		workers: int32(max(cfg.Workers, 1)),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		inited:  make(chan struct{}),
	}
	if runtime.NumCPU() < 2 {
		c.spin = 0
	}
	if c.spin > 0 {
		unix.SetNonblock(fd, true)
	}
	c.trace = cfg.Trace
	c.ps = fuse.NewProtocolServer(&rawFS{RawFileSystem: fuse.NewDefaultRawFileSystem(), fs: fs, c: c}, fs.mountOptions(maxWrite, errLog))
	fs.invalidate = c.invalidate
	c.cpus = int32(min(runtime.NumCPU(), int(c.workers)))
	c.keep.Store(1)
	c.wg.Add(2)
	c.readers.Store(1)
	go c.serveLoop()
	go c.watch()
	return c
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

// stallTick is how long every reader may be busy before the watcher adds
// one: long enough that a burst of fast requests never starts one, short
// against a disk read or a copy-up.
const stallTick = 5 * time.Millisecond

// sampleEvery: after one of this many requests it reads, a reader looks
// whether another is queued behind it (a poll, which costs too much to
// make for every request).
const sampleEvery = 16

// backlogMin is how many requests a tick must see, and half its samples
// find another queued, for the watcher to add readers for the other CPUs.
const backlogMin = 50

// pending reports whether a request is waiting to be read.
func (c *Conn) pending() bool {
	pfd := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLIN}}
	n, _ := unix.Poll(pfd, 0)
	return n > 0
}

// spinFor is how long a reader with nothing to do polls before it sleeps
// (await).
const spinFor = 10 * time.Microsecond

// yieldEvery is how often a busy reader passes through the scheduler.
const yieldEvery = 5 * time.Millisecond

// The FUSE opcodes the loop itself looks at.
const (
	opRead = 15
	opInit = 26
)

// spliceMin is the smallest read the loop answers with splice (read.go):
// below it, the copy costs less than the splices' system calls.
const spliceMin = 32 << 10

// rootAlias is the node id the loop gives requests about the root (id
// 1): go-fuse answers a name ".go-fuse-epoll-hack" looked up in node 1
// itself, which would hide a layer's object of that name.
const rootAlias = ^uint64(0) - 1

// serveLoop reads and serves requests until the connection ends, or until
// it is an extra reader and another reader is waiting.
//
// Why not a fixed pool of readers: the kernel hands each request to the
// reader that has waited longest, so with a pool every request lands on a
// thread the Go runtime has parked and must wake again, and that cost more
// than most operations themselves. So one goroutine reads and serves
// requests in turn, keeping its thread and P; a watcher adds a reader when
// no reader has taken a request for a whole tick (a disk read, a
// copy-up), up to workers, and extra readers leave once another is
// waiting for requests again, or after idleLeave without one. Several
// callers at once can also keep one reader busy with requests queued
// behind the one it serves; when most samples in a tick find that, the
// watcher adds readers up to the CPUs and keeps them for as long as it
// lasts (keep), since then a request seldom waits for a parked thread.
func (c *Conn) serveLoop() {
	defer c.wg.Done()
	st := c.readerState()
	in, inv, outv, p := st.in, st.inv, st.outv, st.p
	var yielded time.Duration // since clockBase
	for {
		c.waiting.Add(1)
		n, err := unix.Read(c.fd, in)
		if err == unix.EAGAIN {
			idle := !c.await()
			c.waiting.Add(-1)
			if idle && c.leave() {
				// An extra reader that has had nothing to do for
				// idleLeave: the burst that called it is over.
				st.release()
				return
			}
			continue
		}
		c.waiting.Add(-1)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			if err != nil && err != unix.ENODEV {
				// ENODEV is the end of the connection (unmount).
				c.errLog.Printf("reading a request: %v", err)
			}
			c.end(fmt.Errorf("the connection ended: %v", err))
			st.release()
			return
		}
		if c.spin > 0 && c.taken.Load()%sampleEvery == 0 && c.pending() {
			c.queued.Add(1)
		}
		c.taken.Add(1)
		if c.parked.CompareAndSwap(true, false) {
			c.wake <- struct{}{}
		}
		// The clock read that times the request tells when to yield.
		if now := c.handle(in[:n], inv, outv, p); now-yielded > yieldEvery {
			// The runtime takes a goroutine that has run for 10 ms
			// without passing through the scheduler for a CPU hog:
			// it takes the P away while the reader waits for a request
			// and keeps its monitor thread polling every 20 µs.
			runtime.Gosched()
			yielded = now
		}
		if c.waiting.Load() > 0 && c.leave() {
			c.putSpare(st)
			return
		}
	}
}

// readerState is what a reader serves with: a request buffer, a reply
// buffer (buffers.go) and a pipe for spliced replies. A reader that
// leaves keeps its state for the next one while a backlog lasts (spare),
// since the buffers of a new one fault their pages in again, and its
// pipe is a megabyte of the kernel's memory.
type readerState struct {
	in     []byte
	inv    [][]byte
	outv   [][]byte
	p      *pipe
	mapped [2]bool // in and outv[0] are mapped (buffers.go)
}

// release gives back what st holds. No reader may use it after.
func (st *readerState) release() {
	st.p.close()
	for i, b := range [2][]byte{st.in, st.outv[0]} {
		if st.mapped[i] {
			mapped.put(b)
		}
	}
}

// putSpare keeps the state of a reader that leaves for the next one, up
// to cpus states: as many as a backlog has readers come and go. The
// readers a stall adds (up to workers) are rare, and the buffers each
// kept would stay resident (the request and reply parts it touched) long
// after the stall, so past cpus a state is let go.
func (c *Conn) putSpare(st *readerState) {
	c.spareMu.Lock()
	if len(c.spare) < int(c.cpus) {
		c.spare = append(c.spare, st)
		st = nil
	}
	c.spareMu.Unlock()
	if st != nil {
		st.release()
	}
}

// trimSpares lets go of the spare states when the connection goes idle:
// a burst of requests is over, and the daemon's footprint should return
// to what its nodes take.
func (c *Conn) trimSpares() {
	c.spareMu.Lock()
	spare := c.spare
	c.spare = nil
	c.spareMu.Unlock()
	for _, st := range spare {
		st.release()
	}
}

// readerState returns a state a reader left, or a new one.
func (c *Conn) readerState() *readerState {
	c.spareMu.Lock()
	if n := len(c.spare); n > 0 {
		st := c.spare[n-1]
		c.spare = c.spare[:n-1]
		c.spareMu.Unlock()
		return st
	}
	c.spareMu.Unlock()
	st := &readerState{inv: [][]byte{nil}, outv: [][]byte{nil}, p: c.newPipe()}
	st.in, st.mapped[0] = mapped.get(c.bufSize)
	st.outv[0], st.mapped[1] = mapped.get(c.bufSize)
	return st
}

// handle serves one request read into req, replying through out, or,
// for a large read, through pipe p. It returns the time it ended, since
// clockBase.
func (c *Conn) handle(req []byte, inv, outv [][]byte, p *pipe) time.Duration {
	if c.trace != nil {
		return c.handleTraced(req, inv, outv, p)
	}
	_, _, _, end := c.serveCounted(req, inv, outv, p)
	return end
}

// serveCounted serves a request and counts it (stats.go). It returns the
// reply, nil if there was none or it was spliced (then spliced is set),
// the time taken and the time it ended, since clockBase.
func (c *Conn) serveCounted(req []byte, inv, outv [][]byte, p *pipe) (reply []byte, spliced bool, d, end time.Duration) {
	start := time.Since(clockBase)
	if len(req) < int(unsafe.Sizeof(fuse.InHeader{})) {
		c.errLog.Printf("a request of %d bytes, shorter than a header", len(req))
		return nil, false, 0, start
	}
	op := (*fuse.InHeader)(unsafe.Pointer(&req[0])).Opcode
	reply, spliced = c.serve(req, inv, outv, p)
	end = time.Since(clockBase)
	c.reqs.record(op, end-start, len(reply) >= 8 && binary.NativeEndian.Uint32(reply[4:8]) != 0)
	return reply, spliced, end - start, end
}

// serve serves a request, at least a header long, and returns its reply,
// nil if there was none or it was spliced (then spliced is set).
func (c *Conn) serve(req []byte, inv, outv [][]byte, p *pipe) (reply []byte, spliced bool) {
	hdr := (*fuse.InHeader)(unsafe.Pointer(&req[0]))
	if hdr.NodeId == 1 {
		hdr.NodeId = rootAlias
	}
	if hdr.Opcode == opRead && c.spliceRead(req, p) {
		return nil, true
	}
	if hdr.Opcode == opInit && len(req) >= 48 {
		// The kernel's version, for ovlmount stats: InitIn starts with
		// major and minor.
		c.kernelProto = [2]uint32{binary.NativeEndian.Uint32(req[40:44]), binary.NativeEndian.Uint32(req[44:48])}
	}
	inv[0] = req
	n, st := c.ps.HandleRequest(inv, outv)
	if !st.Ok() {
		c.errLog.Printf("a request the FUSE library could not decode: %v", st)
		return nil, false
	}
	if n == 0 {
		return nil, false // no reply (FORGET, an interrupted request)
	}
	reply = outv[0][:n]
	init := hdr.Opcode == opInit && c.initialized(reply)
	for {
		_, err := unix.Write(c.fd, reply)
		switch err {
		case nil:
			if init {
				if c.flags&fuse.CAP_PASSTHROUGH != 0 {
					c.fs.SetBacking(c)
				}
				close(c.inited)
			}
			return reply, false
		case unix.ENOENT:
			// The request was interrupted and is gone.
			return reply, false
		case unix.EINTR:
			continue
		case unix.ENODEV:
			return reply, false // the connection ended meanwhile
		}
		c.errLog.Printf("writing a reply: %v", err)
		return reply, false
	}
}

// initialized records the INIT reply, its status, the capabilities it
// granted and the protocol version, and reports whether it accepts the
// connection.
func (c *Conn) initialized(reply []byte) bool {
	status := int32(binary.NativeEndian.Uint32(reply[4:8]))
	if status != 0 {
		c.initErr = fmt.Errorf("INIT: %v", syscall.Errno(-status))
		return false
	}
	if len(reply) >= 16+int(unsafe.Sizeof(fuse.InitOut{})) {
		out := (*fuse.InitOut)(unsafe.Pointer(&reply[16]))
		c.flags = out.Flags64()
		c.proto = [2]uint32{out.Major, out.Minor}
		c.setxattrExt.Store(c.flags&fuse.CAP_SETXATTR_EXT != 0)
	}
	return true
}

// ProtocolVersion returns the FUSE protocol version the daemon speaks, as
// "MAJOR.MINOR": what its INIT reply offers a kernel that offers a newer
// one. A mount uses the lower of it and the kernel's.
func ProtocolVersion() string {
	ps := fuse.NewProtocolServer(fuse.NewDefaultRawFileSystem(), &fuse.MountOptions{Logger: log.New(nopWriter{}, "", 0)})
	const inSize = int(unsafe.Sizeof(fuse.InitIn{}))
	req := make([]byte, 40+inSize)
	binary.NativeEndian.PutUint32(req[0:4], uint32(len(req)))
	binary.NativeEndian.PutUint32(req[4:8], opInit)
	binary.NativeEndian.PutUint32(req[40:44], 7)
	binary.NativeEndian.PutUint32(req[44:48], ^uint32(0))
	out := make([]byte, 4096)
	n, st := ps.HandleRequest([][]byte{req}, [][]byte{out})
	if !st.Ok() || n < 16+int(unsafe.Sizeof(fuse.InitOut{})) || binary.NativeEndian.Uint32(out[4:8]) != 0 {
		return "unknown"
	}
	init := (*fuse.InitOut)(unsafe.Pointer(&out[16]))
	return fmt.Sprintf("%d.%d", init.Major, init.Minor)
}

// end marks the connection ended.
func (c *Conn) end(err error) {
	c.once.Do(func() {
		if c.initErr == nil {
			c.initErr = err
		}
		close(c.done)
	})
}

// leave reports whether the calling reader may stop: it may unless it is
// one of the keep that stay.
func (c *Conn) leave() bool {
	for {
		n := c.readers.Load()
		if n <= c.keep.Load() {
			return false
		}
		if c.readers.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// addReader starts another reader if fewer than max serve and none is
// waiting for a request.
func (c *Conn) addReader(max int32) {
	if c.waiting.Load() != 0 {
		return
	}
	if r := c.readers.Load(); r < max && c.readers.CompareAndSwap(r, r+1) {
		c.wg.Add(1)
		go c.serveLoop()
	}
}

// watch adds a reader when no reader has taken a request for a tick while
// none is waiting for one, keeps a reader per CPU while requests queue
// behind the one being served, and sleeps while the connection is idle.
func (c *Conn) watch() {
	defer c.wg.Done()
	last, lastQueued, quiet := c.taken.Load(), c.queued.Load(), 0
	for {
		select {
		case <-c.done:
			return
		case <-time.After(stallTick):
		}
		n, q := c.taken.Load(), c.queued.Load()
		if n != last {
			if n-last >= backlogMin && (q-lastQueued)*sampleEvery*2 >= n-last {
				// Requests wait for the readers: another CPU could
				// serve them.
				c.keep.Store(c.cpus)
				c.addReader(c.cpus)
			} else {
				c.keep.Store(1)
			}
			last, lastQueued, quiet = n, q, 0
			continue
		}
		if c.waiting.Load() == 0 {
			c.addReader(c.workers)
			continue
		}
		if quiet++; quiet < 100 {
			continue
		}
		// Idle: wait for the next request rather than tick. The
		// readers a backlog kept may leave (serveLoop), and the state
		// of those that left is let go.
		c.keep.Store(1)
		c.trimSpares()
		c.parked.Store(true)
		if c.taken.Load() != last && c.parked.CompareAndSwap(true, false) {
			continue
		}
		select {
		case <-c.done:
			return
		case <-c.wake:
		}
		quiet = 0
	}
}

// idleLeave is how long an extra reader waits for a request before it
// leaves: longer than the watcher's idle ticks (100 × stallTick), so that
// by then the watcher has let the readers of a backlog go (keep 1).
const idleLeave = time.Second

// await reports whether a request may be waiting; it returns false when
// none came for idleLeave while other readers serve too (the only reader
// waits as long as it takes). It polls without blocking for a while
// first, because the next request of a busy caller usually follows
// within microseconds, and a reader asleep in the kernel costs a wake-up
// per request (a context switch and, across CPUs, an interrupt), which on
// a virtual machine is the larger part of a small request's cost.
func (c *Conn) await() bool {
	pfd := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLIN}}
	for start := time.Now(); time.Since(start) < c.spin; {
		if n, _ := unix.Poll(pfd, 0); n != 0 {
			return true
		}
	}
	timeout := int(idleLeave / time.Millisecond)
	if c.readers.Load() <= 1 {
		timeout = -1
	}
	for {
		n, err := unix.Poll(pfd, timeout)
		if err != unix.EINTR {
			return n != 0 || err != nil
		}
	}
}

// notify writes a notification (code, one of fuse.NOTIFY_*, which go-fuse
// numbers negative as statuses) with body parts to the kernel.
func (c *Conn) notify(code int32, parts ...[]byte) error {
	size := 16
	for _, p := range parts {
		size += len(p)
	}
	hdr := make([]byte, 16)
	binary.NativeEndian.PutUint32(hdr[0:4], uint32(size))
	binary.NativeEndian.PutUint32(hdr[4:8], uint32(-code))
	iov := append([][]byte{hdr}, parts...)
	for {
		_, err := unix.Writev(c.fd, iov)
		if err != unix.EINTR {
			return err
		}
	}
}

// invalidate drops the kernel's cached attributes of node id, and with
// pages all its cached pages too (a directory's: its listing).
func (c *Conn) invalidate(id uint64, pages bool) {
	var b [24]byte
	binary.NativeEndian.PutUint64(b[0:8], id)
	if !pages {
		binary.NativeEndian.PutUint64(b[8:16], ^uint64(0)) // offset -1: attributes only
	} // else offset 0, length 0: every page
	if err := c.notify(fuse.NOTIFY_INVAL_INODE, b[:]); err != nil && err != unix.ENOENT {
		c.errLog.Printf("invalidating node %d: %v", id, err)
	}
}

// The ioctls on /dev/fuse that register a backing file for passthrough
// and drop the registration (FUSE_DEV_IOC_BACKING_OPEN, _CLOSE).
const (
	iocBackingOpen  = 0x4010e501
	iocBackingClose = 0x4004e502
)

// Open registers host file fd as a passthrough backing file and returns
// its id (Backing).
func (c *Conn) Open(fd int) (int32, error) {
	m := struct {
		fd      int32
		flags   uint32
		padding uint64
	}{fd: int32(fd)}
	id, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(c.fd), iocBackingOpen, uintptr(unsafe.Pointer(&m)))
	if e != 0 {
		return -1, e
	}
	c.backings.Add(1)
	return int32(id), nil
}

// Close drops backing id (Backing).
func (c *Conn) Close(id int32) {
	v := uint32(id)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(c.fd), iocBackingClose, uintptr(unsafe.Pointer(&v))); e != 0 {
		c.errLog.Printf("dropping passthrough backing %d: %v", id, e)
		return
	}
	c.backings.Add(-1)
}
