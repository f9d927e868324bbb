package overlay

import (
	"encoding/binary"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Reads the daemon serves (lower files, and upper files not passed
// through) go from the host file's page cache to the kernel without
// passing through the daemon's memory: the reply header is written into
// a pipe, the file's pages are spliced after it, and the pipe is spliced
// into /dev/fuse, one copy where reading into a buffer and writing it
// makes two. go-fuse's ProtocolServer cannot splice, so the loop answers
// large reads itself.

// pipe is a reader's pipe for spliced replies.
type pipe struct {
	r, w int
	cap  int // bytes it holds
}

// newPipe returns a pipe that holds a whole reply, or nil (the reads then
// go through ProtocolServer).
func (c *Conn) newPipe() *pipe {
	var fds [2]int
	if unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK) != nil {
		return nil
	}
	p := &pipe{r: fds[0], w: fds[1]}
	// A pipe may take at most pipe-max-size (1 MiB), for which maxRead
	// sizes the reads.
	n, err := unix.FcntlInt(uintptr(p.w), unix.F_SETPIPE_SZ, 16+maxRead(c.bufSize))
	if err != nil {
		n, err = unix.FcntlInt(uintptr(p.w), unix.F_GETPIPE_SZ, 0)
	}
	if err != nil {
		p.close()
		return nil
	}
	p.cap = n
	return p
}

func (p *pipe) close() {
	if p != nil {
		unix.Close(p.r)
		unix.Close(p.w)
	}
}

// drain empties the pipe after a reply that could not be sent whole.
func (p *pipe) drain() {
	buf := make([]byte, 64<<10)
	for {
		if n, err := unix.Read(p.r, buf); n <= 0 || err != nil {
			return
		}
	}
}

// spliceRead answers READ request req through pipe p and reports whether
// it did; when it did not, nothing has been sent and the request is
// served as any other.
func (c *Conn) spliceRead(req []byte, p *pipe) bool {
	if p == nil || len(req) < int(unsafe.Sizeof(fuse.ReadIn{})) {
		return false
	}
	in := (*fuse.ReadIn)(unsafe.Pointer(&req[0]))
	if in.Size < spliceMin {
		return false
	}
	fd, err := c.fs.ReadFd(in.Fh)
	if err != nil {
		return false
	}
	// The reply's length goes first: how much the file holds there.
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || int64(in.Offset) >= st.Size {
		return false
	}
	n := int(min(int64(in.Size), st.Size-int64(in.Offset)))
	if n < spliceMin || 16+n > p.cap {
		return false
	}
	var hdr [16]byte
	binary.NativeEndian.PutUint32(hdr[0:4], uint32(16+n))
	binary.NativeEndian.PutUint64(hdr[8:16], in.Unique)
	if k, err := unix.Write(p.w, hdr[:]); k != len(hdr) || err != nil {
		p.drain()
		return false
	}
	off := int64(in.Offset)
	for got := 0; got < n; {
		k, err := unix.Splice(fd, &off, p.w, nil, n-got, unix.SPLICE_F_MOVE)
		if err == unix.EINTR {
			continue
		}
		if err != nil || k == 0 {
			// The file shrank, or cannot be spliced: serve it by copy.
			p.drain()
			return false
		}
		got += int(k)
	}
	for {
		_, err := unix.Splice(p.r, nil, c.fd, nil, 16+n, unix.SPLICE_F_MOVE)
		switch err {
		case nil:
			c.spliced.Add(1)
			return true
		case unix.EINTR:
			continue
		case unix.ENOENT, unix.ENODEV:
			// Interrupted and gone, or the connection ended.
			p.drain()
			return true
		}
		// Nothing reached the kernel: answer by copy.
		p.drain()
		return false
	}
}
