package overlay

import (
	"strings"
	"sync"
	"syscall"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// Dirent is one entry of a merged directory listing.
type Dirent struct {
	Name string
	Ino  uint64
	Type uint8 // DT_*
}

// dirHandle is an open directory. Like the kernel, it keeps the merged
// listing it built on the first read and rebuilds it on a read at offset
// 0 (a rewind), so offsets stay valid for seekdir/telldir while the
// directory is open, whatever changes meanwhile.
type dirHandle struct {
	n *node
	// mu guards ents. The kernel may send reads on one handle in
	// parallel.
	mu   sync.Mutex
	ents []Dirent
}

// OpenDir opens directory id and returns a handle.
func (fs *FS) OpenDir(id uint64) (uint64, error) {
	fs.renameMu.RLock()
	defer fs.renameMu.RUnlock()
	n, err := fs.get(id)
	if err != nil {
		return 0, err
	}
	if !n.isDir() {
		return 0, syscall.ENOTDIR
	}
	return fs.addHandle(&dirHandle{n: n}), nil
}

// ReleaseDir closes a directory handle.
func (fs *FS) ReleaseDir(h uint64) { fs.dropHandle(h) }

// ReadDir returns the entries of handle h from offset on; an entry's
// offset is its index plus one. The node of the directory is returned too,
// for ReadDirPlus.
func (fs *FS) ReadDir(h uint64, offset uint64) ([]Dirent, error) {
	d, ok := fs.handle(h).(*dirHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if offset == 0 || d.ents == nil {
		fs.renameMu.RLock()
		defer fs.renameMu.RUnlock()
		ents, err := fs.merge(d.n)
		if err != nil {
			return nil, err
		}
		d.ents = ents
	}
	if offset >= uint64(len(d.ents)) {
		return nil, nil
	}
	return d.ents[offset:], nil
}

// merge builds the listing of directory n: ".", "..", then the union of
// its layers' entries, top layer first, the first occurrence of a name
// winning, markers and whited-out names left out.
// Preconditions: renameMu held.
func (fs *FS) merge(n *node) ([]Dirent, error) {
	ents := []Dirent{
		{Name: ".", Ino: n.id, Type: unix.DT_DIR},
		{Name: "..", Ino: n.parent().id, Type: unix.DT_DIR},
	}
	seen := make(map[string]bool)
	objs, dir := n.layersOf(), n.path()
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
			if fs.isWhiteout(o, layers.Join(dir, e.Name), e.Type) {
				continue
			}
			de, err := fs.dirent(n, objs, i, e)
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
// is a whiteout of any form.
func (fs *FS) isWhiteout(o obj, rel string, typ uint8) bool {
	switch {
	case typ == unix.DT_CHR || typ == unix.DT_UNKNOWN:
		st, err := o.layer.Lstat(rel)
		if err != nil {
			return false
		}
		if layers.IsWhiteout(&st) {
			return true
		}
		return o.marks.XWhiteouts && o.layer.IsXWhiteout(rel, &st)
	case typ == unix.DT_REG && o.marks.XWhiteouts:
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
	if !o.layer.Upper && e.Type != unix.DT_UNKNOWN && (e.Type != unix.DT_DIR || i == len(objs)-1) {
		if ino, ok := fs.scheme.Ino(o.dev, e.Ino); ok {
			return Dirent{Name: e.Name, Ino: ino, Type: e.Type}, nil
		}
	}
	f, err := fs.resolveIn(n, objs, e.Name)
	if err != nil {
		return Dirent{}, err
	}
	num, ok, key := fs.number(n, e.Name, f)
	return Dirent{Name: e.Name, Ino: fs.nodes.Peek(num, ok, key), Type: uint8(f.typ >> 12)}, nil
}
