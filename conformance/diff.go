package conformance

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Difference is one field of one path on which an implementation and the
// kernel disagree. A path missing on one side has Field "exists".
type Difference struct {
	Path   string
	Field  string
	Kernel string
	Other  string
}

func (d Difference) String() string {
	return fmt.Sprintf("%s: %s: kernel %s, other %s", d.Path, d.Field, d.Kernel, d.Other)
}

// DiffOptions relaxes the comparison for scenarios where the kernel can only
// be shown an equivalent of the layers the other implementation sees.
type DiffOptions struct {
	// IgnoreInodeNumbers drops st_ino and d_ino: when the kernel mounts a
	// translated copy of the layers, its objects are different inodes.
	IgnoreInodeNumbers bool

	// LowerInos, when set, holds every inode number of the lower layers,
	// which both sides share. st_ino and d_ino values that are one of them
	// must then be equal; any other value belongs to an object of an upper
	// layer, which each side built or created on its own, so only its
	// identity is compared (see normalise).
	LowerInos map[uint64]bool

	// KernelOps and OtherOps are the spans of wall-clock time during which
	// each side ran a scenario's operations (zero: none).
	KernelOps, OtherOps Window
}

// Window is a span of wall-clock time.
type Window struct {
	From, To time.Time
}

func (w Window) contains(ns int64) bool {
	return !w.From.IsZero() && ns >= w.From.UnixNano() && ns <= w.To.UnixNano()
}

// mtimeDuringOps replaces a modification time that falls within the
// operations' window.
const mtimeDuringOps = math.MinInt64

// side is what normalise needs to know about the tree an entry is from.
type side struct {
	ops Window
	// firstPath maps an inode number that is not a lower layer's to the
	// first path, in sorted order, at which the tree shows it.
	firstPath map[uint64]string
}

func newSide(t *Tree, ops Window, opts DiffOptions) side {
	s := side{ops: ops}
	if opts.LowerInos == nil {
		return s
	}
	s.firstPath = map[uint64]string{}
	for _, p := range t.Paths() {
		if e := t.Entries[p]; e.LstatErr == "" && !opts.LowerInos[e.Ino] {
			if _, seen := s.firstPath[e.Ino]; !seen {
				s.firstPath[e.Ino] = p
			}
		}
	}
	return s
}

func (s side) alias(ino uint64, opts DiffOptions) string {
	if s.firstPath == nil || opts.LowerInos[ino] {
		return ""
	}
	if p, ok := s.firstPath[ino]; ok {
		return "upper object first seen at " + strconv.Quote(p)
	}
	return "upper number that no lstat shows"
}

// normalise returns a copy of e with the fields that may legitimately
// differ between kernel overlayfs and a FUSE overlay zeroed. These are the
// only relaxations; every other field must be equal:
//
//   - Dev: a FUSE mount has one anonymous device of its own, and even two
//     kernel mounts of the same layers get different anonymous devices.
//   - Ino of the root: FUSE forces node id 1 onto the root directory, so a
//     FUSE overlay cannot report the real inode number there.
//   - Blocks and Blksize: FUSE reports its own preferred I/O size and the
//     block accounting of a daemon need not match the kernel's.
//   - Atime: walking reads every file, and the two mounts read at different
//     times and cache differently.
//   - Ctime: cannot be set from userspace; the kernel itself changes the
//     ctime of upper objects when it records overlay xattrs at mount.
//   - Ino and DIno everywhere when opts.IgnoreInodeNumbers is set.
//
// After a scenario's operations (write path), two more:
//
//   - Ino and DIno of upper objects, when opts.LowerInos is set: the two
//     sides run on separate copies of the upper layer, so a file created,
//     or copied up with its own number (one name of a hard link), or built
//     into the upper layer has a different number on each side. Such a
//     number is replaced by the first path that shows it, so what is
//     compared is which paths share an object; a number found in a lower
//     layer (copy-up keeps the lower number) is compared as it is.
//   - Mtime within the side's operations window is replaced by
//     mtimeDuringOps: writes, creations and removals stamp the current
//     time, which differs between the two runs. Layers are built with
//     times years in the past and utimensat ops set explicit times, so
//     any other value is a time an implementation preserved or was told
//     to set, and must be equal. This holds for directories too: the
//     kernel stamps an upper directory when it creates or removes a name
//     in it (a whiteout included), but copy-up of a child leaves the
//     parent's times as they were (it restores them), so a merged
//     directory in which a file was only copied up keeps its old mtime.
func normalise(e Entry, s side, opts DiffOptions) Entry {
	e.Dev = 0
	e.Blocks, e.Blksize = 0, 0
	e.Atime, e.Ctime = 0, 0
	if s.ops.contains(e.Mtime) {
		e.Mtime = mtimeDuringOps
	}
	e.inoAlias, e.dinoAlias = s.alias(e.Ino, opts), s.alias(e.DIno, opts)
	if e.Path == "." {
		e.Ino, e.inoAlias = 0, ""
	}
	if opts.IgnoreInodeNumbers {
		e.Ino, e.DIno = 0, 0
		e.inoAlias, e.dinoAlias = "", ""
	}
	return e
}

// fields lists every field of Entry with a readable rendering, in the order
// differences are reported.
var fields = []struct {
	name string
	show func(*Entry) string
}{
	{"d_type", func(e *Entry) string { return dtypeName(e.DType) }},
	{"d_ino", func(e *Entry) string { return cmp.Or(e.dinoAlias, strconv.FormatUint(e.DIno, 10)) }},
	{"mode", func(e *Entry) string { return fmt.Sprintf("%#o", e.Mode) }},
	{"uid", func(e *Entry) string { return strconv.FormatUint(uint64(e.UID), 10) }},
	{"gid", func(e *Entry) string { return strconv.FormatUint(uint64(e.GID), 10) }},
	{"size", func(e *Entry) string { return strconv.FormatInt(e.Size, 10) }},
	{"nlink", func(e *Entry) string { return strconv.FormatUint(e.Nlink, 10) }},
	{"st_ino", func(e *Entry) string { return cmp.Or(e.inoAlias, strconv.FormatUint(e.Ino, 10)) }},
	{"st_dev", func(e *Entry) string { return devString(e.Dev) }},
	{"rdev", func(e *Entry) string { return devString(e.Rdev) }},
	{"blocks", func(e *Entry) string { return strconv.FormatInt(e.Blocks, 10) }},
	{"blksize", func(e *Entry) string { return strconv.FormatInt(e.Blksize, 10) }},
	{"atime", func(e *Entry) string { return timeString(e.Atime) }},
	{"mtime", func(e *Entry) string { return timeString(e.Mtime) }},
	{"ctime", func(e *Entry) string { return timeString(e.Ctime) }},
	{"lstat error", func(e *Entry) string { return e.LstatErr }},
	{"readdir error", func(e *Entry) string { return e.ReaddirErr }},
	{"symlink target", func(e *Entry) string { return strconv.Quote(e.Target) }},
	{"content sha256", func(e *Entry) string { return e.SHA256 }},
	{"xattrs", func(e *Entry) string { return xattrString(e.Xattrs) }},
	{"xattr probes", func(e *Entry) string { return xattrString(e.Probes) }},
}

// Diff compares a walk of some implementation against a walk of the kernel
// mounting the same layers, returning differences sorted by path.
func Diff(kernel, other *Tree, opts DiffOptions) []Difference {
	var out []Difference
	kSide, oSide := newSide(kernel, opts.KernelOps, opts), newSide(other, opts.OtherOps, opts)
	for _, p := range kernel.Paths() {
		k := kernel.Entries[p]
		o, ok := other.Entries[p]
		if !ok {
			out = append(out, Difference{Path: p, Field: "exists", Kernel: fileType(k.Mode), Other: "missing"})
			continue
		}
		kn, on := normalise(*k, kSide, opts), normalise(*o, oSide, opts)
		for _, f := range fields {
			if ks, vs := f.show(&kn), f.show(&on); ks != vs {
				out = append(out, Difference{Path: p, Field: f.name, Kernel: ks, Other: vs})
			}
		}
	}
	for _, p := range other.Paths() {
		if _, ok := kernel.Entries[p]; !ok {
			out = append(out, Difference{Path: p, Field: "exists", Kernel: "missing", Other: fileType(other.Entries[p].Mode)})
		}
	}
	return out
}

// DirentInoMismatches lists entries whose readdir d_ino differs from their
// lstat st_ino: tools such as find and du rely on the two agreeing, so this
// must hold within any one implementation.
func (t *Tree) DirentInoMismatches() []string {
	var out []string
	for _, p := range t.Paths() {
		if e := t.Entries[p]; p != "." && e.LstatErr == "" && e.DIno != e.Ino {
			out = append(out, fmt.Sprintf("%s: d_ino %d, st_ino %d", p, e.DIno, e.Ino))
		}
	}
	return out
}

// OwnDirentInoMismatches lists DirentInoMismatches of t that kernel's tree
// of the same paths does not have: the kernel's overlay lets the two
// differ for an entry its readdir cache of an impure directory does not
// hold yet (a link made since of an object with an origin).
func (t *Tree) OwnDirentInoMismatches(kernel *Tree) []string {
	theirs := make(map[string]bool)
	for _, m := range kernel.DirentInoMismatches() {
		p, _, _ := strings.Cut(m, ": d_ino ")
		theirs[p] = true
	}
	return slices.DeleteFunc(t.DirentInoMismatches(), func(m string) bool {
		p, _, _ := strings.Cut(m, ": d_ino ")
		return theirs[p]
	})
}

// SameDinoChanges leaves out of the kernel's and another's changes across
// a remount the d_ino changes of a path both have: the kernel's readdir
// of an impure directory shows an entry linked in since its last read
// with the entry's own number until the directory is read afresh (as
// after a remount); the merged trees before the remount compare those
// d_ino already.
func SameDinoChanges(kernel, other []Difference) (k, o []Difference) {
	changed := func(diffs []Difference) map[string]bool {
		m := make(map[string]bool)
		for _, d := range diffs {
			if d.Field == "d_ino" {
				m[d.Path] = true
			}
		}
		return m
	}
	both, theirs := changed(kernel), changed(other)
	for p := range both {
		if !theirs[p] {
			delete(both, p)
		}
	}
	keep := func(diffs []Difference) []Difference {
		return slices.DeleteFunc(diffs, func(d Difference) bool { return d.Field == "d_ino" && both[d.Path] })
	}
	return keep(kernel), keep(other)
}

func dtypeName(t uint8) string {
	switch t {
	case unix.DT_UNKNOWN:
		return "unknown"
	case unix.DT_FIFO:
		return "fifo"
	case unix.DT_CHR:
		return "chr"
	case unix.DT_DIR:
		return "dir"
	case unix.DT_BLK:
		return "blk"
	case unix.DT_REG:
		return "reg"
	case unix.DT_LNK:
		return "lnk"
	case unix.DT_SOCK:
		return "sock"
	case unix.DT_WHT:
		return "wht"
	}
	return strconv.Itoa(int(t))
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "file"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFCHR:
		return "chardev"
	case unix.S_IFBLK:
		return "blockdev"
	case unix.S_IFSOCK:
		return "socket"
	}
	return fmt.Sprintf("mode %#o", mode)
}

func devString(d uint64) string {
	return fmt.Sprintf("%d:%d", unix.Major(d), unix.Minor(d))
}

func timeString(ns int64) string {
	if ns == mtimeDuringOps {
		return "during the operations"
	}
	return time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
}

func xattrString(xs []Xattr) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = x.Name + "=" + strconv.Quote(x.Value)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// UpperObject is what the comparison of raw upper layers looks at for one
// path: the on-disk format an implementation leaves behind, which the
// kernel (or the implementation itself, on its next mount) must read back.
// Left out, with reasons:
//
//   - times: the merged walks compare the visible objects' mtimes, with
//     their rules; whiteouts and markers have no meaningful times.
//   - inode numbers and nlink: each side's upper is a separate copy, and
//     the kernel makes whiteouts as links of one shared whiteout inode
//     kept in the work directory, so their nlink counts its own history.
//   - size of directories: ext4 directory sizes depend on their history.
//   - block counts: only whether a regular file has holes is compared.
//   - the work directory but its index (index=on): the rest is scratch
//     space, emptied at every mount.
//   - the bytes of file handles (origin, upper, index entry names): an
//     implementation may encode a handle differently and still be read
//     back, so a handle is compared by the object it names (layer and
//     path), its flags and its uuid (see describeHandle).
//   - the value of uuid: a random id; its length is compared.
type UpperObject struct {
	Type    string // file type; "whiteout" is a char device 0/0, "aufs-whiteout" a .wh.NAME file
	Mode    string // permission bits (with setuid, setgid, sticky)
	Owner   string
	Size    string // non-directories
	Content string // regular files: sha256
	Sparse  string // regular files: "holes" if fewer bytes are allocated than the size says
	Target  string // symlinks
	Rdev    string // devices other than whiteouts
	Xattrs  string // every xattr but the overlay's private ones
	// Private holds the overlay's xattrs (trusted.overlay.*, or
	// user.overlay.* with userxattr) by name without the prefix: values
	// (opaque, impure, redirect, metacopy, nlink ...), file handles as the
	// object they name, uuid by length.
	Private string
	Links   string // index entries: the upper paths that are the same inode
}

// upperFields orders UpperObject's fields in reports.
var upperFields = []struct {
	name string
	get  func(*UpperObject) string
}{
	{"type", func(u *UpperObject) string { return u.Type }},
	{"mode", func(u *UpperObject) string { return u.Mode }},
	{"owner", func(u *UpperObject) string { return u.Owner }},
	{"size", func(u *UpperObject) string { return u.Size }},
	{"content sha256", func(u *UpperObject) string { return u.Content }},
	{"sparse", func(u *UpperObject) string { return u.Sparse }},
	{"symlink target", func(u *UpperObject) string { return u.Target }},
	{"rdev", func(u *UpperObject) string { return u.Rdev }},
	{"xattrs", func(u *UpperObject) string { return u.Xattrs }},
	{"overlay xattrs", func(u *UpperObject) string { return u.Private }},
	{"upper links", func(u *UpperObject) string { return u.Links }},
}

// The prefixes of the overlay's own xattrs: trusted.overlay. by default,
// user.overlay. with the userxattr option.
const (
	privatePrefix     = "trusted.overlay."
	userPrivatePrefix = "user.overlay."
)

// UpperObjects turns a walk of a raw (unmounted) upper directory, or of
// an index directory, into UpperObjects by path; prefix is the overlay's
// xattr prefix. An AUFS whiteout .wh.NAME is reported at NAME, so that it
// lines up with the kernel's whiteout for the same name.
func UpperObjects(t *Tree, prefix string) map[string]*UpperObject {
	out := map[string]*UpperObject{}
	for p, e := range t.Entries {
		u := &UpperObject{
			Type:  fileType(e.Mode),
			Mode:  fmt.Sprintf("%#o", e.Mode&07777),
			Owner: fmt.Sprintf("%d:%d", e.UID, e.GID),
		}
		if e.LstatErr != "" {
			u.Type = "unstattable: " + e.LstatErr
		}
		switch e.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
		case unix.S_IFREG:
			u.Size = strconv.FormatInt(e.Size, 10)
			u.Content = e.SHA256
			// Exact block counts depend on how data was written; whether a
			// file kept its holes (truncate up, copy-up) does not.
			if e.Blocks*512 < e.Size {
				u.Sparse = "holes"
			}
		case unix.S_IFLNK:
			u.Size = strconv.FormatInt(e.Size, 10)
			u.Target = strconv.Quote(e.Target)
		case unix.S_IFCHR, unix.S_IFBLK:
			u.Rdev = devString(e.Rdev)
			if e.Mode&unix.S_IFMT == unix.S_IFCHR && e.Rdev == 0 {
				u.Type, u.Rdev = "whiteout", ""
			}
		default:
			u.Size = strconv.FormatInt(e.Size, 10)
		}
		var user, private []string
		for _, x := range e.Xattrs {
			name, ok := strings.CutPrefix(x.Name, prefix)
			// trusted.overlay.overlay.X is a user's trusted.overlay.X, escaped.
			if !ok || strings.HasPrefix(name, "overlay.") {
				user = append(user, x.Name+"="+strconv.Quote(x.Value))
				continue
			}
			switch handle, isHandle := e.Handles[x.Name]; {
			case isHandle:
				private = append(private, name+": "+handle)
			case name == "uuid":
				private = append(private, fmt.Sprintf("uuid (%d bytes)", len(x.Value)))
			default:
				private = append(private, name+"="+strconv.Quote(x.Value))
			}
		}
		u.Xattrs = "[" + strings.Join(user, " ") + "]"
		u.Private = "[" + strings.Join(private, " ") + "]"
		if len(e.Links) > 0 {
			u.Links = strings.Join(e.Links, " ")
		}
		dir, base := path.Split(p)
		if rest, ok := strings.CutPrefix(base, aufsWhiteoutPref); ok && rest != "" && base != aufsOpaqueName && e.Mode&unix.S_IFMT == unix.S_IFREG {
			u.Type, u.Size, u.Content = "aufs-whiteout ("+base+")", "", ""
			p = dir + rest
		}
		out[p] = u
	}
	return out
}

// DiffUpper compares the raw upper layers (or index directories) two
// implementations left; prefix is the overlay's xattr prefix.
func DiffUpper(kernel, other *Tree, prefix string) []Difference {
	k, o := UpperObjects(kernel, prefix), UpperObjects(other, prefix)
	var out []Difference
	for _, p := range slices.Sorted(maps.Keys(k)) {
		ko, ok := o[p]
		if !ok {
			out = append(out, Difference{Path: p, Field: "exists", Kernel: k[p].Type, Other: "missing"})
			continue
		}
		for _, f := range upperFields {
			if ks, vs := f.get(k[p]), f.get(ko); ks != vs {
				out = append(out, Difference{Path: p, Field: f.name, Kernel: ks, Other: vs})
			}
		}
	}
	for _, p := range slices.Sorted(maps.Keys(o)) {
		if _, ok := k[p]; !ok {
			out = append(out, Difference{Path: p, Field: "exists", Kernel: "missing", Other: o[p].Type})
		}
	}
	return out
}
