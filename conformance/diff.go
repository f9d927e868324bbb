package conformance

import (
	"fmt"
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
func normalise(e Entry, opts DiffOptions) Entry {
	e.Dev = 0
	e.Blocks, e.Blksize = 0, 0
	e.Atime, e.Ctime = 0, 0
	if e.Path == "." {
		e.Ino = 0
	}
	if opts.IgnoreInodeNumbers {
		e.Ino, e.DIno = 0, 0
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
	{"d_ino", func(e *Entry) string { return strconv.FormatUint(e.DIno, 10) }},
	{"mode", func(e *Entry) string { return fmt.Sprintf("%#o", e.Mode) }},
	{"uid", func(e *Entry) string { return strconv.FormatUint(uint64(e.UID), 10) }},
	{"gid", func(e *Entry) string { return strconv.FormatUint(uint64(e.GID), 10) }},
	{"size", func(e *Entry) string { return strconv.FormatInt(e.Size, 10) }},
	{"nlink", func(e *Entry) string { return strconv.FormatUint(e.Nlink, 10) }},
	{"st_ino", func(e *Entry) string { return strconv.FormatUint(e.Ino, 10) }},
	{"st_dev", func(e *Entry) string { return devString(e.Dev) }},
	{"rdev", func(e *Entry) string { return devString(e.Rdev) }},
	{"blocks", func(e *Entry) string { return strconv.FormatInt(e.Blocks, 10) }},
	{"blksize", func(e *Entry) string { return strconv.FormatInt(e.Blksize, 10) }},
	{"atime", func(e *Entry) string { return timeString(e.Atime) }},
	{"mtime", func(e *Entry) string { return timeString(e.Mtime) }},
	{"ctime", func(e *Entry) string { return timeString(e.Ctime) }},
	{"lstat error", func(e *Entry) string { return e.LstatErr }},
	{"symlink target", func(e *Entry) string { return strconv.Quote(e.Target) }},
	{"content sha256", func(e *Entry) string { return e.SHA256 }},
	{"xattrs", func(e *Entry) string { return xattrString(e.Xattrs) }},
	{"xattr probes", func(e *Entry) string { return xattrString(e.Probes) }},
}

// Diff compares a walk of some implementation against a walk of the kernel
// mounting the same layers, returning differences sorted by path.
func Diff(kernel, other *Tree, opts DiffOptions) []Difference {
	var out []Difference
	for _, p := range kernel.Paths() {
		k := kernel.Entries[p]
		o, ok := other.Entries[p]
		if !ok {
			out = append(out, Difference{Path: p, Field: "exists", Kernel: fileType(k.Mode), Other: "missing"})
			continue
		}
		kn, on := normalise(*k, opts), normalise(*o, opts)
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
	return time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
}

func xattrString(xs []Xattr) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = x.Name + "=" + strconv.Quote(x.Value)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
