package overlay

import (
	"strings"
	"sync"
	"syscall"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// Held directory fds. A lookup searches every layer of the parent
// directory; resolving the parent's whole path beneath each layer root for
// every name cost a path walk per layer. A directory node keeps an O_PATH
// fd of its directory in each layer once it has been searched, and a
// lookup is then one fstatat of a single name on it. The fd follows its
// directory through renames, as the node does.
//
// Fds held over all nodes are bounded (dirFdMax): past the bound a lookup
// opens and closes the directory as before. A node's fds are closed when
// the kernel forgets it.

// dirFds are a directory node's held fds.
type dirFds struct {
	// mu is a leaf lock: held for reading while an fd is used for one
	// syscall, for writing to add fds or close them.
	mu     sync.RWMutex
	fds    map[*layers.Layer]int
	closed bool // forgotten: hold nothing more
}

// inDir calls f with an fd of directory p's object in layer l, and
// returns what f returns. f makes *at calls on single names only.
// Preconditions: renameMu held; p has an object in l.
func (fs *FS) inDir(p *node, l *layers.Layer, f func(dfd int) error) error {
	d := &p.aux.dfd
	for {
		d.mu.RLock()
		fd, ok := d.fds[l]
		if ok {
			fs.stats.dirFdUsed.Add(1)
			err := f(fd)
			d.mu.RUnlock()
			return err
		}
		d.mu.RUnlock()
		fd, err := fs.openObj(p, l)
		if err != nil {
			return err
		}
		fs.stats.dirFdOpened.Add(1)
		if !fs.holdDirFd(d, l, fd) {
			err := f(fd)
			unix.Close(fd)
			return err
		}
	}
}

// statAt stats name in directory p's object in layer l, never following
// a symlink.
// Preconditions: renameMu held; p has an object in l.
func (fs *FS) statAt(p *node, l *layers.Layer, name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := fs.inDir(p, l, func(dfd int) error {
		return unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	})
	return st, err
}

// openAt opens name in directory p's object in layer l as an O_PATH fd,
// never following a symlink; the caller closes it.
// Preconditions: renameMu held; p has an object in l.
func (fs *FS) openAt(p *node, l *layers.Layer, name string) (int, error) {
	fd := -1
	err := fs.inDir(p, l, func(dfd int) error {
		var err error
		fd, err = unix.Openat(dfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		return err
	})
	return fd, err
}

// inParent calls f with an fd of the directory that holds n's object in
// layer l and the object's name there: its place's, or where a redirect
// put it (place.far); for the root, the layer's root and ".".
// Preconditions: renameMu held; n has an object in l.
func (fs *FS) inParent(n *node, l *layers.Layer, f func(dfd int, name string) error) error {
	return fs.inAt(n, n.at.Load(), l, f)
}

// inAt is inParent for node n (nil for a name no node stands for) at
// place at. The index entry a name of a lower hard link shows as its
// upper object (indexFar) is reached in the index directory.
// Preconditions: renameMu held; the object at at has an object in l.
func (fs *FS) inAt(n *node, at *place, l *layers.Layer, f func(dfd int, name string) error) error {
	if at.parent == n {
		return f(l.Root(), ".")
	}
	w := at.in(l)
	switch {
	case w == "":
		// An unnamed file (O_TMPFILE): reached through its handles only.
		return syscall.ENOENT
	case w[0] == indexFar[0]:
		return f(fs.index.x.Fd(), w[len(indexFar):])
	case w[0] != '/':
		return fs.inDir(at.parent, l, func(dfd int) error { return f(dfd, w) })
	}
	i := strings.LastIndexByte(w, '/')
	dfd, err := l.Walk(w[1:max(i, 1)])
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	return f(dfd, w[i+1:])
}

// openObj opens n's object in layer l as an O_PATH fd; the caller closes
// it.
// Preconditions: renameMu held; n has an object in l.
func (fs *FS) openObj(n *node, l *layers.Layer) (int, error) {
	fd := -1
	err := fs.inParent(n, l, func(dfd int, name string) error {
		var err error
		fd, err = unix.Openat(dfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		return err
	})
	return fd, err
}

// openFile opens n's object in layer l, a regular file, with flags
// (layers.Layer.OpenFileAt).
// Preconditions: renameMu held; n has an object in l.
func (fs *FS) openFile(n *node, l *layers.Layer, flags int) (int, error) {
	fd := -1
	err := fs.inParent(n, l, func(dfd int, name string) error {
		var err error
		fd, err = l.OpenFileAt(dfd, name, flags)
		return err
	})
	return fd, err
}

// openDir opens directory n's object in layer l for reading entries; the
// caller closes it.
// Preconditions: renameMu held; n has an object in l.
func (fs *FS) openDir(n *node, l *layers.Layer) (int, error) {
	fd := -1
	err := fs.inParent(n, l, func(dfd int, name string) error {
		var err error
		fd, err = l.OpenDirAt(dfd, name)
		return err
	})
	return fd, err
}

// lstat stats n's object in layer l.
// Preconditions: renameMu held; n has an object in l.
func (fs *FS) lstat(n *node, l *layers.Layer) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := fs.inParent(n, l, func(dfd int, name string) error {
		return unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	})
	return st, err
}

// getxattr reads attribute attr of n's object in layer l.
// Preconditions: renameMu held; n has an object in l.
func (fs *FS) getxattr(n *node, l *layers.Layer, attr string) ([]byte, error) {
	var v []byte
	err := fs.inParent(n, l, func(dfd int, name string) error {
		var err error
		v, err = layers.GetxattrAt(dfd, name, attr)
		return err
	})
	return v, err
}

// holdDirFd adds fd as d's fd in layer l, and reports false if it is not
// held (over the bound, forgotten, or another caller's came first), the
// caller keeping it.
func (fs *FS) holdDirFd(d *dirFds, l *layers.Layer, fd int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.fds[l]; ok || d.closed {
		return false
	}
	if fs.dirFdCount.Add(1) > fs.dirFdMax {
		fs.dirFdCount.Add(-1)
		return false
	}
	if d.fds == nil {
		d.fds = make(map[*layers.Layer]int, 2)
	}
	d.fds[l] = fd
	return true
}

// closeDirFds closes the fds node n holds, and holds none from now on.
func (fs *FS) closeDirFds(n *node) {
	d := &n.aux.dfd
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	for l, fd := range d.fds {
		unix.Close(fd)
		delete(d.fds, l)
		fs.dirFdCount.Add(-1)
	}
}
