package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/mountinfo"
	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// syslogMessage is one message a program sent to /dev/log.
type syslogMessage struct {
	priority int    // facility<<3 | severity
	tag      string // "ovlmount[PID]"
	text     string
}

// Priorities of the daemon's messages: facility daemon (3).
const (
	daemonErr     = 3<<3 | 3
	daemonWarning = 3<<3 | 4
	daemonNotice  = 3<<3 | 5
)

// syslogLine is the local syslog format: <PRI>TIMESTAMP TAG: TEXT.
var syslogLine = regexp.MustCompile(`^<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ([^ :]+): (.*)\n?$`)

// devLog makes /dev of the test's private mount namespace a tmpfs in
// which /dev/log is a socket the test reads, and the host's null, zero,
// random, urandom and fuse nodes are bound; it returns the messages
// programs send there, in order. Only the test's namespace sees it.
func devLog(t *testing.T) <-chan syslogMessage {
	t.Helper()
	// Bound from open O_PATH descriptors, since the tmpfs hides /dev.
	nodes := map[string]int{}
	for _, n := range []string{"null", "zero", "random", "urandom", "fuse"} {
		fd, err := unix.Open("/dev/"+n, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		nodes[n] = fd
	}
	if err := unix.Mount("tmpfs", "/dev", "tmpfs", 0, "mode=755"); err != nil {
		t.Fatalf("mount a tmpfs on /dev: %v", err)
	}
	for n, fd := range nodes {
		if err := os.WriteFile("/dev/"+n, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", fd), "/dev/"+n, "", unix.MS_BIND, ""); err != nil {
			t.Fatalf("bind /dev/%s: %v", n, err)
		}
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: "/dev/log", Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	msgs := make(chan syslogMessage, 10000)
	go func() {
		defer close(msgs)
		buf := make([]byte, 1<<16)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			m := syslogLine.FindStringSubmatch(string(buf[:n]))
			if m == nil {
				msgs <- syslogMessage{priority: -1, text: string(buf[:n])}
				continue
			}
			p, _ := strconv.Atoi(m[1])
			msgs <- syslogMessage{priority: p, tag: m[2], text: m[3]}
		}
	}()
	return msgs
}

// nextLog returns the next message logged, failing the test if none
// comes within 10 seconds.
func nextLog(t *testing.T, msgs <-chan syslogMessage) syslogMessage {
	t.Helper()
	select {
	case m := <-msgs:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("nothing logged to /dev/log within 10s")
	}
	return syslogMessage{}
}

// checkNothingLogged checks that nothing has been logged: it sends a
// message of its own and checks that it comes first.
func checkNothingLogged(t *testing.T, msgs <-chan syslogMessage) {
	t.Helper()
	c, err := net.Dial("unixgram", "/dev/log")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const mark = "<13>Jan  1 00:00:00 test: end of the messages"
	if _, err := c.Write([]byte(mark)); err != nil {
		t.Fatal(err)
	}
	for {
		m := nextLog(t, msgs)
		if m.tag == "test" {
			return
		}
		t.Errorf("logged: %+v", m)
	}
}

// waitStderr waits up to 10 seconds for the stderr of p to hold s.
func waitStderr(t *testing.T, p *foreground, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.stderr.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("stderr %q, want %q in it within 10s", p.stderr.String(), s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitChecked waits up to 10 seconds until the foreground ovlmount
// serving mnt is done checking its mount, which it finds by path in
// mountinfo: as root it then sets the mount's readahead.
func waitChecked(t *testing.T, mnt string) {
	t.Helper()
	m, ok := mountinfo.At(mnt)
	if !ok {
		t.Fatalf("%s not in mountinfo", mnt)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile("/sys/class/bdi/" + m.Dev + "/read_ahead_kb")
		if strings.TrimSpace(string(b)) == readaheadKB {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("readahead of %s still %q after 10s, want %s", mnt, b, readaheadKB)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLogAfterDaemonizing checks where a daemon's warnings and errors
// go once its stderr is /dev/null: to syslog, one message each, naming
// the mountpoint; and that in the foreground they go to stderr only. The
// error is a real one: the mountpoint's directory is renamed once the
// mount is up, so the unmount that SIGTERM asks for fails.
func TestLogAfterDaemonizing(t *testing.T) {
	testenv.RequireMount(t)
	if !privateMounts(t) {
		return
	}
	msgs := devLog(t)

	d := makeStack(t)
	mnt := d + "/mnt"
	mountDaemon(t, mnt, "-o", "frobnicate,lowerdir="+d+"/l1:"+d+"/l2", mnt)
	pid := daemonFor(t, d+"/")
	tag := fmt.Sprintf("ovlmount[%d]", pid)
	want := syslogMessage{daemonWarning, tag, mnt + `: warning: unknown option "frobnicate" ignored`}
	if m := nextLog(t, msgs); m != want {
		t.Errorf("logged %+v, want %+v", m, want)
	}
	moved := d + "-moved"
	if err := os.Rename(d, moved); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	want = syslogMessage{daemonErr, tag, "unmount " + mnt + ": no such file or directory"}
	if m := nextLog(t, msgs); m != want {
		t.Errorf("logged %+v, want %+v", m, want)
	}
	checkLive(t, moved, moved+"/mnt")
	umount(t, moved+"/mnt")
	checkDaemonEnds(t, pid, d+"/", moved+"/mnt")
	checkNothingLogged(t, msgs)

	d = makeStack(t)
	mnt = d + "/mnt"
	p := startForeground(t, mnt, "-o", "frobnicate,lowerdir="+d+"/l1:"+d+"/l2", mnt)
	waitChecked(t, mnt)
	moved = d + "-moved"
	if err := os.Rename(d, moved); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitStderr(t, p, "unmount "+mnt+": no such file or directory\n")
	checkLive(t, moved, moved+"/mnt")
	p.umountAndWait(t, moved+"/mnt")
	wantStderr := "ovlmount: warning: unknown option \"frobnicate\" ignored\n" +
		"ovlmount: unmount " + mnt + ": no such file or directory\n"
	if got := p.stderr.String(); got != wantStderr {
		t.Errorf("ovlmount -f stderr %q, want %q", got, wantStderr)
	}
	checkNothingLogged(t, msgs)
}

// TestSIGQUIT checks that SIGQUIT logs the stacks of all goroutines and
// leaves the mount serving, for a daemon (to syslog) and in the
// foreground (to stderr).
func TestSIGQUIT(t *testing.T) {
	testenv.RequireMount(t)
	if !privateMounts(t) {
		return
	}
	msgs := devLog(t)
	const first, last = "SIGQUIT: stacks of all goroutines follow", "SIGQUIT: end of the stacks; still serving"

	d := makeStack(t)
	mnt := d + "/mnt"
	mountDaemon(t, mnt, "-o", "lowerdir="+d+"/l1:"+d+"/l2", mnt)
	pid := daemonFor(t, d+"/")
	tag := fmt.Sprintf("ovlmount[%d]", pid)
	for range 2 {
		if err := syscall.Kill(pid, syscall.SIGQUIT); err != nil {
			t.Fatal(err)
		}
		var stacks []string
		for m := nextLog(t, msgs); m.text != mnt+": "+last; m = nextLog(t, msgs) {
			if m.priority != daemonNotice || m.tag != tag || !strings.HasPrefix(m.text, mnt+": ") {
				t.Fatalf("logged %+v, want a notice from %s naming %s", m, tag, mnt)
			}
			stacks = append(stacks, strings.TrimPrefix(m.text, mnt+": "))
		}
		checkStacks(t, stacks, first)
		checkLive(t, d, mnt)
	}
	umount(t, mnt)
	checkDaemonEnds(t, pid, d+"/", mnt)

	d = makeStack(t)
	mnt = d + "/mnt"
	p := startForeground(t, mnt, "-o", "lowerdir="+d+"/l1:"+d+"/l2", mnt)
	if err := p.cmd.Process.Signal(syscall.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	waitStderr(t, p, last+"\n")
	checkLive(t, d, mnt)
	var stacks []string
	for _, l := range strings.Split(strings.TrimSuffix(p.stderr.String(), "\n"), "\n") {
		if !strings.HasPrefix(l, "ovlmount: "+mnt+": ") {
			t.Fatalf("stderr line %q does not name %s", l, mnt)
		}
		stacks = append(stacks, strings.TrimPrefix(l, "ovlmount: "+mnt+": "))
	}
	checkStacks(t, stacks[:len(stacks)-1], first)
	p.umountAndWait(t, mnt)
	checkNothingLogged(t, msgs)
}

// checkStacks checks a goroutine dump: the first line, then stacks in
// the format of a crash, the serving goroutine's among them.
func checkStacks(t *testing.T, lines []string, first string) {
	t.Helper()
	if len(lines) < 3 || lines[0] != first || !strings.HasPrefix(lines[1], "goroutine ") {
		t.Fatalf("goroutine dump %q, want %q and then stacks", lines, first)
	}
	dump := strings.Join(lines, "\n")
	if !strings.Contains(dump, "\nmain.serve(") || !strings.Contains(dump, filepath.Join("cmd", "ovlmount", "main.go:")) {
		t.Errorf("goroutine dump holds no stack through main.serve:\n%s", dump)
	}
}
