package copyup

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// requireRoot skips a test that needs root (mknod, chown, trusted.*
// xattrs, mounts), or fails it with CI=true, so that CI never passes by
// skipping.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("copyup tests need root (CI=true: failing instead of skipping)")
	}
	t.Skip("copyup tests need root")
}

// stack is a lower, an upper and a workdir, opened.
type stack struct {
	lowerDir, upperDir, workDir string
	lower, upper                *layers.Layer
	work                        *Work
}

func newStack(t *testing.T, lowerDir, upperBase string) *stack {
	t.Helper()
	s := &stack{lowerDir: lowerDir, upperDir: filepath.Join(upperBase, "upper"), workDir: filepath.Join(upperBase, "workdir")}
	testenv.Must(t, os.MkdirAll(s.upperDir, 0o755))
	testenv.Must(t, os.MkdirAll(s.workDir, 0o755))
	s.open(t)
	return s
}

func (s *stack) open(t *testing.T) {
	t.Helper()
	var err error
	if s.lower, err = layers.Open(s.lowerDir, 1, false); err != nil {
		t.Fatal(err)
	}
	if s.upper, err = layers.Open(s.upperDir, 0, true); err != nil {
		t.Fatal(err)
	}
	if s.work, err = Open(s.workDir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.lower.Close()
		s.upper.Close()
		s.work.Close()
	})
}

func (s *stack) copy(t *testing.T, rel string, opts Options) unix.Stat_t {
	t.Helper()
	st, err := copyRel(s.work, s.lower, s.upper, rel, opts)
	if err != nil {
		t.Fatalf("Copy %s: %v", rel, err)
	}
	return st
}

// workEntries lists workdir/work.
func (s *stack) workEntries(t *testing.T) []string {
	t.Helper()
	names, err := readNames(s.work.Fd())
	testenv.Must(t, err)
	return names
}

func lstat(t *testing.T, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	testenv.Must(t, unix.Lstat(path, &st))
	return st
}

func setTimes(t *testing.T, path string, atime, mtime int64) {
	t.Helper()
	ts := []unix.Timespec{{Sec: atime, Nsec: 123456789}, {Sec: mtime, Nsec: 987654321}}
	testenv.Must(t, unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW))
}

// xattrs returns every xattr of path (not followed) by name.
func xattrs(t *testing.T, path string) map[string]string {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(path, buf)
	if err == unix.EOPNOTSUPP {
		return nil
	}
	testenv.Must(t, err)
	m := map[string]string{}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10)
		k, err := unix.Lgetxattr(path, name, v)
		testenv.Must(t, err)
		m[name] = string(v[:k])
	}
	return m
}

// digest hashes the content of a regular file without touching its atime.
func digest(t *testing.T, path string) string {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
	testenv.Must(t, err)
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	testenv.Must(t, err)
	return string(h.Sum(nil))
}

func readlinkPath(t *testing.T, path string) string {
	t.Helper()
	s, err := os.Readlink(path)
	testenv.Must(t, err)
	return s
}

// sameObject compares what a copy must keep: type, mode, owner, device
// number, size, atime and mtime, content or target, and the xattrs but
// the overlay's own (which the caller checks). want holds the lower
// object's attributes from before the copy.
func sameObject(t *testing.T, rel string, want unix.Stat_t, lowerPath, upperPath string) {
	t.Helper()
	got := lstat(t, upperPath)
	if got.Mode != want.Mode || got.Uid != want.Uid || got.Gid != want.Gid || got.Rdev != want.Rdev {
		t.Errorf("%s: mode %o uid %d gid %d rdev %x, want %o %d %d %x", rel, got.Mode, got.Uid, got.Gid, got.Rdev, want.Mode, want.Uid, want.Gid, want.Rdev)
	}
	if got.Atim != want.Atim || got.Mtim != want.Mtim {
		t.Errorf("%s: atime %v mtime %v, want %v %v", rel, got.Atim, got.Mtim, want.Atim, want.Mtim)
	}
	switch want.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if got.Size != want.Size {
			t.Errorf("%s: size %d, want %d", rel, got.Size, want.Size)
		}
		if digest(t, upperPath) != digest(t, lowerPath) {
			t.Errorf("%s: content differs", rel)
		}
	case unix.S_IFLNK:
		if g, w := readlinkPath(t, upperPath), readlinkPath(t, lowerPath); g != w {
			t.Errorf("%s: target %q, want %q", rel, g, w)
		}
	case unix.S_IFDIR:
		if names, _ := os.ReadDir(upperPath); len(names) != 0 {
			t.Errorf("%s: copied directory not empty: %v", rel, names)
		}
	}
	gx, wx := userXattrs(t, upperPath), userXattrs(t, lowerPath)
	if !equalMaps(gx, wx) {
		t.Errorf("%s: xattrs %q, want %q", rel, gx, wx)
	}
}

// userXattrs returns the xattrs of path that a copy keeps.
func userXattrs(t *testing.T, path string) map[string]string {
	m := xattrs(t, path)
	for name := range m {
		if private(layers.EveryForm)(name) {
			delete(m, name)
		}
	}
	return m
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func keys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// acl encodes a POSIX ACL xattr value (struct posix_acl_xattr_header and
// entries), so that the tests need no setfacl.
func acl(entries ...[3]uint32) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint32(2))
	for _, e := range entries {
		binary.Write(&b, binary.LittleEndian, uint16(e[0]))
		binary.Write(&b, binary.LittleEndian, uint16(e[1]))
		binary.Write(&b, binary.LittleEndian, e[2])
	}
	return b.Bytes()
}

const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclMask     = 0x10
	aclOther    = 0x20
	aclNoID     = 0xffffffff
)

// capability encodes security.capability (struct vfs_cap_data, revision
// 2) with cap_net_bind_service permitted and effective.
func capability() []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, []uint32{0x02000000 | 1, 1 << 10, 0, 0, 0})
	return b.Bytes()
}

// lowerObject is one object the tests build in a lower layer.
type lowerObject struct {
	rel  string
	make func(t *testing.T, path string)
}

func mkfile(content string, mode uint32) func(t *testing.T, path string) {
	return func(t *testing.T, path string) {
		testenv.Must(t, os.WriteFile(path, []byte(content), 0o600))
		testenv.Must(t, unix.Chmod(path, mode))
	}
}

func setx(t *testing.T, path, name string, value []byte) {
	t.Helper()
	testenv.Must(t, unix.Lsetxattr(path, name, value, 0))
}

// lowerTree is every kind of object, with attributes.
var lowerTree = []lowerObject{
	{"d", func(t *testing.T, p string) {
		testenv.Must(t, os.Mkdir(p, 0o700))
		testenv.Must(t, unix.Chmod(p, 0o1751))
		testenv.Must(t, os.Chown(p, 1001, 1002))
		setx(t, p, "user.dir", []byte("d"))
		setx(t, p, "trusted.overlay.opaque", []byte("y")) // private: not copied
		setx(t, p, "system.posix_acl_default", acl([3]uint32{aclUserObj, 7, aclNoID}, [3]uint32{aclUser, 5, 4242}, [3]uint32{aclGroupObj, 5, aclNoID}, [3]uint32{aclMask, 5, aclNoID}, [3]uint32{aclOther, 0, aclNoID}))
	}},
	{"d/f", func(t *testing.T, p string) {
		mkfile("hello, world\n", 0o640)(t, p)
		setx(t, p, "user.x", []byte("1"))
		setx(t, p, "user.empty", nil)
		setx(t, p, "trusted.overlay.overlay.esc", []byte("escaped"))
		setx(t, p, "user.overlay.overlay.uesc", []byte("escaped too"))
		setx(t, p, "trusted.overlay.origin", []byte("stale"))
		setx(t, p, "user.overlay.opaque", []byte("y"))
		setx(t, p, "user.fuseoverlayfs.opaque", []byte("y"))
		setx(t, p, "trusted.other", bytes.Repeat([]byte("v"), 3000))
	}},
	{"d/empty", mkfile("", 0o600)},
	{"d/suid", func(t *testing.T, p string) {
		mkfile("#!/bin/sh\n", 0o755)(t, p)
		testenv.Must(t, os.Chown(p, 1234, 5678))
		setx(t, p, "security.capability", capability())
		testenv.Must(t, unix.Chmod(p, 0o6755))
	}},
	{"d/acl", func(t *testing.T, p string) {
		mkfile("acl\n", 0o640)(t, p)
		setx(t, p, "system.posix_acl_access", acl([3]uint32{aclUserObj, 6, aclNoID}, [3]uint32{aclUser, 6, 4242}, [3]uint32{aclGroupObj, 4, aclNoID}, [3]uint32{aclMask, 6, aclNoID}, [3]uint32{aclOther, 0, aclNoID}))
	}},
	{"d/sparse", func(t *testing.T, p string) {
		f, err := os.Create(p)
		testenv.Must(t, err)
		defer f.Close()
		block := bytes.Repeat([]byte("data"), 1024)
		for _, off := range []int64{0, 1 << 20, 32 << 20, 40<<20 + 100} {
			_, err := f.WriteAt(block, off)
			testenv.Must(t, err)
		}
		testenv.Must(t, f.Truncate(64<<20))
	}},
	{"d/sl", func(t *testing.T, p string) {
		testenv.Must(t, os.Symlink("../../../../etc/passwd", p))
		testenv.Must(t, os.Lchown(p, 7, 8))
		setx(t, p, "trusted.sl", []byte("on the link"))
	}},
	{"d/fifo", func(t *testing.T, p string) {
		testenv.Must(t, unix.Mkfifo(p, 0o620))
		testenv.Must(t, os.Lchown(p, 9, 9))
	}},
	{"d/chr", func(t *testing.T, p string) {
		testenv.Must(t, unix.Mknod(p, unix.S_IFCHR|0o660, int(unix.Mkdev(1, 3))))
		setx(t, p, "trusted.dev", []byte("c"))
	}},
	{"d/blk", func(t *testing.T, p string) {
		testenv.Must(t, unix.Mknod(p, unix.S_IFBLK|0o600, int(unix.Mkdev(7, 200))))
	}},
	{"d/sock", func(t *testing.T, p string) {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		testenv.Must(t, err)
		defer unix.Close(fd)
		testenv.Must(t, unix.Bind(fd, &unix.SockaddrUnix{Name: p}))
	}},
	{"d/h1", mkfile("linked\n", 0o644)},
	{"d/h2", func(t *testing.T, p string) { testenv.Must(t, os.Link(filepath.Join(filepath.Dir(p), "h1"), p)) }},
	{"d/sub", func(t *testing.T, p string) {
		testenv.Must(t, os.Mkdir(p, 0o755))
		testenv.Must(t, os.WriteFile(filepath.Join(p, "inner"), []byte("stays below"), 0o644))
	}},
}

// buildLower makes lowerTree in dir (made if missing) with old, distinct
// times, and returns the attributes of each object.
func buildLower(t *testing.T, dir string) map[string]unix.Stat_t {
	t.Helper()
	testenv.Must(t, os.MkdirAll(dir, 0o755))
	for _, o := range lowerTree {
		o.make(t, filepath.Join(dir, o.rel))
	}
	sts := map[string]unix.Stat_t{}
	for i := len(lowerTree) - 1; i >= 0; i-- {
		p := filepath.Join(dir, lowerTree[i].rel)
		setTimes(t, p, 1000000000+int64(i), 900000000+int64(i))
	}
	for _, o := range lowerTree {
		sts[o.rel] = lstat(t, filepath.Join(dir, o.rel))
	}
	return sts
}

// expectedOrigin builds the struct ovl_fb of the object at path
// independently of the package: its file handle and its filesystem's uuid.
func expectedOrigin(t *testing.T, path string) string {
	t.Helper()
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, path, 0)
	testenv.Must(t, err)
	fd, err := unix.Open(filepath.Dir(path), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	testenv.Must(t, err)
	uuid, err := layers.FSUUID(fd)
	unix.Close(fd)
	testenv.Must(t, err)
	fb := []byte{0, 0xfb, byte(21 + len(h.Bytes())), 0, byte(h.Type())}
	fb = append(append(fb, uuid[:]...), h.Bytes()...)
	return string(fb)
}

func isErrno(err error, want unix.Errno) bool {
	var e unix.Errno
	return errors.As(err, &e) && e == want
}

// copyRel copies rel, a path below the layer roots, as the engine does:
// through fds of its parent in both layers (here opened by openat2 below
// the roots, which opens a final symlink itself and follows none).
func copyRel(w *Work, src, upper *layers.Layer, rel string, opts Options) (unix.Stat_t, error) {
	parent, name := "", rel
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		parent, name = rel[:i], rel[i+1:]
	}
	for _, n := range strings.Split(rel, "/") {
		if !layers.ValidName(n) {
			return unix.Stat_t{}, unix.EINVAL
		}
	}
	sdir, err := src.OpenPath(parent)
	if err != nil {
		return unix.Stat_t{}, err
	}
	defer unix.Close(sdir)
	udir, err := upper.OpenPath(parent)
	if err != nil {
		return unix.Stat_t{}, err
	}
	defer unix.Close(udir)
	return w.Copy(src, sdir, name, upper, udir, name, opts)
}

// readNames lists directory dir through a new open file description, so
// that each listing starts at the beginning.
func readNames(dir int) ([]string, error) {
	fd, err := unix.Openat(dir, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "work")
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, layers.Errno(err)
	}
	return names, nil
}
