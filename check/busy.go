package check

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/ovlmount/ovlmount/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// dirInfo is a directory with what is above it.
type dirInfo struct {
	path  string
	id    devIno
	above []devIno
}

func statDir(fd int, path string) (dirInfo, bool) {
	id, err := fdID(fd)
	if err != nil {
		return dirInfo{}, false
	}
	return dirInfo{path: path, id: id, above: ancestors(fd)}, true
}

// related says how directories a and b are placed, "" if apart.
func related(a, b dirInfo) string {
	if a.id == b.id {
		return "is"
	}
	for _, x := range a.above {
		if x == b.id {
			return "is inside"
		}
	}
	for _, x := range b.above {
		if x == a.id {
			return "holds"
		}
	}
	return ""
}

// InUse reports whether a directory of s is part of a live overlay, and
// which: a directory of a kernel overlay mount (its options in
// /proc/self/mountinfo name them), or one a FUSE daemon holds open (an
// ovlmount or fuse-overlayfs daemon holds its layers open), that is a
// directory of s, is inside one, or holds one. A mount changes its layers
// behind a check's back, and a repair would change them behind the
// mount's.
func InUse(s Stack) (string, bool) {
	var ours []dirInfo
	for _, p := range append(append([]string{s.Upper, s.Work}, s.Lower...), s.Data...) {
		if p == "" {
			continue
		}
		fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if d, ok := statDir(fd, p); ok {
			ours = append(ours, d)
		}
		unix.Close(fd)
	}
	match := func(theirs dirInfo, what string) (string, bool) {
		for _, o := range ours {
			if r := related(o, theirs); r != "" {
				return fmt.Sprintf("%s %s %s", o.path, r, what), true
			}
		}
		return "", false
	}
	ms, _ := mountinfo.Read()
	for _, m := range ms {
		if m.Type != "overlay" {
			continue
		}
		for _, d := range overlayDirs(m.SuperOpts) {
			fd, err := unix.Open(d.path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				continue
			}
			info, ok := statDir(fd, d.path)
			unix.Close(fd)
			if !ok {
				continue
			}
			if msg, busy := match(info, fmt.Sprintf("%s %s of the overlay mounted at %s", d.role, d.path, m.Point)); busy {
				return msg, true
			}
		}
	}
	return fuseDaemons(match)
}

// overlayDirs returns the directories a kernel overlay mount's options
// name: lowerdir= (as given, ':' between layers, "::" before data-only
// ones, "\" escaping), lowerdir+= and datadir+= (one each), upperdir=,
// workdir=. Relative paths, relative to the mounter's directory, are left
// out.
func overlayDirs(opts []string) []struct{ path, role string } {
	var out []struct{ path, role string }
	add := func(p, role string) {
		if strings.HasPrefix(p, "/") {
			out = append(out, struct{ path, role string }{p, role})
		}
	}
	for _, o := range opts {
		k, v, ok := strings.Cut(o, "=")
		if !ok {
			continue
		}
		v = mountinfo.Unescape(v)
		switch k {
		case "lowerdir":
			// The kernel took it: it splits.
			lower, data, _ := mountinfo.SplitLower(v)
			for _, p := range append(lower, data...) {
				add(p, "lowerdir")
			}
		case "lowerdir+", "datadir+":
			add(v, "lowerdir")
		case "upperdir", "workdir":
			add(v, k)
		}
	}
	return out
}

// fuseDaemons asks match about every directory that a process holding
// /dev/fuse open, a FUSE daemon, holds open.
func fuseDaemons(match func(dirInfo, string) (string, bool)) (string, bool) {
	procs, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == self {
			continue
		}
		fdDir := "/proc/" + p.Name() + "/fd/"
		fds, err := os.ReadDir(fdDir)
		if err != nil || !holdsFUSE(fdDir, fds) {
			continue
		}
		comm, _ := os.ReadFile("/proc/" + p.Name() + "/comm")
		what := fmt.Sprintf("a directory that process %d (%s), a FUSE daemon, holds open: the layer of a live ovlmount or fuse-overlayfs mount", pid, strings.TrimSpace(string(comm)))
		for _, f := range fds {
			fd, err := unix.Open(fdDir+f.Name(), unix.O_PATH|unix.O_CLOEXEC, 0)
			if err != nil {
				continue
			}
			var st unix.Stat_t
			var info dirInfo
			ok := unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR
			if ok {
				info, ok = statDir(fd, "")
			}
			unix.Close(fd)
			if ok {
				if msg, busy := match(info, what); busy {
					return msg, true
				}
			}
		}
	}
	return "", false
}

// holdsFUSE reports whether one of the fds of a process (in fdDir) is
// /dev/fuse.
func holdsFUSE(fdDir string, fds []os.DirEntry) bool {
	for _, f := range fds {
		if t, err := os.Readlink(fdDir + f.Name()); err == nil && t == "/dev/fuse" {
			return true
		}
	}
	return false
}
