package overlay

import (
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ovlmount/ovlmount/inodes"
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// Dirent is one entry of a merged directory listing.
type Dirent struct {
	Name string
	Ino  uint64
	Type uint8  // DT_*
	Off  uint64 // the offset that resumes the listing after this entry
	// err is why the entry could not be looked up: it is not listed,
	// and the read that meets it first ends there (listing.read).
	err   error
	stale bool // err was met
}

// listing is how a directory is being read. The kernel does not open
// directories (FUSE_NO_OPENDIR_SUPPORT: an open and a release less per
// directory), so there is no handle to keep state per open: the directory
// keeps it, decided by each read at offset 0 (an open or a rewind).
//
// A directory with one layer object (the kernel's "real" directory, which
// ovl_iterate reads itself) is read from the host at the host's offsets,
// and nothing of it is held between reads: a huge directory costs no
// memory, and telldir shows what the kernel's would. Should it merge while
// it is read (copy-up made its upper directory), the reader goes on with
// the rest of the object it was reading, each name as the merged view now
// shows it.
//
// A merged directory's listing is built and held while it is read, until
// listingGrace after a read reached its end, or until heldListings drops
// it for room. Readers share it (there is no open handle to hang one on),
// and one's end must not end another's read. A rebuild while a listing is
// held keeps the offset of every name that stays and gives new names
// offsets after the last, so a reader misses no entry that stayed and
// sees none twice, as with a filesystem's stable directory cookies. The
// kernel also reads on from its own cache of a listing (CACHE_DIR) long
// after, with offsets of a listing since dropped: an offset names the
// entry it follows, by position and by a hash of the name
// (listingOff), and one no entry has resumes after the entry of its
// name's hash, whose order among the others that stayed a rebuild keeps
// (the layers' own orders), or, when that entry has gone too, at its
// position.
type listing struct {
	// mu guards the fields below; readers of one directory take turns.
	mu     sync.Mutex
	merged bool     // the last read at offset 0 built a listing
	ents   []Dirent // by increasing Off
	next   uint64   // the position of the next new name
	// failing says some entries have an err.
	failing bool
	use     uint64 // heldListings' clock at the last read
	// impure is an upper-only directory's impure entries (impureCache).
	impure *impureEntries
}

// impureEntries are the entries of an impure upper-only directory whose
// d_ino is not their upper inode's number, by name, as the kernel's
// readdir caches them (ovl_cache_get_impure), read at the directory's
// version.
type impureEntries struct {
	version uint64
	inos    map[string]uint64
}

// ReadDir returns up to count entries of directory id that follow
// offset, each with the offset that resumes after it; none at the end.
func (fs *FS) ReadDir(id, offset uint64, count int) ([]Dirent, error) {
	n, err := fs.get(id)
	if err != nil {
		return nil, err
	}
	if !n.isDir() {
		return nil, syscall.ENOTDIR
	}
	count = max(count, 1)
	l := &n.aux.ls
	l.mu.Lock()
	defer l.mu.Unlock()
	if offset == 0 {
		l.merged = n.merged()
	}
	if !l.merged {
		fs.renameMu.RLock()
		defer fs.renameMu.RUnlock()
		return fs.readReal(n, offset, count)
	}
	return fs.readListing(n, offset, count)
}

// readReal reads directory n from the host at host offset off: n's only
// object, or, once n has merged, its bottom one.
// Preconditions: renameMu held; n.aux.ls.mu held.
func (fs *FS) readReal(n *node, off uint64, count int) ([]Dirent, error) {
	objs := n.layersOf()
	fd, err := fs.openDir(n, objs[len(objs)-1].layer)
	if err != nil {
		return nil, toErrno(err)
	}
	defer unix.Close(fd)
	var impure map[string]uint64
	asIs := len(objs) == 1 && objs[0].layer.Upper && !fs.scheme.MayCollide()
	if asIs {
		impure, asIs = fs.impureCache(n, objs, fd)
	}
	// The kernel asks for a page of entries at a time, which as many
	// host entries fill about as well.
	bp := direntBufs.Get().(*[direntBuf]byte)
	defer direntBufs.Put(bp)
	buf := bp[:]
	var out []Dirent
	for len(out) == 0 {
		raw, err := layers.ReadDirAt(fd, off, buf)
		if err != nil || len(raw) == 0 {
			return nil, toErrno(err)
		}
		for _, e := range raw {
			if len(out) == count {
				break
			}
			de, err := fs.realEntry(n, objs, e, asIs, impure)
			switch {
			case err == nil:
				de.Off = e.Off
				out = append(out, de)
			case err != syscall.ENOENT:
				// An entry that cannot be looked up (a metacopy
				// file without metacopy=on, a redirect refused)
				// fails the read there, as in the kernel.
				if len(out) > 0 {
					return out, nil
				}
				return nil, err
			}
			off = e.Off
		}
	}
	return out, nil
}

// impureCache returns the d_ino of the entries of n, a directory with an
// upper object only (objs), open as fd, that do not show their upper
// inode's number (a copy-up's origin's, a merged directory's), as the
// kernel's readdir caches them (ovl_cache_get_impure): nil when n is not
// marked impure, read again at the first read after n's version changed.
// The kernel lists every other entry with its own number, without a
// lookup, even one that needs another (a link made since of an object
// with an origin, which does not change the version): so do its
// callers. When no entry needs one, the impure marker goes, as there
// (best effort). ok is false when an entry could not be looked up: the
// caller then looks up every entry. fd's offset is left anywhere.
// Preconditions: renameMu held; n.aux.ls.mu held.
func (fs *FS) impureCache(n *node, objs []obj, fd int) (inos map[string]uint64, ok bool) {
	impure := fs.xattrs.Name(layers.XattrImpure)
	if _, err := layers.FdGetxattr(fd, impure); err != nil {
		return nil, true
	}
	l, v := &n.aux.ls, n.aux.version.Load()
	if c := l.impure; c != nil && c.version == v {
		return c.inos, true
	}
	l.impure = nil
	raw, err := layers.ReadDirFd(fd, true)
	if err != nil {
		return nil, false
	}
	inos = make(map[string]uint64)
	for _, e := range raw {
		if e.Name == "." || e.Name == ".." {
			continue
		}
		de, err := fs.resolvedDirent(n, objs, e.Name)
		switch {
		case err == syscall.ENOENT:
			continue // a whiteout, or gone meanwhile
		case err != nil:
			return nil, false
		}
		if own, ok := fs.scheme.Ino(uint64(objs[0].dev), e.Ino); !ok || de.Ino != own {
			inos[e.Name] = de.Ino
		}
	}
	if len(inos) == 0 {
		layers.FdRemovexattr(fd, impure)
		return nil, true
	}
	l.impure = &impureEntries{version: v, inos: inos}
	return inos, true
}

// direntBuf is the size of the buffers readReal reads host entries into.
const direntBuf = 8 << 10

var direntBufs = sync.Pool{New: func() any { return new([direntBuf]byte) }}

// realEntry is the entry of directory n for raw entry e of its bottom
// object; ENOENT leaves it out. asIs says n is an upper-only directory
// listed as the kernel's readdir passes it through: each entry with its
// own number, but those in impure (impureCache).
// Preconditions: renameMu held.
func (fs *FS) realEntry(n *node, objs []obj, e layers.Dirent, asIs bool, impure map[string]uint64) (Dirent, error) {
	switch {
	case e.Name == ".":
		return Dirent{Name: ".", Ino: n.Num(), Type: unix.DT_DIR}, nil
	case e.Name == "..":
		return Dirent{Name: "..", Ino: n.parent().Num(), Type: unix.DT_DIR}, nil
	case strings.HasPrefix(e.Name, layers.WhiteoutPrefix):
		return Dirent{}, syscall.ENOENT
	case len(objs) > 1:
		// Merged since the reader began: the name as the merged view
		// shows it, if at all.
		return fs.resolvedDirent(n, objs, e.Name)
	case asIs:
		ino, ok := impure[e.Name]
		if !ok {
			k := inodes.Key{Dev: uint64(objs[0].dev), Ino: e.Ino}
			if ino, ok = fs.scheme.Ino(k.Dev, k.Ino); !ok {
				ino = fs.nodes.PeekNumber(k, ino, ok)
			}
		}
		typ := e.Type
		if typ == unix.DT_REG && fs.overrideRead != nil {
			typ = fs.overrideDirentType(n, objs[0].layer, e.Name)
		}
		return Dirent{Name: e.Name, Ino: ino, Type: typ}, nil
	}
	return fs.entry(n, objs, 0, e, true)
}

// readListing reads merged directory n from its listing, built at offset
// 0, or when there is none: offset is then a position in the new one.
// Preconditions: n.aux.ls.mu held.
func (fs *FS) readListing(n *node, offset uint64, count int) ([]Dirent, error) {
	l := &n.aux.ls
	if offset == 0 || l.ents == nil {
		fs.renameMu.RLock()
		ents, err := fs.merge(n)
		fs.renameMu.RUnlock()
		if err != nil {
			return nil, err
		}
		l.update(ents)
	}
	i := l.after(offset)
	if i == len(l.ents) {
		// Read to the end. Another reader may be halfway through
		// (readers share the listing), and its offsets are exact only
		// in this listing: it goes once no one has read it for a
		// while.
		fs.listings.ended(l)
		return nil, nil
	}
	fs.listings.use(l)
	if !l.failing {
		// Entries are never changed in place (update makes a new
		// slice) but for stale.
		return l.ents[i:min(len(l.ents), i+count)], nil
	}
	return l.read(i, count)
}

// read returns up to count entries from index i of a listing with
// entries that could not be looked up, as the kernel's ovl_iterate meets
// them: the first time, such an entry ends the read there (with its
// error if it is the read's first), and later reads pass over it.
// Preconditions: l.mu held.
func (l *listing) read(i, count int) ([]Dirent, error) {
	var out []Dirent
	for ; i < len(l.ents) && len(out) < count; i++ {
		e := &l.ents[i]
		switch {
		case e.err == nil:
			out = append(out, *e)
		case e.stale:
		case len(out) > 0:
			e.stale = true
			return out, nil
		default:
			e.stale = true
			return nil, e.err
		}
	}
	return out, nil
}

// listingOff is the offset of the entry named name at position pos (from
// 1) of a listing: the position in the high half, the name's FNV-1a hash
// in the low half, below 1<<63 as the kernel's signed offsets need.
func listingOff(pos uint64, name string) uint64 {
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h = (h ^ uint32(name[i])) * 16777619
	}
	return pos<<32 | uint64(h)
}

// after returns the index of the first entry after offset: 0 for offset
// 0; after the entry with that offset; else after the entry whose name
// has its hash (the one at its position, if several have), or, with none,
// where that entry was.
// Preconditions: l.mu held.
func (l *listing) after(offset uint64) int {
	i := sort.Search(len(l.ents), func(i int) bool { return l.ents[i].Off > offset })
	if offset == 0 || i > 0 && l.ents[i-1].Off == offset {
		return i
	}
	pos, found := offset>>32, -1
	for j, e := range l.ents {
		if uint32(listingOff(pos, e.Name)) != uint32(offset) {
			continue
		}
		if found < 0 || uint64(j+1) == pos {
			found = j
		}
	}
	if found >= 0 {
		return found + 1
	}
	// The entry has gone: those after it have moved up into its place.
	return min(int(max(pos, 1))-1, len(l.ents))
}

// update replaces the listing with ents, in merge order. Names already
// listed keep their offsets and order; new names follow.
// Preconditions: l.mu held.
func (l *listing) update(ents []Dirent) {
	if l.ents == nil {
		for i := range ents {
			ents[i].Off = listingOff(uint64(i+1), ents[i].Name)
		}
		l.ents, l.next = ents, uint64(len(ents)+1)
		l.failing = slices.ContainsFunc(ents, func(e Dirent) bool { return e.err != nil })
		return
	}
	fresh := make(map[string]int, len(ents))
	for i, e := range ents {
		fresh[e.Name] = i
	}
	out := make([]Dirent, 0, len(ents))
	for _, old := range l.ents {
		if i, ok := fresh[old.Name]; ok {
			e := ents[i]
			e.Off = old.Off
			out = append(out, e)
			delete(fresh, old.Name)
		}
	}
	for _, e := range ents {
		if _, ok := fresh[e.Name]; ok {
			e.Off = listingOff(l.next, e.Name)
			l.next++
			out = append(out, e)
		}
	}
	l.ents = out
	l.failing = slices.ContainsFunc(out, func(e Dirent) bool { return e.err != nil })
}

// heldListings bounds the entries of the listings held at once: a
// reader that stops before the end of a directory leaves its listing
// held, and the least recently read go when the total passes the bound.
type heldListings struct {
	mu      sync.Mutex
	clock   uint64
	held    map[*listing]int // entries
	entries int
}

// maxListed is the most entries heldListings keeps, about 20 MiB.
const maxListed = 1 << 18

// use records a read of l, held with its entries.
// Preconditions: l.mu held.
func (h *heldListings) use(l *listing) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clock++
	l.use = h.clock
	if h.held == nil {
		h.held = make(map[*listing]int)
	}
	h.entries += len(l.ents) - h.held[l]
	h.held[l] = len(l.ents)
	for h.entries > maxListed && h.evict(l) {
	}
}

// evict drops the least recently read listing other than keep that no
// reader holds, and reports whether there was one.
// Preconditions: h.mu held.
func (h *heldListings) evict(keep *listing) bool {
	var old *listing
	for o := range h.held {
		if o != keep && (old == nil || o.use < old.use) && o.mu.TryLock() {
			if old != nil {
				old.mu.Unlock()
			}
			old = o
		}
	}
	if old == nil {
		return false
	}
	old.ents, old.next = nil, 0
	old.mu.Unlock()
	h.entries -= h.held[old]
	delete(h.held, old)
	return true
}

// listingGrace is how long a listing read to its end is kept for readers
// still halfway through it.
const listingGrace = 2 * time.Second

// ended drops l, read to its end, after listingGrace unless it is read
// again meanwhile.
// Preconditions: l.mu held.
func (h *heldListings) ended(l *listing) {
	at := l.use
	time.AfterFunc(listingGrace, func() {
		l.mu.Lock()
		idle := l.use == at && l.ents != nil
		if idle {
			l.ents, l.next = nil, 0
		}
		l.mu.Unlock()
		if idle {
			h.drop(l)
		}
	})
}

// forget drops l's listing: its directory is forgotten.
func (h *heldListings) forget(l *listing) {
	l.mu.Lock()
	l.ents, l.impure = nil, nil
	l.mu.Unlock()
	h.drop(l)
}

// drop forgets l, whose listing has gone.
func (h *heldListings) drop(l *listing) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.entries -= h.held[l]
	delete(h.held, l)
}

// merge builds the listing of directory n: the union of its layers'
// entries, the first occurrence of a name, top down, winning, markers and
// whited-out names left out, in the kernel's order (ovl_dir_read_merged):
// first every name of the bottom layer, in its order, "." and ".."
// included, then the other names of each layer above, top down. An entry
// that cannot be looked up (a metacopy file without metacopy=on, a
// redirect refused) holds its error (Dirent.err).
// Preconditions: renameMu held.
func (fs *FS) merge(n *node) ([]Dirent, error) {
	objs := n.layersOf()
	// A directory that merges with nothing is listed as it is on disk,
	// whiteouts included, as the kernel lists it (ovl_iterate reads such
	// a directory itself), though a lookup of them finds nothing.
	unmerged := len(objs) == 1
	raws := make([][]layers.Dirent, len(objs))
	type winner struct {
		layer  int
		e      layers.Dirent
		hidden bool
	}
	wins := make(map[string]winner)
	aufsHidden := make(map[string]bool) // by .wh. names of the layers above
	for i, o := range objs {
		raw, err := fs.readAll(n, o.layer)
		if err != nil {
			return nil, toErrno(err)
		}
		raws[i] = raw
		var aufs []string
		for _, e := range raw {
			switch _, won := wins[e.Name]; {
			case e.Name == "." || e.Name == "..", won, aufsHidden[e.Name]:
			case strings.HasPrefix(e.Name, layers.WhiteoutPrefix):
				if e.Name != layers.OpaqueFile {
					aufs = append(aufs, e.Name[len(layers.WhiteoutPrefix):])
				}
			default:
				wins[e.Name] = winner{i, e, !unmerged && fs.isWhiteout(n, o, e.Name, e.Type)}
			}
		}
		for _, name := range aufs {
			aufsHidden[name] = true
		}
	}
	var ents []Dirent
	listed := make(map[string]bool, len(wins)+2)
	list := func(name string) {
		if listed[name] {
			return
		}
		listed[name] = true
		switch name {
		case ".":
			ents = append(ents, Dirent{Name: ".", Ino: n.Num(), Type: unix.DT_DIR})
			return
		case "..":
			ents = append(ents, Dirent{Name: "..", Ino: n.parent().Num(), Type: unix.DT_DIR})
			return
		}
		w, ok := wins[name]
		if !ok || w.hidden {
			return
		}
		de, err := fs.entry(n, objs, w.layer, w.e, unmerged)
		switch {
		case err == syscall.ENOENT:
			return // gone meanwhile
		case err != nil:
			// Not listed; listing.read returns the error.
			de = Dirent{Name: name, err: err}
		}
		ents = append(ents, de)
	}
	last := len(objs) - 1
	for _, i := range append([]int{last}, seq(last)...) {
		for _, e := range raws[i] {
			list(e.Name)
		}
	}
	for _, dot := range []string{".", ".."} {
		list(dot) // a filesystem that lists none
	}
	return ents, nil
}

// seq returns 0, 1, ... n-1.
func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// readAll returns the entries of directory n's object in layer l, "."
// and ".." included.
// Preconditions: renameMu held.
func (fs *FS) readAll(n *node, l *layers.Layer) ([]layers.Dirent, error) {
	fd, err := fs.openDir(n, l)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return layers.ReadDirFd(fd, true)
}

// entry makes the listing entry for raw entry e of layer object i of
// directory n, not a whiteout the listing leaves out; ENOENT if it is gone.
// In an unmerged directory a whiteout is listed (see isWhiteout), with
// its own number.
// Preconditions: renameMu held.
func (fs *FS) entry(n *node, objs []obj, i int, e layers.Dirent, unmerged bool) (Dirent, error) {
	o := objs[i]
	de, err := fs.dirent(n, objs, i, e)
	if err == syscall.ENOENT && (unmerged || o.layer.Upper && o.marks.XWhiteouts) {
		k := inodes.Key{Dev: uint64(o.dev), Ino: e.Ino}
		num, ok := fs.scheme.Ino(k.Dev, k.Ino)
		return Dirent{Name: e.Name, Ino: fs.nodes.PeekNumber(k, num, ok), Type: e.Type}, nil
	}
	if err != nil && err != syscall.ENOENT && !o.layer.Upper && !fs.scheme.MayCollide() {
		// The kernel lists a lower entry with its own number without
		// looking it up (ovl_calc_d_ino), so one whose lookup fails (a
		// redirect refused) is listed all the same.
		if ino, ok := fs.scheme.Ino(uint64(o.dev), e.Ino); ok {
			return Dirent{Name: e.Name, Ino: ino, Type: e.Type}, nil
		}
	}
	if err != nil {
		return Dirent{}, err
	}
	if de.Type == unix.DT_REG && fs.overrideRead != nil {
		de.Type = fs.overrideDirentType(n, o.layer, e.Name)
	}
	return de, nil
}

// isWhiteout reports whether entry name of type typ in directory n's
// layer object o is a whiteout of any form a listing leaves out. An
// xwhiteout in the upper layer hides a name from lookup but is still
// listed, as by the kernel, which reads xwhiteouts only in lower layers'
// listings.
// Preconditions: renameMu held.
func (fs *FS) isWhiteout(n *node, o obj, name string, typ uint8) bool {
	xwhiteouts := o.marks.XWhiteouts && !o.layer.Upper
	if typ != unix.DT_CHR && typ != unix.DT_UNKNOWN && (typ != unix.DT_REG || !xwhiteouts) {
		return false
	}
	is := false
	fs.inDir(n, o.layer, func(dfd int) error {
		var st unix.Stat_t
		if unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			return nil
		}
		is = layers.IsWhiteout(&st) || xwhiteouts && layers.IsXWhiteoutAt(dfd, name, &st, fs.reading)
		return nil
	})
	return is
}

// dirent makes the listing entry for raw entry e of layer object i of
// directory n. d_ino must equal the st_ino stat shows: an entry that is a
// lower non-directory, or a directory with nothing below it to merge with,
// has its real number; anything else goes through the lookup rules.
// Preconditions: renameMu held.
func (fs *FS) dirent(n *node, objs []obj, i int, e layers.Dirent) (Dirent, error) {
	o := objs[i]
	if !o.layer.Upper && !fs.scheme.MayCollide() && e.Type != unix.DT_UNKNOWN && (e.Type != unix.DT_DIR || i == len(objs)-1) {
		if ino, ok := fs.scheme.Ino(uint64(o.dev), e.Ino); ok {
			return Dirent{Name: e.Name, Ino: ino, Type: e.Type}, nil
		}
	}
	return fs.resolvedDirent(n, objs, e.Name)
}

// resolvedDirent is the entry for name of directory n as a lookup over
// objs finds it.
// Preconditions: renameMu held.
func (fs *FS) resolvedDirent(n *node, objs []obj, name string) (Dirent, error) {
	f, err := fs.resolveIn(n, objs, name)
	if err != nil {
		return Dirent{}, err
	}
	id := fs.identify(n, name, f)
	return Dirent{Name: name, Ino: fs.nodes.PeekNumber(id.Key, id.num, id.ok), Type: uint8(f.typ >> 12)}, nil
}
