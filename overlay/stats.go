package overlay

// Counters a running mount answers without stopping (ovlmount stats,
// SIGUSR1): the requests the loop served, by FUSE opcode, with their
// latency (serve.go counts them), and what the engine did, counted where
// it does it. Every counter is an atomic add and nothing else: a request
// costs two clock reads and two adds (about 90 ns on a virtual machine,
// against 6 µs or more for the request), of which the loop needed one
// clock read already; an engine event costs one add.

import (
	"math/bits"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// engineStats are the engine's counters (FS.stats).
type engineStats struct {
	// lookups counts FS.Lookup calls (LOOKUP requests and READDIRPLUS
	// entries); held, the names a lookup or a link resolved to a node
	// the kernel already held; negative, the lookups that found
	// nothing (rawFS.Lookup).
	lookups, held, negative atomic.Uint64
	// dirFdUsed counts the host calls made through a held directory fd
	// (dirfd.go), the first after it was opened included; dirFdOpened
	// the directories opened because none was held.
	dirFdUsed, dirFdOpened atomic.Uint64
	// copyUps counts objects copied up; copyUpBytes the data of the
	// regular files among them.
	copyUps, copyUpBytes atomic.Uint64
}

// copiedUp counts a copy-up of an object of type typ (S_IFMT bits) that
// holds size bytes.
func (s *engineStats) copiedUp(typ uint32, size int64) {
	s.copyUps.Add(1)
	if typ == unix.S_IFREG {
		s.copyUpBytes.Add(uint64(size))
	}
}

// The latency histogram: bucket 0 counts requests served in under 1 µs,
// bucket i in [2^(i-1), 2^i) µs, the last one everything slower than
// its lower bound (2^(histBuckets-2) µs, 33 s). Powers of two keep the
// bucket one instruction away from the duration, and a percentile read
// from them is within a factor of two, which is what telling a cached
// answer from a disk read or a copy-up needs.
const histBuckets = 27

// opSlots bounds the opcodes counted each on its own; slot 0, which no
// opcode uses, counts any other (CUSE_INIT, an opcode newer than this
// table).
const opSlots = 64

// clockBase is what requests are timed from: time.Since of a time that
// has a monotonic reading reads one clock, where time.Now reads two.
var clockBase = time.Now()

// opCounters are one opcode's counters. The count is the sum of the
// buckets.
type opCounters struct {
	ns      atomic.Uint64 // time taken, in total
	errors  atomic.Uint64 // replies with an error
	buckets [histBuckets]atomic.Uint64
}

// requestStats are the counters of the requests a connection served.
type requestStats [opSlots]opCounters

// record counts a request of opcode op served in d, failed if its reply
// was an error.
func (s *requestStats) record(op uint32, d time.Duration, failed bool) {
	if op >= opSlots {
		op = 0
	}
	c := &s[op]
	b := bits.Len64(uint64(d) / 1000)
	if b >= histBuckets {
		b = histBuckets - 1
	}
	c.buckets[b].Add(1)
	c.ns.Add(uint64(d))
	if failed {
		c.errors.Add(1)
	}
}

// snapshot returns the counters of every opcode served at least once,
// the most frequent first.
func (s *requestStats) snapshot() []RequestStats {
	var out []RequestStats
	for op := range s {
		c := &s[op]
		r := RequestStats{Op: opName(uint32(op)), Time: time.Duration(c.ns.Load()), Errors: c.errors.Load()}
		for i := range c.buckets {
			n := c.buckets[i].Load()
			if n == 0 {
				continue
			}
			b := Bucket{Count: n}
			if i < histBuckets-1 {
				b.UnderUS = 1 << i
			}
			r.Count += n
			r.Histogram = append(r.Histogram, b)
		}
		if r.Count > 0 {
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Count > out[j].Count })
	return out
}

// Stats is a snapshot of a mount's counters.
type Stats struct {
	// Protocol is the FUSE protocol version the connection speaks, the
	// lower of the daemon's and the kernel's (KernelProtocol), as
	// "MAJOR.MINOR".
	Protocol       string `json:"fuse_protocol"`
	KernelProtocol string `json:"kernel_fuse_protocol"`
	// Requests are the requests served by opcode, the most frequent
	// first.
	Requests []RequestStats `json:"requests"`
	// Lookups are the names resolved for the kernel (LOOKUP requests
	// and READDIRPLUS entries); LookupsHeld, the lookups and links that
	// found their node already held, LookupsNegative those that found
	// nothing.
	Lookups         uint64 `json:"lookups"`
	LookupsHeld     uint64 `json:"lookups_held"`
	LookupsNegative uint64 `json:"lookups_negative"`
	// DirFdsHeld are the directory fds nodes hold now; DirFdUses
	// counts the host calls made through a held one (the first after
	// it was opened included), DirFdOpens the directories opened
	// because none was held: a lookup in a directory whose fd is held
	// costs one call on a single name instead of a walk of its path.
	DirFdsHeld int64  `json:"dir_fds_held"`
	DirFdUses  uint64 `json:"dir_fd_uses"`
	DirFdOpens uint64 `json:"dir_fd_opens"`
	// CopyUps counts the objects copied up, CopyUpBytes the data of
	// the regular files among them.
	CopyUps     uint64 `json:"copy_ups"`
	CopyUpBytes uint64 `json:"copy_up_bytes"`
	// OpenHandles are the files open now; Backings the passthrough
	// backing files registered with the kernel now.
	OpenHandles int   `json:"open_handles"`
	Backings    int64 `json:"passthrough_backings"`
	// SplicedReads counts read replies spliced from a host file.
	SplicedReads uint64 `json:"spliced_reads"`
	// Nodes are the nodes the kernel holds, the root included.
	Nodes int `json:"nodes"`
}

// RequestStats are the counters of one FUSE opcode.
type RequestStats struct {
	Op     string        `json:"op"`
	Count  uint64        `json:"count"`
	Errors uint64        `json:"errors"`
	Time   time.Duration `json:"time_ns"` // in total
	// Histogram holds the buckets that are not empty, fastest first.
	Histogram []Bucket `json:"histogram"`
}

// Bucket is one bucket of a latency histogram: Count requests took less
// than UnderUS µs and at least half that, or, when UnderUS is 0, longer
// than any bucket bounds.
type Bucket struct {
	UnderUS uint64 `json:"under_us,omitempty"`
	Count   uint64 `json:"count"`
}

// Mean returns the mean time a request took.
func (r RequestStats) Mean() time.Duration {
	if r.Count == 0 {
		return 0
	}
	return r.Time / time.Duration(r.Count)
}

// Quantile returns the bound of the bucket that holds the q-quantile
// (0 < q <= 1) of the times taken: that fraction of the requests took
// less than under; under is 0 when they fall into the last bucket, which
// has no bound.
func (r RequestStats) Quantile(q float64) (under time.Duration) {
	want := uint64(q*float64(r.Count) + 0.5)
	var seen uint64
	for _, b := range r.Histogram {
		seen += b.Count
		if seen >= want {
			return time.Duration(b.UnderUS) * time.Microsecond
		}
	}
	return 0
}

// Stats returns the engine's counters.
func (fs *FS) Stats() Stats {
	fs.hmu.Lock()
	handles := len(fs.handles)
	fs.hmu.Unlock()
	return Stats{
		Lookups:         fs.stats.lookups.Load(),
		LookupsHeld:     fs.stats.held.Load(),
		LookupsNegative: fs.stats.negative.Load(),
		DirFdsHeld:      fs.dirFdCount.Load(),
		DirFdUses:       fs.stats.dirFdUsed.Load(),
		DirFdOpens:      fs.stats.dirFdOpened.Load(),
		CopyUps:         fs.stats.copyUps.Load(),
		CopyUpBytes:     fs.stats.copyUpBytes.Load(),
		OpenHandles:     handles,
		Nodes:           fs.NodeCount(),
	}
}

// opNames are the FUSE opcodes' names, from the kernel's
// include/uapi/linux/fuse.h (enum fuse_opcode) without the FUSE_ prefix.
var opNames = [...]string{
	1: "LOOKUP", 2: "FORGET", 3: "GETATTR", 4: "SETATTR", 5: "READLINK",
	6: "SYMLINK", 8: "MKNOD", 9: "MKDIR", 10: "UNLINK", 11: "RMDIR",
	12: "RENAME", 13: "LINK", 14: "OPEN", 15: "READ", 16: "WRITE",
	17: "STATFS", 18: "RELEASE", 20: "FSYNC", 21: "SETXATTR",
	22: "GETXATTR", 23: "LISTXATTR", 24: "REMOVEXATTR", 25: "FLUSH",
	26: "INIT", 27: "OPENDIR", 28: "READDIR", 29: "RELEASEDIR",
	30: "FSYNCDIR", 31: "GETLK", 32: "SETLK", 33: "SETLKW", 34: "ACCESS",
	35: "CREATE", 36: "INTERRUPT", 37: "BMAP", 38: "DESTROY", 39: "IOCTL",
	40: "POLL", 41: "NOTIFY_REPLY", 42: "BATCH_FORGET", 43: "FALLOCATE",
	44: "READDIRPLUS", 45: "RENAME2", 46: "LSEEK", 47: "COPY_FILE_RANGE",
	48: "SETUPMAPPING", 49: "REMOVEMAPPING", 50: "SYNCFS", 51: "TMPFILE",
	52: "STATX", 53: "COPY_FILE_RANGE_64",
}

// opName returns the name of opcode op; slot 0 of the counters is
// "other".
func opName(op uint32) string {
	if op == 0 {
		return "other"
	}
	if int(op) < len(opNames) && opNames[op] != "" {
		return opNames[op]
	}
	return "OPCODE_" + strconv.FormatUint(uint64(op), 10)
}

// Stats returns the connection's counters and its engine's. It is for
// a connection Mount returned: the protocol versions are those of its
// INIT.
func (c *Conn) Stats() Stats {
	s := c.fs.Stats()
	s.Protocol = version(c.proto)
	s.KernelProtocol = version(c.kernelProto)
	s.Requests = c.reqs.snapshot()
	s.Backings = c.backings.Load()
	s.SplicedReads = c.spliced.Load()
	return s
}

// version formats {major, minor} as "MAJOR.MINOR".
func version(v [2]uint32) string {
	return strconv.FormatUint(uint64(v[0]), 10) + "." + strconv.FormatUint(uint64(v[1]), 10)
}
