package overlay

import (
	"bytes"
	"fmt"

	"github.com/ovlmount/ovlmount/copyup"
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// Mounting with the index, as the kernel's ovl_get_indexdir: the upper
// root records the top lower root as its origin, and a later mount must
// name that lower root again (ESTALE otherwise); workdir/index records the
// upper root (overlay.upper), and must belong to this upper layer; stale
// entries are cleaned (ovl_indexdir_cleanup). The upper root's origin is
// checked before anything is written; the rest as the kernel goes, so
// that, as in the kernel, an index of another upper layer fails the
// mount once the origin is written, and an entry that fails it leaves
// the entries before it cleaned.

// indexSetup is what mounting with the index will write, once checked.
type indexSetup struct {
	workdir          string
	lowerFb, upperFb []byte // the ovl_fb of the top lower root and of the upper root
	setOrigin        bool   // the upper root has no origin yet
}

// checkIndex checks that the stack's roots can be mounted with the index,
// reading only, and returns what to write.
// Preconditions: fs.xattrs probed.
func (fs *FS) checkIndex(workdir string) (*indexSetup, error) {
	s := &indexSetup{workdir: workdir}
	fs.index = &indexState{fbUUID: make(map[*layers.Layer][16]byte), aliases: make(map[string][]*node)}
	var lower *layers.Layer
	for _, l := range fs.stack {
		u, err := layers.FSUUID(l.Root())
		if err != nil || fs.opts.UUID == UUIDOff {
			u = [16]byte{}
		}
		fs.index.fbUUID[l] = u
		if lower == nil && !l.Upper && !l.DataOnly {
			lower = l
		}
	}
	h, _, err := unix.NameToHandleAt(lower.Root(), "", unix.AT_EMPTY_PATH)
	if err != nil {
		return nil, fmt.Errorf("option index=on: lowerdir %s: file handle: %v", lower.Path, err)
	}
	if s.lowerFb, err = layers.EncodeOrigin(fs.index.fbUUID[lower], h); err != nil {
		return nil, fmt.Errorf("option index=on: lowerdir %s: file handle: %v", lower.Path, err)
	}
	if h, _, err = unix.NameToHandleAt(fs.upper.Root(), "", unix.AT_EMPTY_PATH); err != nil {
		return nil, fmt.Errorf("option index=on: upperdir %s: file handle: %v", fs.upper.Path, err)
	}
	if s.upperFb, err = layers.EncodeUpper(fs.index.fbUUID[fs.upper], h); err != nil {
		return nil, fmt.Errorf("option index=on: upperdir %s: file handle: %v", fs.upper.Path, err)
	}
	v, ok := fs.storedFb(fs.upper.Root(), layers.XattrOrigin)
	switch {
	case !ok:
		s.setOrigin = true
	case !bytes.Equal(v, s.lowerFb):
		return nil, fmt.Errorf("option index=on: upperdir %s was indexed over another lowerdir than %s (the origin of its root differs): %v", fs.upper.Path, lower.Path, unix.ESTALE)
	}
	return s, nil
}

// storedFb returns the ovl_fb xattr x of the object fd holds, if it has a
// valid one (ovl_get_fh: anything else counts as none).
func (fs *FS) storedFb(fd int, x layers.Xattr) ([]byte, bool) {
	v, err := layers.FdGetxattr(fd, fs.xattrs.Name(x))
	if err != nil || len(v) == 0 || layers.CheckFb(v) != nil {
		return nil, false
	}
	return v[:v[2]], true
}

// cleanIndex removes, as ovl_indexdir_cleanup, in the order the
// directory lists them, the entries of index directory dfd that are to
// go: leftovers of an interrupted operation
// ("#..."), entries whose name and origin disagree or whose origin is
// gone, and orphans (a copy no name links any more, whose overlay link
// count is 0). Whiteouts and directories stay. An entry the kernel cannot
// read fails the mount, with its errno: a name that is no ovl_fb in hex
// (EINVAL), of a later version or unknown flags (ENODATA), or a
// non-directory without a readable origin (ENODATA).
func (fs *FS) cleanIndex(dfd int) error {
	fd, err := unix.Openat(dfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	ents, err := layers.ReadDirFd(fd, false)
	unix.Close(fd)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.Name[0] == '#' {
			cleanTemp(dfd, e.Name)
			continue
		}
		stale, err := fs.staleEntry(dfd, e.Name)
		if err != nil {
			return fmt.Errorf("entry %s: %v", e.Name, err)
		}
		if stale {
			layers.Unlink(dfd, e.Name)
		}
	}
	return nil
}

// staleEntry reports whether index entry name of dfd is to go (the
// kernel's ovl_verify_index returning ESTALE or ENOENT), or the error
// that fails the mount.
func (fs *FS) staleEntry(dfd int, name string) (bool, error) {
	fb, err := layers.ParseIndexName(name)
	if err != nil {
		return false, err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false, err
	}
	if layers.IsWhiteout(&st) || st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return false, nil
	}
	v, err := layers.GetxattrAt(dfd, name, fs.xattrs.Name(layers.XattrOrigin))
	if err != nil || len(v) == 0 || layers.CheckFb(v) != nil {
		return false, unix.ENODATA
	}
	if v[2] != fb[2] || !bytes.Equal(v[:v[2]], fb[:fb[2]]) {
		return true, nil
	}
	if st.Nlink != 1 {
		return false, nil
	}
	// Linked from nowhere but the index: an orphan unless its overlay
	// link count says names remain (ovl_get_nlink with no fallback).
	o, ok := layers.DecodeOrigin(fb[:fb[2]])
	if !ok {
		return true, nil
	}
	org, ok := fs.decode(o)
	if !ok || org.typ != 0 && org.typ != st.Mode&unix.S_IFMT {
		return true, nil
	}
	nv, _ := layers.GetxattrAt(dfd, name, fs.xattrs.Name(layers.XattrNlink))
	nl, valid := layers.ParseNlink(nv)
	if org.nlink == 1 || !valid {
		return true, nil
	}
	base := int64(st.Nlink)
	if nl.Lower {
		base = int64(org.nlink)
	}
	return base+int64(nl.Diff) <= 0, nil
}

// makeIndex writes what checkIndex found to write, as the kernel's
// ovl_get_indexdir does, in its order: the upper root's origin,
// workdir/index and its overlay.upper, which an existing index must have
// already (ESTALE if another upper root's), and the cleaning of stale
// entries.
func (fs *FS) makeIndex(s *indexSetup) error {
	if s.setOrigin {
		if err := layers.FdSetxattr(fs.upper.Root(), fs.xattrs.Name(layers.XattrOrigin), s.lowerFb, 0); err != nil {
			return fmt.Errorf("option index=on: upperdir %s: %v", fs.upper.Path, err)
		}
	}
	x, err := copyup.OpenIndex(s.workdir)
	if err != nil {
		return fmt.Errorf("option index=on: %v", err)
	}
	fs.index.x = x
	v, ok := fs.storedFb(x.Fd(), layers.XattrUpper)
	switch {
	case !ok:
		if err := layers.FdSetxattr(x.Fd(), fs.xattrs.Name(layers.XattrUpper), s.upperFb, 0); err != nil {
			return fmt.Errorf("option index=on: %s/index: %v", s.workdir, err)
		}
	case !bytes.Equal(v, s.upperFb):
		return fmt.Errorf("option index=on: %s/index belongs to another upperdir than %s (its overlay.upper differs): %v", s.workdir, fs.upper.Path, unix.ESTALE)
	}
	if err := fs.cleanIndex(x.Fd()); err != nil {
		return fmt.Errorf("option index=on: %s/index: %v", s.workdir, err)
	}
	return nil
}

// cleanTemp removes a leftover temporary of directory dfd as the kernel's
// ovl_workdir_cleanup at its first level: a non-directory, or a directory
// with what it holds, but for directories two levels down that are not
// empty, which stay, and the directory with them.
func cleanTemp(dfd int, name string) {
	if err := layers.Unlink(dfd, name); err != unix.EISDIR {
		return
	}
	if layers.Rmdir(dfd, name) == nil {
		return
	}
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	ents, _ := layers.ReadDirFd(fd, false)
	for _, e := range ents {
		if layers.Unlink(fd, e.Name) == unix.EISDIR {
			layers.Rmdir(fd, e.Name)
		}
	}
	unix.Close(fd)
	layers.Rmdir(dfd, name)
}
