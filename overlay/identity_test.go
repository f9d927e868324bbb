package overlay

import (
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestHardLinkNamesStay: the names of one upper object are one node, and
// removing the name the node was found under leaves the others, for every
// type that can be hard-linked; so does renaming another object over one
// of the names.
func TestHardLinkNamesStay(t *testing.T) {
	_, mnt := mountRW(t, t.TempDir())
	m := func(p string) string { return filepath.Join(mnt, p) }
	for _, tc := range []struct {
		name string
		mk   func(p string) error
	}{
		{"file", func(p string) error {
			fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}},
		{"fifo", func(p string) error { return unix.Mkfifo(p, 0o644) }},
		{"device", func(p string) error { return unix.Mknod(p, unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3))) }},
		{"socket", func(p string) error { return unix.Mknod(p, unix.S_IFSOCK|0o644, 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testenv.Must(t, unix.Mkdir(m(tc.name), 0o755))
			f, g, h := m(tc.name+"/f"), m(tc.name+"/g"), m(tc.name+"/h")
			testenv.Must(t, tc.mk(f))
			testenv.Must(t, unix.Link(f, g))
			testenv.Must(t, unix.Link(f, h))
			testenv.Must(t, unix.Fchmodat(unix.AT_FDCWD, g, 0o600, 0))
			testenv.Must(t, unix.Lchown(h, 1, 2))
			testenv.Must(t, unix.Unlink(f))
			for _, p := range []string{g, h} {
				var st unix.Stat_t
				if err := unix.Lstat(p, &st); err != nil {
					t.Fatalf("lstat %s after unlinking another name: %v", p, err)
				}
				if st.Nlink != 2 || st.Mode&0o777 != 0o600 || st.Uid != 1 || st.Gid != 2 {
					t.Errorf("%s: nlink %d mode %o owner %d:%d, want 2 600 1:2", p, st.Nlink, st.Mode&0o777, st.Uid, st.Gid)
				}
			}
			// Another object renamed over g: h stays.
			other := m(tc.name + "/other")
			testenv.Must(t, tc.mk(other))
			testenv.Must(t, unix.Rename(other, g))
			var st unix.Stat_t
			if err := unix.Lstat(h, &st); err != nil || st.Nlink != 1 {
				t.Fatalf("lstat %s after a rename over its other name: nlink %d, %v", h, st.Nlink, err)
			}
		})
	}
}

// TestNoStaleTypeWhenNumbersAreReused: an object removed while the kernel
// still holds its node, whose inode number the host gives to a new object
// of another type, never lends the new object its node: the new one reads
// as what it is.
func TestNoStaleTypeWhenNumbersAreReused(t *testing.T) {
	upper, mnt := mountRW(t, t.TempDir())
	name, target := filepath.Join(mnt, "n"), "somewhere"
	reused := 0
	for i := 0; i < 200 && reused < 5; i++ {
		fd, err := unix.Open(name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
		testenv.Must(t, err)
		unix.Close(fd)
		var old unix.Stat_t
		testenv.Must(t, unix.Lstat(filepath.Join(upper, "n"), &old))
		// An O_PATH fd pins the kernel's inode, and so its node, without
		// the daemon holding the host file open.
		pin, err := unix.Open(name, unix.O_PATH|unix.O_NOFOLLOW, 0)
		testenv.Must(t, err)
		testenv.Must(t, unix.Unlink(name))
		testenv.Must(t, unix.Symlink(target, name))
		var now unix.Stat_t
		testenv.Must(t, unix.Lstat(filepath.Join(upper, "n"), &now))
		if now.Ino == old.Ino {
			reused++
		}
		buf := make([]byte, 64)
		n, err := unix.Readlink(name, buf)
		if err != nil || string(buf[:n]) != target {
			t.Fatalf("round %d (host number reused: %v): readlink of a new symlink: %q, %v", i, now.Ino == old.Ino, buf[:n], err)
		}
		if _, err := unix.Open(name, unix.O_RDONLY|unix.O_NOFOLLOW, 0); err != syscall.ELOOP {
			t.Fatalf("round %d: open O_NOFOLLOW of a symlink: %v, want ELOOP", i, err)
		}
		unix.Close(pin)
		testenv.Must(t, unix.Unlink(name))
	}
	if reused == 0 {
		t.Skip("the upper filesystem never reused an inode number: the test proves nothing here")
	}
}

// TestHardLinkNamesUnderAForgottenDirectory: the kernel forgets a
// directory's node once none of its entries are cached, though a hard
// link named in it stays held through its other name, and a later lookup
// makes a new node of the directory. A removal or rename of the name
// through that new node is a change of the name the link knew: its other
// name stays, and answers.
func TestHardLinkNamesUnderAForgottenDirectory(t *testing.T) {
	for _, op := range []string{"unlink", "rename"} {
		t.Run(op, func(t *testing.T) {
			fs, _, _ := rwStack(t, Options{}, "d m", "d lo", "f m/other x")
			root := Cred{}
			m, err := walk(fs, "m")
			testenv.Must(t, err)
			lo, err := walk(fs, "lo")
			testenv.Must(t, err)
			f, err := fs.Symlink(m.ID, "n", "xx", root)
			testenv.Must(t, err)
			_, err = fs.Link(f.ID, lo.ID, "n")
			testenv.Must(t, err)
			fs.Forget(m.ID, 1) // m/n is no longer cached; lo/n holds f
			m2, err := walk(fs, "m")
			testenv.Must(t, err)
			if m2.ID == m.ID {
				t.Fatal("a forgotten directory kept its node")
			}
			_, err = fs.Lookup(m2.ID, "n")
			testenv.Must(t, err)
			if op == "unlink" {
				testenv.Must(t, fs.Unlink(m2.ID, "n"))
			} else {
				testenv.Must(t, fs.Rename(m2.ID, "n", m2.ID, "other", 0))
			}
			a, err := fs.GetAttr(f.ID)
			if err != nil {
				t.Fatalf("getattr of the link after %s of its other name: %v", op, err)
			}
			if want := map[string]uint32{"unlink": 1, "rename": 2}[op]; a.Nlink != want {
				t.Errorf("nlink %d after %s, want %d", a.Nlink, op, want)
			}
		})
	}
}
