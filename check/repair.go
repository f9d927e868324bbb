package check

import (
	"strconv"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// openBeneath opens entry name of directory dfd with flags, never through
// a symlink.
func openBeneath(dfd int, name string, flags int) (int, error) {
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_NOFOLLOW | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for {
		fd, err := unix.Openat2(dfd, name, &how)
		if err != unix.EINTR && err != unix.EAGAIN {
			return fd, err
		}
	}
}

// leftover reports entry name of directory dfd (path), which holds no
// user data and which the kernel removes at mount, and removes it when
// repairing.
func (c *checker) leftover(dfd int, name, path, problem string) {
	if !c.opts.Repair {
		c.find(path, "%s", problem)
		return
	}
	c.fixed(path, problem, "removed", layers.RemoveAll(dfd, name))
}

// whiteoutOver replaces entry name of directory dfd with a 0:0 whiteout
// made in directory tmp, on the same filesystem, with one rename, as the
// kernel makes its whiteouts in the work directory: the name never shows
// anything else meanwhile.
func (c *checker) whiteoutOver(tmp, dfd int, name string) error {
	t, err := c.tempWhiteout(tmp)
	if err != nil {
		return err
	}
	if err := layers.Rename(tmp, t, dfd, name, 0); err != nil {
		layers.Unlink(tmp, t)
		return err
	}
	return nil
}

// tempWhiteout makes a 0:0 whiteout in directory dir under a new name of
// the kernel's temporaries' form, "#" and a hex number, and returns the
// name. One left behind is what the kernel keeps there itself.
func (c *checker) tempWhiteout(dir int) (string, error) {
	for {
		c.temps++
		name := "#ovlcheck" + strconv.FormatInt(int64(c.temps), 16)
		err := layers.Whiteout(dir, name)
		if err != unix.EEXIST {
			return name, err
		}
	}
}

// workTemp returns an O_PATH fd of workdir/work, where temporaries for
// the upper layer are made, making it as the kernel does (mode 0) if it
// is missing.
func (c *checker) workTemp() (int, error) {
	fd, err := openBeneath(c.workdir, "work", unix.O_PATH|unix.O_DIRECTORY)
	if err != unix.ENOENT {
		return fd, err
	}
	if err := layers.Mkdir(c.workdir, "work", 0); err != nil && err != unix.EEXIST {
		return -1, err
	}
	return openBeneath(c.workdir, "work", unix.O_PATH|unix.O_DIRECTORY)
}

// badWhiteout reports the char device name of f's directory (path,
// attributes st), major 0 but not 0:0: a whiteout of the wrong form, which
// the kernel takes for a device node (IS_WHITEOUT wants 0:0). Repair
// rewrites it as a whiteout, in the upper layer only.
func (c *checker) badWhiteout(f *frame, name, path string, st *unix.Stat_t) {
	problem := "char device " + strconv.Itoa(int(unix.Major(st.Rdev))) + ":" + strconv.Itoa(int(unix.Minor(st.Rdev))) +
		", a whiteout of the wrong form (a whiteout is 0:0): the kernel shows a device node there instead of hiding the name"
	switch {
	case c.layers[f.l] != c.upper:
		c.find(path, "%s; lower layers are never written", problem)
	case !c.opts.Repair:
		c.find(path, "%s", problem)
	default:
		tmp, err := c.workTemp()
		if err == nil {
			err = c.whiteoutOver(tmp, f.fd, name)
			unix.Close(tmp)
		}
		c.fixed(path, problem, "replaced by a 0:0 whiteout", err)
	}
}
