package conformance

import (
	"cmp"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Kind is the type of object a Node creates in a layer.
type Kind int

const (
	File         Kind = iota // regular file holding Content
	Dir                      // directory, possibly opaque (Opaque)
	Symlink                  // symbolic link to Target
	HardLink                 // another name for the node at Target (same layer)
	Fifo                     // named pipe
	CharDev                  // character device Major:Minor
	BlockDev                 // block device Major:Minor
	Socket                   // unix socket (bound, then closed)
	Whiteout                 // char device 0/0: hides Path in lower layers
	AUFSWhiteout             // empty file ".wh.NAME": hides Path (AUFS format)
	XWhiteout                // empty file with xattr overlay.whiteout; the parent needs Opaque == OpaqueXWhiteouts
)

var kindNames = [...]string{"file", "dir", "symlink", "hardlink", "fifo", "chardev", "blockdev", "socket", "whiteout", "aufs-whiteout", "xwhiteout"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Opaque is the marker, if any, that a Dir node carries.
type Opaque int

const (
	NotOpaque        Opaque = iota
	OpaqueTrusted           // xattr trusted.overlay.opaque=y (kernel format)
	OpaqueUser              // xattr user.overlay.opaque=y (kernel userxattr format)
	OpaqueFuse              // xattr user.fuseoverlayfs.opaque=y (fuse-overlayfs format)
	OpaqueAUFS              // file ".wh..wh..opq" inside the directory (AUFS format)
	OpaqueXWhiteouts        // xattr trusted.overlay.opaque=x: not opaque, but may hold XWhiteout nodes
)

// Names of the on-disk markers.
const (
	xattrOpaque      = "trusted.overlay.opaque"
	xattrUserOpaque  = "user.overlay.opaque"
	xattrFuseOpaque  = "user.fuseoverlayfs.opaque"
	xattrXWhiteout   = "trusted.overlay.whiteout"
	aufsWhiteoutPref = ".wh."
	aufsOpaqueName   = ".wh..wh..opq"
)

// DefaultMtime is the modification time of nodes and implicit directories
// that do not set one, so that repeated builds produce identical trees.
var DefaultMtime = time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC)

// Node is one object in a layer. Zero values mean defaults: mode 0644 (0755
// for directories and sockets), owner root, DefaultMtime. Parent directories
// that no node describes are created with the defaults.
type Node struct {
	Path    string // slash-separated, relative to the layer root
	Kind    Kind
	Mode    os.FileMode // permission bits, and setuid, setgid, sticky as 0o7000 or os.ModeSetuid...
	UID     int
	GID     int
	Mtime   time.Time
	Content string            // File
	Sparse  bool              // File: runs of zero bytes in Content are holes
	Target  string            // Symlink target, or HardLink's existing path in the same layer
	Major   uint32            // CharDev, BlockDev
	Minor   uint32            // CharDev, BlockDev
	Xattrs  map[string]string // File, Dir (user.* is refused on other kinds by the kernel)
	Opaque  Opaque            // Dir
}

// Layer is the content of one layer directory.
type Layer []Node

// Spec describes an overlay: Lowers are ordered top first, as in lowerdir=.
// A nil Upper makes a read-only, lowers-only overlay.
type Spec struct {
	Lowers []Layer
	// DataLowers are data-only lower layers, below Lowers and top first
	// (lowerdir=L0:L1::D0::D1): their names are never merged or shown,
	// their files serve only as the data of metacopy files whose absolute
	// redirects name them, as composefs builds them.
	DataLowers []Layer
	Upper      Layer
}

// Layers names the directories of a built Spec, and the mount options
// that go with them. Work is left empty by Build: every mount needs its
// own fresh work directory.
type Layers struct {
	Lowers []string
	Data   []string // data-only lower layers, after "::"
	Upper  string
	Work   string
	// Options are further overlay mount options, in the kernel's names
	// ("metacopy=on", "userxattr"): every implementation gets them.
	Options []string
}

// Build creates the layers of s under dir (lower0, lower1, ..., data0,
// ..., upper) and returns their paths. dir must be on the same filesystem
// as the work directories later used with it.
func (s Spec) Build(dir string) (Layers, error) {
	var l Layers
	for i, layer := range s.Lowers {
		p := filepath.Join(dir, fmt.Sprintf("lower%d", i))
		if err := layer.build(p); err != nil {
			return Layers{}, fmt.Errorf("lower %d: %w", i, err)
		}
		l.Lowers = append(l.Lowers, p)
	}
	for i, layer := range s.DataLowers {
		p := filepath.Join(dir, fmt.Sprintf("data%d", i))
		if err := layer.build(p); err != nil {
			return Layers{}, fmt.Errorf("data-only lower %d: %w", i, err)
		}
		l.Data = append(l.Data, p)
	}
	if s.Upper != nil {
		l.Upper = filepath.Join(dir, "upper")
		if err := s.Upper.build(l.Upper); err != nil {
			return Layers{}, fmt.Errorf("upper: %w", err)
		}
	}
	return l, nil
}

// KernelEquivalent returns a copy of s in which every marker the kernel does
// not read (AUFS whiteouts and opaque files, user.overlay.opaque,
// user.fuseoverlayfs.opaque) is replaced by the kernel's own format. Mounting
// the copy with the kernel shows what a FUSE overlay must show for s.
func (s Spec) KernelEquivalent() Spec {
	conv := func(l Layer) Layer {
		if l == nil {
			return nil
		}
		out := make(Layer, len(l))
		for i, n := range l {
			switch {
			case n.Kind == AUFSWhiteout:
				n.Kind = Whiteout
			case n.Kind == Dir && (n.Opaque == OpaqueUser || n.Opaque == OpaqueFuse || n.Opaque == OpaqueAUFS):
				n.Opaque = OpaqueTrusted
			}
			out[i] = n
		}
		return out
	}
	t := Spec{Upper: conv(s.Upper)}
	for _, l := range s.Lowers {
		t.Lowers = append(t.Lowers, conv(l))
	}
	for _, l := range s.DataLowers {
		t.DataLowers = append(t.DataLowers, conv(l))
	}
	return t
}

// build creates the layer at root. Objects are created first, then
// ownership, permissions and xattrs are applied, and modification times
// last, deepest first, so that creating children does not disturb the
// times of their parents. A Dir node with Path "." describes the layer
// root itself (overlay markers such as impure or uuid live there).
func (l Layer) build(root string) error {
	if err := os.Mkdir(root, 0o755); err != nil {
		return err
	}
	meta := map[string]Node{".": {Path: ".", Kind: Dir}}
	for _, n := range l {
		rel := filepath.Clean(filepath.FromSlash(n.Path))
		if rel == "." && n.Kind == Dir {
			n.Path = "."
			meta["."] = n
			continue
		}
		if rel == "." || strings.HasPrefix(rel, "..") || filepath.IsAbs(rel) {
			return fmt.Errorf("%q: path must stay inside the layer", n.Path)
		}
		// Implicit parents get default metadata unless a node describes them.
		for d := filepath.Dir(rel); d != "."; d = filepath.Dir(d) {
			if _, ok := meta[d]; !ok {
				meta[d] = Node{Path: d, Kind: Dir}
			}
		}
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(rel)), 0o755); err != nil {
			return err
		}
		onDisk, err := n.create(root, rel)
		if err != nil {
			return fmt.Errorf("%s %q: %w", n.Kind, n.Path, err)
		}
		if onDisk != "" {
			n.Path = onDisk
			meta[onDisk] = n
		}
	}
	paths := make([]string, 0, len(meta))
	for p := range meta {
		paths = append(paths, p)
	}
	// Deepest first; the order among equals only needs to be deterministic.
	slices.SortFunc(paths, func(a, b string) int {
		return cmp.Or(strings.Count(b, "/")-strings.Count(a, "/"), strings.Compare(a, b))
	})
	for _, p := range paths {
		if err := meta[p].applyMeta(filepath.Join(root, p)); err != nil {
			return fmt.Errorf("%q: %w", p, err)
		}
	}
	for _, p := range paths {
		if err := meta[p].applyMtime(filepath.Join(root, p)); err != nil {
			return fmt.Errorf("%q: %w", p, err)
		}
	}
	return nil
}

// create makes the object of n at root/rel. It returns the layer-relative
// path of the object whose metadata n describes, or "" when n owns no
// metadata of its own (hard links share their target's).
func (n Node) create(root, rel string) (string, error) {
	p := filepath.Join(root, rel)
	switch n.Kind {
	case File:
		if n.Sparse {
			return rel, writeSparse(p, n.Content)
		}
		return rel, os.WriteFile(p, []byte(n.Content), 0o644)
	case Dir:
		if err := os.Mkdir(p, 0o755); err != nil && !os.IsExist(err) {
			return "", err
		}
		if n.Opaque == OpaqueAUFS {
			opq := filepath.Join(p, aufsOpaqueName)
			if err := os.WriteFile(opq, nil, 0o644); err != nil {
				return "", err
			}
			// The marker's own time must be reproducible too.
			if err := (Node{Kind: File}).applyMtime(opq); err != nil {
				return "", err
			}
		}
		return rel, nil
	case Symlink:
		return rel, os.Symlink(n.Target, p)
	case HardLink:
		return "", os.Link(filepath.Join(root, filepath.FromSlash(n.Target)), p)
	case Fifo:
		return rel, unix.Mkfifo(p, 0o644)
	case CharDev:
		return rel, unix.Mknod(p, unix.S_IFCHR|0o644, int(unix.Mkdev(n.Major, n.Minor)))
	case BlockDev:
		return rel, unix.Mknod(p, unix.S_IFBLK|0o644, int(unix.Mkdev(n.Major, n.Minor)))
	case Socket:
		return rel, makeSocket(p)
	case Whiteout:
		return rel, unix.Mknod(p, unix.S_IFCHR, 0)
	case AUFSWhiteout:
		rel = filepath.Join(filepath.Dir(rel), aufsWhiteoutPref+filepath.Base(rel))
		return rel, os.WriteFile(filepath.Join(root, rel), nil, 0o644)
	case XWhiteout:
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			return "", err
		}
		return rel, unix.Lsetxattr(p, xattrXWhiteout, nil, 0)
	}
	return "", fmt.Errorf("unknown kind")
}

// writeSparse writes content to a new file p, leaving every 4 KiB block
// of zeros a hole.
func writeSparse(p, content string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	const block = 4096
	for off := 0; off < len(content); off += block {
		chunk := content[off:min(off+block, len(content))]
		if strings.Trim(chunk, "\x00") == "" {
			continue
		}
		if _, err := f.WriteAt([]byte(chunk), int64(off)); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Truncate(int64(len(content))); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// makeSocket leaves a unix socket inode at p. The address goes through the
// parent's /proc/self/fd link because sun_path holds only 108 bytes and
// temporary directories can be deeper than that.
func makeSocket(p string) error {
	dir, err := os.Open(filepath.Dir(p))
	if err != nil {
		return err
	}
	defer dir.Close()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	addr := fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), filepath.Base(p))
	return unix.Bind(fd, &unix.SockaddrUnix{Name: addr})
}

func (n Node) applyMeta(p string) error {
	if err := unix.Lchown(p, n.UID, n.GID); err != nil {
		return err
	}
	// Symlink permissions are fixed at 0777 and chmod would follow the link.
	if n.Kind != Symlink {
		mode := n.Mode & 0o7777
		for _, b := range []struct{ from, to os.FileMode }{
			{os.ModeSetuid, unix.S_ISUID}, {os.ModeSetgid, unix.S_ISGID}, {os.ModeSticky, unix.S_ISVTX},
		} {
			if n.Mode&b.from != 0 {
				mode |= b.to
			}
		}
		if mode == 0 {
			mode = 0o644
			if n.Kind == Dir || n.Kind == Socket {
				mode = 0o755
			}
		}
		// Whiteouts keep the mode the kernel gives them (0000).
		if n.Kind != Whiteout {
			if err := unix.Chmod(p, uint32(mode)); err != nil {
				return err
			}
		}
	}
	xattrs := make(map[string]string, len(n.Xattrs)+1)
	maps.Copy(xattrs, n.Xattrs)
	switch n.Opaque {
	case OpaqueTrusted:
		xattrs[xattrOpaque] = "y"
	case OpaqueXWhiteouts:
		xattrs[xattrOpaque] = "x"
	case OpaqueUser:
		xattrs[xattrUserOpaque] = "y"
	case OpaqueFuse:
		xattrs[xattrFuseOpaque] = "y"
	}
	for name, value := range xattrs {
		if err := unix.Lsetxattr(p, name, []byte(value), 0); err != nil {
			return fmt.Errorf("setxattr %s: %w", name, err)
		}
	}
	return nil
}

func (n Node) applyMtime(p string) error {
	t := n.Mtime
	if t.IsZero() {
		t = DefaultMtime
	}
	ts := unix.NsecToTimespec(t.UnixNano())
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

// AddBigDir adds a directory dir to every layer of s, so that it is merged,
// and fills it until the merged directory shows n names. Each name lives in
// one or more layers, so readdir must merge them with first-occurrence-wins:
// every seventh name exists in several layers with different content and
// types, and every eleventh name is whited out above the layer holding it.
func (s *Spec) AddBigDir(dir string, n int) {
	layers := make([]*Layer, 0, len(s.Lowers)+1)
	if s.Upper != nil {
		layers = append(layers, &s.Upper)
	}
	for i := range s.Lowers {
		layers = append(layers, &s.Lowers[i])
	}
	for _, l := range layers {
		*l = append(*l, Node{Path: dir, Kind: Dir})
	}
	for i, visible := 0, 0; visible < n; i++ {
		name := fmt.Sprintf("%s/entry-%05d", dir, i)
		home := i % len(layers)
		switch {
		case i%11 == 0 && home+1 < len(layers):
			// Hidden: the name exists below its whiteout.
			*layers[home] = append(*layers[home], Node{Path: name, Kind: Whiteout})
			*layers[home+1] = append(*layers[home+1], Node{Path: name, Kind: File, Content: "hidden"})
		case i%7 == 0:
			// Several layers, different kinds: only the topmost may show.
			for j := home; j < len(layers); j++ {
				nd := Node{Path: name, Kind: File, Content: fmt.Sprintf("layer %d of %d", j, i)}
				if j%2 == 1 {
					nd = Node{Path: name, Kind: Symlink, Target: fmt.Sprintf("target-%d", j)}
				}
				*layers[j] = append(*layers[j], nd)
			}
			visible++
		default:
			*layers[home] = append(*layers[home], Node{Path: name, Kind: File, Content: name})
			visible++
		}
	}
}
