package check

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// workdir/index, which a mount with index=on keeps: an entry for each
// copied-up lower hard link (with nfs_export=on, for every copied-up
// object), named by the hex of the file handle of its origin. A non-
// directory entry is a hard link of the upper file, carrying its origin;
// a directory entry is an empty directory whose overlay.upper names the
// upper directory; a whiteout entry marks one whose every name is gone.
// At mount the kernel removes what ovl_verify_index finds stale or
// orphaned, and refuses the mount on anything it cannot read
// (ovl_indexdir_cleanup).

// indexDir is workdir/index, opened.
type indexDir struct {
	fd   int
	path string
	// entries are its entries for non-directories, by name, for the
	// walk of the upper layer to count the upper files linked to each.
	entries map[string]*indexEntry
}

type indexEntry struct {
	id    devIno
	links int // upper names found linked to it
}

func (x *indexDir) close() {
	if x != nil {
		unix.Close(x.fd)
	}
}

// readIndex opens workdir/index, if there is one, and lists its entries
// for non-directories.
func (c *checker) readIndex() error {
	if c.workdir < 0 {
		return nil
	}
	path := c.workPath + "/index"
	fd, err := openBeneath(c.workdir, "index", unix.O_RDONLY|unix.O_DIRECTORY)
	switch err {
	case nil:
	case unix.ENOENT:
		return nil
	case unix.ENOTDIR, unix.ELOOP:
		c.find(path, "not a directory: a mount with index=on fails to use it")
		return nil
	default:
		return fmt.Errorf("%s: %v", path, err)
	}
	x := &indexDir{fd: fd, path: path, entries: map[string]*indexEntry{}}
	c.index = x
	ents, err := layers.ReadDirFd(fd, false)
	if err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	for _, e := range ents {
		var st unix.Stat_t
		if unix.Fstatat(fd, e.Name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			continue
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Mode&unix.S_IFMT != unix.S_IFCHR {
			x.entries[e.Name] = &indexEntry{id: statID(&st)}
		}
	}
	return nil
}

// noteUpper notes an upper non-directory (path, attributes st) whose
// origin is fh: it must be a link of the index entry of fh, if there is
// one, or the kernel ignores the entry for it (ovl_lookup_index) and its
// hard links through the overlay break.
func (x *indexDir) noteUpper(c *checker, path string, st *unix.Stat_t, fh fileHandle) {
	if x == nil {
		return
	}
	e := x.entries[fh.hexName()]
	switch {
	case e == nil:
	case e.id == statID(st):
		e.links++
	default:
		c.find(path, "another inode than its origin's index entry %s/%s: the kernel ignores the entry for it, and its hard links through the overlay break", x.path, fh.hexName())
	}
}

// checkIndex checks workdir/index: its own markers, the upper root's
// origin, and every entry.
func (c *checker) checkIndex() error {
	x := c.index
	if x == nil {
		return nil
	}
	xs, err := c.overlayXattrs(x.fd, "", x.path)
	if err != nil {
		return err
	}
	for _, a := range xs {
		if a.key == xUpper || a.key == xOrigin {
			// overlay.origin is where older kernels recorded it.
			c.checkIndexOwner(a)
		}
	}
	c.checkRootOrigin()
	// Read once already, by readIndex.
	if _, err := unix.Seek(x.fd, 0, 0); err != nil {
		return fmt.Errorf("%s: %v", x.path, err)
	}
	ents, err := layers.ReadDirFd(x.fd, false)
	if err != nil {
		return fmt.Errorf("%s: %v", x.path, err)
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
	for _, e := range ents {
		if err := c.checkIndexEntry(e.Name); err != nil {
			return err
		}
	}
	return nil
}

// refused is the end of a finding the kernel refuses an index=on mount
// on, with its advice.
const refused = "the kernel refuses to mount the stack with index=on (delete the index directory, or mount with index=off)"

// checkIndexOwner checks that xattr a of the index directory names the
// upper root: an index belongs to one upper layer (ovl_get_indexdir,
// ovl_verify_upper).
func (c *checker) checkIndexOwner(a ovlXattr) {
	path := c.index.path
	fh, unknown, bad := parseHandle(a.val)
	switch {
	case bad != "":
		c.find(path, "%s is not a file handle (%s): %s", a.name(), bad, refused)
		return
	case unknown:
		c.find(path, "%s is a file handle the kernel does not read: %s", a.name(), refused)
		return
	case !c.decode:
		return
	}
	fd, _, err := c.openHandle(fh, []int{0})
	if err == nil {
		var id devIno
		id, err = fdID(fd)
		unix.Close(fd)
		if err == nil && id != c.upper.id {
			err = unix.ESTALE
		}
	}
	if err != nil {
		c.find(path, "%s does not name upperdir %s (%v): the index belongs to another upper layer; %s", a.name(), c.upper.path, err, refused)
	}
}

// checkRootOrigin checks that the upper root's origin, with an index, is
// the root of the first lower layer (ovl_get_indexdir: "failed to verify
// upper root origin").
func (c *checker) checkRootOrigin() {
	below := c.below(0)
	if !c.decode || len(below) == 0 {
		return
	}
	v, has, err := getOverlay(c.upper.Root(), xOrigin)
	if err != nil || !has || len(v) == 0 {
		return
	}
	first := c.layers[below[0]]
	fh, unknown, bad := parseHandle(v)
	if bad != "" || unknown {
		c.find(c.upper.path, "overlay.origin of the upper root is not a file handle the kernel reads: %s", refused)
		return
	}
	fd, _, err := c.openHandle(fh, below[:1])
	if err == nil {
		var id devIno
		id, err = fdID(fd)
		unix.Close(fd)
		if err == nil && id != first.id {
			err = unix.ESTALE
		}
	}
	if err != nil {
		c.find(c.upper.path, "overlay.origin of the upper root is not the root of lowerdir %s (%v): the upper layer was made over other lower layers; %s", first.path, err, refused)
	}
}

// checkIndexEntry checks entry name of the index.
func (c *checker) checkIndexEntry(name string) error {
	x := c.index
	path := x.path + "/" + name
	var st unix.Stat_t
	if err := unix.Fstatat(x.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	typ := st.Mode & unix.S_IFMT
	if name[0] == '#' {
		if !layers.IsWhiteout(&st) {
			// A whiteout is the one the kernel links its whiteouts
			// to, kept while mounted.
			c.leftover(x.fd, name, path, "temporary of an interrupted copy-up or index update: the kernel removes it at mount")
		}
		return nil
	}
	fh, bad := indexName(name)
	if bad != "" {
		c.find(path, "not an index entry: its name is %s; %s", bad, refused)
		return nil
	}
	switch {
	case layers.IsWhiteout(&st):
		// Every name of it is gone (nfs_export=on).
		return nil
	case typ == unix.S_IFCHR && unix.Major(st.Rdev) == 0:
		problem := fmt.Sprintf("char device %d:%d, a whiteout index entry of the wrong form (a whiteout is 0:0): %s", unix.Major(st.Rdev), unix.Minor(st.Rdev), refused)
		if c.opts.Repair {
			c.fixed(path, problem, "replaced by a 0:0 whiteout", c.whiteoutOver(x.fd, x.fd, name))
		} else {
			c.find(path, "%s", problem)
		}
		return nil
	case typ == unix.S_IFDIR:
		return c.checkDirIndex(name, path, fh)
	}
	v, has, err := getOverlayAt(x.fd, name, xOrigin)
	if err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	stored, unknown, invalid := parseHandle(v)
	switch {
	case !has || len(v) == 0 || unknown || invalid != "":
		c.find(path, "index entry without a readable overlay.origin: %s", refused)
		return nil
	case !bytes.Equal(stored.raw, fh.raw):
		problem := "stale index entry: its overlay.origin is not the handle of its name, and the kernel removes it at mount"
		switch {
		case st.Nlink == 1:
			c.find(path, "%s; left, since it is the only link of its file", problem)
		case c.opts.Repair:
			c.fixed(path, problem, "removed (its upper names keep the file)", layers.Unlink(x.fd, name))
		default:
			c.find(path, "%s", problem)
		}
		return nil
	}
	if st.Nlink > 1 {
		c.checkIndexLinks(name, path, &st)
	}
	if !c.decode {
		return nil
	}
	fd, _, err := c.openHandle(fh, c.lowerLayers())
	if err != nil && err != unix.ESTALE {
		return fmt.Errorf("%s: its origin: %v", path, err)
	}
	gone, wrongType := err != nil, false
	var ost unix.Stat_t
	if !gone {
		err = unix.Fstat(fd, &ost)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("%s: its origin: %v", path, err)
		}
		wrongType = ost.Mode&unix.S_IFMT != typ
	}
	switch {
	case st.Nlink > 1 && wrongType:
		c.find(path, "index entry of another type than its origin (%s): lookups of the origin's lower names fail (EIO: bad index found)", typeName(ost.Mode))
	case st.Nlink > 1:
	case gone || wrongType:
		c.leftover(x.fd, name, path, "stale index entry: its origin is gone (or of another type) and no upper file links to it; the kernel removes it at mount")
	case overlayNlink(x.fd, name, &ost, &st) == 0:
		c.leftover(x.fd, name, path, "orphan index entry: no name of the overlay shows its file any more (overlay nlink 0), and the kernel removes it at mount")
	}
	return nil
}

// checkIndexLinks checks an index entry that upper files link to
// (attributes st): every link of it but itself must be an upper file
// whose origin it is, since the kernel keeps the overlay's link count of
// the file relative to it (overlay.nlink).
func (c *checker) checkIndexLinks(name, path string, st *unix.Stat_t) {
	x := c.index
	if e := x.entries[name]; e != nil && uint64(e.links) != st.Nlink-1 {
		c.find(path, "index entry with %d links, of which %d are upper files whose origin it is: the overlay's link count of the file, kept relative to it, is off", st.Nlink, e.links)
	}
	v, has, err := getOverlayAt(x.fd, name, xNlink)
	if err == nil && has {
		if bad := nlinkProblem(v); bad != "" {
			c.find(path, "overlay.nlink %s: the kernel ignores it (failed to get index nlink)", bad)
		}
	}
}

// overlayNlink is ovl_get_nlink with fallback 0: the link count of the
// overlay's file of an index entry (attributes st, entry name of dfd)
// whose origin has attributes ost, from the entry's overlay.nlink, "U" or
// "L" (relative to the entry's or the origin's count) then a signed
// number. An origin with one link leaves nothing to count.
func overlayNlink(dfd int, name string, ost, st *unix.Stat_t) int64 {
	if ost.Nlink == 1 {
		return 0
	}
	v, has, err := getOverlayAt(dfd, name, xNlink)
	if err != nil || !has || nlinkProblem(v) != "" {
		return 0
	}
	diff, err := strconv.ParseInt(string(v[1:]), 10, 32)
	if err != nil {
		return 0
	}
	base := int64(st.Nlink)
	if v[0] == 'L' {
		base = int64(ost.Nlink)
	}
	return max(base+diff, 0)
}

// checkDirIndex checks the directory index entry name (nfs_export=on): its
// overlay.upper must name an upper directory whose origin fh is.
func (c *checker) checkDirIndex(name, path string, fh fileHandle) error {
	x := c.index
	v, has, err := getOverlayAt(x.fd, name, xUpper)
	if err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	upper, unknown, bad := parseHandle(v)
	if !has || len(v) == 0 || unknown || bad != "" {
		c.staleDirIndex(name, path, "directory index entry without a readable overlay.upper")
		return nil
	}
	if !c.decode {
		return nil
	}
	fd, _, err := c.openHandle(upper, []int{0})
	if err == unix.ESTALE {
		problem := "orphan directory index entry: the upper directory it names is gone; the kernel (with nfs_export=on) makes it a whiteout at mount"
		if !c.opts.Repair {
			c.find(path, "%s", problem)
			return nil
		}
		c.fixed(path, problem, "made a whiteout", c.whiteOutDir(name))
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: overlay.upper: %v", path, err)
	}
	defer unix.Close(fd)
	var ust unix.Stat_t
	if err := unix.Fstat(fd, &ust); err != nil {
		return fmt.Errorf("%s: overlay.upper: %v", path, err)
	}
	if ust.Mode&unix.S_IFMT != unix.S_IFDIR {
		c.find(path, "directory index entry whose overlay.upper names %s: %s", typeName(ust.Mode), refused)
		return nil
	}
	o, has, err := getOverlay(fd, xOrigin)
	if err != nil {
		return fmt.Errorf("%s: its upper directory: %v", path, err)
	}
	if ofh, _, _ := parseHandle(o); !has || !bytes.Equal(ofh.raw, fh.raw) {
		c.staleDirIndex(name, path, "stale directory index entry: the upper directory it names has another origin")
	}
	return nil
}

// staleDirIndex reports a directory index entry the kernel (with
// nfs_export=on) removes at mount, and removes it, an empty directory,
// when repairing.
func (c *checker) staleDirIndex(name, path, problem string) {
	problem += "; the kernel (with nfs_export=on) removes it at mount"
	if !c.opts.Repair {
		c.find(path, "%s", problem)
		return
	}
	c.fixed(path, problem, "removed", layers.Rmdir(c.index.fd, name))
}

// whiteOutDir replaces the empty directory name of the index with a
// whiteout, as ovl_cleanup_and_whiteout does: a whiteout made beside it is
// exchanged with it, then it is removed.
func (c *checker) whiteOutDir(name string) error {
	fd := c.index.fd
	t, err := c.tempWhiteout(fd)
	if err != nil {
		return err
	}
	if err := layers.Rename(fd, t, fd, name, unix.RENAME_EXCHANGE); err != nil {
		layers.Unlink(fd, t)
		return err
	}
	return layers.Rmdir(fd, t)
}

// indexName reads the file handle an index entry's name is the hex of
// (ovl_verify_index), or says why it is none.
func indexName(name string) (fileHandle, string) {
	if len(name) < 2*fbHeader {
		return fileHandle{}, fmt.Sprintf("%d characters, fewer than the %d of a file handle's hex", len(name), 2*fbHeader)
	}
	raw, err := hex.DecodeString(name[:len(name)/2*2])
	if err != nil {
		return fileHandle{}, "not hex"
	}
	fh, unknown, bad := parseHandle(raw)
	switch {
	case bad != "":
		return fh, "no file handle (" + bad + ")"
	case unknown:
		return fh, "a file handle of a version or flags the kernel does not read"
	}
	return fh, ""
}

// getOverlayAt is getOverlay for entry name of directory dfd.
func getOverlayAt(dfd int, name, key string) ([]byte, bool, error) {
	fd, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, false, err
	}
	defer unix.Close(fd)
	return getOverlay(fd, key)
}
