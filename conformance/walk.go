package conformance

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Entry is everything Walk observes about one path of a mounted tree.
// Fields are raw; which of them may differ between implementations is
// decided in diff.go only.
type Entry struct {
	Path string // relative to the walked root; "." is the root

	// From getdents64 of the parent directory (zero for the root).
	DType uint8
	DIno  uint64

	// From lstat.
	Mode    uint32 // type and permission bits
	UID     uint32
	GID     uint32
	Size    int64
	Nlink   uint64
	Ino     uint64
	Dev     uint64
	Rdev    uint64
	Blocks  int64
	Blksize int64
	Atime   int64 // nanoseconds since the epoch
	Mtime   int64
	Ctime   int64

	// LstatErr is set (and the lstat fields are zero) when readdir lists a
	// name that lstat fails on: ENOENT for whiteouts in directories the
	// kernel does not merge, EPERM for a metacopy file the mount may not
	// follow to its data.
	LstatErr string
	// ReaddirErr is the errno of listing a directory, which the walk then
	// does not enter: the kernel fails getdents64 of a directory with
	// EPERM when it cannot look up an entry it needs the origin of.
	ReaddirErr string

	Target string // symlink target
	// SHA256 is the hex digest of a regular file's content, or "error: "
	// and the errno's name if it cannot be read (EIO for a metacopy file
	// whose data fails its fs-verity check).
	SHA256 string
	Xattrs []Xattr // llistxattr + lgetxattr, sorted by name
	// Probes holds lgetxattr of each of probedXattrs (and formatProbes, in
	// walks of scenarios with mount options): the value, or the error's
	// text. Listing alone would not catch a private xattr that is hidden
	// from llistxattr but still readable by name.
	Probes []Xattr

	// Set by ObserveUpper only, in walks of raw upper and index
	// directories: Handles maps each overlay xattr holding a file handle
	// to the object it names (see describeHandle); Links lists the upper
	// paths that are the same inode as an index entry.
	Handles map[string]string
	Links   []string

	// Set by normalise only: the identity an upper inode number stands for.
	inoAlias, dinoAlias string
}

// probedXattrs are marker and bookkeeping xattrs an overlay must not expose
// by name (unless, like user.overlay.opaque without userxattr, they are not
// the overlay's own, in which case the kernel comparison says so).
var probedXattrs = []string{
	xattrOpaque,
	xattrXWhiteout,
	"trusted.overlay.origin",
	xattrUserOpaque,
	xattrFuseOpaque,
}

// formatProbes are probed as well in walks of scenarios with mount
// options: the xattrs of the formats those options write. Each probe is a
// request to a FUSE program per path, so walks of large trees do without.
var formatProbes = []string{"trusted.overlay.redirect", "trusted.overlay.metacopy", "user.overlay.redirect"}

// Xattr is one extended attribute.
type Xattr struct {
	Name  string
	Value string
}

// Tree is the result of walking a mounted overlay.
type Tree struct {
	Root    string
	Entries map[string]*Entry
	probes  []string // xattrs probed on every path (see Entry.Probes)
}

// Walk records every path below root without following symlinks.
// Directory entries come from raw getdents64 so that d_type and d_ino are the
// filesystem's own answers rather than values a library filled in from stat.
func Walk(root string) (*Tree, error) {
	return walkProbing(root, probedXattrs)
}

// walkProbing is Walk probing the xattrs named by probes on every path.
func walkProbing(root string, probes []string) (*Tree, error) {
	t := &Tree{Root: root, Entries: map[string]*Entry{}, probes: probes}
	e := &Entry{Path: "."}
	if err := e.observe(root, probes); err != nil {
		return nil, fmt.Errorf("walk root %s: %w", root, err)
	}
	t.Entries["."] = e
	buf := make([]byte, 64<<10)
	return t, t.walkDir(".", buf)
}

func (t *Tree) walkDir(rel string, buf []byte) error {
	dents, err := readDir(filepath.Join(t.Root, rel), buf)
	if errno, ok := errors.AsType[unix.Errno](err); ok {
		t.Entries[rel].ReaddirErr = unix.ErrnoName(errno)
		return nil
	}
	if err != nil {
		return err
	}
	for _, d := range dents {
		child := d.name
		if rel != "." {
			child = rel + "/" + d.name
		}
		if _, dup := t.Entries[child]; dup {
			return fmt.Errorf("%s: listed twice by readdir", child)
		}
		e := &Entry{Path: child, DType: d.typ, DIno: d.ino}
		t.Entries[child] = e
		err := e.observe(filepath.Join(t.Root, child), t.probes)
		if errno, ok := errors.AsType[lstatError](err); ok {
			e.LstatErr = unix.ErrnoName(unix.Errno(errno))
			continue
		}
		if err != nil {
			return err
		}
		if e.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := t.walkDir(child, buf); err != nil {
				return err
			}
		}
	}
	return nil
}

type dirent struct {
	name string
	ino  uint64
	typ  uint8
}

// readDir lists dir with getdents64, leaving out "." and "..": their d_ino
// reflects where the mount sits and is not part of the overlay's contents.
func readDir(dir string, buf []byte) ([]dirent, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	var out []dirent
	for {
		n, err := unix.ReadDirent(fd, buf)
		if err != nil {
			return nil, &os.PathError{Op: "getdents64", Path: dir, Err: err}
		}
		if n == 0 {
			return out, nil
		}
		// struct linux_dirent64: u64 d_ino, s64 d_off, u16 d_reclen,
		// u8 d_type, NUL-terminated d_name.
		for b := buf[:n]; len(b) > 0; {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 20 || reclen > len(b) {
				return nil, fmt.Errorf("%s: malformed dirent record (reclen %d)", dir, reclen)
			}
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if s := string(name); s != "." && s != ".." {
				out = append(out, dirent{name: s, ino: binary.NativeEndian.Uint64(b[0:8]), typ: b[18]})
			}
			b = b[reclen:]
		}
	}
}

// lstatError is what observe returns when lstat fails with the errno:
// the walk records it for a listed name, and fails on the root.
type lstatError unix.Errno

func (e lstatError) Error() string { return "lstat: " + unix.Errno(e).Error() }

func (e *Entry) observe(p string, probes []string) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		if errno, ok := err.(unix.Errno); ok {
			return lstatError(errno)
		}
		return &os.PathError{Op: "lstat", Path: p, Err: err}
	}
	e.Mode = st.Mode
	e.UID, e.GID = st.Uid, st.Gid
	e.Size = st.Size
	e.Nlink = uint64(st.Nlink)
	e.Ino = st.Ino
	e.Dev = uint64(st.Dev)
	e.Rdev = uint64(st.Rdev)
	e.Blocks = st.Blocks
	e.Blksize = int64(st.Blksize)
	e.Atime = st.Atim.Nano()
	e.Mtime = st.Mtim.Nano()
	e.Ctime = st.Ctim.Nano()

	var err error
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		e.Target, err = os.Readlink(p)
	case unix.S_IFREG:
		e.SHA256, err = hashFile(p)
		if errno, ok := errors.AsType[unix.Errno](err); ok {
			e.SHA256, err = "error: "+unix.ErrnoName(errno), nil
		}
	}
	if err != nil {
		return err
	}
	if e.Xattrs, err = listXattrs(p); err != nil {
		return err
	}
	for _, name := range probes {
		v, err := xattrCall(func(b []byte) (int, error) { return unix.Lgetxattr(p, name, b) })
		probe := Xattr{Name: name, Value: string(v)}
		if err != nil {
			probe.Value = "error: " + err.Error()
		}
		e.Probes = append(e.Probes, probe)
	}
	return nil
}

func hashFile(p string) (string, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func listXattrs(p string) ([]Xattr, error) {
	names, err := xattrCall(func(b []byte) (int, error) { return unix.Llistxattr(p, b) })
	if err != nil {
		return nil, &os.PathError{Op: "llistxattr", Path: p, Err: err}
	}
	var out []Xattr
	for _, name := range bytes.Split(names, []byte{0}) {
		if len(name) == 0 {
			continue
		}
		v, err := xattrCall(func(b []byte) (int, error) { return unix.Lgetxattr(p, string(name), b) })
		if err != nil {
			return nil, &os.PathError{Op: "lgetxattr " + string(name), Path: p, Err: err}
		}
		out = append(out, Xattr{Name: string(name), Value: string(v)})
	}
	slices.SortFunc(out, func(a, b Xattr) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// xattrCall runs a size-probing xattr syscall, retrying when the value
// grew between the probe and the read.
func xattrCall(call func([]byte) (int, error)) ([]byte, error) {
	for {
		n, err := call(nil)
		if err != nil || n == 0 {
			return nil, err
		}
		b := make([]byte, n)
		n, err = call(b)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return b[:n], nil
	}
}

// Paths returns the walked paths in sorted order.
func (t *Tree) Paths() []string {
	out := make([]string, 0, len(t.Entries))
	for p := range t.Entries {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}
