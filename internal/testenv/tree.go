package testenv

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// MakeTree builds a layer tree in dir (made if missing) from spec lines,
// one object each, in order:
//
//	"d NAME"          a directory, 0755
//	"f NAME [TEXT]"   a regular file, 0644, holding TEXT (the rest of the line)
//	"l NAME TARGET"   a symlink
//	"p NAME"          a fifo, 0644
//	"w NAME"          a whiteout: a character device 0/0, 0600
//	"x NAME KEY=VAL"  the xattr KEY set to VAL on NAME (a symlink itself)
//
// NAME is a slash-separated path below dir, or "." for dir itself;
// missing directories on the way are made, 0755. No symlink is followed,
// not even one the spec made earlier: the trees tests build are full of
// symlinks that lead out of them, and a name through one fails the test
// instead of writing outside dir.
func MakeTree(t testing.TB, dir string, spec ...string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("MakeTree: %v", err)
	}
	for _, line := range spec {
		if err := makeObject(dir, line); err != nil {
			t.Fatalf("MakeTree %s: %q: %v", dir, line, err)
		}
	}
}

// makeObject makes the object of one spec line below root.
func makeObject(root, line string) error {
	kind, rest, _ := strings.Cut(line, " ")
	name, arg, _ := strings.Cut(rest, " ")
	parts := strings.Split(name, "/")
	for _, p := range parts {
		if p == "" || p == ".." || p == "." && name != "." {
			return fmt.Errorf("name %q is not a path below the root", name)
		}
	}
	dirfd, err := openDir(root, parts[:len(parts)-1])
	if err != nil {
		return err
	}
	defer unix.Close(dirfd)
	base := parts[len(parts)-1]
	switch kind {
	case "d":
		return mkdirAt(dirfd, base)
	case "f":
		fd, err := unix.Openat(dirfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for b := []byte(arg); len(b) > 0; {
			n, err := unix.Write(fd, b)
			if err != nil {
				return err
			}
			b = b[n:]
		}
		return nil
	case "l":
		return unix.Symlinkat(arg, dirfd, base)
	case "p":
		return unix.Mknodat(dirfd, base, unix.S_IFIFO|0o644, 0)
	case "w":
		return unix.Mknodat(dirfd, base, unix.S_IFCHR|0o600, 0)
	case "x":
		key, val, ok := strings.Cut(arg, "=")
		if !ok {
			return fmt.Errorf("want KEY=VAL, not %q", arg)
		}
		// The directory's fd in /proc is followed to the directory; the
		// last name is not followed.
		return unix.Lsetxattr(fmt.Sprintf("/proc/self/fd/%d/%s", dirfd, base), key, []byte(val), 0)
	}
	return fmt.Errorf("unknown kind %q (d, f, l, p, w or x)", kind)
}

// openDir opens the directory root/parts..., making missing ones, and
// following no symlink below root.
func openDir(root string, parts []string) (int, error) {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for _, p := range parts {
		if err := mkdirAt(fd, p); err != nil {
			unix.Close(fd)
			return -1, err
		}
		next, err := unix.Openat(fd, p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return -1, fmt.Errorf("%s: %w", p, err)
		}
		fd = next
	}
	return fd, nil
}

// mkdirAt makes the directory name in dirfd unless a directory is there
// already (a symlink is not one).
func mkdirAt(dirfd int, name string) error {
	err := unix.Mkdirat(dirfd, name, 0o755)
	if err != unix.EEXIST {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("%s: %w", name, unix.ENOTDIR)
	}
	return nil
}
