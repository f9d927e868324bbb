package stress

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/ovlmount/ovlmount/conformance"
	"golang.org/x/sys/unix"
)

// sharedDir is the one directory every worker creates names in, each with
// its own prefix: its copy-up, listing and size see several processes at
// once. It exists in the lower layers only, so the first creation in it,
// by whichever worker comes first, copies it up.
const sharedDir = "common"

// Layers of a plan, by index: the upper layer, then the lowers top first.
const (
	upperLayer = iota
	topLower
	bottomLower
	numLayers
)

// layerNames are the directory names conformance.Spec.Build gives the
// layers, by index.
var layerNames = [numLayers]string{"upper", "lower0", "lower1"}

// structDir is a directory every worker's namespace has, at rel below the
// worker's own directory, built so that operations in it hit one way
// layers merge.
type structDir struct {
	rel    string // "" is the worker's directory itself
	in     [numLayers]bool
	opaque [numLayers]conformance.Opaque
	// whiteouts marks the layers where entries may be whiteouts: the
	// directory merges with a layer below there. (In a directory that
	// merges with nothing the kernel lists whiteouts that lstat cannot
	// find, a quirk ovlmount leaves out on purpose.)
	whiteouts [numLayers]bool
	// xwhiteouts marks the layer whose entries may be xwhiteouts (its
	// directory carries overlay.opaque=x there).
	xwhiteouts int
}

var structure = []structDir{
	// The worker's own directory, merged through all three layers.
	{rel: "", in: [3]bool{true, true, true}, whiteouts: [3]bool{true, true, false}, xwhiteouts: -1},
	// Merged through all three.
	{rel: "m", in: [3]bool{true, true, true}, whiteouts: [3]bool{true, true, false}, xwhiteouts: -1},
	// In the lowers only: copied up by the first change inside.
	{rel: "lo", in: [3]bool{false, true, true}, whiteouts: [3]bool{false, true, false}, xwhiteouts: -1},
	// Opaque in the upper layer, over a lower directory it hides.
	{rel: "op", in: [3]bool{true, false, true}, opaque: [3]conformance.Opaque{upperLayer: conformance.OpaqueTrusted}, xwhiteouts: -1},
	// In the upper layer only.
	{rel: "up", in: [3]bool{true, false, false}, xwhiteouts: -1},
	// Merged, one level down.
	{rel: "m/s", in: [3]bool{true, true, false}, whiteouts: [3]bool{true, false, false}, xwhiteouts: -1},
	// Merged, with xwhiteouts (overlay.opaque=x) in the top lower.
	{rel: "xw", in: [3]bool{false, true, true}, opaque: [3]conformance.Opaque{topLower: conformance.OpaqueXWhiteouts},
		whiteouts: [3]bool{false, true, false}, xwhiteouts: topLower},
}

// sharedStruct is sharedDir's shape: in both lowers, merged.
var sharedStruct = structDir{rel: sharedDir, in: [3]bool{false, true, true}, whiteouts: [3]bool{false, true, false}, xwhiteouts: -1}

// Names in each directory of a namespace: leaves, and the children of
// the first two leaves (which are directories in some layers).
var (
	leafNames  = []string{"n0", "n1", "n2", "n3", "n4"}
	childNames = []string{"c0", "c1"}
)

// withChildren reports whether leaf name in a directory gets children:
// deep names under leaves of the worker's directory, of m and of the
// shared directory are enough to reuse directory names with contents.
func withChildren(dirRel, leaf string) bool {
	return (leaf == "n0" || leaf == "n1") && (dirRel == "" || dirRel == "m" || dirRel == sharedDir)
}

// Pool is one worker's namespace: the paths its operations name. Nothing
// else in the tree is touched by the worker, and nothing in the pool by
// anyone else, so the results of its operations do not depend on the
// other workers.
type Pool struct {
	Worker int
	// Prefix is the worker's directory, and in sharedDir the prefix of its
	// names (Prefix + "-").
	Prefix string
	Paths  []string // parents before children
	Dirs   []string // paths listed by readdir steps, sharedDir among them
}

// Hole makes a sparse file: Build writes "end" at At in the file at Path of
// Layer, past its content, and restores its times.
type Hole struct {
	Layer string
	Path  string
	At    int64
	Mtime time.Time
}

// Plan is what follows from a seed: the layers and each worker's
// namespace.
type Plan struct {
	Seed  uint64
	Procs int
	Spec  conformance.Spec
	Holes []Hole
	Pools []Pool
}

// Times given to layer objects: fixed, so that builds are reproducible
// and a copy-up that loses a time shows.
var layerTimes = []time.Time{
	conformance.DefaultMtime,
	time.Date(2019, 7, 8, 9, 10, 11, 121314151, time.UTC),
	time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC),
}

// NewPlan generates the layers and namespaces of a round with procs
// workers; ops says whether the layers hold hard links.
func NewPlan(seed uint64, procs int, ops OpSet) *Plan {
	g := &planGen{rng: rand.New(rand.NewPCG(seed, 0x5eed_1a7e))}
	g.hardLinks[upperLayer] = ops[featureUpperHardLinks]
	g.hardLinks[topLower] = ops[featureLowerHardLinks]
	g.hardLinks[bottomLower] = ops[featureLowerHardLinks]
	p := &Plan{Seed: seed, Procs: procs}
	for w := range procs {
		p.Pools = append(p.Pools, g.namespace(w))
	}
	p.Spec = conformance.Spec{Upper: g.layers[upperLayer], Lowers: []conformance.Layer{g.layers[topLower], g.layers[bottomLower]}}
	// A lower-only shared directory needs no node of its own when a
	// worker put something in it, but must exist even if none did.
	for _, l := range []int{topLower, bottomLower} {
		p.Spec.Lowers[l-1] = append(conformance.Layer{{Path: sharedDir, Kind: conformance.Dir, Mode: 0o755}}, p.Spec.Lowers[l-1]...)
	}
	p.Holes = g.holes
	return p
}

type planGen struct {
	rng       *rand.Rand
	hardLinks [numLayers]bool // whether layers may hold hard links
	layers    [numLayers]conformance.Layer
	holes     []Hole
	// files lists, per layer, the worker's regular files so far: hard link
	// targets, which must stay within the worker's namespace.
	files [numLayers][]string
}

func (g *planGen) namespace(w int) Pool {
	prefix := fmt.Sprintf("w%d", w)
	pool := Pool{Worker: w, Prefix: prefix}
	g.files = [numLayers][]string{}
	type leafDir struct {
		s    structDir
		path string
	}
	var dirs []leafDir
	for _, s := range structure {
		p := path.Join(prefix, s.rel)
		pool.Paths = append(pool.Paths, p)
		pool.Dirs = append(pool.Dirs, p)
		for l := range numLayers {
			if s.in[l] {
				g.layers[l] = append(g.layers[l], g.dirNode(p, s.opaque[l]))
			}
		}
		dirs = append(dirs, leafDir{s, p})
	}
	dirs = append(dirs, leafDir{sharedStruct, sharedDir})
	pool.Dirs = append(pool.Dirs, sharedDir)
	for _, d := range dirs {
		for _, leaf := range leafNames {
			name := leaf
			if d.path == sharedDir {
				name = prefix + "-" + leaf
			}
			p := d.path + "/" + name
			pool.Paths = append(pool.Paths, p)
			isDir := g.leaf(p, d.s)
			if !withChildren(d.s.rel, leaf) {
				continue
			}
			pool.Dirs = append(pool.Dirs, p)
			for _, c := range childNames {
				cp := p + "/" + c
				pool.Paths = append(pool.Paths, cp)
				for l := numLayers - 1; l >= 0; l-- {
					if isDir[l] {
						g.child(cp, l)
					}
				}
			}
		}
	}
	return pool
}

func (g *planGen) dirNode(p string, opaque conformance.Opaque) conformance.Node {
	n := conformance.Node{Path: p, Kind: conformance.Dir, Opaque: opaque, Mode: pick[os.FileMode](g.rng, 0o755, 0o755, 0o775, 0o700, 0o1777, 0o2755)}
	g.meta(&n)
	return n
}

// meta gives n an owner, a time and sometimes xattrs.
func (g *planGen) meta(n *conformance.Node) {
	if g.rng.IntN(5) == 0 {
		n.UID, n.GID = 1000, 1000
	}
	n.Mtime = pick(g.rng, layerTimes...)
	if (n.Kind == conformance.File || n.Kind == conformance.Dir) && g.rng.IntN(3) == 0 {
		n.Xattrs = map[string]string{}
		for _, name := range []string{"user.a", "user.b", "trusted.t"} {
			if g.rng.IntN(2) == 0 {
				n.Xattrs[name] = randText(g.rng, g.rng.IntN(12))
			}
		}
	}
}

// leaf generates the object at p, in the directory s, in every layer s is
// in, bottom first, and reports in which layers it is a directory.
func (g *planGen) leaf(p string, s structDir) [numLayers]bool {
	var isDir [numLayers]bool
	below := false // something is at p in a lower layer
	for l := numLayers - 1; l >= 0; l-- {
		if !s.in[l] {
			continue
		}
		type choice struct {
			weight int
			kind   conformance.Kind
		}
		choices := []choice{{30, -1}, {25, conformance.File}, {12, conformance.Dir}, {8, conformance.Symlink},
			{4, conformance.Fifo}, {2, conformance.CharDev}}
		if g.hardLinks[l] {
			choices = append(choices, choice{6, conformance.HardLink})
		}
		if s.whiteouts[l] {
			choices = append(choices, choice{10, conformance.Whiteout})
		}
		if s.xwhiteouts == l {
			choices = append(choices, choice{5, conformance.XWhiteout})
		}
		total := 0
		for _, c := range choices {
			total += c.weight
		}
		r := g.rng.IntN(total)
		kind := conformance.Kind(-1)
		for _, c := range choices {
			if r < c.weight {
				kind = c.kind
				break
			}
			r -= c.weight
		}
		if kind < 0 {
			continue
		}
		isDir[l] = g.object(p, l, kind, below)
		below = true
	}
	return isDir
}

// child generates the object at p, below a leaf that is a directory in
// layer l.
func (g *planGen) child(p string, l int) {
	kind := pick(g.rng, -1, -1, -1, conformance.File, conformance.File, conformance.File, conformance.Dir,
		conformance.Symlink, conformance.Fifo, conformance.HardLink)
	if kind == conformance.HardLink && !g.hardLinks[l] {
		kind = conformance.File
	}
	if kind >= 0 {
		g.object(p, l, kind, false)
	}
}

// object adds a node of kind at p to layer l and reports whether it is a
// directory. below says whether a lower layer has something at p, which
// an opaque directory then hides.
func (g *planGen) object(p string, l int, kind conformance.Kind, below bool) bool {
	n := conformance.Node{Path: p, Kind: kind}
	switch kind {
	case conformance.HardLink:
		if len(g.files[l]) == 0 {
			return g.object(p, l, conformance.File, below)
		}
		n.Target = pick(g.rng, g.files[l]...)
	case conformance.File:
		n.Content = g.content()
		n.Mode = pick[os.FileMode](g.rng, 0o644, 0o644, 0o600, 0o755, 0o444, 0o4755, 0o2755)
		g.meta(&n)
		g.files[l] = append(g.files[l], p)
		if g.rng.IntN(8) == 0 {
			g.holes = append(g.holes, Hole{Layer: layerNames[l], Path: p, At: pick[int64](g.rng, 65536, 200000), Mtime: n.Mtime})
		}
	case conformance.Dir:
		n = g.dirNode(p, conformance.NotOpaque)
		if below && g.rng.IntN(3) == 0 {
			n.Opaque = conformance.OpaqueTrusted
		}
	case conformance.Symlink:
		n.Target = symlinkTarget(g.rng, p, nil)
		g.meta(&n)
	case conformance.Fifo:
		n.Mode = pick[os.FileMode](g.rng, 0o644, 0o600)
		g.meta(&n)
	case conformance.CharDev:
		// Only /dev/null's number: opening it through the overlay must do
		// what opening /dev/null does.
		n.Major, n.Minor, n.Mode = 1, 3, 0o666
	}
	g.layers[l] = append(g.layers[l], n)
	return n.Kind == conformance.Dir
}

// content is a file's data: mostly short text, sometimes several pages.
func (g *planGen) content() string {
	switch g.rng.IntN(8) {
	case 0:
		return ""
	case 1:
		return strings.Repeat(randText(g.rng, 16), 1+g.rng.IntN(1200))
	}
	return randText(g.rng, 1+g.rng.IntN(100))
}

// symlinkTarget is what a symlink at p points to: a pool path below its
// own directory (candidates from pool; a leaf name if nil), or a dangling
// name. Never "." or "..": wherever a link is moved, its target must stay
// inside the worker's namespace, or following it would touch another
// worker's names, the shared directory itself, or what lies outside the
// mount.
func symlinkTarget(rng *rand.Rand, p string, pool []string) string {
	dir := path.Dir(p)
	var cands []string
	for _, q := range pool {
		if strings.HasPrefix(q, dir+"/") {
			cands = append(cands, strings.TrimPrefix(q, dir+"/"))
		}
	}
	switch r := rng.IntN(10); {
	case r < 8 && len(cands) > 0:
		return pick(rng, cands...)
	case r < 8:
		return pick(rng, leafNames...)
	}
	return "missing"
}

const letters = "abcdefghijklmnopqrstuvwxyz0123456789"

func randText(rng *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[rng.IntN(len(letters))]
	}
	return string(b)
}

func pick[T any](rng *rand.Rand, xs ...T) T { return xs[rng.IntN(len(xs))] }

// Build creates the plan's layers: the lowers under dir/lowers, shared by
// both sides so that their inode numbers are the same for both, and one
// upper layer in each of sides (which must exist).
func (p *Plan) Build(dir string, sides ...string) (lowers []string, uppers []string, err error) {
	ld := filepath.Join(dir, "lowers")
	if err := os.Mkdir(ld, 0o755); err != nil {
		return nil, nil, err
	}
	l, err := conformance.Spec{Lowers: p.Spec.Lowers}.Build(ld)
	if err != nil {
		return nil, nil, err
	}
	for i, lower := range l.Lowers {
		if err := p.applyHoles(layerNames[topLower+i], lower); err != nil {
			return nil, nil, err
		}
	}
	for _, side := range sides {
		u, err := conformance.Spec{Upper: p.Spec.Upper}.Build(side)
		if err != nil {
			return nil, nil, err
		}
		if err := p.applyHoles(layerNames[upperLayer], u.Upper); err != nil {
			return nil, nil, err
		}
		uppers = append(uppers, u.Upper)
	}
	return l.Lowers, uppers, nil
}

func (p *Plan) applyHoles(layer, root string) error {
	for _, h := range p.Holes {
		if h.Layer != layer {
			continue
		}
		f := filepath.Join(root, h.Path)
		fd, err := unix.Open(f, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: f, Err: err}
		}
		_, err = unix.Pwrite(fd, []byte("end"), h.At)
		unix.Close(fd)
		if err != nil {
			return &os.PathError{Op: "pwrite", Path: f, Err: err}
		}
		ts := unix.NsecToTimespec(h.Mtime.UnixNano())
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, f, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "utimensat", Path: f, Err: err}
		}
	}
	return nil
}

// layer returns layer l (upperLayer, topLower, bottomLower) of the plan.
func (p *Plan) layer(l int) conformance.Layer {
	if l == upperLayer {
		return p.Spec.Upper
	}
	return p.Spec.Lowers[l-1]
}

// nodes counts the objects in the plan's layers.
func (p *Plan) nodes() int {
	n := 0
	for l := range numLayers {
		n += len(p.layer(l))
	}
	return n
}

// owner reports which worker's namespace path q is in, or -1.
func (p *Plan) owner(q string) int {
	for _, pool := range p.Pools {
		if q == pool.Prefix || strings.HasPrefix(q, pool.Prefix+"/") || strings.HasPrefix(q, sharedDir+"/"+pool.Prefix+"-") {
			return pool.Worker
		}
	}
	return -1
}

// only returns a copy of p that keeps, of the workers' namespaces, only
// worker w's: a single worker's replay does not need the others'.
func (p *Plan) only(w int) *Plan {
	keep := func(q string) bool { return q == sharedDir || p.owner(q) == w }
	out := *p
	filter := func(l conformance.Layer) conformance.Layer {
		if l == nil {
			return nil
		}
		kept := conformance.Layer{}
		for _, n := range l {
			if keep(n.Path) {
				kept = append(kept, n)
			}
		}
		return kept
	}
	out.Spec = conformance.Spec{Upper: filter(p.Spec.Upper)}
	for _, l := range p.Spec.Lowers {
		out.Spec.Lowers = append(out.Spec.Lowers, filter(l))
	}
	out.Holes = nil
	for _, h := range p.Holes {
		if keep(h.Path) {
			out.Holes = append(out.Holes, h)
		}
	}
	return &out
}
