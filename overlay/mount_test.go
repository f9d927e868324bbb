package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// mountStack mounts the layer directories dirs (top first, read-only) in
// this process, so the test can look inside the engine while the kernel
// uses it.
//
// Files on such a mount must be opened with unix.Open, never os.Open (a
// directory may: FUSE directories do not poll): os
// registers a file with epoll through a raw syscall that keeps its P, and
// on a FUSE file epoll_ctl waits for a FUSE_POLL answer from this very
// process; a garbage collection starting then waits for that P forever,
// and no worker is left to answer.
func mountStack(t *testing.T, dirs ...string) (*FS, string) {
	t.Helper()
	fsys, mnt, _ := mountStackConn(t, dirs...)
	return fsys, mnt
}

// mountStackConn is mountStack, and returns the connection too.
func mountStackConn(t *testing.T, dirs ...string) (*FS, string, *Conn) {
	t.Helper()
	testenv.RequireMount(t)
	var st []*layers.Layer
	for i, d := range dirs {
		l, err := layers.Open(d, i, false)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		st = append(st, l)
	}
	fsys, err := New(st, Options{Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	conn := serveAt(t, fsys, mnt, "ro")
	return fsys, mnt, conn
}

// serveAt mounts fsys at mnt in this process, with mount flags, until
// the test ends.
func serveAt(t *testing.T, fsys *FS, mnt string, flags ...string) *Conn {
	t.Helper()
	conn, err := fsys.Mount(mnt, MountConfig{
		Source: "ovlmount-test", Flags: flags, Workers: 4, Fd: -1,
		ErrorLog: log.New(os.Stderr, "ovlmount: ", 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		testenv.Unmount(t, mnt)
		conn.Wait()
	})
	return conn
}

// dropCaches makes the kernel forget every unused inode of every mount.
func dropCaches(t *testing.T) {
	t.Helper()
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
		t.Fatal(err)
	}
}

// forgetDown makes the kernel forget unused inodes until the engine holds
// want nodes. Dropping caches is repeated: an inode stays pinned until
// the answer to its asynchronous RELEASE arrives.
func forgetDown(t *testing.T, fsys *FS, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for fsys.NodeCount() != want && time.Now().Before(deadline) {
		dropCaches(t)
		time.Sleep(20 * time.Millisecond)
	}
	if got := fsys.NodeCount(); got != want {
		t.Fatalf("engine holds %d nodes, want %d", got, want)
	}
}

func TestLookupCountsReachZero(t *testing.T) {
	top, bottom := t.TempDir(), t.TempDir()
	for i := 0; i < 40; i++ {
		for _, base := range []string{top, bottom} {
			d := filepath.Join(base, fmt.Sprintf("d%02d", i))
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			for j := 0; j < 50; j++ {
				name := filepath.Join(d, fmt.Sprintf("%s-%d", filepath.Base(base), j))
				if err := os.WriteFile(name, []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	fsys, mnt := mountStack(t, top, bottom)
	// Listing with types and stats (readdirplus) and plain stats. Each
	// entry is held open (O_PATH) until the count below: the caches
	// another test drops meanwhile must not make the kernel forget it.
	seen := 0
	var held []int
	defer func() {
		for _, fd := range held {
			unix.Close(fd)
		}
	}()
	err := filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if _, err := d.Info(); err != nil {
			return err
		}
		fd, err := unix.Open(p, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		held = append(held, fd)
		seen++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != 1+40+40*100 {
		t.Fatalf("walked %d entries, want %d", seen, 1+40+40*100)
	}
	if fsys.NodeCount() < 40*100 {
		t.Fatalf("engine holds %d nodes after the walk; the kernel looked up more", fsys.NodeCount())
	}
	for _, fd := range held {
		unix.Close(fd)
	}
	held = nil
	// A file kept open keeps its node through the kernel's forgetting.
	fd, err := unix.Open(filepath.Join(mnt, "d07", filepath.Base(top)+"-3"), unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The root, the open file and its directory stay (the dentry pins
	// the parent).
	forgetDown(t, fsys, 3)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatalf("fstat of an open file after the kernel forgot the rest: %v", err)
	}
	unix.Close(fd)
	forgetDown(t, fsys, 1)
}

func TestMountNeverFollowsLayerSymlinks(t *testing.T) {
	top, bottom := t.TempDir(), t.TempDir()
	testenv.MakeTree(t, top, "f d/mine")
	testenv.MakeTree(t, bottom, "l d /etc", "l up ..", "l loop loop", "l passwd ../../../../../../etc/passwd")
	_, mnt := mountStack(t, top, bottom)
	// d is a directory on top: the symlink below does not merge in.
	if _, err := os.Lstat(filepath.Join(mnt, "d/passwd")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("d/passwd: %v, want ENOENT", err)
	}
	for name, target := range map[string]string{"up": "..", "loop": "loop", "passwd": "../../../../../../etc/passwd"} {
		p := filepath.Join(mnt, name)
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			t.Errorf("%s: %v, mode %v; want a symlink", name, err, fi.Mode())
		}
		if got, err := os.Readlink(p); err != nil || got != target {
			t.Errorf("readlink %s = %q, %v", name, got, err)
		}
	}
	// Following a symlink is the caller's resolution, in the caller's
	// namespace, as on a kernel mount: a loop fails with ELOOP there.
	if _, err := os.Stat(filepath.Join(mnt, "loop")); !errors.Is(err, unix.ELOOP) {
		t.Errorf("stat of a symlink loop: %v, want ELOOP", err)
	}
}

func TestLowerAtimesUntouched(t *testing.T) {
	top, bottom := t.TempDir(), t.TempDir()
	testenv.MakeTree(t, bottom, "d dir/sub", "f dir/file content", "l dir/link file")
	testenv.MakeTree(t, top, "f other")
	// Atimes far in the past: relatime would update every one of them on
	// an access that does not avoid it.
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	paths := []string{"dir/file", "dir/link", "dir/sub", "dir", "."}
	for _, p := range paths {
		ts := []unix.Timespec{unix.NsecToTimespec(old.UnixNano()), {Nsec: unix.UTIME_OMIT}}
		testenv.Must(t, unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(bottom, p), ts, unix.AT_SYMLINK_NOFOLLOW))
	}
	_, mnt := mountStack(t, top, bottom)
	fd, err := unix.Open(filepath.Join(mnt, "dir/file"), unix.O_RDONLY, 0)
	testenv.Must(t, err)
	buf := make([]byte, 64)
	n, err := unix.Read(fd, buf)
	unix.Close(fd)
	if err != nil || string(buf[:n]) != "content" {
		t.Fatalf("read: %q, %v", buf[:n], err)
	}
	if got, err := os.Readlink(filepath.Join(mnt, "dir/link")); err != nil || got != "file" {
		t.Fatalf("readlink: %q, %v", got, err)
	}
	for _, d := range []string{"", "dir", "dir/sub"} {
		if _, err := os.ReadDir(filepath.Join(mnt, d)); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range paths {
		var st unix.Stat_t
		testenv.Must(t, unix.Lstat(filepath.Join(bottom, p), &st))
		if got := time.Unix(st.Atim.Unix()); !got.Equal(old) {
			t.Errorf("lower %s: atime %v, want it untouched (%v)", p, got.UTC(), old)
		}
	}
}

// direntNames parses getdents64 records into names and their d_off.
func direntNames(buf []byte) (names []string, offs []int64) {
	for len(buf) >= 19 {
		off := int64(binary.NativeEndian.Uint64(buf[8:16]))
		reclen := int(binary.NativeEndian.Uint16(buf[16:18]))
		name := buf[19:reclen]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		names, offs = append(names, string(name)), append(offs, off)
		buf = buf[reclen:]
	}
	return names, offs
}

func TestSeekdirThroughTheMount(t *testing.T) {
	top, bottom := t.TempDir(), t.TempDir()
	for i := 0; i < 300; i++ {
		dir := top
		if i%2 == 1 {
			dir = bottom
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("entry-%03d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, mnt := mountStack(t, top, bottom)
	fd, err := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var all []string
	var offs []int64
	buf := make([]byte, 1024) // small: many reads, each resuming at an offset
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		names, o := direntNames(buf[:n])
		all, offs = append(all, names...), append(offs, o...)
	}
	if len(all) != 302 {
		t.Fatalf("listed %d names, want 300 and . ..", len(all))
	}
	// seekdir to every tenth telldir position gives the listing from there.
	for i := 0; i < len(offs)-1; i += 10 {
		if _, err := unix.Seek(fd, offs[i], 0); err != nil {
			t.Fatal(err)
		}
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		names, _ := direntNames(buf[:n])
		if len(names) == 0 || names[0] != all[i+1] {
			t.Fatalf("after seekdir to the offset of %q: %v, want %q first", all[i], names, all[i+1])
		}
	}
}

func TestStatfsIsTheTopLayers(t *testing.T) {
	top, bottom := t.TempDir(), t.TempDir()
	_, mnt := mountStack(t, top, bottom)
	var got, want unix.Statfs_t
	if err := unix.Statfs(mnt, &got); err != nil {
		t.Fatal(err)
	}
	if err := unix.Statfs(top, &want); err != nil {
		t.Fatal(err)
	}
	if got.Blocks != want.Blocks || got.Files != want.Files || got.Bsize != want.Bsize || got.Frsize != want.Frsize {
		t.Errorf("statfs: blocks %d files %d bsize %d frsize %d; top layer has %d %d %d %d",
			got.Blocks, got.Files, got.Bsize, got.Frsize, want.Blocks, want.Files, want.Bsize, want.Frsize)
	}
}

// TestStuckReaderGetsHelp: a request never waits behind another that is
// stuck in the engine. With the reader stuck (renameMu held here), the
// watcher starts another reader, which serves a statfs. Once the
// connection is idle again, the reader that was added leaves and no
// spare state stays behind (buffers.go: their memory goes back to the
// host).
func TestStuckReaderGetsHelp(t *testing.T) {
	lower := t.TempDir()
	testenv.Must(t, os.WriteFile(filepath.Join(lower, "f"), nil, 0o644))
	fsys, mnt, conn := mountStackConn(t, lower)

	fsys.renameMu.Lock()
	locked := true
	defer func() {
		if locked {
			fsys.renameMu.Unlock()
		}
	}()
	looked := make(chan error, 1)
	go func() {
		var st unix.Stat_t
		looked <- unix.Lstat(filepath.Join(mnt, "f"), &st)
	}()
	// The lookup's path walk first asks for the root's attributes, and
	// either request waits for renameMu in the engine.
	for !stuck.MatchString(goroutines()) {
		runtime.Gosched()
	}

	statted := make(chan error, 1)
	go func() {
		var st unix.Statfs_t
		statted <- unix.Statfs(mnt, &st)
	}()
	select {
	case err := <-statted:
		testenv.Must(t, err)
	case <-time.After(time.Minute):
		t.Fatal("statfs still waits behind the stuck request: no reader was added")
	}

	fsys.renameMu.Unlock()
	locked = false
	testenv.Must(t, <-looked)

	for end := time.Now().Add(time.Minute); conn.readers.Load() > 1 || spares(conn) > 0; {
		if time.Now().After(end) {
			t.Fatalf("a minute after the stall %d readers serve and %d spare states stay", conn.readers.Load(), spares(conn))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func spares(c *Conn) int {
	c.spareMu.Lock()
	defer c.spareMu.Unlock()
	return len(c.spare)
}

// TestBufferMapsGiveBackPages: a buffer given back reads as zeros when
// it is taken again, so its pages went back to the host.
func TestBufferMapsGiveBackPages(t *testing.T) {
	var m bufferMaps
	b, ok := m.get(1 << 20)
	if !ok {
		t.Skip("the host maps no anonymous memory")
	}
	b[0], b[len(b)-1] = 1, 1
	m.put(b)
	c, ok := m.get(1 << 20)
	if !ok || &c[0] != &b[0] {
		t.Fatal("a buffer given back was not taken again")
	}
	if c[0] != 0 || c[len(c)-1] != 0 {
		t.Error("a buffer given back kept its contents")
	}
}

// stuck matches a goroutine waiting for FS.renameMu in an FS method.
var stuck = regexp.MustCompile(`sync\.\(\*RWMutex\)\.RLock\(.*\)\n.*\n\S*overlay\.\(\*FS\)\.`)

// goroutines returns the stacks of every goroutine.
func goroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}
