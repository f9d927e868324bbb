package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/mountinfo"
	"github.com/ovlmount/ovlmount/internal/testenv"
)

// statsOf runs ovlmount stats --json on mnt and decodes the answer.
func statsOf(t *testing.T, mnt string) statsReport {
	t.Helper()
	r := ovlmount(t, "stats", "--json", mnt)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("ovlmount stats --json %s: exit %d, stderr %q", mnt, r.code, r.stderr)
	}
	var s statsReport
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("ovlmount stats --json %s: %v in %q", mnt, err, r.stdout)
	}
	return s
}

// requests returns how many requests of opcode op s counts.
func requests(s statsReport, op string) uint64 {
	for _, r := range s.Requests {
		if r.Op == op {
			return r.Count
		}
	}
	return 0
}

// statsSocket returns the path of the stats socket of root's mount at mnt.
func statsSocket(t *testing.T, mnt string) string {
	t.Helper()
	m, ok := mountinfo.At(mnt)
	if !ok {
		t.Fatalf("%s not in mountinfo", mnt)
	}
	return filepath.Join("/run/ovlmount", statsSocketName(m.Dev))
}

// TestStatsCommand checks that ovlmount stats answers while a workload
// runs on the mount, that its counters move with what is done between
// two calls, that it says nothing to another user, and that the socket
// goes with the mount.
func TestStatsCommand(t *testing.T) {
	testenv.RequireMount(t)
	d := makeStack(t)
	// In a directory the workload does not list: listing looks names up.
	testenv.MakeTree(t, d, "f l1/s/c0 copy me", "f l1/s/c1 copy me")
	mnt := d + "/mnt"
	mountDaemon(t, mnt, "-o", "lowerdir="+d+"/l1:"+d+"/l2,upperdir="+d+"/upper,workdir="+d+"/work", mnt)
	pid := daemonFor(t, d+"/")
	sock := statsSocket(t, mnt)

	// The workload: stats, reads and listings, until the test ends.
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			os.Stat(mnt + "/d/f")
			os.ReadFile(mnt + "/g")
			os.ReadDir(mnt)
		}
	}()
	var once sync.Once
	stopWorkload := func() {
		once.Do(func() {
			close(stop)
			<-done
		})
	}
	t.Cleanup(stopWorkload)

	before := statsOf(t, mnt)
	// Names never looked up, a lower file read, another copied up.
	for _, name := range []string{"c0", "c1", "nothing"} {
		os.Stat(mnt + "/s/" + name)
	}
	if b, err := os.ReadFile(mnt + "/s/c0"); err != nil || string(b) != "copy me" {
		t.Fatalf("read s/c0: %q, %v", b, err)
	}
	f, err := os.OpenFile(mnt+"/s/c1", os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	after := statsOf(t, mnt)

	if before.PID != pid || after.Mountpoint != mnt || !regexp.MustCompile(`^7\.\d+$`).MatchString(after.Protocol) {
		t.Errorf("stats of pid %d, mountpoint %q, protocol %q; want %d, %s, 7.N", before.PID, after.Mountpoint, after.Protocol, pid, mnt)
	}
	if after.Lookups < before.Lookups+3 || after.LookupsNegative <= before.LookupsNegative {
		t.Errorf("lookups %d -> %d, negative %d -> %d: want 3 more, one negative", before.Lookups, after.Lookups, before.LookupsNegative, after.LookupsNegative)
	}
	if requests(after, "LOOKUP") < requests(before, "LOOKUP")+3 || requests(after, "READ") <= requests(before, "READ") || requests(after, "OPEN") < requests(before, "OPEN")+2 {
		t.Errorf("requests before %+v\nafter %+v\nwant 3 more LOOKUP, more READ, 2 more OPEN", before.Requests, after.Requests)
	}
	// s and s/c1.
	if after.CopyUps != before.CopyUps+2 || after.CopyUpBytes != before.CopyUpBytes+7 {
		t.Errorf("copy-ups %d (%d bytes) -> %d (%d bytes): want two more, of 7 bytes", before.CopyUps, before.CopyUpBytes, after.CopyUps, after.CopyUpBytes)
	}
	if after.Nodes <= before.Nodes || after.RSS == 0 || after.Fds == 0 || after.DirFdsHeld == 0 {
		t.Errorf("nodes %d -> %d, rss %d, fds %d, dir fds %d: want more nodes, and some of each", before.Nodes, after.Nodes, after.RSS, after.Fds, after.DirFdsHeld)
	}

	// The text form: one counter a line.
	r := ovlmount(t, "stats", mnt)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("ovlmount stats: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{
		`(?m)\Amountpoint: ` + regexp.QuoteMeta(mnt) + "\n",
		fmt.Sprintf(`(?m)^pid: %d$`, pid),
		`(?m)^fuse_protocol: 7\.\d+$`,
		`(?m)^request LOOKUP: \d+, errors \d+, total \S+, mean \S+, p50 <\S+, p90 <\S+, p99 <\S+$`,
		`(?m)^lookups: [1-9]\d*$`,
		`(?m)^copy_ups: [1-9]\d*$`,
		`(?m)^copy_up_bytes: [1-9]\d*$`,
		`(?m)^rss_bytes: [1-9]\d*$`,
	} {
		if !regexp.MustCompile(want).MatchString(r.stdout) {
			t.Errorf("ovlmount stats prints no line matching %s:\n%s", want, r.stdout)
		}
	}

	// Root's alone: the socket and its directory, and for another user
	// the command finds nothing.
	for p, mode := range map[string]os.FileMode{sock: os.ModeSocket | 0o600, filepath.Dir(sock): os.ModeDir | 0o700} {
		if fi, err := os.Lstat(p); err != nil || fi.Mode() != mode || fi.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Errorf("%s: %v, %v; want root's, %v", p, fi.Mode(), err, mode)
		}
	}
	bin := copyBinary(t, d)
	if r := asNobody(t, bin, "stats", mnt); r.code == 0 || r.stdout != "" {
		t.Errorf("ovlmount stats as nobody: exit %d, stdout %q; want a refusal", r.code, r.stdout)
	}

	stopWorkload()
	umount(t, mnt)
	checkDaemonEnds(t, pid, d+"/", mnt)
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stats socket %s after the unmount: %v, want none", sock, err)
	}
	if r := ovlmount(t, "stats", mnt); r.code == 0 || !strings.Contains(r.stderr, "not an ovlmount mount") {
		t.Errorf("ovlmount stats after the unmount: exit %d, stderr %q", r.code, r.stderr)
	}
}

// copyBinary copies the binary under test into d, which it makes
// searchable for everyone, so that another user can run it.
func copyBinary(t *testing.T, d string) string {
	t.Helper()
	for p := d; p != "/"; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o001 == 0 {
			os.Chmod(p, fi.Mode().Perm()|0o011)
		}
	}
	src, err := os.Open(testenv.Binary(t))
	testenv.Must(t, err)
	defer src.Close()
	bin := filepath.Join(d, "ovlmount")
	dst, err := os.OpenFile(bin, os.O_WRONLY|os.O_CREATE, 0o755)
	testenv.Must(t, err)
	_, err = io.Copy(dst, src)
	testenv.Must(t, err)
	testenv.Must(t, dst.Close())
	return bin
}

// answerOf connects to stats socket path and decodes the answer.
func answerOf(t *testing.T, path string) statsReport {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("connect to %s: %v", path, err)
	}
	defer c.Close()
	var r statsReport
	if err := json.NewDecoder(c).Decode(&r); err != nil {
		t.Fatalf("answer at %s: %v", path, err)
	}
	return r
}

// TestStatsStaleSocket checks that a daemon replaces the socket a killed
// one left under its name, and that a daemon ending removes its own
// socket only, not the one a newer mount of the same device number made
// meanwhile.
func TestStatsStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), statsSocketName("0:99"))
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	testenv.Must(t, err)
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		t.Fatal("a closed listener still answers")
	}

	old, err := listenStats(path)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	go old.answer(func() statsReport { return statsReport{PID: 1} })
	if r := answerOf(t, path); r.PID != 1 {
		t.Errorf("answer %+v, want pid 1", r)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode() != os.ModeSocket|0o600 {
		t.Errorf("socket %v, %v; want mode 0600", fi.Mode(), err)
	}

	newer, err := listenStats(path)
	if err != nil {
		t.Fatal(err)
	}
	go newer.answer(func() statsReport { return statsReport{PID: 2} })
	old.close()
	if r := answerOf(t, path); r.PID != 2 {
		t.Errorf("after the old daemon ended: answer %+v, want the newer one's, pid 2", r)
	}
	newer.close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after its daemon ended: %v, want none", err)
	}
}

// TestStatsSweep checks that a daemon starting removes from its
// directory the sockets killed daemons left, but not a live daemon's,
// nor one made in the last minute (it may be between bind and listen).
func TestStatsSweep(t *testing.T) {
	dir := t.TempDir()
	stale := func(name string, age time.Duration) string {
		p := filepath.Join(dir, name)
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
		testenv.Must(t, err)
		ln.SetUnlinkOnClose(false)
		ln.Close()
		then := time.Now().Add(-age)
		testenv.Must(t, os.Chtimes(p, then, then))
		return p
	}
	old, fresh := stale("0:97.sock", 2*time.Minute), stale("0:98.sock", 0)
	live, err := listenStats(filepath.Join(dir, "0:99.sock"))
	testenv.Must(t, err)
	defer live.close()
	go live.answer(func() statsReport { return statsReport{PID: 1} })
	then := time.Now().Add(-2 * time.Minute)
	testenv.Must(t, os.Chtimes(live.path, then, then))
	other := filepath.Join(dir, "notes")
	testenv.Must(t, os.WriteFile(other, nil, 0o600))
	testenv.Must(t, os.Chtimes(other, then, then))

	sweep(dir)
	for p, kept := range map[string]bool{old: false, fresh: true, live.path: true, other: true} {
		if _, err := os.Lstat(p); (err == nil) != kept {
			t.Errorf("%s after the sweep: %v, want kept %v", filepath.Base(p), err, kept)
		}
	}
}

// TestStatsRootless checks ovlmount stats on a rootless mount, as podman
// makes one: the socket in /tmp/ovlmount-UID, UID the user's, without
// XDG_RUNTIME_DIR, and gone after the unmount.
func TestStatsRootless(t *testing.T) {
	testenv.RequireMount(t)
	testenv.RequireProgram(t, "unshare", "util-linux")
	testenv.RequireProgram(t, "setpriv", "util-linux")
	dir := fmt.Sprintf("/tmp/ovlmount-%d", rootlessUID)
	d, bin := nsLayers(t, rootlessUID, rootlessUID)
	script := `set -e
cd "$1"
"$2" -o "lowerdir=$PWD/l,upperdir=$PWD/u,workdir=$PWD/w" m
cat m/a m/d/b >/dev/null
echo more >> m/a
"$2" stats m
umount m`
	out, err := asRootlessUser(d, "env", "-u", "XDG_RUNTIME_DIR", "sh", "-c", script, "sh", d, bin)
	if err != nil {
		t.Fatalf("in the user namespace: %v\n%s", err, out)
	}
	// umount returns before the daemon has seen the end of its
	// connection and removed its socket.
	for _, pid := range processesFor(d + "/") {
		if waitExit(pid, 10*time.Second) == nil {
			t.Fatalf("daemon %d still running 10s after the unmount", pid)
		}
	}
	for _, want := range []string{
		`(?m)\Amountpoint: ` + regexp.QuoteMeta(d+"/m") + "\n",
		`(?m)^request LOOKUP: [1-9]`,
		`(?m)^copy_ups: 1$`,
		`(?m)^copy_up_bytes: 1$`,
	} {
		if !regexp.MustCompile(want).MatchString(string(out)) {
			t.Errorf("ovlmount stats in the namespace prints no line matching %s:\n%s", want, out)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(dir, &st); err != nil || st.Uid != rootlessUID || st.Mode&0o777 != 0o700 {
		t.Errorf("%s: owner %d, mode %o, %v; want the user's, 0700", dir, st.Uid, st.Mode&0o777, err)
	}
	if names := testenv.DirNames(t, dir); len(names) != 0 {
		t.Errorf("%s after the unmount holds %q, want nothing", dir, names)
	}
}

// TestStatsSIGUSR1 checks that SIGUSR1 logs the stats and leaves the
// mount serving: a daemon to syslog, at notice, each line naming the
// mountpoint; in the foreground on stderr.
func TestStatsSIGUSR1(t *testing.T) {
	testenv.RequireMount(t)
	if !privateMounts(t) {
		return
	}
	msgs := devLog(t)

	d := makeStack(t)
	mnt := d + "/mnt"
	mountDaemon(t, mnt, "-o", "lowerdir="+d+"/l1:"+d+"/l2", mnt)
	checkLive(t, d, mnt)
	pid := daemonFor(t, d+"/")
	tag := fmt.Sprintf("ovlmount[%d]", pid)
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for m := nextLog(t, msgs); ; m = nextLog(t, msgs) {
		if m.priority != daemonNotice || m.tag != tag || !strings.HasPrefix(m.text, mnt+": stats: ") {
			t.Fatalf("logged %+v, want a notice from %s starting %q", m, tag, mnt+": stats: ")
		}
		lines = append(lines, strings.TrimPrefix(m.text, mnt+": stats: "))
		if strings.HasPrefix(m.text, mnt+": stats: rss_bytes: ") {
			break
		}
	}
	checkStatsLines(t, lines, pid)
	checkLive(t, d, mnt)
	umount(t, mnt)
	checkDaemonEnds(t, pid, d+"/", mnt)

	d = makeStack(t)
	mnt = d + "/mnt"
	p := startForeground(t, mnt, "-o", "lowerdir="+d+"/l1:"+d+"/l2", mnt)
	checkLive(t, d, mnt)
	if err := p.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitStderr(t, p, mnt+": stats: rss_bytes: ")
	checkLive(t, d, mnt)
	p.umountAndWait(t, mnt)
	lines = nil
	for _, l := range strings.Split(strings.TrimSuffix(p.stderr.String(), "\n"), "\n") {
		s, ok := strings.CutPrefix(l, "ovlmount: "+mnt+": stats: ")
		if !ok {
			t.Fatalf("stderr line %q, want %q and a counter", l, "ovlmount: "+mnt+": stats: ")
		}
		lines = append(lines, s)
	}
	checkStatsLines(t, lines, p.cmd.Process.Pid)
	checkNothingLogged(t, msgs)
}

// checkStatsLines checks the stats lines logged on SIGUSR1 by daemon
// pid, after checkLive looked names up.
func checkStatsLines(t *testing.T, lines []string, pid int) {
	t.Helper()
	text := strings.Join(lines, "\n")
	for _, want := range []string{
		fmt.Sprintf(`\Apid: %d\n`, pid),
		`(?m)^requests: [1-9]\d*$`,
		`(?m)^request LOOKUP: [1-9]`,
		`(?m)^lookups: [1-9]\d*$`,
		`(?m)^nodes: [1-9]\d*$`,
		`(?m)^rss_bytes: [1-9]\d*\z`,
	} {
		if !regexp.MustCompile(want).MatchString(text) {
			t.Errorf("stats logged hold no line matching %s:\n%s", want, text)
		}
	}
}
