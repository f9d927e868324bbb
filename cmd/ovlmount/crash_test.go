package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// crashRuns is how many times TestCrashSafety kills the daemon.
const crashRuns = 200

// TestCrashSafety kills the daemon with SIGKILL at a random moment while a
// client copies up a large file, renames a lower file and unlinks
// another, crashRuns times. After each kill the upper layer must hold, for
// each object, the old state or the new one, never a partial file under
// its real name; and the next mount must succeed, empty workdir/work and
// show a consistent view.
func TestCrashSafety(t *testing.T) {
	testenv.RequireMount(t)
	bin := testenv.Binary(t)
	base := t.TempDir()
	lower := filepath.Join(base, "lower")
	testenv.MakeTree(t, lower, "f a A", "f c C")
	big := make([]byte, 16<<20)
	for i := range big {
		big[i] = byte(i*7 + i>>13)
	}
	bigSum := sha256.Sum256(big)
	testenv.Must(t, os.WriteFile(filepath.Join(lower, "big"), big, 0o644))

	lowerSum := testenv.TreeSum(t, lower)
	states := map[string]int{}
	for run := 0; run < crashRuns; run++ {
		dir := filepath.Join(base, fmt.Sprint(run))
		upper, work, mnt := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "mnt")
		for _, d := range []string{upper, work, mnt} {
			testenv.Must(t, os.MkdirAll(d, 0o755))
		}
		opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
		daemon := startDaemon(t, bin, opts, mnt)
		client := exec.Command("sh", "-c", `: >> "$1/big"; mv "$1/a" "$1/b"; rm "$1/c"`, "sh", mnt)
		testenv.Must(t, client.Start())
		time.Sleep(time.Duration(rand.IntN(40_000)) * time.Microsecond)
		daemon.Process.Signal(syscall.SIGKILL)
		daemon.Wait()
		testenv.Unmount(t, mnt)
		client.Wait()

		// The upper layer, as the crash left it.
		state := checkUpper(t, run, upper, bigSum)
		states[state]++

		// The next mount cleans the workdir and shows a consistent view.
		daemon = startDaemon(t, bin, opts, mnt)
		if names := testenv.DirNames(t, filepath.Join(work, "work")); len(names) != 0 {
			t.Errorf("run %d: workdir/work holds %v after the next mount", run, names)
		}
		checkView(t, run, mnt, bigSum)
		testenv.Unmount(t, mnt)
		daemon.Wait()
		os.RemoveAll(dir)
		if t.Failed() {
			break
		}
	}
	if testenv.TreeSum(t, lower) != lowerSum {
		t.Error("the lower layer changed")
	}
	t.Logf("%d kills; upper layer states after them (big / a,b / c): %v", crashRuns, states)
}

// startDaemon runs ovlmount -f and waits until the mount is live.
func startDaemon(t *testing.T, bin, opts, mnt string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "-f", "-o", opts, mnt)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	testenv.Must(t, cmd.Start())
	deadline := time.Now().Add(10 * time.Second)
	for testenv.MountType(mnt) != "fuse.ovlmount" {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("%s not mounted after 10s: %s", mnt, stderr.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
	return cmd
}

// checkUpper checks that every object in the upper directory is in its
// old or its new state, and names the states found.
func checkUpper(t *testing.T, run int, upper string, bigSum [32]byte) string {
	t.Helper()
	kind := func(name string) string {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(upper, name), &st); err != nil {
			return "none"
		}
		switch {
		case st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0:
			return "whiteout"
		case st.Mode&unix.S_IFMT == unix.S_IFREG:
			return "file"
		}
		return fmt.Sprintf("mode %o", st.Mode)
	}
	for _, name := range testenv.DirNames(t, upper) {
		if name != "big" && name != "a" && name != "b" && name != "c" {
			t.Errorf("run %d: stray %q in the upper layer", run, name)
		}
	}
	bigState := kind("big")
	if bigState == "file" {
		data, err := os.ReadFile(filepath.Join(upper, "big"))
		testenv.Must(t, err)
		if sha256.Sum256(data) != bigSum {
			t.Errorf("run %d: a partial copy of big (%d bytes) under its real name", run, len(data))
		}
	} else if bigState != "none" {
		t.Errorf("run %d: upper big is %s", run, bigState)
	}
	ab := kind("a") + "," + kind("b")
	switch ab {
	case "none,none", "file,none": // not begun; copied up, not renamed
	case "whiteout,file":
		if data, _ := os.ReadFile(filepath.Join(upper, "b")); string(data) != "A" {
			t.Errorf("run %d: renamed b holds %q", run, data)
		}
	default:
		t.Errorf("run %d: a and b in the upper layer: %s", run, ab)
	}
	c := kind("c")
	if c != "none" && c != "whiteout" {
		t.Errorf("run %d: upper c is %s", run, c)
	}
	return bigState + "/" + ab + "/" + c
}

// checkView checks the merged view after a crash: big is whole, exactly
// one of a and b shows, with a's content.
func checkView(t *testing.T, run int, mnt string, bigSum [32]byte) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(mnt, "big"))
	if err != nil || sha256.Sum256(data) != bigSum {
		t.Errorf("run %d: big reads %d bytes, %v, not the lower content", run, len(data), err)
	}
	a, errA := os.ReadFile(filepath.Join(mnt, "a"))
	b, errB := os.ReadFile(filepath.Join(mnt, "b"))
	switch {
	case errA == nil && os.IsNotExist(errB) && string(a) == "A":
	case errB == nil && os.IsNotExist(errA) && string(b) == "A":
	default:
		t.Errorf("run %d: a %q (%v), b %q (%v)", run, a, errA, b, errB)
	}
}
