package stress

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/ovlmount/ovlmount/conformance"
	"golang.org/x/sys/unix"
)

// Step is one unit of a worker's sequence: operations performed together,
// on one side and then the other, sharing their handles. Shrinking keeps
// or drops whole steps.
type Step struct {
	Worker int
	Kind   string
	Ops    []conformance.Op
}

func (s Step) String() string {
	parts := make([]string, len(s.Ops))
	for i, o := range s.Ops {
		parts[i] = o.String()
	}
	return fmt.Sprintf("w%d %s: %s", s.Worker, s.Kind, strings.Join(parts, "; "))
}

// stepKind is a kind of step: its name (what -ops selects), how often it
// is drawn, and how the generator makes one.
type stepKind struct {
	name   string
	weight int
	make   func(g *generator) []conformance.Op
}

// OpSet names that are not step kinds but features of the layers.
const (
	featureLowerHardLinks = "lower-hardlinks" // hard links in the lower layers
	featureUpperHardLinks = "upper-hardlinks" // hard links in the upper layer
)

// groups are OpSet names that stand for several.
var groups = map[string][]string{
	// Step kinds that meet divergences ovlmount still has
	// (docs/reliability.md): RENAME_EXCHANGE of a directory with a
	// symlink once left the directory's new name answering lstat with
	// EIO (rename-exchange), not met again since. A worker stops at its
	// first divergence, so the CI run leaves these out (ciOps in
	// stress_test.go) to keep its workers going; the long run keeps
	// them.
	"pending": {"rename-exchange"},
	// Every hard link: in the layers, and made by link steps (recreate
	// makes one only when link is selected).
	"hardlinks": {"link", "link-chmod-unlink", featureLowerHardLinks, featureUpperHardLinks},
}

// OpSet selects step kinds and layer features by name.
type OpSet map[string]bool

// AllOps is every step kind and feature: the default.
func AllOps() OpSet {
	s := OpSet{featureLowerHardLinks: true, featureUpperHardLinks: true}
	for _, k := range stepKinds {
		s[k.name] = true
	}
	return s
}

// ParseOpSet reads a comma-separated list: "all", a step kind, a feature
// or a group adds; a name with a leading "-" removes. "all,-tmpfile" is
// every kind but tmpfile.
func ParseOpSet(spec string) (OpSet, error) {
	all := AllOps()
	s := OpSet{}
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, remove := strings.CutPrefix(item, "-")
		name = strings.TrimPrefix(name, "+")
		var names []string
		switch {
		case name == "all":
			for n := range all {
				names = append(names, n)
			}
		case groups[name] != nil:
			names = groups[name]
		case all[name]:
			names = []string{name}
		default:
			return nil, fmt.Errorf("unknown operation %q (known: all, %s, %s)", name, strings.Join(slices.Sorted(maps.Keys(groups)), ", "), strings.Join(all.names(), ", "))
		}
		for _, n := range names {
			if remove {
				delete(s, n)
			} else {
				s[n] = true
			}
		}
	}
	if len(s.stepKinds()) == 0 {
		return nil, fmt.Errorf("%q selects no step kind", spec)
	}
	return s, nil
}

func (s OpSet) names() []string { return slices.Sorted(maps.Keys(s)) }

// String renders s so that ParseOpSet reads it back: "all" with the names
// it lacks removed, or, when it lacks most, the names it has.
func (s OpSet) String() string {
	all := AllOps().names()
	if len(s) < len(all)/2 {
		return strings.Join(s.names(), ",")
	}
	out := []string{"all"}
	for _, n := range all {
		if !s[n] {
			out = append(out, "-"+n)
		}
	}
	return strings.Join(out, ",")
}

func (s OpSet) stepKinds() []stepKind {
	var out []stepKind
	for _, k := range stepKinds {
		if s[k.name] {
			out = append(out, k)
		}
	}
	return out
}

// stepKinds lists every kind of step. The weights favour what changes the
// namespace and copies up; recreate reuses a name as another type.
var stepKinds = []stepKind{
	{"create", 6, func(g *generator) []conformance.Op { return []conformance.Op{g.create(g.path())} }},
	{"mkdir", 5, func(g *generator) []conformance.Op { return []conformance.Op{conformance.Mkdir(g.path(), g.dirMode())} }},
	{"symlink", 4, func(g *generator) []conformance.Op {
		p := g.path()
		return []conformance.Op{conformance.MkSymlink(symlinkTarget(g.rng, p, g.pool.Paths), p)}
	}},
	{"mknod", 3, func(g *generator) []conformance.Op { return []conformance.Op{g.mknod(g.path())} }},
	{"link", 4, func(g *generator) []conformance.Op {
		p := g.path()
		return []conformance.Op{conformance.Link(p, g.other(p))}
	}},
	{"unlink", 6, func(g *generator) []conformance.Op { return []conformance.Op{conformance.Unlink(g.path())} }},
	{"rmdir", 4, func(g *generator) []conformance.Op { return []conformance.Op{conformance.Rmdir(g.path())} }},
	{"rename", 6, func(g *generator) []conformance.Op {
		p := g.path()
		return []conformance.Op{conformance.Rename(p, g.other(p))}
	}},
	{"rename-noreplace", 3, func(g *generator) []conformance.Op {
		p := g.path()
		return []conformance.Op{conformance.Rename2(p, g.other(p), unix.RENAME_NOREPLACE)}
	}},
	{"rename-exchange", 3, func(g *generator) []conformance.Op {
		p := g.path()
		return []conformance.Op{conformance.Rename2(p, g.other(p), unix.RENAME_EXCHANGE)}
	}},
	{"truncate", 4, func(g *generator) []conformance.Op {
		return []conformance.Op{conformance.Truncate(g.path(), pick[int64](g.rng, 0, 1, 100, 4096, 5000, 65536, 200000))}
	}},
	{"write", 6, func(g *generator) []conformance.Op {
		o := conformance.Write(g.path(), g.offset(), g.data())
		o.Flags = unix.O_NONBLOCK
		if g.rng.IntN(5) == 0 {
			o.Flags |= unix.O_TRUNC
		}
		return []conformance.Op{o}
	}},
	{"append", 2, func(g *generator) []conformance.Op {
		o := conformance.Append(g.path(), g.data())
		o.Flags = unix.O_NONBLOCK
		return []conformance.Op{o}
	}},
	{"mmap-write", 3, func(g *generator) []conformance.Op {
		return []conformance.Op{conformance.MmapWrite(g.path(), int64(g.rng.IntN(64)), randText(g.rng, 1+g.rng.IntN(16)))}
	}},
	{"setxattr", 4, func(g *generator) []conformance.Op {
		return []conformance.Op{conformance.Setxattr(g.path(), g.xattrName(), randText(g.rng, g.rng.IntN(12)),
			pick(g.rng, 0, 0, unix.XATTR_CREATE, unix.XATTR_REPLACE))}
	}},
	{"removexattr", 2, func(g *generator) []conformance.Op {
		return []conformance.Op{conformance.Removexattr(g.path(), g.xattrName())}
	}},
	{"chmod", 4, func(g *generator) []conformance.Op { return []conformance.Op{conformance.Chmod(g.path(), g.mode())} }},
	{"chown", 3, func(g *generator) []conformance.Op {
		return []conformance.Op{conformance.Chown(g.path(), pick(g.rng, 0, 1000, 1001, -1), pick(g.rng, 0, 1000, -1))}
	}},
	{"utimens", 2, func(g *generator) []conformance.Op {
		return []conformance.Op{conformance.UtimensNs(g.path(), g.utime(), g.utime())}
	}},
	{"read", 4, func(g *generator) []conformance.Op { return g.read(g.path()) }},
	{"stat", 3, func(g *generator) []conformance.Op { return []conformance.Op{conformance.Stat(g.path())} }},
	{"readlink", 1, func(g *generator) []conformance.Op { return []conformance.Op{conformance.Readlink(g.path())} }},
	{"readdir", 3, func(g *generator) []conformance.Op {
		return []conformance.Op{conformance.Readdir(pick(g.rng, g.pool.Dirs...))}
	}},
	{"xattrs", 2, func(g *generator) []conformance.Op {
		p := g.path()
		return []conformance.Op{conformance.Listxattr(p), conformance.Getxattr(p, g.xattrName())}
	}},
	// The name reuse the suite is about: whatever is at p goes, and
	// something of another type takes its name (and, on the host, often
	// its inode number).
	{"recreate", 10, func(g *generator) []conformance.Op {
		p := g.path()
		return []conformance.Op{conformance.Unlink(p), conformance.Rmdir(p), g.make(p)}
	}},
	// recreate while a handle (O_PATH: no open reaches the overlay) holds
	// the old object: on the host its inode is free for the new object to
	// reuse the number of, unless the overlay holds it too, as the kernel's
	// does.
	{"recreate-held", 4, func(g *generator) []conformance.Op {
		p := g.path()
		return append([]conformance.Op{
			conformance.Open(p, unix.O_PATH|unix.O_NOFOLLOW, 0).Keep("o"),
			conformance.Unlink(p), conformance.Rmdir(p), g.make(p), conformance.Stat(p), conformance.Readlink(p),
		}, append(g.read(p), conformance.Fstat("o"), conformance.Close("o"))...)
	}},
	// A file opened, then unlinked, then written and read through the
	// handle alone.
	{"open-unlinked", 2, func(g *generator) []conformance.Op {
		p := g.path()
		return []conformance.Op{
			conformance.Open(p, unix.O_RDWR|unix.O_NONBLOCK, 0).Keep("h"), conformance.Unlink(p),
			conformance.Pwrite("h", g.offset(), g.data()), conformance.Fstat("h"), conformance.Pread("h", 0, readSize), conformance.Close("h"),
		}
	}},
	{"tmpfile", 2, func(g *generator) []conformance.Op {
		return []conformance.Op{
			conformance.Open(pick(g.rng, g.pool.Dirs...), unix.O_TMPFILE|unix.O_RDWR, g.mode()).Keep("t"),
			conformance.Pwrite("t", 0, g.data()), conformance.Fstat("t"), conformance.Close("t"),
		}
	}},
	// Hard-link names after a chmod and an unlink of the other name.
	{"link-chmod-unlink", 2, func(g *generator) []conformance.Op {
		p := g.path()
		q := g.other(p)
		return append([]conformance.Op{conformance.Link(p, q), conformance.Chmod(q, g.mode()), conformance.Unlink(p), conformance.Stat(q)}, g.read(q)...)
	}},
	// A few operations as an unprivileged user: permission checks.
	{"as-user", 1, func(g *generator) []conformance.Op {
		var ops []conformance.Op
		for range 1 + g.rng.IntN(3) {
			p := g.path()
			o := pick(g.rng,
				g.create(p), conformance.Mkdir(p, g.dirMode()), conformance.Unlink(p), conformance.Chmod(p, g.mode()),
				conformance.Rename(p, g.other(p)), conformance.Setxattr(p, "user.a", "u", 0), g.writeOp(p))
			ops = append(ops, o.AsUser(1000, 1000))
		}
		return ops
	}},
	// Everything the worker owns, at one moment: types, modes, owners,
	// sizes, links, listings, xattr names, and which names share an inode.
	{"scan", 1, func(g *generator) []conformance.Op {
		var ops []conformance.Op
		for _, p := range g.pool.Paths {
			ops = append(ops, conformance.Stat(p), conformance.Listxattr(p))
		}
		for _, d := range g.pool.Dirs {
			ops = append(ops, conformance.Readdir(d))
		}
		return ops
	}},
}

// readSize is how much a read step reads: more than any file can grow to
// (writes end below 200000 + 20000 bytes, truncates at 200000).
const readSize = 1 << 19

// generator draws a worker's steps. It depends on the seed, the worker
// and the operation set only, never on results, so that a worker's
// sequence can be generated again to replay or shrink it.
type generator struct {
	rng   *rand.Rand
	pool  Pool
	ops   OpSet
	kinds []stepKind
	total int
}

func newGenerator(seed uint64, pool Pool, ops OpSet) *generator {
	g := &generator{rng: rand.New(rand.NewPCG(seed, uint64(pool.Worker)+1)), pool: pool, ops: ops, kinds: ops.stepKinds()}
	for _, k := range g.kinds {
		g.total += k.weight
	}
	return g
}

func (g *generator) next() Step {
	r := g.rng.IntN(g.total)
	for _, k := range g.kinds {
		if r < k.weight {
			return Step{Worker: g.pool.Worker, Kind: k.name, Ops: k.make(g)}
		}
		r -= k.weight
	}
	panic("unreachable")
}

// Steps returns the first n steps of worker w's sequence for plan.
func Steps(plan *Plan, w int, ops OpSet, n int) []Step {
	g := newGenerator(plan.Seed, plan.Pools[w], ops)
	out := make([]Step, n)
	for i := range out {
		out[i] = g.next()
	}
	return out
}

func (g *generator) path() string { return pick(g.rng, g.pool.Paths...) }

// other picks a second path for p: often in the same directory, so that
// renames and links replace siblings.
func (g *generator) other(p string) string {
	if g.rng.IntN(2) == 0 {
		dir := path.Dir(p)
		var sibs []string
		for _, q := range g.pool.Paths {
			if path.Dir(q) == dir {
				sibs = append(sibs, q)
			}
		}
		return pick(g.rng, sibs...)
	}
	return g.path()
}

// make creates an object of a random type at p.
func (g *generator) make(p string) conformance.Op {
	switch g.rng.IntN(9) {
	case 0, 1:
		return g.create(p)
	case 2, 3, 4:
		return conformance.Mkdir(p, g.dirMode())
	case 5, 6:
		return conformance.MkSymlink(symlinkTarget(g.rng, p, g.pool.Paths), p)
	case 7:
		return g.mknod(p)
	case 8:
		if g.ops["link"] {
			return conformance.Link(g.path(), p)
		}
	}
	return g.create(p)
}

// create makes a file: O_EXCL, or O_TRUNC over whatever is there. The
// latter follows a symlink at p, and creates its target if it is
// dangling: in the shared directory that target ("n3", "missing") would
// be a name every worker's links may point to, so there it does not
// follow.
func (g *generator) create(p string) conformance.Op {
	if g.rng.IntN(3) == 0 {
		flags := unix.O_CREAT | unix.O_TRUNC | unix.O_NONBLOCK
		if strings.HasPrefix(p, sharedDir+"/") {
			flags |= unix.O_NOFOLLOW
		}
		return conformance.Op{Kind: conformance.OpWrite, Path: p, Flags: flags, Mode: g.mode(), Data: g.data()}
	}
	return conformance.Create(p, g.mode(), g.data())
}

// mknod makes a fifo, a socket, /dev/null's device, or tries a whiteout
// (which the overlay refuses).
func (g *generator) mknod(p string) conformance.Op {
	switch g.rng.IntN(6) {
	case 0:
		return conformance.MkSocket(p)
	case 1:
		return conformance.Mknod(p, unix.S_IFCHR|0o666, 1, 3)
	case 2:
		return conformance.Mknod(p, unix.S_IFCHR, 0, 0)
	}
	return conformance.Mkfifo(p, pick[uint32](g.rng, 0o644, 0o600))
}

// writeOp writes at an offset without creating; O_NONBLOCK because p may be
// a fifo, whose open would otherwise wait for a reader forever.
func (g *generator) writeOp(p string) conformance.Op {
	o := conformance.Write(p, g.offset(), g.data())
	o.Flags = unix.O_NONBLOCK
	return o
}

// read opens p without waiting for a fifo's writer, and reads it.
func (g *generator) read(p string) []conformance.Op {
	return []conformance.Op{conformance.Open(p, unix.O_RDONLY|unix.O_NONBLOCK, 0).Keep("r"), conformance.Pread("r", 0, readSize), conformance.Close("r")}
}

func (g *generator) data() string {
	if g.rng.IntN(10) == 0 {
		return strings.Repeat(randText(g.rng, 10), 1+g.rng.IntN(2000))
	}
	return randText(g.rng, 1+g.rng.IntN(64))
}

func (g *generator) offset() int64 {
	switch g.rng.IntN(6) {
	case 0:
		return pick[int64](g.rng, 4096, 65536, 131072)
	case 1, 2:
		return 0
	}
	return int64(g.rng.IntN(200))
}

func (g *generator) mode() uint32 {
	return pick[uint32](g.rng, 0o644, 0o600, 0o755, 0o700, 0o444, 0o000, 0o666, 0o4755, 0o2755, 0o1777)
}

func (g *generator) dirMode() uint32 { return pick[uint32](g.rng, 0o755, 0o700, 0o777, 0o1777, 0o2755) }

func (g *generator) xattrName() string {
	// trusted.overlay.* from a user is stored escaped, as
	// trusted.overlay.overlay.*.
	return pick(g.rng, "user.a", "user.a", "user.b", "trusted.t", "trusted.overlay.esc")
}

var (
	tPast   = time.Date(2010, 10, 10, 10, 10, 10, 101010101, time.UTC).UnixNano()
	tFuture = time.Date(2035, 5, 5, 5, 5, 5, 5, time.UTC).UnixNano()
)

func (g *generator) utime() int64 {
	return pick(g.rng, tPast, tFuture, conformance.UtimeOmit, conformance.UtimeNow)
}
