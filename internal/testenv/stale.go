package testenv

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// A test process of a package that mounts works below a temporary
// directory named for it, dirPrefix + PID + "-" + its start time, so that
// what it leaves behind when it dies (a test timeout panics the test
// binary; CI or a developer may kill it) can be told apart from what a
// live run, of this checkout or another, is still using.
const dirPrefix = "ovlmount-test-"

// tempBase is where those directories are: the system's temporary
// directory as the process found it (Start changes TMPDIR), absolute and
// without symlinks, as mountinfo lists the mounts below it.
var tempBase = func() string {
	dir, err := filepath.EvalSymlinks(os.TempDir())
	if err != nil {
		return os.TempDir()
	}
	if abs, err := filepath.Abs(dir); err == nil {
		return abs
	}
	return dir
}()

// Start is for TestMain of every package whose tests mount: first it
// takes down what dead test processes left (CleanStale); then it points
// TMPDIR at a directory of this process's own, so that every t.TempDir,
// and so every mount, layer and daemon command line of its tests, is
// below a path that names the process. TestMain calls the function it
// returns after m.Run: it takes down whatever the tests left there and
// removes the directory.
func Start() (done func()) {
	CleanStale()
	start, err := startTime(os.Getpid())
	if err != nil {
		return func() {}
	}
	dir := filepath.Join(tempBase, fmt.Sprintf("%s%d-%s", dirPrefix, os.Getpid(), start))
	// Searchable by all, as /tmp is: tests that run programs as another
	// user open the directories they give them.
	if err := os.Mkdir(dir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v; temporary directories stay in %s\n", err, os.TempDir())
		return func() {}
	}
	old, had := os.LookupEnv("TMPDIR")
	os.Setenv("TMPDIR", dir)
	return func() {
		if had {
			os.Setenv("TMPDIR", old)
		} else {
			os.Unsetenv("TMPDIR")
		}
		if left := clean(dir); left != "" {
			fmt.Fprintf(os.Stderr, "testenv: the tests left behind %s\n", left)
		}
	}
}

// Main is TestMain for a package whose tests need nothing more around
// them: it runs the tests between Start and the function Start returns,
// removes the binary Binary built, and exits with the tests' status.
func Main(m *testing.M) {
	done := Start()
	code := m.Run()
	RemoveBinary()
	done()
	os.Exit(code)
}

// CleanStale takes down what test processes that are gone left in their
// directories under the system's temporary directory: it kills every
// process whose command line names such a directory (an orphaned daemon,
// a client stuck on it), unmounts everything mounted below it, deepest
// first, and removes it. A loop device attached with autoclear (mount -o
// loop) goes with the last unmount of its filesystem.
func CleanStale() { cleanStaleIn(tempBase) }

// cleanStaleIn is CleanStale for the directories Start makes in base.
func cleanStaleIn(base string) {
	entries, _ := os.ReadDir(base)
	for _, e := range entries {
		pid, start, ok := parseDirName(e.Name())
		if !ok || !e.IsDir() {
			continue
		}
		if now, err := startTime(pid); err == nil && now == start {
			continue // its test process is still running
		}
		dir := filepath.Join(base, e.Name())
		if left := clean(dir); left != "" {
			fmt.Fprintf(os.Stderr, "testenv: a dead test run left %s\n", left)
		}
	}
}

// parseDirName splits a name made by Start into its process id and start
// time.
func parseDirName(name string) (pid int, start string, ok bool) {
	rest, ok := strings.CutPrefix(name, dirPrefix)
	if !ok {
		return 0, "", false
	}
	p, start, ok := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(p)
	if !ok || err != nil || pid <= 0 || start == "" {
		return 0, "", false
	}
	return pid, start, true
}

// startTime returns field 22 of /proc/PID/stat, the process's start time
// in clock ticks since boot: with the pid, it names a process for good,
// since pids are reused. A process that has exited has none, even while
// it is a zombie: one of its threads may wait for an answer from a daemon
// that will never give it (the zombie of a killed test binary that
// walked into a hung mount).
func startTime(pid int) (string, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return "", fmt.Errorf("/proc/%d/stat: no command", pid)
	}
	// Fields from 3 on follow the command; the start time is field 22.
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 20 {
		return "", fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	if f[0] == "Z" || f[0] == "X" {
		return "", fmt.Errorf("process %d has exited", pid)
	}
	return f[19], nil
}

// clean aborts the FUSE connections of the mounts below dir, kills the
// processes naming dir, unmounts everything below it and removes it, and
// says what it found there ("" if nothing but files). Where mountinfo
// cannot be read it leaves dir alone, and says why.
func clean(dir string) string {
	mounts, err := mountinfo.Under(dir)
	if err != nil {
		// What is mounted below dir is not known: removing it could reach
		// into a mount.
		return err.Error()
	}
	var found []string
	for _, m := range mounts {
		if strings.HasPrefix(m.Type, "fuse") {
			// Killing is not enough: a daemon thread waiting on a request
			// to its own mount (a mountpoint inside its layers) keeps the
			// daemon, and the connection, from ever ending.
			abortFUSE(m.Dev)
		}
	}
	if pids := processesNaming(dir); len(pids) > 0 {
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
		waitGone(pids, 10*time.Second)
		found = append(found, fmt.Sprintf("processes %v (killed)", pids))
	}
	// Deepest first: a mount below another goes before it.
	slices.SortStableFunc(mounts, func(a, b mountinfo.Mount) int {
		return strings.Count(b.Point, "/") - strings.Count(a.Point, "/")
	})
	for _, m := range mounts {
		unix.Unmount(m.Point, unix.MNT_DETACH)
		found = append(found, fmt.Sprintf("a %s mount on %s (unmounted)", m.Type, m.Point))
	}
	if err := os.RemoveAll(dir); err != nil {
		found = append(found, err.Error())
	}
	return strings.Join(found, ", ")
}

// fusectl is where the kernel lists FUSE connections.
const fusectl = "/sys/fs/fuse/connections"

// abortFUSE aborts the FUSE connection of the mount with device dev
// ("0:MINOR"): every request waiting on it fails with ENOTCONN, and its
// daemon's reads end. The control filesystem is mounted for the purpose
// if it is not, and unmounted again.
func abortFUSE(dev string) {
	_, minor, ok := strings.Cut(dev, ":")
	if !ok {
		return
	}
	if _, ok := mountinfo.At(fusectl); !ok {
		if unix.Mount("fusectl", fusectl, "fusectl", 0, "") != nil {
			return
		}
		defer unix.Unmount(fusectl, 0)
	}
	os.WriteFile(filepath.Join(fusectl, minor, "abort"), []byte("1"), 0)
}

// processesNaming returns the live processes, other than this one, whose
// command line holds dir or a path below it.
func processesNaming(dir string) []int {
	return Processes(func(arg string) bool {
		return strings.Contains(arg, dir+"/") || strings.HasSuffix(arg, dir)
	})
}

// Processes returns the live processes, other than this one and zombies,
// with an argument that match accepts. Tests find the daemons they
// started by a path unique to the test in their arguments.
func Processes(match func(arg string) bool) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		// A zombie or a kernel thread has an empty command line.
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || len(cmdline) == 0 {
			continue
		}
		if slices.ContainsFunc(strings.Split(string(cmdline), "\x00"), match) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitGone waits up to timeout until none of pids runs: each has exited
// (a zombie counts) or disappeared.
func waitGone(pids []int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for _, pid := range pids {
		for time.Now().Before(deadline) {
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if i := bytes.LastIndexByte(stat, ')'); err != nil || i < 0 || bytes.HasPrefix(stat[i+1:], []byte(" Z")) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
