package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// The parent re-executes itself as a session leader with the write end of
// a pipe as fd 3 and waits: the child writes "ok" once the mount is live,
// or the error, and the parent exits with that outcome. Callers (mount(8),
// podman) rely on the exit meaning the mount is there.

const daemonEnv = "OVLMOUNT_DAEMON_STATUS_FD"

func isDaemonChild() bool { return os.Getenv(daemonEnv) != "" }

// daemonize starts the daemon and returns the exit status for the parent.
// mountpoint is the validated one: when it is /dev/fd/N (mount.fuse3 -o
// drop_privileges passes the FUSE fd it mounted), the daemon gets fd N at
// the same number and the status pipe after it.
func daemonize(mountpoint string) int {
	r, w, err := os.Pipe()
	if err != nil {
		return fail("%v", err)
	}
	self, err := os.Executable()
	if err != nil {
		return fail("%v", err)
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return fail("%v", err)
	}
	var files []*os.File
	if n, err := strconv.Atoi(strings.TrimPrefix(mountpoint, "/dev/fd/")); err == nil && n >= 3 && strings.HasPrefix(mountpoint, "/dev/fd/") {
		files = make([]*os.File, n-3+1) // nil entries are closed in the child
		files[n-3] = os.NewFile(uintptr(n), mountpoint)
	}
	files = append(files, w)
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", daemonEnv, 3+len(files)-1))
	cmd.ExtraFiles = files
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, null
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fail("%v", err)
	}
	w.Close()
	null.Close()
	msg, _ := io.ReadAll(r)
	r.Close()
	msg = bytes.TrimSpace(msg)
	if string(msg) == "ok" {
		return 0
	}
	if len(msg) == 0 {
		st, _ := cmd.Process.Wait()
		return fail("the daemon ended before the mount was live (%v)", st)
	}
	fmt.Fprintf(os.Stderr, "ovlmount: %s\n", msg)
	return 1
}

// childReady reports the mount's outcome to a waiting parent, if any.
func childReady(err error) {
	if !isDaemonChild() {
		return
	}
	fd, convErr := strconv.Atoi(os.Getenv(daemonEnv))
	if convErr != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "status")
	if err != nil {
		fmt.Fprintf(f, "%v", err)
	} else {
		fmt.Fprint(f, "ok")
	}
	f.Close()
	os.Unsetenv(daemonEnv)
}
