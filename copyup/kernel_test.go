package copyup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// The kernel is the oracle: these tests copy the same lower objects up
// through a kernel overlay mount and through Copy, and compare what both
// wrote in their upper layers, byte for byte.

func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	testenv.Must(t, os.MkdirAll(dir, 0o755))
	testenv.Must(t, unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"))
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
}

// kernelCopyUp mounts a kernel overlay of lowerDir with upper and work
// in base, copies every rel up through it by setting the owner it already
// has (which changes nothing else), and unmounts it.
func kernelCopyUp(t *testing.T, lowerDir, base string, rels []string, trusted bool) string {
	t.Helper()
	upper, work, mnt := filepath.Join(base, "kupper"), filepath.Join(base, "kwork"), filepath.Join(base, "kmnt")
	for _, d := range []string{upper, work, mnt} {
		testenv.Must(t, os.MkdirAll(d, 0o755))
	}
	opts := "lowerdir=" + lowerDir + ",upperdir=" + upper + ",workdir=" + work
	if !trusted {
		opts += ",userxattr"
	}
	if err := unix.Mount("overlay", mnt, "overlay", 0, opts); err != nil {
		if err == unix.ENODEV && os.Getenv("CI") != "true" {
			t.Skip("no overlay filesystem in this kernel")
		}
		t.Fatalf("mount -t overlay -o %s: %v", opts, err)
	}
	mounted := true
	defer func() {
		if mounted {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	}()
	for _, rel := range rels {
		p := filepath.Join(mnt, rel)
		st := lstat(t, p)
		testenv.Must(t, unix.Fchownat(unix.AT_FDCWD, p, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW))
	}
	testenv.Must(t, unix.Unmount(mnt, 0))
	mounted = false
	return upper
}

// compareWithKernel copies rels with Copy into a second upper layer on the
// filesystem of upperBase and compares both uppers: every xattr (origin
// and impure included), mode, owner, times, content.
func compareWithKernel(t *testing.T, lowerDir, upperBase string, rels []string, trusted bool) {
	t.Helper()
	kupper := kernelCopyUp(t, lowerDir, upperBase, rels, trusted)
	s := newStack(t, lowerDir, upperBase)
	mine, reading := layers.Trusted, layers.EveryForm
	if !trusted {
		mine, reading = layers.User, layers.UserForm
	}
	for _, rel := range rels {
		s.copy(t, rel, Options{Fsync: true, Trusted: trusted, Reading: reading})
	}
	for _, rel := range append([]string{"."}, rels...) {
		k, o := filepath.Join(kupper, rel), filepath.Join(s.upperDir, rel)
		kx, ox := xattrs(t, k), xattrs(t, o)
		if rel == "." {
			// The kernel records its instance uuid on the upper root at
			// mount; that is the mount's, not copy-up's, business.
			delete(kx, mine.Name(layers.XattrUUID))
		}
		// The one deliberate difference: without userxattr the kernel
		// copies user.overlay.* and fuse-overlayfs's xattrs; ovlmount
		// reads them all as markers, so none is copied. With userxattr
		// both copy trusted.overlay.* and the rest.
		for name := range kx {
			if private(reading)(name) && !strings.HasPrefix(name, string(mine)) {
				delete(kx, name)
			}
		}
		for name := range mergeKeys(kx, ox) {
			kv, kok := kx[name]
			ov, ook := ox[name]
			if kok != ook || kv != ov {
				t.Errorf("%s: xattr %s: kernel %x (%v), copyup %x (%v)", rel, name, kv, kok, ov, ook)
			}
		}
		if rel == "." {
			continue
		}
		ks, us := lstat(t, k), lstat(t, o)
		// The kernel copies each 1 MiB chunk that holds data whole,
		// holes in it included; Copy writes only the data.
		if rel == "d/sparse" && us.Blocks > ks.Blocks {
			t.Errorf("%s: %d blocks, the kernel's copy %d", rel, us.Blocks, ks.Blocks)
		}
		if ks.Mode != us.Mode || ks.Uid != us.Uid || ks.Gid != us.Gid || ks.Rdev != us.Rdev || ks.Size != us.Size || ks.Mtim != us.Mtim || ks.Atim != us.Atim {
			t.Errorf("%s: kernel %o %d:%d rdev %x size %d %v %v, copyup %o %d:%d rdev %x size %d %v %v", rel,
				ks.Mode, ks.Uid, ks.Gid, ks.Rdev, ks.Size, ks.Atim, ks.Mtim, us.Mode, us.Uid, us.Gid, us.Rdev, us.Size, us.Atim, us.Mtim)
		}
		switch ks.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			if digest(t, k) != digest(t, o) {
				t.Errorf("%s: content differs", rel)
			}
		case unix.S_IFLNK:
			if readlinkPath(t, k) != readlinkPath(t, o) {
				t.Errorf("%s: target differs", rel)
			}
		}
	}
}

// kernelTree is lowerTree without what a chown through the mount would
// change after the copy (setuid bits, security.capability).
func kernelTree(t *testing.T, lowerDir string) []string {
	t.Helper()
	buildLower(t, lowerDir)
	var rels []string
	for _, o := range lowerTree {
		if o.rel != "d/suid" && o.rel != "d/h2" {
			rels = append(rels, o.rel)
		}
	}
	return rels
}

// TestKernelSameFs: every layer on the test's filesystem.
func TestKernelSameFs(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	lowerDir := filepath.Join(base, "lower")
	compareWithKernel(t, lowerDir, base, kernelTree(t, lowerDir), true)
}

// TestKernelUserxattr: the userxattr form, user.overlay.*, which the
// kernel does not set on symlinks and special files (EPERM, ignored).
func TestKernelUserxattr(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	lowerDir := filepath.Join(base, "lower")
	compareWithKernel(t, lowerDir, base, kernelTree(t, lowerDir), false)
}

// TestKernelTmpfs: every layer on one tmpfs, a filesystem with a uuid:
// the kernel records it in the origin even though the layers share it.
func TestKernelTmpfs(t *testing.T) {
	requireRoot(t)
	base := filepath.Join(t.TempDir(), "tmpfs")
	mountTmpfs(t, base)
	lowerDir := filepath.Join(base, "lower")
	rels := kernelTree(t, lowerDir)
	fd, err := unix.Open(base, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	testenv.Must(t, err)
	uuid, err := layers.FSUUID(fd)
	unix.Close(fd)
	testenv.Must(t, err)
	if uuid == ([16]byte{}) {
		t.Fatal("tmpfs has no uuid here; the test means to check one")
	}
	compareWithKernel(t, lowerDir, base, rels, true)
	v, err := testenv.Xattr(filepath.Join(base, "upper", "d/f"), "trusted.overlay.origin")
	testenv.Must(t, err)
	if v[5:21] != string(uuid[:]) {
		t.Errorf("origin uuid %x, want the filesystem's %x", v[5:21], uuid)
	}
}

// TestKernelCrossFs: the lower layer on a tmpfs, the upper one on the
// test's filesystem.
func TestKernelCrossFs(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	lowerDir := filepath.Join(base, "lowerfs")
	mountTmpfs(t, lowerDir)
	compareWithKernel(t, lowerDir, base, kernelTree(t, lowerDir), true)
}

func mergeKeys(a, b map[string]string) map[string]bool {
	m := map[string]bool{}
	for k := range a {
		m[k] = true
	}
	for k := range b {
		m[k] = true
	}
	return m
}
