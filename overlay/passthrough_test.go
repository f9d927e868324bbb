package overlay

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/inodes"
	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// mountPassthrough mounts lower under a new upper layer with passthrough
// on, in this process, and skips unless the kernel granted it.
func mountPassthrough(t *testing.T, lower string) (*FS, *Conn, string, string) {
	t.Helper()
	testenv.RequireMount(t)
	fsys, upper, base := openRW(t, lower, Options{Timeout: time.Hour, Passthrough: true, ACL: true})
	mnt := filepath.Join(base, "mnt")
	testenv.Must(t, os.Mkdir(mnt, 0o755))
	conn := serveAt(t, fsys, mnt)
	fsys.hmu.Lock()
	on := fsys.backing != nil
	fsys.hmu.Unlock()
	if !on {
		msg := "the kernel granted no FUSE passthrough (CONFIG_FUSE_PASSTHROUGH, root outside a user namespace)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return fsys, conn, upper, mnt
}

// backingOf returns whether the node of name, in the mount's root, holds
// a passthrough backing.
func backingOf(t *testing.T, fsys *FS, name string) bool {
	t.Helper()
	e, err := fsys.Lookup(inodes.RootID, filepath.Base(name))
	testenv.Must(t, err)
	defer fsys.Forget(e.ID, 1)
	n, err := fsys.get(e.ID)
	testenv.Must(t, err)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.aux != nil && n.aux.backing != nil
}

// TestPassthroughUpperFiles: an upper file's opens are passed through,
// sharing one backing that goes with the last of them; a lower file open
// for reading, a setuid file, and the opens of a node already open
// without passthrough are served by the daemon.
func TestPassthroughUpperFiles(t *testing.T) {
	lower := t.TempDir()
	testenv.Must(t, os.WriteFile(filepath.Join(lower, "low"), []byte("lower data"), 0o644))
	testenv.Must(t, os.WriteFile(filepath.Join(lower, "suid"), []byte("s"), 0o755))
	testenv.Must(t, unix.Chmod(filepath.Join(lower, "suid"), 0o4755))
	fsys, _, upper, mnt := mountPassthrough(t, lower)
	m := func(p string) string { return filepath.Join(mnt, p) }

	data := bytes.Repeat([]byte("passthrough"), 100000)
	w, err := unix.Open(m("new"), unix.O_CREAT|unix.O_RDWR, 0o644)
	testenv.Must(t, err)
	if !backingOf(t, fsys, m("new")) {
		t.Error("a new file is not passed through")
	}
	r, err := unix.Open(m("new"), unix.O_RDONLY, 0)
	testenv.Must(t, err)
	_, err = unix.Write(w, data)
	testenv.Must(t, err)
	got := make([]byte, len(data))
	if n, err := unix.Pread(r, got, 0); err != nil || !bytes.Equal(got[:n], data) {
		t.Fatalf("read back through a second passed-through open: %d bytes, %v", n, err)
	}
	testenv.Must(t, unix.Close(w))
	if !backingOf(t, fsys, m("new")) {
		t.Error("the backing went while a file still used it")
	}
	testenv.Must(t, unix.Close(r))
	// RELEASE reaches the daemon after close returns.
	for deadline := time.Now().Add(time.Minute); backingOf(t, fsys, m("new")); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the backing stayed after the last close")
		}
	}
	if on, err := os.ReadFile(filepath.Join(upper, "new")); err != nil || !bytes.Equal(on, data) {
		t.Errorf("upper file: %d bytes, %v", len(on), err)
	}

	// A lower file open for reading, then written through another open:
	// the reader sees the copy, as on the kernel's overlay.
	r, err = unix.Open(m("low"), unix.O_RDONLY, 0)
	testenv.Must(t, err)
	if backingOf(t, fsys, m("low")) {
		t.Error("a lower file is passed through")
	}
	w, err = unix.Open(m("low"), unix.O_WRONLY, 0)
	testenv.Must(t, err)
	if backingOf(t, fsys, m("low")) {
		t.Error("a node open without passthrough got a backing")
	}
	_, err = unix.Write(w, []byte("upper"))
	testenv.Must(t, err)
	buf := make([]byte, 64)
	n, err := unix.Pread(r, buf, 0)
	testenv.Must(t, err)
	if string(buf[:n]) != "upper data" {
		t.Errorf("a reader opened before the copy-up reads %q", buf[:n])
	}
	unix.Close(w)
	unix.Close(r)

	// A setuid file keeps its data in the daemon, which clears the bit.
	w, err = unix.Open(m("suid"), unix.O_WRONLY, 0)
	testenv.Must(t, err)
	defer unix.Close(w)
	if backingOf(t, fsys, m("suid")) {
		t.Error("a setuid file is passed through")
	}
}

// TestSplicedReads: large reads of a lower file go to the kernel by
// splice, and read what the file holds, to its last byte.
func TestSplicedReads(t *testing.T) {
	lower := t.TempDir()
	data := make([]byte, 5<<20+12345)
	for i := range data {
		data[i] = byte(i * 7)
	}
	testenv.Must(t, os.WriteFile(filepath.Join(lower, "big"), data, 0o644))
	_, conn, _, mnt := mountPassthrough(t, lower)
	before := conn.Spliced()
	fd, err := unix.Open(filepath.Join(mnt, "big"), unix.O_RDONLY, 0)
	testenv.Must(t, err)
	defer unix.Close(fd)
	got := make([]byte, len(data)+4096)
	total := 0
	for {
		n, err := unix.Read(fd, got[total:])
		testenv.Must(t, err)
		if n == 0 {
			break
		}
		total += n
	}
	if !bytes.Equal(got[:total], data) {
		t.Fatalf("read %d bytes, not the file's %d", total, len(data))
	}
	if conn.Spliced() == before {
		t.Error("no read reply was spliced")
	}
}
