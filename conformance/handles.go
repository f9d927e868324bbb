package conformance

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// An overlay file handle, as overlayfs stores it in origin and upper
// xattrs and, hex-encoded, as the names of index entries (struct ovl_fb in
// fs/overlayfs/overlayfs.h): version 0, magic 0xfb, the total length,
// flags, the exportfs fid type, the uuid of the filesystem (null with
// uuid=off or on a filesystem without one), then the fid itself.
const (
	fhHeaderLen     = 21
	fhMagic         = 0xfb
	fhFlagPathUpper = 1 << 2 // the handle names an upper object
)

// objectID identifies an inode across the layers of one scenario.
type objectID struct{ dev, ino uint64 }

// layerObjects names the objects of one side's layers by layer and path
// ("lower1:/d/f", "data0:/objects/ab", "upper:/"), so that a file handle
// is compared by the object it names: two implementations may encode the
// same object differently and both be read back.
type layerObjects struct {
	mount string // a directory on the layers' filesystem, for open_by_handle_at
	names map[objectID]string
}

// nameLayerObjects walks l's layers. A hard-linked object is named by the
// first of its paths in walk order.
func nameLayerObjects(l Layers) (*layerObjects, error) {
	o := &layerObjects{mount: l.Lowers[0], names: map[objectID]string{}}
	var labelled [][2]string
	for i, d := range l.Lowers {
		labelled = append(labelled, [2]string{fmt.Sprintf("lower%d", i), d})
	}
	for i, d := range l.Data {
		labelled = append(labelled, [2]string{fmt.Sprintf("data%d", i), d})
	}
	if l.Upper != "" {
		labelled = append(labelled, [2]string{"upper", l.Upper})
	}
	for _, ld := range labelled {
		label, root := ld[0], ld[1]
		err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return &os.PathError{Op: "lstat", Path: p, Err: err}
			}
			id := objectID{uint64(st.Dev), st.Ino}
			if _, seen := o.names[id]; !seen {
				rel, _ := filepath.Rel(root, p)
				o.names[id] = label + ":" + path.Clean("/"+filepath.ToSlash(rel))
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return o, nil
}

// describeHandle renders an overlay file handle as what it names: its
// flags and uuid as they are, then the object open_by_handle_at finds,
// named by layer and path. The fid's bytes are left out: they are the
// filesystem's business.
func (o *layerObjects) describeHandle(b []byte) string {
	if len(b) < fhHeaderLen || b[0] != 0 || b[1] != fhMagic || int(b[2]) != len(b) {
		return "not an overlay file handle: " + hex.EncodeToString(b)
	}
	var what []string
	if b[3]&fhFlagPathUpper != 0 {
		what = append(what, "upper")
	}
	if flags := b[3] &^ fhFlagPathUpper; flags != 0 {
		what = append(what, fmt.Sprintf("flags %#x", flags))
	}
	uuid := b[5:fhHeaderLen]
	if slices.ContainsFunc(uuid, func(c byte) bool { return c != 0 }) {
		what = append(what, "uuid "+hex.EncodeToString(uuid))
	} else {
		what = append(what, "null uuid")
	}
	return fmt.Sprintf("handle(%s) %s", strings.Join(what, ", "), o.resolve(int32(b[4]), b[fhHeaderLen:]))
}

// resolve opens the object a fid names and names it.
func (o *layerObjects) resolve(fidType int32, fid []byte) string {
	mount, err := unix.Open(o.mount, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "unresolved: " + err.Error()
	}
	defer unix.Close(mount)
	fd, err := unix.OpenByHandleAt(mount, unix.NewFileHandle(fidType, fid), unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	if err != nil {
		return "names nothing: " + errResult(err).Err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "unresolved: " + err.Error()
	}
	if name, ok := o.names[objectID{uint64(st.Dev), st.Ino}]; ok {
		return name
	}
	return "an object outside the layers"
}

// describeIndexName decodes the name of an index entry, the hex encoding
// of the handle of the lower object the entry stands for.
func (o *layerObjects) describeIndexName(name string) string {
	b, err := hex.DecodeString(name)
	if err != nil {
		return "not a handle: " + name
	}
	return o.describeHandle(b)
}

// handleXattrs are the overlay xattrs (after the prefix) that hold file
// handles.
var handleXattrs = []string{"origin", "upper"}

// describeHandles fills in Handles for every entry of t with an overlay
// xattr holding a file handle, under prefix (trusted.overlay., or
// user.overlay. with userxattr).
func (o *layerObjects) describeHandles(t *Tree, prefix string) {
	for _, e := range t.Entries {
		for _, x := range e.Xattrs {
			if name, ok := strings.CutPrefix(x.Name, prefix); ok && slices.Contains(handleXattrs, name) {
				if e.Handles == nil {
					e.Handles = map[string]string{}
				}
				e.Handles[x.Name] = o.describeHandle([]byte(x.Value))
			}
		}
	}
}

// ObserveUpper walks l's upper directory after the last unmount, and the
// index directory (index=on) in its work directory, with every file
// handle shown as the object it names. Index entries are keyed by what
// their names decode to and list the upper paths that are the same inode.
// Names beginning with '#' are left out of the index: they are the
// kernel's temporary names, among them the whiteout it keeps there to
// link new whiteouts to.
func ObserveUpper(l Layers, prefix string) (upper, index *Tree, err error) {
	if upper, err = Walk(l.Upper); err != nil {
		return nil, nil, err
	}
	objects, err := nameLayerObjects(l)
	if err != nil {
		return nil, nil, err
	}
	objects.describeHandles(upper, prefix)
	index = &Tree{Entries: map[string]*Entry{}}
	dir := filepath.Join(l.Work, "index")
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return upper, index, nil
	}
	raw, err := Walk(dir)
	if err != nil {
		return nil, nil, err
	}
	objects.describeHandles(raw, prefix)
	inodes := map[uint64][]string{}
	for _, p := range upper.Paths() {
		inodes[upper.Entries[p].Ino] = append(inodes[upper.Entries[p].Ino], p)
	}
	index.Root = raw.Root
	for p, e := range raw.Entries {
		top, rest, _ := strings.Cut(p, "/")
		if strings.HasPrefix(top, "#") {
			continue
		}
		if top != "." {
			e.Path = objects.describeIndexName(top)
			if rest != "" {
				e.Path += "/" + rest
			}
		}
		if e.Mode&unix.S_IFMT != unix.S_IFDIR {
			e.Links = inodes[e.Ino]
		}
		index.Entries[e.Path] = e
	}
	return upper, index, nil
}
