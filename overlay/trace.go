package overlay

// -d: a line for each request the daemon serves, saying what the overlay
// did: the operation, its node (id, and path as the engine knows it), the
// names and handle it carries, the result (an errno's name) and the time
// taken, for example
//
//	LOOKUP node 1 "/" name "etc": OK node 7, 18µs
//
// Requests the daemon declines on purpose (FLUSH and OPENDIR, answered
// ENOSYS so that the kernel stops sending them) and those that get no
// reply (FORGET, INTERRUPT) get no line. The request is read from its
// bytes, in the kernel's layout (include/uapi/linux/fuse.h). With -d off
// the loop pays one branch for all of it (Conn.handle).

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The FUSE opcodes the trace reads more of than the header (serve.go
// names opRead and opInit), and those it says nothing of.
const (
	opLookup      = 1
	opForget      = 2
	opSymlink     = 6
	opMknod       = 8
	opMkdir       = 9
	opUnlink      = 10
	opRmdir       = 11
	opRename      = 12
	opLink        = 13
	opOpen        = 14
	opWrite       = 16
	opRelease     = 18
	opFsync       = 20
	opSetxattr    = 21
	opGetxattr    = 22
	opRemovexattr = 24
	opFlush       = 25
	opOpendir     = 27
	opReleasedir  = 29
	opCreate      = 35
	opInterrupt   = 36
	opNotifyReply = 41
	opBatchForget = 42
	opFallocate   = 43
	opRename2     = 45
	opLseek       = 46
	opTmpfile     = 51
)

// Sizes in the kernel's layout: the request and reply headers, an entry
// reply (struct fuse_entry_out), and the open flag of a passthrough open.
const (
	inHeaderSize     = 40
	outHeaderSize    = 16
	entryOutSize     = 128
	fopenPassthrough = 1 << 7
)

// untraced says which requests get no line.
func untraced(op uint32) bool {
	switch op {
	case opFlush, opOpendir, opReleasedir, opForget, opBatchForget, opInterrupt, opNotifyReply:
		return true
	}
	return false
}

// handleTraced is handle with -d: it serves req and logs what was done.
func (c *Conn) handleTraced(req []byte, inv, outv [][]byte, p *pipe) time.Duration {
	if len(req) < inHeaderSize || untraced(binary.NativeEndian.Uint32(req[4:8])) {
		_, _, _, end := c.serveCounted(req, inv, outv, p)
		return end
	}
	// Described before it is served: a rename or an unlink changes the
	// paths, and the loop rewrites the root's node id.
	op, what := c.describe(req)
	reply, spliced, d, end := c.serveCounted(req, inv, outv, p)
	if d >= time.Microsecond {
		d = d.Round(time.Microsecond)
	}
	c.trace.Printf("%s: %s, %v", what, c.result(op, reply, spliced), d)
	return end
}

// describe returns the opcode of request req and says what it asks.
func (c *Conn) describe(req []byte) (uint32, string) {
	le := binary.NativeEndian
	op, id := le.Uint32(req[4:8]), le.Uint64(req[16:24])
	in := req[inHeaderSize:]
	var b strings.Builder
	b.WriteString(opName(op))
	c.node(&b, id)
	// after returns the body past a fixed part of n bytes.
	after := func(n int) []byte {
		if len(in) < n {
			return nil
		}
		return in[n:]
	}
	switch op {
	case opLookup, opUnlink, opRmdir, opRemovexattr:
		labelled(&b, in, "name")
	case opSymlink:
		labelled(&b, in, "name", "target")
	case opMknod, opCreate:
		labelled(&b, after(16), "name")
	case opMkdir, opGetxattr:
		labelled(&b, after(8), "name")
	case opSetxattr:
		// struct fuse_setxattr_in grew with SETXATTR_EXT.
		n := 8
		if c.setxattrExt.Load() {
			n = 16
		}
		labelled(&b, after(n), "name")
	case opLink:
		labelled(&b, after(8), "name")
		if len(in) >= 8 {
			b.WriteString(", a link to")
			c.node(&b, le.Uint64(in[0:8]))
		}
	case opRename, opRename2:
		n := 8
		if op == opRename2 {
			n = 16
		}
		if len(in) < n {
			break
		}
		s := cstrings(in[n:], 2)
		if len(s) < 2 {
			break
		}
		fmt.Fprintf(&b, " name %q to", s[0])
		c.node(&b, le.Uint64(in[0:8]))
		fmt.Fprintf(&b, " name %q", s[1])
		if op == opRename2 && le.Uint32(in[8:12]) != 0 {
			fmt.Fprintf(&b, " flags %#x", le.Uint32(in[8:12]))
		}
	case opOpen:
		if len(in) >= 4 {
			fmt.Fprintf(&b, " flags %#o", le.Uint32(in[0:4]))
		}
	case opRead, opWrite:
		// fuse_read_in and fuse_write_in: fh, offset, size.
		if len(in) >= 20 {
			fmt.Fprintf(&b, " fh %d, %d bytes at %d", le.Uint64(in[0:8]), le.Uint32(in[16:20]), le.Uint64(in[8:16]))
		}
	case opRelease, opFsync, opFallocate, opLseek:
		if len(in) >= 8 {
			fmt.Fprintf(&b, " fh %d", le.Uint64(in[0:8]))
		}
	}
	return op, b.String()
}

// node writes " node ID", and the node's path when the engine holds it.
func (c *Conn) node(b *strings.Builder, id uint64) {
	if id == 0 {
		return
	}
	fmt.Fprintf(b, " node %d", id)
	if p, ok := c.fs.pathOf(id); ok {
		fmt.Fprintf(b, " %q", p)
	}
}

// labelled writes the NUL-terminated strings at the start of in, each after
// its label.
func labelled(b *strings.Builder, in []byte, labels ...string) {
	for i, s := range cstrings(in, len(labels)) {
		fmt.Fprintf(b, " %s %q", labels[i], s)
	}
}

// cstrings returns up to n NUL-terminated strings from the start of in.
func cstrings(in []byte, n int) []string {
	var out []string
	for len(out) < n {
		i := strings.IndexByte(string(in), 0)
		if i < 0 {
			break
		}
		out = append(out, string(in[:i]))
		in = in[i+1:]
	}
	return out
}

// result says how request op ended: its reply, spliced if a read's reply
// was spliced, nil if there was none.
func (c *Conn) result(op uint32, reply []byte, spliced bool) string {
	if spliced {
		return "OK, spliced"
	}
	if len(reply) < outHeaderSize {
		return "no reply"
	}
	le := binary.NativeEndian
	if st := int32(le.Uint32(reply[4:8])); st != 0 {
		return errnoName(syscall.Errno(-st))
	}
	out := reply[outHeaderSize:]
	switch op {
	case opLookup, opMknod, opMkdir, opSymlink, opLink:
		if len(out) < 8 {
			break
		}
		if id := le.Uint64(out[0:8]); id != 0 {
			return fmt.Sprintf("OK node %d", id)
		}
		// A negative entry, which the kernel caches.
		return "ENOENT"
	case opCreate, opTmpfile:
		if len(out) < entryOutSize+16 {
			break
		}
		return fmt.Sprintf("OK node %d", le.Uint64(out[0:8])) + openReply(out[entryOutSize:])
	case opOpen:
		if len(out) >= 16 {
			return "OK" + openReply(out)
		}
	case opRead:
		return fmt.Sprintf("OK, %d bytes", len(out))
	case opWrite:
		if len(out) >= 4 {
			return fmt.Sprintf("OK, %d bytes", le.Uint32(out[0:4]))
		}
	case opInit:
		return fmt.Sprintf("OK, FUSE protocol %s (the kernel's %s)", version(c.proto), version(c.kernelProto))
	}
	return "OK"
}

// openReply describes an open reply (struct fuse_open_out): the handle, and
// whether the kernel reaches the file's data itself.
func openReply(out []byte) string {
	s := fmt.Sprintf(" fh %d", binary.NativeEndian.Uint64(out[0:8]))
	if binary.NativeEndian.Uint32(out[8:12])&fopenPassthrough != 0 {
		s += ", passthrough"
	}
	return s
}

// errnoName returns the name of errno e ("ENOENT").
func errnoName(e syscall.Errno) string {
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return fmt.Sprintf("errno %d", int(e))
}

// pathOf returns node id's path in the merged tree as the engine knows
// it ("/" for the root); ok is false if the engine holds no such node.
func (fs *FS) pathOf(id uint64) (p string, ok bool) {
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	n, ok := fs.nodes.Get(nodeID(id))
	if !ok {
		return "", false
	}
	return "/" + n.path(), true
}

// Describe says how the engine serves its stack, for -d to log at start:
// the layers, the forms it writes in the upper layer, inode numbers, and
// its options.
func (fs *FS) Describe() []string {
	var lines []string
	for i, l := range fs.stack {
		kind := "lower"
		if l.Upper {
			kind = "upper"
		}
		lines = append(lines, fmt.Sprintf("layer %d: %s %s (device %d:%d)", i, kind, l.Path, unix.Major(l.Dev), unix.Minor(l.Dev)))
	}
	if fs.upper != nil {
		wh := "AUFS .wh. files (mknod refused)"
		if fs.charWhiteouts {
			wh = "char 0/0 devices"
		}
		lines = append(lines, fmt.Sprintf("upper layer: whiteouts as %s, overlay xattrs %s*", wh, fs.xattrs))
	}
	ino := "xino: the layer's index in the high bits"
	switch {
	case fs.scheme.SameFS():
		ino = "the layers' own (one filesystem)"
	case fs.scheme.MayCollide():
		ino = "the layers' own, which may collide (xino off)"
	}
	if fs.opts.Ino32 {
		ino += ", 32 bits"
	}
	lines = append(lines, "inode numbers: "+ino)
	o := fs.opts
	onOff := func(on bool) string {
		if on {
			return "on"
		}
		return "off"
	}
	mapped := func(m IDMap) bool { return len(m.Ranges) > 0 || m.Squash != nil }
	return append(lines, fmt.Sprintf("engine: cache timeout %ss, acl %s, passthrough %s, fsync %s, static_nlink %s, xattr_permissions %d, owners mapped %s",
		strconv.FormatFloat(o.Timeout.Seconds(), 'f', -1, 64), onOff(o.ACL), onOff(o.Passthrough && mayRegisterBacking()), onOff(!o.NoFsync), onOff(o.StaticNlink), o.XattrPermissions, onOff(mapped(o.UIDs) || mapped(o.GIDs))))
}
