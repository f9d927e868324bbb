// Package overlay owns the merged filesystem: how the layers of a stack
// combine into one tree (lookup, readdir, attributes, inode numbers,
// xattrs), following kernel overlayfs.
//
// The engine speaks plain Go types and syscall.Errno; fuse.go is the only
// file that knows the FUSE library, so everything else is testable without
// a mount. Every change to the upper layer goes through package layers'
// small wrappers (layers/upper.go; TestUpperChangesGoThroughLayers reads
// this package's source to hold it to that). The engine reads the layers
// with *at calls on directory fds it holds, one name at a time (dirfd.go):
// it never builds a host path, never follows a symlink of a layer, and
// never writes to a lower layer.
//
// # Locks
//
// The one order of the package's locks, outer first; a lock is taken
// only while holding those above it on its branch, never one below it or
// on another branch. Each method says what it needs held
// ("Preconditions:").
//
//	listing.mu           one directory's readers take turns (ReadDir)
//	├── heldListings.mu  leaf; it only TryLocks other listings, to drop them
//	└── FS.renameMu      held for writing by rename; for reading by every
//	    │                operation that resolves names or places (lookup,
//	    │                create, remove, setattr, xattrs, open, ...), so that
//	    │                places are stable; not by Read, Write, Fsync,
//	    │                Release, Forget, which work on handles and ids
//	    └── aux.dirMu    one directory's entries: create and remove, from
//	        │            the check that a name is free to the change
//	        └── node.mu  one node at a time (copyUp holds it across the
//	            │        copy); also taken alone, without the locks above
//	            ├── indexState.mu   the inodes index and its link counts
//	            │   │               (index.go); also taken without node.mu
//	            │   └── (the leaves below but indexState.amu)
//	            ├── indexState.amu  leaf
//	            ├── indexState.wmu  leaf, held across the making of a
//	            │                   whiteout in the index (newWhiteout)
//	            ├── fileHandle.mu   leaf
//	            ├── dirFds.mu       leaf, held across one *at syscall
//	            ├── copyup.Work.mu  leaf (putting a copy in place)
//	            ├── FS.hmu          leaf (handles, passthrough backing)
//	            └── inodes.Table.mu leaf
//
// Conn.spareMu (serve.go), the readers' spare buffers, and
// bufferMaps.mu (buffers.go), the free buffer mappings, are leaves of
// their own, taken by the serving loop outside every engine lock.
//
// Leaves are never held across another lock, and a leaf other than
// dirFds.mu, Work.mu and indexState.wmu across no host syscall.
package overlay

import (
	"crypto/rand"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ovlmount/ovlmount/copyup"
	"github.com/ovlmount/ovlmount/inodes"
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// Options tune the engine.
type Options struct {
	// Timeout is how long the kernel may cache entries, negative entries
	// and attributes.
	Timeout time.Duration
	// UserXattr writes the overlay's markers in the user.overlay.*
	// namespace (the kernel's userxattr), whatever the workdir takes,
	// and reads them there only (layers.UserForm).
	UserXattr bool
	// XinoOff shows real inode numbers even when layers span several
	// filesystems (numbers that collide get fallback ids).
	XinoOff bool
	// XinoOn is xino=on given: with index, metacopy and redirect_dir=on
	// it is one of the features that make the kernel mark each new
	// directory of a merged one opaque (opaqueNewDirs).
	XinoOn bool
	// Ino32 keeps inode numbers below 1<<32 (fuse-overlayfs's ino32_t):
	// see inodes.NewWidth.
	Ino32 bool
	// StaticNlink gives every directory nlink 1 (fuse-overlayfs's
	// static_nlink).
	StaticNlink bool
	// Work is the upper layer's workdir/work; nil for a read-only stack.
	Work *copyup.Work
	// Redirects says what the mount does with overlay.redirect
	// (redirect_dir=).
	Redirects Redirects
	// Verity is verity=: whether a metacopy file's data is checked
	// against the fs-verity digest its marker records.
	Verity VerityMode
	// UUID is uuid=: whether the upper layer gets a persistent overlay
	// uuid, and, with off, null uuids in the origins written and only
	// null ones followed.
	UUID UUIDMode
	// Index is the workdir of a stack mounted with the inodes index
	// (index=on; index.go), "" without: copies of lower hard links go
	// through workdir/index and keep the links whole.
	Index string
	// Metacopy lets lookups take a metacopy file's data from below, and
	// copy-up copy only metadata where it can (metacopy=on). Without it
	// a metacopy file with data below is refused (EPERM), as by the
	// kernel.
	Metacopy bool
	// NoFsync skips the fsyncs the kernel does for durability (copy-up
	// data, syncfs): fuse-overlayfs's volatile and fsync=0.
	NoFsync bool
	// UIDs and GIDs map owners between the layers and the mount
	// (fuse-overlayfs's uidmapping, gidmapping and squash_to_*).
	UIDs, GIDs IDMap
	// Passthrough lets the kernel read and write upper files itself
	// (FUSE passthrough), where the daemon may allow it (root outside a
	// user namespace).
	Passthrough bool
	// ACL lets the kernel enforce POSIX ACLs (FUSE_POSIX_ACL), and new
	// objects built in the workdir inherit default ACLs as the host
	// gives them to objects made in place (fuse-overlayfs's noacl turns
	// it off).
	ACL bool
	// XattrPermissions is fuse-overlayfs's xattr_permissions: 0 changes
	// owners and modes for real; 1 and 2 keep them in the override
	// xattr OverridePrivileged or OverrideUser (see override.go).
	XattrPermissions int
}

// FS is a merged view of a layer stack.
type FS struct {
	opts  Options
	stack []*layers.Layer // top first; the upper layer, if any, is stack[0]
	upper *layers.Layer   // nil for a read-only stack
	// dataLayers are the data-only layers, after the others in stack:
	// never merged, only searched for a metacopy file's data.
	dataLayers []*layers.Layer
	scheme     *inodes.Scheme
	nodes      *inodes.Table[*node]
	uuids      map[[16]byte][]*layers.Layer // lower layers by filesystem uuid
	work       *copyup.Work
	// Forms the upper layer takes, probed at mount: kernel whiteouts
	// need mknod of char 0/0, trusted.overlay.* xattrs need
	// CAP_SYS_ADMIN; without them the rootless forms are written
	// (AUFS whiteouts, user.overlay.*), where the private xattrs go.
	charWhiteouts bool
	xattrs        layers.Namespace
	// reading is which private xattrs the mount reads and hides, fixed
	// by userxattr.
	reading layers.Reading
	// euid and egid are the daemon's: the owner of what it creates;
	// umask is its umask (0 in ovlmount), read at mount.
	euid, egid, umask uint32
	// overrideRead lists, for each layer read with override xattrs, the
	// names to try, first found wins; overrideWrite is the name owner and
	// mode changes go to ("" to change them for real). Both are fixed
	// at mount.
	overrideRead  map[*layers.Layer][]string
	overrideWrite string

	// namelen is the longest name over the layers' filesystems.
	namelen int64

	// index is the inodes index (index.go), nil without.
	index *indexState

	// renameMu is held for writing by rename and for reading by the
	// operations on names: see the lock order above.
	renameMu sync.RWMutex

	// Directory fds held by nodes (dirfd.go), and their bound.
	dirFdCount atomic.Int64
	dirFdMax   int64

	// listings are the merged listings held (readdir.go).
	listings heldListings

	// stats are the counters ovlmount stats shows (stats.go).
	stats engineStats

	// Table shrinks seen, and whether memory is being given back
	// (Forgotten).
	shrinks atomic.Int64
	freeing atomic.Bool

	// invalidate, when set (Server), drops the kernel's cached
	// attributes of a node that changed other than through a request
	// about it, and with pages its cached data: a directory's listing.
	invalidate func(id uint64, pages bool)

	// hmu guards handles, nextHandle and backing.
	hmu        sync.Mutex
	backing    Backing // registers passthrough files; nil: none
	handles    map[uint64]*fileHandle
	nextHandle uint64
}

// VerityMode is the kernel's verity= mount option.
type VerityMode int

// The verity= modes.
const (
	// VerityOff: digests are neither checked nor recorded.
	VerityOff VerityMode = iota
	// VerityOn: a digest a metacopy file records is checked against
	// its data's own fs-verity digest when the file is opened or copied
	// up (EIO on a mismatch, and where the data has no fs-verity);
	// copy-up records the lower data's digest where it has fs-verity.
	VerityOn
	// VerityRequire: as on, and a metacopy file without a digest is
	// refused (EIO); copy-up copies the data of a file without
	// fs-verity instead of leaving it below.
	VerityRequire
)

// UUIDMode is the kernel's uuid= mount option.
type UUIDMode int

// The uuid= modes.
const (
	UUIDAuto UUIDMode = iota
	UUIDOn
	UUIDNull
	UUIDOff
)

// Redirects is redirect_dir=: whether redirects are followed at lookup
// and made by rename. The kernel's default, with redirect_always_follow,
// is to follow them and make none.
type Redirects struct {
	Follow bool // follow redirects found (follow, on, and off)
	Create bool // rename lower and merged directories with one (on)
}

// opaqueNewDirs reports whether a directory made in a merged directory is
// marked opaque though no whiteout is there: the kernel does so (as an
// optimization of later lookups) unless the mount allows changes to the
// lower layers offline (ovl_allow_offline_changes), which any of index,
// metacopy, redirect_dir=on and xino=on rules out.
func (o *Options) opaqueNewDirs() bool {
	return o.Index != "" || o.Metacopy || o.Redirects.Create || o.XinoOn
}

// New builds the merged view of stack (top first; the upper layer, if any,
// first). It reads the root directories' markers and nothing else: no work
// proportional to the tree's size happens at mount.
func New(stack []*layers.Layer, opts Options) (*FS, error) {
	fs := &FS{opts: opts, stack: stack, handles: make(map[uint64]*fileHandle), uuids: make(map[[16]byte][]*layers.Layer), work: opts.Work,
		euid: uint32(unix.Geteuid()), egid: uint32(unix.Getegid()), umask: currentUmask()}
	// Half the fd limit for held directory fds leaves the rest to open
	// files and copy-ups.
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil {
		fs.dirFdMax = int64(lim.Cur / 2)
	}
	if opts.UserXattr {
		fs.reading = layers.UserForm
	}
	devs := make([]uint64, len(stack))
	for i, l := range stack {
		devs[i] = l.Dev
		if l.DataOnly {
			fs.dataLayers = append(fs.dataLayers, l)
			continue
		}
		var sfs unix.Statfs_t
		if err := unix.Fstatfs(l.Root(), &sfs); err != nil {
			return nil, fmt.Errorf("statfs %s: %w", l.Path, err)
		}
		fs.namelen = max(fs.namelen, sfs.Namelen)
		if l.Upper {
			fs.upper = l
		} else if u, err := layers.FSUUID(l.Root()); err == nil {
			fs.uuids[u] = append(fs.uuids[u], l)
		}
	}
	width := uint(64)
	if opts.Ino32 {
		width = 32
	}
	fs.scheme = inodes.NewWidth(devs, fs.upper != nil, width)
	if opts.XinoOff {
		fs.scheme = inodes.NewFlat(devs, width)
	}
	if fs.upper != nil && fs.work == nil {
		return nil, fmt.Errorf("an upper layer needs a workdir")
	}
	if fs.work != nil {
		if err := fs.setUpWork(); err != nil {
			return nil, err
		}
	}
	if err := fs.probeOverrides(); err != nil {
		return nil, err
	}
	root := newNode(unix.S_IFDIR, nil, nil, "", nil)
	objs, err := rootObjects(stack, fs.reading)
	if err != nil {
		return nil, err
	}
	root.at.Store(&place{parent: root}) // its own parent
	// The root shows the inode number of its top layer's directory, the
	// upper one when there is one, as the kernel's root does: it has no
	// copy-up origin.
	root.setObjs(objs)
	top := objs[0]
	num, ok := fs.scheme.Ino(uint64(top.dev), top.ino)
	if !ok {
		num = top.ino
	}
	fs.nodes = inodes.NewTable(root, top.key(), num, fs.scheme)
	return fs, nil
}

// setUpWork probes what the workdir's filesystem takes (char device
// whiteouts, trusted or user xattrs), checks the inodes index (index=on)
// before the upper root's uuid is stamped, and makes the index after, in
// the kernel's order.
func (fs *FS) setUpWork() error {
	fs.charWhiteouts, fs.xattrs = probe(fs.work)
	if fs.opts.UserXattr {
		fs.xattrs = layers.User
	}
	var index *indexSetup
	if fs.opts.Index != "" {
		var err error
		if index, err = fs.checkIndex(fs.opts.Index); err != nil {
			return err
		}
	}
	if err := fs.stampUUID(); err != nil {
		return err
	}
	if index != nil {
		return fs.makeIndex(index)
	}
	return nil
}

// rootObjects returns the layer objects the root merges: each layer's
// root, top down, to the first opaque one (as r reads markers), data-only
// layers aside.
func rootObjects(stack []*layers.Layer, r layers.Reading) ([]obj, error) {
	var objs []obj
	for _, l := range stack {
		if l.DataOnly {
			break
		}
		m, err := l.Marks("", r)
		if err != nil {
			return nil, err
		}
		st, err := l.Lstat("")
		if err != nil {
			return nil, err
		}
		o := objOf(l, &st)
		o.marks = m
		objs = append(objs, o)
		if m.Opaque {
			break
		}
	}
	return objs, nil
}

// probe finds which forms the upper layer's filesystem takes from this
// process: char 0/0 whiteouts (mknod) and trusted.* xattrs.
func probe(w *copyup.Work) (charWhiteouts bool, xattrs layers.Namespace) {
	name := w.TempName()
	if layers.Whiteout(w.Fd(), name) == nil {
		charWhiteouts = true
		layers.Unlink(w.Fd(), name)
	}
	xattrs = layers.User
	if err := layers.Mkdir(w.Fd(), name, 0o700); err == nil {
		fd, err := unix.Openat(w.Fd(), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == nil {
			if layers.FdSetxattr(fd, layers.Trusted.Name(layers.XattrOpaque), []byte("y"), 0) == nil {
				xattrs = layers.Trusted
			}
			unix.Close(fd)
		}
		layers.Rmdir(w.Fd(), name)
	}
	return charWhiteouts, xattrs
}

// stampUUID gives the upper layer the persistent overlay uuid uuid=
// asks for, as the kernel's ovl_init_uuid_xattr: with on, always, and
// the mount fails without it; with auto (the default), only on a new
// upper layer, one whose root is not yet impure (an old one keeps the null
// uuid); never with null or off. A uuid already there stays.
func (fs *FS) stampUUID() error {
	name := fs.xattrs.Name(layers.XattrUUID)
	root := fs.upper.Root()
	if _, err := layers.FdGetxattr(root, name); err == nil {
		return nil
	}
	switch fs.opts.UUID {
	case UUIDNull, UUIDOff:
		return nil
	case UUIDAuto:
		if _, err := layers.FdGetxattr(root, fs.xattrs.Name(layers.XattrImpure)); err != unix.ENODATA {
			return nil
		}
	}
	var u [16]byte
	rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	err := layers.FdSetxattr(root, name, u[:], 0)
	if err != nil && fs.opts.UUID == UUIDOn {
		return fmt.Errorf("uuid=on: the upper layer takes no %s: %v", name, err)
	}
	return nil
}

// Timeout returns the kernel cache timeout.
func (fs *FS) Timeout() time.Duration { return fs.opts.Timeout }

// rootObjs returns the root's layer objects: every layer's root down to
// an opaque one, data-only layers left out.
func (fs *FS) rootObjs() []obj {
	root, _ := fs.nodes.Get(inodes.RootID)
	return root.layersOf()
}

// NodeCount returns how many nodes the kernel holds, the root included.
func (fs *FS) NodeCount() int { return fs.nodes.Len() }

// writable returns node id of a mount with an upper layer, which every
// change needs: EROFS without one, before the node is looked at, as the
// kernel's overlay refuses a change on a mount without upperdir.
func (fs *FS) writable(id uint64) (*node, error) {
	if fs.upper == nil {
		return nil, syscall.EROFS
	}
	return fs.get(id)
}

// get returns node id, or ESTALE for an id the table does not hold.
func (fs *FS) get(id uint64) (*node, error) {
	n, ok := fs.nodes.Get(id)
	if !ok {
		return nil, syscall.ESTALE
	}
	return n, nil
}

// Forget drops n kernel references to id.
func (fs *FS) Forget(id, n uint64) {
	node, gone := fs.nodes.Forget(id, n)
	switch {
	case !gone:
	case node.isDir():
		fs.closeDirFds(node)
		fs.listings.forget(&node.aux.ls)
	case fs.index != nil:
		node.mu.Lock()
		x := node.indexOf()
		node.mu.Unlock()
		if x != nil {
			fs.dropAlias(node, x)
		}
	}
}

// Forgotten is told that a batch of forgets is done. When the node table
// has given back the memory of most of its nodes, the heap goes back to
// the host at once: the Go runtime returns freed memory only slowly on
// its own, and the daemon's footprint should follow what the kernel
// holds (a tree walk and a drop of the kernel's caches).
func (fs *FS) Forgotten() {
	if fs.nodes.Shrinks() == fs.shrinks.Load() || !fs.freeing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		for {
			// Again while the table shrank meanwhile: the forgets
			// that shrank it may all have come while memory was
			// being given back, with no Forgotten after them.
			for s := fs.nodes.Shrinks(); s != fs.shrinks.Load(); s = fs.nodes.Shrinks() {
				fs.shrinks.Store(s)
				debug.FreeOSMemory()
			}
			fs.freeing.Store(false)
			if fs.nodes.Shrinks() == fs.shrinks.Load() || !fs.freeing.CompareAndSwap(false, true) {
				return
			}
		}
	}()
}

// StatFS returns the numbers of the top layer's filesystem (the upper
// layer, or the top lower one), as the kernel does, but the longest name
// any layer takes (ovl_statfs).
func (fs *FS) StatFS() (unix.Statfs_t, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fs.stack[0].Root(), &st); err != nil {
		return st, toErrno(err)
	}
	st.Namelen = fs.namelen
	return st, nil
}

func (fs *FS) addHandle(h *fileHandle) uint64 {
	fs.hmu.Lock()
	defer fs.hmu.Unlock()
	fs.nextHandle++
	fs.handles[fs.nextHandle] = h
	return fs.nextHandle
}

func (fs *FS) dropHandle(id uint64) *fileHandle {
	fs.hmu.Lock()
	defer fs.hmu.Unlock()
	h := fs.handles[id]
	delete(fs.handles, id)
	return h
}

// currentUmask returns the process's umask, from /proc/self/status: the
// umask(2) way to read it sets it for a moment, under other threads'
// creates.
func currentUmask() uint32 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0o777 // unknown: nothing counts as made right
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
				return uint32(m)
			}
		}
	}
	return 0o777
}

// toErrno turns a host error into the errno the kernel gets: nil, or a
// syscall.Errno (never a silent EIO: layers.Errno). It returns error, not
// syscall.Errno, so that nil stays a nil error.
func toErrno(err error) error {
	if err == nil {
		return nil
	}
	return layers.Errno(err)
}

// lowestLower returns the lowest layer that is neither upper nor
// data-only (the kernel's layer numlower(root)), nil with none.
func (fs *FS) lowestLower() *layers.Layer {
	for i := len(fs.stack) - 1; i >= 0; i-- {
		if l := fs.stack[i]; !l.DataOnly && !l.Upper {
			return l
		}
	}
	return nil
}
