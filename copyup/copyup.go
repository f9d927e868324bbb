// Package copyup owns moving one object from a lower layer into the upper
// layer, atomically, through workdir/work, as the kernel's copy_up.c does.
//
// The object is built complete in the work directory (a regular file as an
// O_TMPFILE, everything else under a temporary name), then put in place
// with one link or rename: the upper layer shows either no object or the
// whole one, after a crash too. The package does not decide when an object
// must be copied up (the overlay package does), never writes to a lower
// layer, and reaches layer objects only through fds (package layers), so
// that no symlink stored in a layer is ever followed. The same way,
// ClearDir replaces a directory with an empty copy, and StandIn puts a
// regular file in place of a symlink, fifo, socket or device, for an upper
// layer that keeps owners and types in an override xattr.
//
// What a copy writes, checked against the kernel's overlay (6.18):
//   - data, in the kernel's 1 MiB chunks (a hole kept where one begins a
//     chunk, written as zeros inside one), the xattrs but the overlay's
//     own, owner, mode, atime and mtime; the inode flags sync and noatime;
//     append-only and immutable recorded as overlay.protattr ("a", "i",
//     "ai") instead;
//   - overlay.origin, a struct ovl_fb file handle of the lower object, on
//     directories and on non-directories with one link (copy-up breaks a
//     hard link, and the kernel then records no origin);
//   - overlay.impure=y on the upper parent, for every copied object;
//   - the upper parent's atime and mtime as they were before.
package copyup

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// Work is workdir/work of a stack, on the upper layer's filesystem. Its
// methods are safe for concurrent use.
type Work struct {
	fd  int
	dev uint64
	seq atomic.Uint64
	// mu serialises putting copies in place: the impure marker of the
	// parent is decided, set and, if the link fails, undone under it.
	mu sync.Mutex
}

// Open creates workdir/work (mode 0, like the kernel) if it is missing,
// opens it, and removes every entry left inside it by an interrupted
// operation, recursively and without following symlinks. Like the kernel,
// it also removes POSIX ACLs from work, so that no temporary inherits one.
func Open(workdir string) (*Work, error) {
	dir, err := unix.Open(workdir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", workdir, err)
	}
	defer unix.Close(dir)
	if err := layers.Mkdir(dir, "work", 0); err != nil && err != unix.EEXIST {
		return nil, fmt.Errorf("%s/work: %w", workdir, err)
	}
	fd, err := openWork(dir, "work")
	if err != nil {
		return nil, fmt.Errorf("%s/work: %w", workdir, err)
	}
	for _, acl := range []string{"system.posix_acl_default", "system.posix_acl_access"} {
		layers.FdRemovexattr(fd, acl)
	}
	w := &Work{fd: fd}
	var st unix.Stat_t
	if err = unix.Fstat(fd, &st); err == nil {
		w.dev = st.Dev
		err = layers.Empty(fd)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s/work: %w", workdir, err)
	}
	return w, nil
}

// openWork opens dir's entry name ("work" or "index"), a directory and
// not a symlink. A mode 0 directory cannot be opened without
// CAP_DAC_OVERRIDE: its owner then makes it 0700.
func openWork(dir int, name string) (int, error) {
	fd, err := openBeneath(dir, name, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != unix.EACCES {
		return fd, err
	}
	pfd, err := openBeneath(dir, name, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return -1, err
	}
	err = layers.Chmod(pfd, "", 0o700)
	unix.Close(pfd)
	if err != nil {
		return -1, unix.EACCES
	}
	return openBeneath(dir, name, unix.O_RDONLY|unix.O_DIRECTORY)
}

// Index is workdir/index, the inodes index (index=on): an entry for each
// lower hard link copied up, hard-linked to the copy (layers/index.go).
type Index struct{ fd int }

// Fd returns the index directory's fd. It stays owned by the Index.
func (x *Index) Fd() int { return x.fd }

// Close releases the index directory.
func (x *Index) Close() error { return unix.Close(x.fd) }

// OpenIndex opens workdir/index, making it as the kernel does if it is
// missing: mode 0, without the ACLs or setgid bit it would inherit. An
// existing one is kept as it is, entries included; which of them stay is
// the caller's to decide (the kernel's ovl_indexdir_cleanup).
func OpenIndex(workdir string) (*Index, error) {
	fd, err := openIndex(workdir)
	if err != nil {
		return nil, err
	}
	return &Index{fd: fd}, nil
}

func openIndex(workdir string) (int, error) {
	dir, err := unix.Open(workdir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("%s: %w", workdir, err)
	}
	defer unix.Close(dir)
	made := false
	switch err := layers.Mkdir(dir, "index", 0); err {
	case nil:
		made = true
	case unix.EEXIST:
	default:
		return -1, fmt.Errorf("%s/index: %w", workdir, err)
	}
	fd, err := openWork(dir, "index")
	if err != nil {
		return -1, fmt.Errorf("%s/index: %w", workdir, err)
	}
	if made {
		for _, acl := range []string{"system.posix_acl_default", "system.posix_acl_access"} {
			layers.FdRemovexattr(fd, acl)
		}
		// No setgid bit from a setgid workdir.
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil && st.Mode&0o7000 != 0 {
			layers.Chmod(fd, "", st.Mode&0o777)
		}
	}
	return fd, nil
}

// openBeneath opens the single component name in dir, never following a
// symlink.
func openBeneath(dir int, name string, flags int) (int, error) {
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_NOFOLLOW | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for {
		fd, err := unix.Openat2(dir, name, &how)
		if err != unix.EINTR && err != unix.EAGAIN {
			return fd, err
		}
	}
}

// Close releases the work directory.
func (w *Work) Close() error { return unix.Close(w.fd) }

// Fd returns the work directory's fd, for callers that build other
// temporaries in it (whiteouts, new files). It stays owned by the Work.
func (w *Work) Fd() int { return w.fd }

// TempName returns a name for a temporary in the work directory, unique
// in this process, in the kernel's form "#%x". The work directory is
// emptied at Open, so no leftover holds it.
func (w *Work) TempName() string {
	return "#" + strconv.FormatUint(w.seq.Add(1), 16)
}

// Options says how copies are written.
type Options struct {
	// Fsync syncs a copied regular file or directory before it is put in
	// place, as the kernel does unless the mount is volatile or fsync=0.
	Fsync bool
	// Trusted writes the overlay's xattrs as trusted.overlay.*; false
	// writes user.overlay.* (userxattr, for rootless mounts).
	Trusted bool
	// Reading says which xattrs are the overlay's, which a copy leaves
	// out: those of the mount's layers.Reading.
	Reading layers.Reading
	// Truncate copies a regular file without its data (size 0), as the
	// kernel does for an open with O_TRUNC, and with the mtime the
	// truncation gives it.
	Truncate bool
	// Keep, when set, receives an fd of a regular file's copy, open
	// for reading and writing, which the caller closes (-1 for other
	// objects): an open for writing that asked for the copy needs no
	// second open, which could fail after the copy is in place.
	Keep *int
	// Xattrs are set on the copy after those copied, before it is put
	// in place: an owner override the copy must keep under the name
	// the upper layer is read with.
	Xattrs map[string]string
	// DataFrom, when set, is an open regular file the copy takes its
	// data from instead of the object's own: the data of a metacopy file
	// lies below it.
	DataFrom *int
	// NullUUID writes origins with a null uuid (uuid=off).
	NullUUID bool
	// Index, when set, says the copy is an index entry (index=on):
	// udir is workdir/index and name the entry's. The copy gets its
	// origin whatever the lower object's link count, then this marker
	// (its overlay.nlink), last, so that the entry is whole once it
	// shows (the kernel sets it after, ovl_set_nlink_upper); its parent
	// gets neither the impure marker nor its times back (ovl_do_copy_up's
	// to_index).
	Index *Marker
	// Metacopy, when set, copies a regular file without its data
	// (metacopy=on): the copy is as big as the file and holds a hole,
	// and gets this marker after its origin, as the kernel orders them
	// (the order decides which xattrs share the inode on ext4).
	Metacopy *Marker
}

// Marker is a private xattr a copy gets: its name and value.
type Marker struct {
	Name  string
	Value []byte
}

// xattrs is the namespace the copy's private xattrs go in.
func (o Options) xattrs() layers.Namespace {
	if o.Trusted {
		return layers.Trusted
	}
	return layers.User
}
