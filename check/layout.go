package check

import (
	"golang.org/x/sys/unix"
)

// devIno identifies an object on the host.
type devIno struct{ dev, ino uint64 }

func statID(st *unix.Stat_t) devIno { return devIno{st.Dev, st.Ino} }

// fdID returns the identity of the object fd holds.
func fdID(fd int) (devIno, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return devIno{}, err
	}
	return statID(&st), nil
}

// maxDepth bounds a walk up the directory tree, far beyond any real one.
const maxDepth = 4096

// ancestors returns the directories above the directory fd holds, nearest
// first, up to the root the path walk reaches: the process's root, or the
// root of a detached mount (a layer's clone). fd stays open.
func ancestors(fd int) []devIno {
	var out []devIno
	cur, err := unix.Openat(fd, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	id, err := fdID(cur)
	for i := 0; err == nil && i < maxDepth; i++ {
		var up int
		up, err = unix.Openat(cur, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			break
		}
		unix.Close(cur)
		cur = up
		var upID devIno
		if upID, err = fdID(cur); err != nil || upID == id {
			break
		}
		out = append(out, upID)
		id = upID
	}
	unix.Close(cur)
	return out
}

// site is one directory of the stack for the layout check.
type site struct {
	path, role string
	id         devIno
	above      []devIno
	mnt        uint64 // the mount it is on
}

func (s site) inside(o site) bool {
	for _, a := range s.above {
		if a == o.id {
			return true
		}
	}
	return false
}

// checkLayout checks where the directories of s are: the kernel refuses a
// stack whose upper and work directories are one inside the other, or on
// different mounts, and one whose lower layer is another layer or inside
// one (ovl_get_workdir, ovl_check_overlapping_layers); it mounts one with
// the upper or work directory inside a lower layer, but lookups that reach
// them there fail with ELOOP (ovl_lookup_trap_inode). It reports false if
// directories are inside each other, and nothing more is to be checked.
func (c *checker) checkLayout(s Stack) bool {
	var sites []site
	add := func(path, role string) {
		fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return
		}
		defer unix.Close(fd)
		st := site{path: path, role: role, above: ancestors(fd)}
		var sx unix.Statx_t
		if unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_INO|unix.STATX_MNT_ID, &sx) == nil {
			st.id = devIno{unix.Mkdev(sx.Dev_major, sx.Dev_minor), sx.Ino}
			st.mnt = sx.Mnt_id
		}
		sites = append(sites, st)
	}
	if s.Upper != "" {
		add(s.Upper, "upperdir")
		add(s.Work, "workdir")
	}
	for _, p := range s.Lower {
		add(p, "lowerdir")
	}
	for _, p := range s.Data {
		add(p, "datadir")
	}
	ok := true
	for i, a := range sites {
		for _, b := range sites[i+1:] {
			if !c.overlap(a, b) {
				continue
			}
			ok = false
		}
	}
	if s.Upper != "" && ok && sites[0].mnt != sites[1].mnt {
		c.find(s.Work, "workdir is not on the mount of upperdir %s: the kernel refuses the mount (EINVAL: workdir and upperdir must reside under the same mount)", s.Upper)
	}
	return ok
}

// overlap reports the finding for directories a and b (a listed first) if
// they are the same or one is inside the other.
func (c *checker) overlap(a, b site) bool {
	var outer, inner site
	switch {
	case a.id == b.id:
		if a.role == "workdir" || b.role == "workdir" {
			c.find(b.path, "%s is also the %s: the kernel refuses the mount (EINVAL: workdir and upperdir must be separate subtrees)", b.role, a.role)
		} else {
			c.find(b.path, "%s is also the %s: the kernel refuses the mount (ELOOP: conflicting %s path)", b.role, a.role, b.role)
		}
		return true
	case b.inside(a):
		outer, inner = a, b
	case a.inside(b):
		outer, inner = b, a
	default:
		return false
	}
	upperWork := func(s site) bool { return s.role == "upperdir" || s.role == "workdir" }
	switch {
	case upperWork(inner) && upperWork(outer):
		c.find(inner.path, "%s is inside %s %s: the kernel refuses the mount (EINVAL: workdir and upperdir must be separate subtrees)", inner.role, outer.role, outer.path)
	case upperWork(inner):
		c.find(inner.path, "%s is inside %s %s: the kernel mounts the stack, but lookups that reach it through that layer fail (ELOOP)", inner.role, outer.role, outer.path)
	default:
		c.find(inner.path, "%s is inside %s %s: the kernel refuses the mount (ELOOP: overlapping %s path)", inner.role, outer.role, outer.path, inner.role)
	}
	return true
}
