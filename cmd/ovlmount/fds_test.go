package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// daemonFds is the fd limit TestOutOfFds gives the daemon.
const daemonFds = 64

// TestOutOfFds runs the daemon with a limit of daemonFds open files and
// opens files through the mount until the daemon has no fd left. That
// open, and every operation that needs an fd meanwhile (lookups and
// listings of directories not seen yet, create, copy-up, mkdir), must get
// an answer: EMFILE or ENFILE, or success, never EIO and never a hang;
// a copy-up that fails leaves nothing behind. Once the files are closed,
// every one of those operations succeeds, on the names that failed too.
func TestOutOfFds(t *testing.T) {
	testenv.RequireMount(t)
	prlimit := testenv.RequireProgram(t, "prlimit", "util-linux")
	d := makeStack(t)
	const files, dirs = 3 * daemonFds, 8
	for i := range files {
		testenv.Must(t, os.WriteFile(fmt.Sprintf("%s/l2/f%d", d, i), []byte(fmt.Sprint(i)), 0o644))
	}
	for i := range dirs {
		testenv.Must(t, os.MkdirAll(fmt.Sprintf("%s/l2/dir%d/sub", d, i), 0o755))
		testenv.Must(t, os.WriteFile(fmt.Sprintf("%s/l2/dir%d/g", d, i), []byte("g"), 0o644))
	}
	mnt := d + "/mnt"
	cleanupMount(t, mnt)
	p := &foreground{done: make(chan struct{})}
	p.cmd = exec.Command(prlimit, fmt.Sprintf("--nofile=%d:%d", daemonFds, daemonFds), "--",
		testenv.Binary(t), "-f", "-o", "lowerdir="+d+"/l1:"+d+"/l2,upperdir="+d+"/upper,workdir="+d+"/work", mnt)
	p.cmd.Stderr = &p.stderr
	testenv.Must(t, p.cmd.Start())
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	for deadline := time.Now().Add(10 * time.Second); testenv.MountType(mnt) != "fuse.ovlmount"; time.Sleep(10 * time.Millisecond) {
		if err, ended := p.wait(0); ended {
			t.Fatalf("ovlmount ended before mounting (%v): %s", err, p.stderr.String())
		}
		if time.Now().After(deadline) {
			t.Fatal("not mounted after 10s")
		}
	}
	t.Cleanup(func() {
		testenv.Unmount(t, mnt)
		if _, ended := p.wait(10 * time.Second); !ended {
			t.Error("ovlmount still running 10s after the unmount; killed")
			p.cmd.Process.Kill()
			<-p.done
		}
	})

	// answer runs op and returns its error, failing the test if op gets
	// no answer in 30 seconds (the daemon would hang) or gets EIO.
	answer := func(what string, op func() error) error {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- op() }()
		select {
		case err := <-done:
			if errors.Is(err, unix.EIO) {
				t.Errorf("%s: EIO", what)
			}
			return err
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no answer in 30s", what)
			return nil
		}
	}
	outOfFds := func(err error) bool { return errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) }

	var open []*os.File
	defer func() {
		for _, f := range open {
			f.Close()
		}
	}()
	var err2 error
	for i := 0; i < files && err2 == nil; i++ {
		err2 = answer("open", func() error {
			f, err := os.Open(fmt.Sprintf("%s/f%d", mnt, i))
			if err == nil {
				open = append(open, f)
			}
			return err
		})
	}
	if !outOfFds(err2) {
		t.Fatalf("after %d files opened through a daemon limited to %d fds: %v, want EMFILE or ENFILE", len(open), daemonFds, err2)
	}
	t.Logf("the daemon, limited to %d fds, ran out at %d open files: %v", daemonFds, len(open), err2)

	// Every operation needing an fd, on names the kernel has not seen.
	ops := []struct {
		what string
		op   func() error
	}{
		{"open", func() error {
			f, err := os.Open(fmt.Sprintf("%s/f%d", mnt, files-1))
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"stat in a new directory", func() error { _, err := os.Stat(mnt + "/dir0/g"); return err }},
		{"listing of a new directory", func() error {
			names, err := os.ReadDir(mnt + "/dir1")
			if err == nil && len(names) != 2 {
				return fmt.Errorf("lists %d entries", len(names))
			}
			return err
		}},
		{"create", func() error { return os.WriteFile(mnt+"/dir2/new", []byte("new"), 0o644) }},
		{"copy-up", func() error {
			f, err := os.OpenFile(mnt+"/dir3/g", os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			_, err = f.Write([]byte("+"))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			return err
		}},
		{"mkdir", func() error { return os.Mkdir(mnt+"/dir4/sub/new", 0o755) }},
		{"rename", func() error { return os.Rename(mnt+"/dir5/g", mnt+"/dir5/g2") }},
	}
	var seen []string
	failed := map[string]bool{}
	for _, o := range ops {
		err := answer(o.what, o.op)
		failed[o.what] = err != nil
		if err != nil && !outOfFds(err) {
			t.Errorf("%s with no fd left in the daemon: %v, want EMFILE, ENFILE or success", o.what, err)
		}
		seen = append(seen, fmt.Sprintf("%s: %v", o.what, err))
		if names := testenv.DirNames(t, d+"/work/work"); len(names) != 0 {
			t.Errorf("%s left %v in workdir/work", o.what, names)
		}
	}
	t.Logf("with no fd left: %s", strings.Join(seen, "; "))

	for _, f := range open {
		f.Close()
	}
	open = nil
	// The kernel sends the releases of the closed files without waiting
	// for them: the first open may still find the daemon's fds in use.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		err := answer("open", ops[0].op)
		if err == nil {
			break
		}
		if !outOfFds(err) || time.Now().After(deadline) {
			t.Fatalf("open, after every file was closed: %v", err)
		}
	}
	for _, o := range ops[1:] {
		if !failed[o.what] {
			continue
		}
		if err := answer(o.what, o.op); err != nil {
			t.Errorf("%s, which failed, once fds are free: %v", o.what, err)
		}
	}
	for name, want := range map[string]string{"dir0/g": "g", "dir2/new": "new", "dir5/g2": "g", fmt.Sprintf("f%d", files-1): fmt.Sprint(files - 1)} {
		if got, err := os.ReadFile(filepath.Join(mnt, name)); err != nil || string(got) != want {
			t.Errorf("%s reads %q, %v; want %q", name, got, err, want)
		}
	}
	if got, err := os.ReadFile(mnt + "/dir3/g"); err != nil || !bytes.HasPrefix(got, []byte("g+")) {
		t.Errorf("dir3/g reads %q, %v after its copy-up", got, err)
	}
	if fi, err := os.Stat(mnt + "/dir4/sub/new"); err != nil || !fi.IsDir() {
		t.Errorf("dir4/sub/new: %v", err)
	}
}
