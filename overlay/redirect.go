package overlay

import (
	"strings"
	"syscall"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// Redirects made by rename (redirect_dir=on), as the kernel's
// ovl_set_redirect: a directory that is not purely upper (its lower part
// cannot move) is copied up empty and renamed in the upper layer with an
// overlay.redirect naming where its lower part lies, which lookups follow
// (lookup.go).

// redirectMax is the longest redirect the kernel writes (its module
// parameter redirect_max): a longer one makes the rename EXDEV.
const redirectMax = 256

// redirectFor returns the redirect f, name of op (a directory or a
// metacopy file), needs to move to another name (samedir: in op) or
// another directory: "" when the one it has serves, its lower name when
// it stays in op, else the path of its lower part from the roots
// (ovl_get_redirect). A file whose lower object is a hard link gets the
// path in any case, as its other names may lie in other directories
// (ovl_need_absolute_redirect).
// Preconditions: renameMu held; op copied up.
func (fs *FS) redirectFor(op *node, name string, f found, samedir bool) (string, error) {
	abs := !samedir || f.typ != unix.S_IFDIR && fs.lowerLinks(op, name, f) > 1
	r := f.redirect
	if r != "" && (!abs || r[0] == '/') {
		return "", nil
	}
	lower := name
	if r != "" {
		lower = r // relative: its name in op's lower objects
	}
	if !abs {
		return lower, nil
	}
	path, err := fs.lowerPath(op)
	if err != nil {
		return "", err
	}
	path = strings.TrimSuffix(path, "/") + "/" + lower
	if len(path) > redirectMax {
		return "", syscall.EXDEV
	}
	return path, nil
}

// lowerLinks returns the link count of the lower object of non-directory
// f, name of p: the one below it (0 if it cannot be read).
// Preconditions: renameMu held.
func (fs *FS) lowerLinks(p *node, name string, f found) uint64 {
	if f.index != nil {
		return f.index.lowerNlink
	}
	low := f.objs[len(f.objs)-1]
	var st unix.Stat_t
	fs.inAt(nil, &place{parent: p, name: name, far: f.far}, low.layer, func(dfd int, name string) error {
		return unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	})
	return st.Nlink
}

// lowerPath returns where directory p's lower part lies, from the roots:
// its ancestors' lower names (their redirects or names) up to the root,
// or to an absolute redirect, which replaces the rest.
// Preconditions: renameMu held; p copied up.
func (fs *FS) lowerPath(p *node) (string, error) {
	var names []string
	for m := p; ; {
		at := m.at.Load()
		if at.parent == m {
			break
		}
		c := at.name
		r, err := fs.getxattr(m, fs.upper, fs.xattrs.Name(layers.XattrRedirect))
		switch {
		case err == nil && len(r) > 0 && r[0] == '/':
			return string(r) + "/" + joinReversed(names), nil
		case err == nil && len(r) > 0:
			c = string(r)
		case err != nil && err != unix.ENODATA:
			return "", err
		}
		names = append(names, c)
		m = at.parent
	}
	return "/" + joinReversed(names), nil
}

func joinReversed(names []string) string {
	var b strings.Builder
	for i := len(names) - 1; i >= 0; i-- {
		b.WriteString(names[i])
		if i > 0 {
			b.WriteByte('/')
		}
	}
	return b.String()
}

// setRedirect records redirect on entry name of upper directory dfd.
func (fs *FS) setRedirect(dfd int, name, redirect string) error {
	err := layers.SetxattrAt(dfd, name, fs.xattrs.Name(layers.XattrRedirect), []byte(redirect))
	if err == unix.EOPNOTSUPP {
		// No xattrs: the kernel's ovl_check_setxattr falls back to EXDEV,
		// and mv copies.
		err = unix.EXDEV
	}
	return toErrno(err)
}

// reresolved gives held node n, now at name of p, the layer objects a
// lookup there finds, which a redirect made by the rename leads to.
// Preconditions: renameMu held for writing.
func (fs *FS) reresolved(n *node, p *node, name string) {
	if n == nil {
		return
	}
	f, err := fs.resolve(p, name)
	if err != nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.setObjs(f.objs)
	n.at.Store(&place{parent: p, name: name, far: f.far})
}

// linkRedirect gives metacopy file t, about to get another name, an
// absolute redirect, so that its data is found from any of its names, as
// the kernel's ovl_set_link_redirect.
// Preconditions: renameMu held; t copied up.
func (fs *FS) linkRedirect(t *node) error {
	if _, own := dataOf(t.layersOf(), t.kind()); own {
		return nil
	}
	at := t.at.Load()
	attr := fs.xattrs.Name(layers.XattrRedirect)
	cur, err := fs.getxattr(t, fs.upper, attr)
	switch {
	case err == nil && len(cur) > 0 && cur[0] == '/':
		return nil
	case err != nil && err != unix.ENODATA:
		return toErrno(err)
	}
	lower := at.name
	if len(cur) > 0 {
		lower = string(cur)
	}
	path, err := fs.lowerPath(at.parent)
	if err != nil {
		return toErrno(err)
	}
	path = strings.TrimSuffix(path, "/") + "/" + lower
	if len(path) > redirectMax {
		return syscall.EXDEV
	}
	return fs.inDir(at.parent, fs.upper, func(dfd int) error { return fs.setRedirect(dfd, at.name, path) })
}
