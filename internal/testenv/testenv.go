// Package testenv owns what the tests of every package share: deciding
// whether tests that make real FUSE mounts, or run other programs, can
// run here (RequireMount, RequireProgram), the ovlmount binary they run
// (Binary, RemoveBinary), taking mounts down again (Unmount,
// WaitUnmounted, MountType), finding the daemons they started
// (Processes), the temporary directory of each test process, in which
// the mounts, layers and daemons of a run that died are found and taken
// down by the next (Main, Start, CleanStale), the unprivileged account
// with subordinate ids that rootless tests run as (User, SubIDs), and
// small helpers: layer trees (MakeTree, TreeSum, DirNames, Xattr), errors
// (Must) and output written concurrently (Buffer). Only tests import it:
// it fails tests, and must never be what a program relies on.
package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// RequireMount skips the test unless it can mount FUSE file systems: root,
// /dev/fuse and fusermount3 are needed. With CI=true it fails instead, so
// that CI never passes by silently skipping the mount tests.
func RequireMount(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "not running as root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		missing = append(missing, "no /dev/fuse")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		missing = append(missing, "no fusermount3 on PATH (Debian package fuse3)")
	}
	if len(missing) == 0 {
		return
	}
	msg := "mount tests need root, /dev/fuse and fusermount3: " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: failing instead of skipping)")
	}
	t.Skip(msg)
}

// RequireProgram returns the path of program name, which Debian package
// pkg installs, or skips the test where it is missing; with CI=true it
// fails instead, as RequireMount does.
func RequireProgram(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("no %s on PATH (Debian package %s)", name, pkg)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: failing instead of skipping)")
	}
	t.Skip(msg)
	return ""
}

var built struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// Binary returns the path of the ovlmount binary to test: $OVLMOUNT_BIN if
// set, else ./cmd/ovlmount built once per test process into a temporary
// directory (removed by RemoveBinary).
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("OVLMOUNT_BIN"); p != "" {
		abs, err := filepath.Abs(p)
		if err == nil {
			_, err = os.Stat(abs)
		}
		if err != nil {
			t.Fatalf("OVLMOUNT_BIN: %v", err)
		}
		return abs
	}
	built.once.Do(func() {
		built.path, built.err = build()
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

func build() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	mod := strings.TrimSpace(string(out))
	if err != nil || mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("testenv: cannot find the module root (go env GOMOD: %q, %v)", mod, err)
	}
	dir, err := os.MkdirTemp("", "ovlmount-test-bin")
	if err != nil {
		return "", err
	}
	built.dir = dir
	bin := filepath.Join(dir, "ovlmount")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/ovlmount")
	cmd.Dir = filepath.Dir(mod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("testenv: go build ./cmd/ovlmount: %v\n%s", err, out)
	}
	return bin, nil
}

// RemoveBinary removes the binary Binary built, if any. Call it from
// TestMain after m.Run, once no mount is left running it.
func RemoveBinary() {
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
}

// MountType returns the file system type /proc/self/mountinfo lists for
// the topmost mount on dir ("fuse.ovlmount", ...), or "" if dir is not a
// mountpoint. dir may be relative, or have symlinks in its parent.
func MountType(dir string) string {
	m, _ := mountAt(dir)
	return m.Type
}

// mountAt returns the mount on dir, which may be relative or have
// symlinks in its parent.
func mountAt(dir string) (mountinfo.Mount, bool) {
	p, err := mountinfo.Path(dir)
	if err != nil {
		return mountinfo.Mount{}, false
	}
	return mountinfo.At(p)
}

// Unmount takes down every mount on dir lazily (MNT_DETACH), as a test's
// cleanup should even when the file system no longer answers, and waits
// until mountinfo no longer lists dir. It is a no-op when nothing is
// mounted there.
func Unmount(t testing.TB, dir string) {
	t.Helper()
	for range 10 {
		m, ok := mountAt(dir)
		if !ok {
			break
		}
		if err := unix.Unmount(m.Point, unix.MNT_DETACH); err != nil && err != unix.EINVAL {
			t.Errorf("unmount %s: %v", dir, err)
			return
		}
	}
	WaitUnmounted(t, dir)
}

// WaitUnmounted waits up to 10 seconds until /proc/self/mountinfo no
// longer lists dir, and fails the test if it still does.
func WaitUnmounted(t testing.TB, dir string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for MountType(dir) != "" {
		if time.Now().After(deadline) {
			t.Errorf("%s is still mounted after 10s", dir)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// DirNames returns the names in dir (sorted, as os.ReadDir gives them).
func DirNames(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// Must fails the test at once if err is not nil.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Buffer is a bytes.Buffer that a test may read while goroutines or a
// child process write to it.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Xattr returns the value of extended attribute name of path, not
// following a symlink.
func Xattr(path, name string) (string, error) {
	v := make([]byte, 64<<10)
	n, err := unix.Lgetxattr(path, name, v)
	if err != nil {
		return "", err
	}
	return string(v[:n]), nil
}
