package overlay

import (
	"sort"
	"strings"
	"sync"
	"syscall"

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
}

// listing is the merged listing of a directory as last built. The kernel
// does not open directories (FUSE_NO_OPENDIR_SUPPORT: an open and a
// release less per directory), so there is no handle to keep a listing
// per open: the directory keeps one, and each entry keeps its offset
// across rebuilds. A reader that resumes at an offset after someone else
// rewound the directory then misses no entry that stayed and sees none
// twice, as on a file system with stable directory cookies.
type listing struct {
	// mu guards ents and next; readers of one directory take turns.
	mu   sync.Mutex
	ents []Dirent // by increasing Off
	next uint64   // the Off of the next new name
}

// ReadDir returns the entries of directory id that follow offset, each
// with the offset that resumes after it. Offset 0 (an open or a rewind)
// builds the listing again.
func (fs *FS) ReadDir(id uint64, offset uint64) ([]Dirent, error) {
	n, err := fs.get(id)
	if err != nil {
		return nil, err
	}
	if !n.isDir() {
		return nil, syscall.ENOTDIR
	}
	l := &n.ls
	l.mu.Lock()
	defer l.mu.Unlock()
	if offset == 0 || l.ents == nil {
		fs.renameMu.RLock()
		ents, err := fs.merge(n)
		fs.renameMu.RUnlock()
		if err != nil {
			return nil, err
		}
		l.update(ents)
	}
	i := sort.Search(len(l.ents), func(i int) bool { return l.ents[i].Off > offset })
	return l.ents[i:], nil
}

// update replaces the listing with ents, in merge order. Names already
// listed keep their offsets and order; new names follow.
// Preconditions: l.mu held.
func (l *listing) update(ents []Dirent) {
	if l.ents == nil {
		for i := range ents {
			ents[i].Off = uint64(i + 1)
		}
		l.ents, l.next = ents, uint64(len(ents)+1)
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
			e.Off = l.next
			l.next++
			out = append(out, e)
		}
	}
	l.ents = out
}

// merge builds the listing of directory n: ".", "..", then the union of
// its layers' entries, top layer first, the first occurrence of a name
// winning, markers and whited-out names left out.
// Preconditions: renameMu held.
func (fs *FS) merge(n *node) ([]Dirent, error) {
	ents := []Dirent{
		{Name: ".", Ino: n.ino.Load(), Type: unix.DT_DIR},
		{Name: "..", Ino: n.parent().ino.Load(), Type: unix.DT_DIR},
	}
	seen := make(map[string]bool)
	objs, dir := n.layersOf(), n.path()
	// A directory that merges with nothing is listed as it is on disk,
	// whiteouts included, as the kernel lists it (ovl_iterate reads such
	// a directory itself), though a lookup of them finds nothing.
	unmerged := len(objs) == 1
	for i, o := range objs {
		raw, err := o.layer.ReadDir(dir)
		if err != nil {
			return nil, errno(err)
		}
		var aufs []string // .wh. names hide entries of the layers below
		for _, e := range raw {
			if strings.HasPrefix(e.Name, layers.WhiteoutPrefix) {
				if e.Name != layers.OpaqueFile {
					aufs = append(aufs, e.Name[len(layers.WhiteoutPrefix):])
				}
				continue
			}
			if seen[e.Name] {
				continue
			}
			seen[e.Name] = true
			if !unmerged && fs.isWhiteout(o, layers.Join(dir, e.Name), e.Type) {
				continue
			}
			de, err := fs.dirent(n, objs, i, e)
			if err == syscall.ENOENT && (unmerged || o.layer.Upper && o.marks.XWhiteouts) {
				// A whiteout listed (see isWhiteout): with its own number.
				num, ok := fs.scheme.Ino(o.dev, e.Ino)
				de, err = Dirent{Name: e.Name, Ino: fs.nodes.PeekNumber(inodes.Key{Dev: o.dev, Ino: e.Ino}, num, ok), Type: e.Type}, nil
			}
			if err != nil {
				if err == syscall.ENOENT {
					continue // gone meanwhile
				}
				return nil, err
			}
			if de.Type == unix.DT_REG && fs.overrideRead != nil {
				de.Type = fs.overrideDirentType(o.layer, layers.Join(dir, e.Name))
			}
			ents = append(ents, de)
		}
		for _, name := range aufs {
			seen[name] = true
		}
	}
	return ents, nil
}

// isWhiteout reports whether the entry rel of type typ in layer object o
// is a whiteout of any form a listing leaves out. An xwhiteout in the
// upper layer hides a name from lookup but is still listed, as by the
// kernel, which reads xwhiteouts only in lower layers' listings.
func (fs *FS) isWhiteout(o obj, rel string, typ uint8) bool {
	xwhiteouts := o.marks.XWhiteouts && !o.layer.Upper
	switch {
	case typ == unix.DT_CHR || typ == unix.DT_UNKNOWN:
		st, err := o.layer.Lstat(rel)
		if err != nil {
			return false
		}
		if layers.IsWhiteout(&st) {
			return true
		}
		return xwhiteouts && o.layer.IsXWhiteout(rel, &st)
	case typ == unix.DT_REG && xwhiteouts:
		st, err := o.layer.Lstat(rel)
		return err == nil && o.layer.IsXWhiteout(rel, &st)
	}
	return false
}

// dirent makes the listing entry for raw entry e of layer object i of
// directory n. d_ino must equal the st_ino stat shows: an entry that is a
// lower non-directory, or a directory with nothing below it to merge with,
// has its real number; anything else goes through the lookup rules.
// Preconditions: renameMu held.
func (fs *FS) dirent(n *node, objs []obj, i int, e layers.Dirent) (Dirent, error) {
	o := objs[i]
	if !o.layer.Upper && !fs.scheme.MayCollide() && e.Type != unix.DT_UNKNOWN && (e.Type != unix.DT_DIR || i == len(objs)-1) {
		if ino, ok := fs.scheme.Ino(o.dev, e.Ino); ok {
			return Dirent{Name: e.Name, Ino: ino, Type: e.Type}, nil
		}
	}
	f, err := fs.resolveIn(n, objs, e.Name)
	if err != nil {
		return Dirent{}, err
	}
	id := fs.identify(n, e.Name, f)
	return Dirent{Name: e.Name, Ino: fs.nodes.PeekNumber(id.Key, id.num, id.ok), Type: uint8(f.typ >> 12)}, nil
}
