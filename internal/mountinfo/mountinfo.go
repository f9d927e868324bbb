// Package mountinfo owns reading /proc/self/mountinfo, for the mount
// program and the tests alike: one parser, and the escaping of its paths.
// It only reads that file: it never stats or opens a mount (a stat of a
// FUSE mount whose daemon hangs would hang too).
package mountinfo

import (
	"os"
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

// At returns the mount in effect at dir (an absolute, clean path): the
// last one mountinfo lists there. ok is false if nothing is mounted there.
func At(dir string) (m Mount, ok bool) {
	ms, err := Read()
	if err != nil {
		return Mount{}, false
	}
	for _, x := range ms {
		if x.Point == dir {
			m, ok = x, true
		}
	}
	return m, ok
}

// Under returns the mounts at dir or below it.
func Under(dir string) []Mount {
	ms, _ := Read()
	var out []Mount
	prefix := strings.TrimSuffix(dir, "/") + "/"
	for _, m := range ms {
		if m.Point == dir || strings.HasPrefix(m.Point, prefix) {
			out = append(out, m)
		}
	}
	return out
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
