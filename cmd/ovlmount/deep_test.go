package main

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// A lower tree deepLevels directories deep, each name deepName bytes:
// about 20 KiB of path, five times PATH_MAX.
const (
	deepLevels = 100
	deepName   = 200
)

func deepComponent(i int) string {
	s := "d" + strconv.Itoa(i) + "-"
	return s + strings.Repeat("x", deepName-len(s))
}

// TestDeepPaths works on a tree far deeper than PATH_MAX through
// ovlmount and through the kernel's overlay on the same layers: walking it
// one directory at a time, find, a file made and read at the bottom (a
// copy-up of every directory above it), mkdir and rmdir of a path of
// PATH_MAX-1 bytes, rm -rf. The kernel does all of it; so must ovlmount,
// which may never need a host path longer than one name below a held
// directory fd.
func TestDeepPaths(t *testing.T) {
	testenv.RequireMount(t)
	lower := t.TempDir()
	fd, err := unix.Open(lower, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	testenv.Must(t, err)
	for i := range deepLevels {
		name := deepComponent(i)
		testenv.Must(t, unix.Mkdirat(fd, name, 0o755))
		next, err := unix.Openat(fd, name, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		testenv.Must(t, err)
		unix.Close(fd)
		fd = next
	}
	leaf, err := unix.Openat(fd, "leaf", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	testenv.Must(t, err)
	unix.Write(leaf, []byte("deep"))
	unix.Close(leaf)
	unix.Close(fd)

	for _, impl := range []string{"kernel", "ovlmount"} {
		t.Run(impl, func(t *testing.T) {
			_, _, mnt := mountOverlay(t, impl, lower)
			deepWork(t, mnt)
		})
	}
}

// deepWork is TestDeepPaths on one mount.
func deepWork(t *testing.T, mnt string) {
	// Down one directory at a time, as find and rm do.
	fd, err := unix.Open(mnt, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	testenv.Must(t, err)
	for i := range deepLevels {
		next, err := unix.Openat(fd, deepComponent(i), unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			unix.Close(fd)
			t.Fatalf("openat at depth %d: %v", i+1, err)
		}
		unix.Close(fd)
		fd = next
	}
	defer unix.Close(fd)
	if got := readAt(t, fd, "leaf"); got != "deep" {
		t.Errorf("the leaf at depth %d reads %q, want \"deep\"", deepLevels, got)
	}
	if ents, err := readNamesAt(fd); err != nil || len(ents) != 1 {
		t.Errorf("listing at depth %d: %v, %v; want [leaf]", deepLevels, ents, err)
	}
	// A new file at the bottom copies every directory above it up.
	f, err := unix.Openat(fd, "new", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatalf("create at depth %d: %v", deepLevels, err)
	}
	unix.Write(f, []byte("made"))
	unix.Close(f)
	if got := readAt(t, fd, "new"); got != "made" {
		t.Errorf("the new file reads %q, want \"made\"", got)
	}
	// The leaf, written, is copied up too.
	lf, err := unix.Openat(fd, "leaf", unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open the leaf for writing: %v", err)
	}
	unix.Write(lf, []byte("er"))
	unix.Close(lf)
	if got := readAt(t, fd, "leaf"); got != "deeper" {
		t.Errorf("the leaf reads %q after an append, want \"deeper\"", got)
	}

	out, err := exec.Command("find", mnt).CombinedOutput()
	if err != nil {
		t.Errorf("find: %v\n%.300s", err, out)
	}
	if n := strings.Count(string(out), "\n"); n != 1+deepLevels+2 {
		t.Errorf("find lists %d entries, want %d", n, 1+deepLevels+2)
	}

	// mkdir and rmdir of a path of PATH_MAX-1 bytes, each step a full
	// path the caller passes as it is.
	p := mnt + "/m"
	testenv.Must(t, os.Mkdir(p, 0o755))
	var made []string
	for len(p)+2 < unix.PathMax-1 {
		p += "/" + strings.Repeat("y", min(200, unix.PathMax-1-len(p)-1))
		if err := unix.Mkdir(p, 0o755); err != nil {
			t.Fatalf("mkdir of a %d-byte path: %v", len(p), err)
		}
		made = append(made, p)
	}
	for i := len(made) - 1; i >= 0; i-- {
		if err := unix.Rmdir(made[i]); err != nil {
			t.Fatalf("rmdir of a %d-byte path: %v", len(made[i]), err)
		}
	}

	if out, err := exec.Command("rm", "-rf", mnt+"/"+deepComponent(0)).CombinedOutput(); err != nil {
		t.Errorf("rm -rf: %v\n%.300s", err, out)
	}
	if names := testenv.DirNames(t, mnt); len(names) != 1 || names[0] != "m" {
		t.Errorf("after rm -rf the mount lists %v, want [m]", names)
	}
}

func readAt(t *testing.T, dfd int, name string) string {
	t.Helper()
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Errorf("open %s: %v", name, err)
		return ""
	}
	defer unix.Close(fd)
	buf := make([]byte, 64)
	n, err := unix.Read(fd, buf)
	if err != nil {
		t.Errorf("read %s: %v", name, err)
		return ""
	}
	return string(buf[:n])
}

// readNamesAt lists the directory open as fd, "." and ".." left out.
func readNamesAt(fd int) ([]string, error) {
	dup, err := unix.Openat(fd, ".", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "dir")
	defer f.Close()
	return f.Readdirnames(-1)
}
