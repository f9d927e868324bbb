package check

import (
	"fmt"
	"sort"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// workdir/work holds the temporaries of changes to the upper layer
// (without index=on; with it they are made in workdir/index): an object
// built there, or removed through there, is renamed away before the
// change is done, so what is left at mount was left by an interrupted one,
// and the kernel removes it (ovl_workdir_create, ovl_workdir_cleanup)
// with two exceptions: the whiteout the kernel links its whiteouts to,
// which it keeps while mounted, and work/incompat, which marks features
// an older kernel must not mount (a volatile mount leaves
// incompat/volatile).

// checkWork checks workdir/work.
func (c *checker) checkWork() error {
	if c.workdir < 0 {
		return nil
	}
	path := c.workPath + "/work"
	var st unix.Stat_t
	switch err := unix.Fstatat(c.workdir, "work", &st, unix.AT_SYMLINK_NOFOLLOW); err {
	case nil:
	case unix.ENOENT:
		return nil
	default:
		return fmt.Errorf("%s: %v", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		c.leftover(c.workdir, "work", path, fmt.Sprintf("%s, not a directory: the kernel removes it at mount", typeName(st.Mode)))
		return nil
	}
	fd, err := openBeneath(c.workdir, "work", unix.O_RDONLY|unix.O_DIRECTORY)
	if err == unix.EACCES {
		// Mode 0, as the kernel makes it, and no CAP_DAC_OVERRIDE.
		c.skip("%s: %v", path, err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	defer unix.Close(fd)
	ents, err := layers.ReadDirFd(fd, false)
	if err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
	for _, e := range ents {
		p := path + "/" + e.Name
		if err := unix.Fstatat(fd, e.Name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("%s: %v", p, err)
		}
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		switch {
		case e.Name[0] == '#' && layers.IsWhiteout(&st):
			// The whiteout the kernel links its whiteouts to.
		case e.Name == "incompat" && isDir:
			if err := c.checkIncompat(fd, p); err != nil {
				return err
			}
		case isDir && !removable(fd, e.Name):
			c.leftover(fd, e.Name, p, "left by an interrupted change, with directories in directories: the kernel fails to remove it and mounts the stack read-only")
		default:
			c.leftover(fd, e.Name, p, "left by an interrupted copy-up, whiteout or removal: the kernel removes it at mount")
		}
	}
	return nil
}

// checkIncompat checks work/incompat (path), in work (fd): each entry
// names a feature for which the kernel refuses the mount; empty, it is
// a leftover the kernel removes.
func (c *checker) checkIncompat(work int, path string) error {
	fd, err := openBeneath(work, "incompat", unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	ents, err := layers.ReadDirFd(fd, false)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	if len(ents) == 0 {
		c.leftover(work, "incompat", path, "empty: the kernel removes it at mount")
		return nil
	}
	for _, e := range ents {
		why := ""
		if e.Name == "volatile" {
			why = " (the stack was mounted volatile, without syncs: after a crash its upper layer may be inconsistent, and the kernel's advice is to start again with new upper and work directories)"
		}
		c.find(path+"/"+e.Name, "incompatible feature %q: the kernel refuses to mount the stack%s", e.Name, why)
	}
	return nil
}

// removable reports whether the kernel removes directory name of work:
// it removes what is in it, and the directories there only if they are
// empty (ovl_workdir_cleanup stops two levels below work).
func removable(work int, name string) bool {
	fd, err := openBeneath(work, name, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return true
	}
	defer unix.Close(fd)
	ents, err := layers.ReadDirFd(fd, false)
	if err != nil {
		return true
	}
	for _, e := range ents {
		sub, err := openBeneath(fd, e.Name, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			continue
		}
		inner, err := layers.ReadDirFd(sub, false)
		unix.Close(sub)
		if err == nil && len(inner) > 0 {
			return false
		}
	}
	return true
}
