// Package mountinfo owns reading /proc/self/mountinfo, for the mount
// program, the conformance suite, the benchmark and the tests alike: one
// parser, the escaping of its paths, and the form of path it lists (Path).
// It never stats or opens a mount (a stat of a FUSE mount whose daemon
// hangs would hang too): Path resolves only the parent of the path it is
// given.
package mountinfo

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Mount is one line of mountinfo.
type Mount struct {
	Dev       string   // "MAJ:MIN" of the mounted filesystem
	Point     string   // the mountpoint, unescaped
	Options   []string // per-mount options (rw, nosuid, noatime...)
	Type      string   // filesystem type ("fuse.ovlmount", "overlay"...)
	Source    string   // the source, unescaped
	SuperOpts []string // per-superblock options (default_permissions...)
}

// Has reports whether opt is among the mount's per-mount or per-superblock
// options.
func (m Mount) Has(opt string) bool {
	return slices.Contains(m.Options, opt) || slices.Contains(m.SuperOpts, opt)
}

// Parse decodes the text of a mountinfo file; lines it cannot read are
// left out.
func Parse(text string) []Mount {
	var out []Mount
	for _, line := range strings.Split(text, "\n") {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - TYPE SOURCE SUPER
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if sep < 6 || sep+3 >= len(f) {
			continue
		}
		out = append(out, Mount{
			Dev:       f[2],
			Point:     Unescape(f[4]),
			Options:   strings.Split(f[5], ","),
			Type:      f[sep+1],
			Source:    Unescape(f[sep+2]),
			SuperOpts: strings.Split(f[sep+3], ","),
		})
	}
	return out
}

// Read returns the mounts of this process's mount namespace, in
// mountinfo's order (a later mount on a point covers an earlier one).
func Read() ([]Mount, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return Parse(string(b)), nil
}

// At returns the mount in effect at dir (an absolute, clean path, as Path
// makes it): the last one mountinfo lists there. ok is false if nothing
// is mounted there, or mountinfo cannot be read.
func At(dir string) (m Mount, ok bool) {
	ms, _ := Read()
	return at(ms, dir)
}

func at(ms []Mount, dir string) (m Mount, ok bool) {
	for _, x := range ms {
		if x.Point == dir {
			m, ok = x, true
		}
	}
	return m, ok
}

// Under returns the mounts at dir or below it, in mountinfo's order.
func Under(dir string) ([]Mount, error) {
	ms, err := Read()
	if err != nil {
		return nil, err
	}
	return under(ms, dir), nil
}

func under(ms []Mount, dir string) []Mount {
	var out []Mount
	for _, m := range ms {
		if within(m.Point, dir) {
			out = append(out, m)
		}
	}
	return out
}

// Containing returns the mount that holds path (absolute and free of
// symlinks), as findmnt -T finds it: the last one mountinfo lists at the
// longest mountpoint that is path or a directory above it. ok is false if
// mountinfo cannot be read.
func Containing(path string) (m Mount, ok bool) {
	ms, _ := Read()
	return containing(ms, path)
}

func containing(ms []Mount, path string) (m Mount, ok bool) {
	for _, x := range ms {
		if within(path, x.Point) && (!ok || len(x.Point) >= len(m.Point)) {
			m, ok = x, true
		}
	}
	return m, ok
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	dir = strings.TrimSuffix(dir, "/")
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// Path returns p as mountinfo lists a mountpoint: absolute, with the
// symlinks in its parent resolved. p itself is not resolved: it may be a
// FUSE mount that no longer answers, and must not be looked at.
func Path(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	if abs == "/" {
		return abs, nil
	}
	parent, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return "", err
	}
	return filepath.Join(parent, filepath.Base(abs)), nil
}

// Unescape undoes the octal escapes the kernel writes for space, tab,
// newline and backslash (\040, \011, \012, \134) in a mountinfo path.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// SplitLower splits a lowerdir value, as a mount's options give it and
// mountinfo shows it, into its lower layers and its data-only layers, as
// the kernel does (ovl_parse_param_split_lowerdirs and
// ovl_parse_param_lowerdir): ':' separates lower layers, "::" a data-only
// layer from the one before it (lowerdir=L0:L1::D0::D1), and '\' escapes
// the next character ("\:" is a colon in a path; a trailing '\' is
// dropped). It refuses, with the kernel's reason, what the kernel refuses
// (EINVAL): a leading colon, trailing ones, three in a row, and a single
// ':' after a data-only layer, since once the data-only layers start
// every layer after is one.
func SplitLower(s string) (lower, data []string, err error) {
	if strings.HasPrefix(s, ":") {
		return nil, nil, errors.New("a leading ':' (the kernel cannot append a lower layer)")
	}
	var cur strings.Builder
	inData := false
	add := func() {
		if inData {
			data = append(data, cur.String())
		} else {
			lower = append(lower, cur.String())
		}
		cur.Reset()
	}
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\':
			if i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			}
		case s[i] == ':':
			n := len(s[i:]) - len(strings.TrimLeft(s[i:], ":"))
			switch {
			case n > 2:
				return nil, nil, errors.New("only single ':' or double '::' sequences of unescaped colons are allowed")
			case i+n == len(s):
				return nil, nil, errors.New("unescaped trailing colons")
			case n == 1 && inData:
				return nil, nil, errors.New("lower layers cannot follow data-only layers (each data-only layer follows '::')")
			}
			add()
			inData = inData || n == 2
			i += n - 1
		default:
			cur.WriteByte(s[i])
		}
	}
	if s != "" {
		add()
	}
	return lower, data, nil
}
