package overlay

import (
	"strings"
	"sync"
	"syscall"

	"github.com/ovlmount/ovlmount/copyup"
	"github.com/ovlmount/ovlmount/inodes"
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// The inodes index (index=on), after the kernel's (namei.c
// ovl_lookup_index, copy_up.c ovl_link_up, util.c ovl_nlink_start and
// ovl_nlink_end, readdir.c ovl_indexdir_cleanup). Without it, copying up
// one name of a lower hard link breaks the link; with it the copy is made
// as workdir/index/<hex of the lower object's ovl_fb> and every name
// copied up is linked to that entry, so the names stay one inode:
//
//   - a name of a lower hard link (a non-directory with nlink > 1) that
//     has no upper object of its own shows the index entry, if there is
//     one, as its upper object; a write to it (open for writing, chmod,
//     setxattr...) links the entry to its name first ("link-up"), and so
//     does removing or overwriting it, which the link count must follow;
//   - every name shows the lower object's inode number, and the overlay's
//     link count, which overlay.nlink keeps relative to the upper inode's
//     ("U-1": one less than the upper inode, which the index entry holds
//     too), updated before each link, unlink and rename;
//   - when the overlay's link count reaches 0 the entry goes.
//
// The kernel has one inode for all those names and knows which name an
// operation came through; a FUSE daemon learns only the node. So each
// name is a node of its own here (found by name, as the names of a lower
// hard link without the index), all showing the same number, and the
// kernel is told not to cache their attributes or pages (Attr.Shared),
// which a change through another name can make stale.

// indexFar, followed by an index entry's name, is what place.far maps the
// upper layer to for a name of a lower hard link that has no upper
// object of its own: its upper object, if any, is that entry. It cannot
// be a name or a redirect, which hold no NUL.
const indexFar = "\x00"

// indexState is a mount's inodes index.
type indexState struct {
	x *copyup.Index
	// mu serialises the index: making an entry and linking it up, and
	// each change of a link count, from reading overlay.nlink to writing
	// it, as the kernel's lock of the one overlay inode does.
	mu sync.Mutex
	// whiteout is the name in the index directory of the whiteout that
	// whiteouts are made as links of, "" until the first; noShare is set
	// once linking to it failed for another reason than too many links
	// (the kernel's ovl_whiteout).
	whiteout string
	noShare  bool
	wmu      sync.Mutex // guards whiteout and noShare
	// fbUUID is the uuid the ovl_fb of an object of each layer carries:
	// its filesystem's, or null with uuid=off.
	fbUUID map[*layers.Layer][16]byte

	// amu guards aliases: the nodes the kernel holds for names of lower
	// hard links, by index entry name, so that those without an upper
	// object of their own show the entry once another name makes it.
	amu     sync.Mutex
	aliases map[string][]*node
}

// indexed is what the index says of a name of a lower hard link, or of
// an upper object with an index entry: made once, never changed.
type indexed struct {
	// name is the index entry's name.
	name string
	// key is the lower object's identity, whose number the name shows.
	key inodes.Key
	// lowerNlink is the lower object's link count: the base of an "L"
	// overlay.nlink, and with 1 overlay.nlink is not read
	// (ovl_get_nlink).
	lowerNlink uint64
	// alias says the name has an upper object of its own (the kernel's
	// upper alias), linked to the entry; without, the entry is its upper
	// object (indexFar), once made.
	alias bool
}

// indexEntry returns the index entry name n shows as its upper object,
// if its name has none of its own.
func indexEntry(at *place, upper *layers.Layer) (string, bool) {
	w, ok := at.far[upper]
	if !ok || !strings.HasPrefix(w, indexFar) {
		return "", false
	}
	return w[len(indexFar):], true
}

// indexOf returns n's index state, nil if it has none.
// Preconditions: n.mu held.
func (n *node) indexOf() *indexed {
	if n.aux == nil {
		return nil
	}
	return n.aux.idx
}

// handleName returns the index entry name of object (l, h) (the kernel's
// ovl_get_index_name): the hex of its ovl_fb.
func (fs *FS) handleName(l *layers.Layer, h unix.FileHandle) (string, error) {
	fb, err := layers.EncodeOrigin(fs.index.fbUUID[l], h)
	if err != nil {
		return "", err
	}
	return layers.IndexName(fb), nil
}

// indexLookup completes f, what name of p resolved to, with what the
// index knows of it, as ovl_lookup does with ovl_lookup_index: an upper
// non-directory whose origin's index entry is that very inode is indexed;
// a lower hard link is indexed, and its entry, if there is one, wins as
// its upper object (EIO if the entry is a whiteout or of another type).
// Preconditions: renameMu held; fs.index set.
func (fs *FS) indexLookup(p *node, name string, f *found) error {
	if f.typ == unix.S_IFDIR || f.fresh {
		return nil
	}
	top := f.objs[0]
	if top.layer.Upper {
		o, ok := fs.origin(p, name)
		if !ok {
			return nil
		}
		entry, err := fs.handleName(o.layer, o.handle)
		if err != nil {
			return nil
		}
		lf, err := layers.Lookup(fs.index.x.Fd(), entry, false, false, fs.reading)
		if err != nil || lf.Kind == layers.Missing {
			return toErrno(err)
		}
		if lf.Kind == layers.Hidden || lf.St.Mode&unix.S_IFMT != f.typ {
			return syscall.EIO
		}
		if lf.St.Ino != f.st.Ino || lf.St.Dev != f.st.Dev {
			// An entry of another inode: this one was copied up
			// without the index, or the index was cleared since.
			return nil
		}
		f.index = &indexed{name: entry, key: o.key, lowerNlink: o.nlink, alias: true}
		return nil
	}
	if f.st.Nlink <= 1 {
		return nil
	}
	var h unix.FileHandle
	err := fs.inAt(nil, &place{parent: p, name: name, far: f.far}, top.layer, func(dfd int, name string) error {
		var err error
		h, _, err = unix.NameToHandleAt(dfd, name, 0)
		return err
	})
	if err != nil {
		return toErrno(err)
	}
	entry, err := fs.handleName(top.layer, h)
	if err != nil {
		return toErrno(err)
	}
	x := &indexed{name: entry, key: top.key(), lowerNlink: f.st.Nlink}
	far := map[*layers.Layer]string{fs.upper: indexFar + entry}
	for l, w := range f.far {
		far[l] = w
	}
	f.far, f.index = far, x
	lf, err := layers.Lookup(fs.index.x.Fd(), entry, false, false, fs.reading)
	if err != nil || lf.Kind == layers.Missing {
		return toErrno(err)
	}
	if lf.Kind == layers.Hidden || lf.St.Mode&unix.S_IFMT != f.typ {
		return syscall.EIO
	}
	fs.showEntry(f, top, lf)
	return nil
}

// showEntry makes index entry lf the winner of f, a name of lower object
// low without an upper object of its own; a metacopy entry takes its
// data from low.
func (fs *FS) showEntry(f *found, low obj, lf layers.Found) {
	f.objs = []obj{objOf(fs.upper, &lf.St)}
	if lf.Metacopy {
		f.objs = append(f.objs, low)
	}
	f.st, f.metacopy, f.redirect = lf.St, lf.Metacopy, lf.Redirect
}

// overlayNlink returns the overlay's link count of an indexed object whose
// upper inode has unlink links, from its overlay.nlink value v (ovl_get_nlink):
// the upper inode's own count when the lower object has one link, or the
// value is missing, invalid or not positive.
func overlayNlink(v []byte, upperNlink, lowerNlink uint64) uint64 {
	nl, ok := layers.ParseNlink(v)
	if lowerNlink == 1 || !ok {
		return upperNlink
	}
	base := int64(upperNlink)
	if nl.Lower {
		base = int64(lowerNlink)
	}
	if n := base + int64(nl.Diff); n > 0 {
		return uint64(n)
	}
	return upperNlink
}

// entryNlink reads the link counts of index entry name: the upper
// inode's, and the overlay's.
// Preconditions: fs.index.mu held.
func (fs *FS) entryNlink(name string, lowerNlink uint64) (upper, overlay uint64, err error) {
	var st unix.Stat_t
	if err := unix.Fstatat(fs.index.x.Fd(), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return 0, 0, err
	}
	v, _ := layers.GetxattrAt(fs.index.x.Fd(), name, fs.xattrs.Name(layers.XattrNlink))
	return st.Nlink, overlayNlink(v, st.Nlink, lowerNlink), nil
}

// setNlink records overlay link count ov on index entry name, relative to
// base, the upper inode's count (or with lower, the lower object's).
func (fs *FS) setNlink(name string, ov, base uint64, lower bool) error {
	return layers.SetxattrAt(fs.index.x.Fd(), name, fs.xattrs.Name(layers.XattrNlink), []byte(nlinkValue(ov, base, lower)))
}

// nlinkValue is the overlay.nlink that records the overlay link count ov
// relative to base, the upper inode's link count or, with lower, the
// lower one's.
func nlinkValue(ov, base uint64, lower bool) string {
	return layers.Nlink{Lower: lower, Diff: int(int64(ov) - int64(base))}.String()
}

// nlinkStart records, before a change of an indexed object's links, its
// overlay link count relative to its upper inode's, which the change
// moves both of (ovl_nlink_start), and returns the overlay's count.
// Preconditions: fs.index.mu held.
func (fs *FS) nlinkStart(x *indexed) (uint64, error) {
	un, ov, err := fs.entryNlink(x.name, x.lowerNlink)
	if err != nil {
		return 0, err
	}
	return ov, fs.setNlink(x.name, ov, un, false)
}

// countedRemoval runs removal, which takes one name of the object of
// index state x away (x nil: not indexed), between nlinkStart and
// nlinkEnd with fs.index.mu held, so that the overlay's link count
// follows (ovl_nlink_start, ovl_nlink_end).
func (fs *FS) countedRemoval(x *indexed, removal func() error) error {
	if x == nil {
		return removal()
	}
	fs.index.mu.Lock()
	defer fs.index.mu.Unlock()
	ov, err := fs.nlinkStart(x)
	if err != nil {
		return err
	}
	if err := removal(); err != nil {
		return err
	}
	fs.nlinkEnd(x, ov)
	return nil
}

// nlinkEnd follows the removal of one of an indexed object's names, whose
// overlay link count was ov before (ovl_nlink_end): at 0 the index entry
// goes, unless the upper inode still has other links, when the count
// becomes theirs (ovl_cleanup_index).
// Preconditions: fs.index.mu held.
func (fs *FS) nlinkEnd(x *indexed, ov uint64) {
	if ov > 1 {
		return
	}
	var st unix.Stat_t
	if unix.Fstatat(fs.index.x.Fd(), x.name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return
	}
	if st.Nlink != 1 {
		fs.setNlink(x.name, st.Nlink-1, st.Nlink, false)
		return
	}
	layers.Unlink(fs.index.x.Fd(), x.name)
}

// addAlias records n, a node the kernel holds for a name of a lower hard
// link, under its index entry.
func (fs *FS) addAlias(n *node, x *indexed) {
	fs.index.amu.Lock()
	defer fs.index.amu.Unlock()
	fs.index.aliases[x.name] = append(fs.index.aliases[x.name], n)
}

// dropAlias forgets n, which the kernel no longer holds.
func (fs *FS) dropAlias(n *node, x *indexed) {
	fs.index.amu.Lock()
	defer fs.index.amu.Unlock()
	ns := fs.index.aliases[x.name]
	for i, m := range ns {
		if m == n {
			ns = append(ns[:i], ns[i+1:]...)
			break
		}
	}
	if len(ns) == 0 {
		delete(fs.index.aliases, x.name)
	} else {
		fs.index.aliases[x.name] = ns
	}
}

// showIndex gives the held names of index entry name that have no upper
// object of their own, but n, the entry as their upper object, which a
// copy-up through n has just made: their attributes and data are now the
// copy's.
// Preconditions: renameMu held; no node's mu held.
func (fs *FS) showIndex(name string, n *node) {
	lf, err := layers.Lookup(fs.index.x.Fd(), name, false, false, fs.reading)
	if err != nil || lf.Kind != layers.Present {
		return
	}
	fs.index.amu.Lock()
	ns := append([]*node(nil), fs.index.aliases[name]...)
	fs.index.amu.Unlock()
	for _, m := range ns {
		if m == n {
			continue
		}
		m.mu.Lock()
		objs := m.objects()
		_, entry := indexEntry(m.at.Load(), fs.upper)
		changed := entry && !m.unlinked && !objs[0].layer.Upper
		if changed {
			f := found{objs: objs}
			fs.showEntry(&f, objs[0], lf)
			m.setObjs(f.objs)
		}
		m.mu.Unlock()
		if changed && fs.invalidate != nil {
			fs.invalidate(m.ID(), false)
		}
	}
}

// needsLinkUp reports whether n is a name of a lower hard link without an
// upper object of its own, which a copy-up links to the index entry.
func (fs *FS) needsLinkUp(n *node) bool {
	if fs.index == nil || n.isDir() {
		return false
	}
	_, ok := indexEntry(n.at.Load(), fs.upper)
	return ok
}

// copyUpIndexed is copyUpWith for a name of a lower hard link without an
// upper object of its own, as the kernel's ovl_copy_up_one with the
// index: the lower object is copied into the index first if no other name
// did it (ovl_do_copy_up to the index, the overlay link count recorded as
// the lower object's), then the entry is linked to the name
// (ovl_link_up), and for an open for writing of a metacopy copy, the data
// copied.
// Preconditions: renameMu held; no node's mu held.
func (fs *FS) copyUpIndexed(n *node, meta, trunc bool) (int, error) {
	if p := n.parent(); p != n {
		if err := fs.copyUp(p); err != nil {
			return -1, err
		}
	}
	fd := -1
	opts := fs.copyOptions(n, meta, trunc, &fd)
	n.mu.Lock()
	at := n.at.Load()
	entry, ok := indexEntry(at, fs.upper)
	if !ok || n.unlinked {
		// Linked up by a caller this one waited for, or gone.
		n.mu.Unlock()
		if n.unlinked {
			return -1, syscall.ENOENT
		}
		return fs.copyUpWith(n, meta, trunc)
	}
	made, err := fs.linkUp(n, at, entry, opts, trunc)
	n.mu.Unlock()
	if err != nil {
		return -1, toErrno(err)
	}
	if made {
		fs.showIndex(entry, n)
	}
	return fd, nil
}

// linkUp copies n's lower object into index entry entry with opts,
// unless it is there, and links the entry to n's name at at; made says it
// copied. *opts.Keep gets an fd of a regular file's copy, open for
// reading and writing, when it copied or copied the data of a metacopy
// entry; the caller closes it.
// Preconditions: renameMu held; n.mu held; n's parent copied up.
func (fs *FS) linkUp(n *node, at *place, entry string, opts copyup.Options, trunc bool) (made bool, err error) {
	x := n.indexOf()
	ifd := fs.index.x.Fd()
	fs.index.mu.Lock()
	defer fs.index.mu.Unlock()
	lf, err := layers.Lookup(ifd, entry, false, false, fs.reading)
	if err != nil {
		return false, err
	}
	objs := n.objects()
	low := objs[len(objs)-1]
	fail := func(err error) (bool, error) {
		closeFd(*opts.Keep)
		*opts.Keep = -1
		return false, err
	}
	var ov uint64
	switch lf.Kind {
	case layers.Hidden:
		return false, syscall.EIO
	case layers.Missing:
		if objs[0].layer.Upper {
			// The entry it showed went behind the mount's back.
			return false, syscall.ENOENT
		}
		// The entry's one link is the index's own: the overlay's
		// count, the lower object's, is relative to it.
		ov = x.lowerNlink
		opts.Index = &copyup.Marker{Name: fs.xattrs.Name(layers.XattrNlink), Value: []byte(nlinkValue(ov, 1, false))}
		if err := fs.copyToIndex(n, at, objs[0], entry, opts); err != nil {
			return false, err
		}
		made = true
		lf, err = layers.Lookup(ifd, entry, false, false, fs.reading)
		if err == nil && lf.Kind != layers.Present {
			err = syscall.EIO
		}
		if err != nil {
			return fail(err)
		}
	default:
		if _, ov, err = fs.entryNlink(entry, x.lowerNlink); err != nil {
			return false, err
		}
	}
	if err := fs.linkEntry(at, entry, ov, x); err != nil {
		return fail(err)
	}
	// The name now holds the copy.
	far := make(map[*layers.Layer]string, len(at.far))
	for l, w := range at.far {
		if l != fs.upper {
			far[l] = w
		}
	}
	if len(far) == 0 {
		far = nil
	}
	n.at.Store(&place{parent: at.parent, name: at.name, far: far})
	f := found{objs: objs}
	fs.showEntry(&f, low, lf)
	n.setObjs(f.objs)
	if lf.Metacopy && opts.Metacopy == nil {
		*opts.Keep, err = fs.fillData(n, low, trunc)
	}
	return made, err
}

// copyToIndex copies n's lower object src into the index as entry, with
// opts; a lower metacopy file's data from the object below that holds it.
// Preconditions: renameMu held; n.mu held; fs.index.mu held.
func (fs *FS) copyToIndex(n *node, at *place, src obj, entry string, opts copyup.Options) error {
	if data, own := dataOf(n.objects(), n.kind()); !own && opts.Metacopy == nil {
		dfd, err := fs.openFile(n, data.layer, unix.O_RDONLY)
		if err != nil {
			return err
		}
		defer unix.Close(dfd)
		opts.DataFrom = &dfd
	}
	var st unix.Stat_t
	err := fs.inAt(n, at, src.layer, func(sdir int, sname string) error {
		var err error
		st, err = fs.work.Copy(src.layer, sdir, sname, fs.upper, fs.index.x.Fd(), entry, opts)
		return err
	})
	if err != nil {
		return err
	}
	fs.stats.copiedUp(n.kind(), st.Size)
	return nil
}

// linkEntry links index entry entry to the name at at, as ovl_link_up:
// the parent marked impure, the overlay link count ov recorded relative
// to the lower object's while the link is made, then to the upper
// inode's, the parent's times kept.
// Preconditions: renameMu held; the node at at has its mu held;
// fs.index.mu held.
func (fs *FS) linkEntry(at *place, entry string, ov uint64, x *indexed) error {
	ifd := fs.index.x.Fd()
	return fs.inDir(at.parent, fs.upper, func(pfd int) error {
		var pst unix.Stat_t
		if err := unix.Fstat(pfd, &pst); err != nil {
			return err
		}
		impure := fs.xattrs.Name(layers.XattrImpure)
		if v, err := layers.FdGetxattr(pfd, impure); err != nil || string(v) != "y" {
			if err := layers.SetImpure(pfd, fs.xattrs); err != nil {
				return err
			}
		}
		if err := fs.setNlink(entry, ov, x.lowerNlink, true); err != nil {
			return err
		}
		if err := layers.Link(ifd, entry, pfd, at.name); err != nil {
			return err
		}
		// Best effort, as in the kernel.
		layers.SetTimes(pfd, "", pst.Atim, pst.Mtim)
		var st unix.Stat_t
		if err := unix.Fstatat(ifd, entry, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		return fs.setNlink(entry, ov, st.Nlink, false)
	})
}

func closeFd(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}
