package main

import (
	"debug/buildinfo"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// A tree of rssFiles empty files in directories of rssPerDir.
const (
	rssFiles  = 1000000
	rssPerDir = 1000
)

// TestMemoryAfterForget walks a tree of a million files twice through a
// daemon and checks that the daemon gives the memory of its nodes back
// once the kernel forgets them: its resident set after drop_caches must
// come back near where it was before the first walk.
//
// The bounds are generous on purpose, since the test must not depend on
// the machine or on when the Go runtime collects. After the kernel
// forgets, the daemon may keep up to rssSlack more than at the start: the
// runtime keeps some freed heap for reuse. A daemon that kept its nodes,
// a few hundred bytes per entry, or kept its peak heap from the system,
// holds more. The second walk goes over entries the kernel still holds
// (or, if something dropped the kernel's caches meanwhile, entries whose
// nodes were forgotten first), so it needs no more nodes than the first:
// its peak resident set (VmHWM) may pass the first walk's by what a
// collection that comes late lets the heap grow, half, plus rssSlack. The
// resident set at one moment is no measure of a walk: it depends on where
// the collector was.
func TestMemoryAfterForget(t *testing.T) {
	testenv.RequireMount(t)
	const rssSlack = 32 << 20
	d := t.TempDir()
	lower, mnt := filepath.Join(d, "lower"), filepath.Join(d, "mnt")
	for _, dir := range []string{lower, mnt} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	makeTree(t, lower)
	cleanupMount(t, mnt)
	if r := execute(t, plainBinary(t), "-o", "lowerdir="+lower, mnt); r.code != 0 {
		t.Fatalf("ovlmount: exit %d, stderr %q", r.code, r.stderr)
	}
	pid := daemonFor(t, mnt)

	start := procStatus(t, pid, "VmRSS")
	n1 := walk(t, mnt)
	first := procStatus(t, pid, "VmHWM")
	n2 := walk(t, mnt)
	second := procStatus(t, pid, "VmHWM")
	if want := rssFiles + rssFiles/rssPerDir; n1 != want || n2 != want {
		t.Fatalf("walks saw %d and %d entries, want %d", n1, n2, want)
	}
	after := settle(t, pid)
	t.Logf("daemon VmRSS at start %s, VmHWM after the first walk %s, after the second %s, VmRSS after drop_caches %s",
		inMiB(start), inMiB(first), inMiB(second), inMiB(after))
	if second > first+first/2+rssSlack {
		t.Errorf("the second walk raised the daemon's peak from %s to %s: more than half again, plus %s, for nodes it already had",
			inMiB(first), inMiB(second), inMiB(rssSlack))
	}
	if after > start+rssSlack {
		t.Errorf("after the kernel forgot the tree the daemon holds %s, more than %s over the %s it started with",
			inMiB(after), inMiB(rssSlack), inMiB(start))
	}
}

// plainBinary returns the ovlmount binary to test, or, when that is
// built with the race detector, which takes several times the memory, a
// plain build of the same source.
func plainBinary(t *testing.T) string {
	t.Helper()
	bin := testenv.Binary(t)
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			plain := filepath.Join(t.TempDir(), "ovlmount")
			if out, err := exec.Command("go", "build", "-o", plain, ".").CombinedOutput(); err != nil {
				t.Fatalf("go build: %v\n%s", err, out)
			}
			return plain
		}
	}
	return bin
}

// makeTree makes the test tree under dir with one mknodat per file.
func makeTree(t *testing.T, dir string) {
	t.Helper()
	for i := range rssFiles / rssPerDir {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i))
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Open(sub, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		for j := range rssPerDir {
			if err := unix.Mknodat(fd, "f"+strconv.Itoa(j), unix.S_IFREG|0o644, 0); err != nil {
				unix.Close(fd)
				t.Fatal(err)
			}
		}
		unix.Close(fd)
	}
}

// walk lstats every entry under dir and returns how many there were,
// dir excluded.
func walk(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if p != dir {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// settle drops the kernel's caches, so that it sends FORGET for every
// node it held, and returns the daemon's VmRSS once it has not fallen for
// five seconds, or after a minute. Dropping is repeated while waiting: an
// inode stays pinned until the answer to its asynchronous RELEASE
// arrives. The wait is bounded, not timed: the memory is checked, not how
// long it took to come back.
func settle(t *testing.T, pid int) int64 {
	t.Helper()
	low := procStatus(t, pid, "VmRSS")
	end, lastFall := time.Now().Add(time.Minute), time.Now()
	for time.Since(lastFall) < 5*time.Second && time.Now().Before(end) {
		unix.Sync()
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		if rss := procStatus(t, pid, "VmRSS"); rss < low {
			low, lastFall = rss, time.Now()
		}
	}
	return low
}

// procStatus returns field (VmRSS, VmHWM) of /proc/pid/status in bytes.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("/proc/%d/status: %q", pid, l)
			}
			return kb << 10
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}

func inMiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
