//go:build amd64

package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// crashCases are the mutating operations TestCrashEveryStep kills the
// daemon in. setup runs first, through the mount, in sh; op is one
// system call made by clientMain.
var crashCases = []struct {
	name, setup string
	op          []string
}{
	{"create", "", []string{"create", "new", "644"}},
	{"create with setgid", "", []string{"create", "new", "2755"}},
	{"create as another user", "mkdir -m 777 pub", []string{"as", "1000:1000", "create", "pub/new", "640"}},
	{"create over a whiteout", "rm file", []string{"create", "file", "600"}},
	{"mkdir", "", []string{"mkdir", "new", "755"}},
	{"mkdir as another user", "mkdir -m 777 pub", []string{"as", "1000:1000", "mkdir", "pub/new", "750"}},
	{"mkdir over a whiteout", "rm -r dir", []string{"mkdir", "dir", "700"}},
	{"mknod", "", []string{"mknod", "null", "c", "1", "3"}},
	{"mkfifo over a whiteout", "rm fifo", []string{"mknod", "fifo", "p", "0", "0"}},
	{"symlink", "", []string{"symlink", "target", "new"}},
	{"symlink over a whiteout", "rm link", []string{"symlink", "elsewhere", "link"}},
	{"link a lower file", "", []string{"link", "file", "new"}},
	{"link over a whiteout", "rm x", []string{"link", "file", "x"}},
	{"rmdir a lower directory", "", []string{"rmdir", "emptydir"}},
	{"rmdir an upper directory", "mkdir new", []string{"rmdir", "new"}},
	{"rmdir a merged directory", "rm dir/a dir/b", []string{"rmdir", "dir"}},
	{"unlink a lower file", "", []string{"unlink", "file"}},
	{"unlink a copied-up file", "echo up >> file", []string{"unlink", "file"}},
	{"unlink an upper file", "echo u > new", []string{"unlink", "new"}},
	{"chmod", "", []string{"chmod", "file", "600"}},
	{"chmod a directory", "", []string{"chmod", "dir", "700"}},
	{"chown", "", []string{"chown", "file", "1000", "1000"}},
	{"chown a symlink", "", []string{"chown", "link", "1000", "1000"}},
	{"chown a fifo", "", []string{"chown", "fifo", "1000", "1000"}},
	{"chown a setuid file", "chmod 4755 file", []string{"chown", "file", "1000", "-1"}},
	{"truncate", "", []string{"truncate", "big", "3"}},
	{"open with O_TRUNC", "", []string{"opentrunc", "big"}},
	{"utimes", "", []string{"utimes", "file", "1104537600"}},
	{"setxattr", "", []string{"setxattr", "file", "user.k", "w"}},
	{"removexattr", "", []string{"removexattr", "xattr", "user.k"}},
	{"write", "", []string{"write", "file", "more"}},
	{"write after a large copy-up", "", []string{"write", "big", "more"}},
	{"rename leaving a whiteout", "", []string{"rename", "file", "new"}},
	{"rename over a lower file", "", []string{"rename", "file", "x"}},
	{"rename over an upper file", "echo u > u1; echo v > u2", []string{"rename", "u1", "u2"}},
	{"rename an upper file over a lower one", "echo u > new", []string{"rename", "new", "x"}},
	{"rename over a whiteout", "echo u > new; rm x", []string{"rename", "new", "x"}},
	{"rename a directory into a merged one", "mkdir new; echo f > new/f", []string{"rename", "new", "dir/new"}},
	{"rename a directory over an empty merged one", "mkdir new; rm dir/a dir/b", []string{"rename", "new", "dir"}},
	{"rename a directory over a whiteout", "mkdir new; rm -r emptydir", []string{"rename", "new", "emptydir"}},
	{"rename a lower directory through a redirect", "", []string{"rename", "dir", "dir2"}},
	{"move a lower directory through a redirect", "mkdir new", []string{"rename", "dir", "new/dir"}},
	{"chmod without copying data", "", []string{"chmod", "big", "600"}},
	{"rename without copying data", "", []string{"rename", "big", "big2"}},
	// Opening for writing copies the data up, which changes the mtime
	// (as the kernel's copy does); a write would be a second change.
	{"open a metacopy file for writing", "chmod 600 big", []string{"openwrite", "big"}},
	// With the index, a name of a lower hard link is copied into
	// workdir/index and linked from there.
	{"chmod a hard link with the index", "", []string{"chmod", "hl", "600"}},
	{"write the second name of a hard link with the index", "chmod 600 hl", []string{"write", "hl2", "more"}},
	{"unlink a hard link with the index", "", []string{"unlink", "hl"}},
	{"unlink the last name of a hard link with the index", "rm hl", []string{"unlink", "hl2"}},
	{"link a hard link with the index", "", []string{"link", "hl", "hl3"}},
	{"rename a hard link with the index", "", []string{"rename", "hl", "hl4"}},
	{"open a hard link for writing with the index and metacopy", "chmod 600 hl", []string{"openwrite", "hl2"}},
}

// crashMounts are the mount options of the cases that need some.
var crashMounts = map[string]string{
	"rename a lower directory through a redirect":              "redirect_dir=on",
	"move a lower directory through a redirect":                "redirect_dir=on",
	"chmod without copying data":                               "metacopy=on",
	"rename without copying data":                              "metacopy=on",
	"open a metacopy file for writing":                         "metacopy=on",
	"chmod a hard link with the index":                         "index=on",
	"write the second name of a hard link with the index":      "index=on",
	"unlink a hard link with the index":                        "index=on",
	"unlink the last name of a hard link with the index":       "index=on",
	"link a hard link with the index":                          "index=on",
	"rename a hard link with the index":                        "index=on",
	"open a hard link for writing with the index and metacopy": "index=on,metacopy=on",
}

// stepRun is what one run of an operation under a traced daemon left.
type stepRun struct {
	steps []string // the steps the daemon took
	hit   bool     // it was killed, or one call failed
	err   error    // the operation's error (a syscall.Errno if it has one)
	// live is the view of the mount the operation ran on, and workLeft
	// what workdir/work held then, when the daemon was not killed.
	live     string
	workLeft []string
	view     string // the view of a new mount of the layers
}

// stepRunner runs the operations of crashCases under traced daemons.
type stepRunner struct {
	bin, lower, base string
	mount            string // the case's mount options (crashMounts)
}

// run makes a fresh upper layer, runs setup and then op (if any) through
// a traced daemon that acts at step at (0: never) as fail says (see
// traced.arm), and tells what that left.
func (s *stepRunner) run(t *testing.T, setup string, op []string, at int, fail syscall.Errno) stepRun {
	t.Helper()
	d := filepath.Join(s.base, strings.ReplaceAll(t.Name(), "/", "_"), strconv.Itoa(at))
	upper, work, mnt := d+"/upper", d+"/work", d+"/mnt"
	for _, p := range []string{upper, work, mnt} {
		testenv.Must(t, os.MkdirAll(p, 0o755))
	}
	defer os.RemoveAll(d)
	opts := "lowerdir=" + s.lower + ",upperdir=" + upper + ",workdir=" + work
	if s.mount != "" {
		opts += "," + s.mount
	}
	tr := startTraced(t, s.bin, opts, mnt)
	if r := execute(t, "sh", "-c", `cd "$1" || exit 1; `+setup, "sh", mnt); r.code != 0 {
		t.Fatalf("setup %q: %s", setup, r.stderr)
	}
	var r stepRun
	if op != nil {
		tr.arm(at, fail)
		r.err = client(mnt, op)
		_, r.hit = tr.hitAt()
	}
	if !r.hit || fail != 0 {
		r.workLeft = testenv.DirNames(t, work+"/work")
		r.live = viewOf(t, mnt)
		umount(t, mnt)
	}
	<-tr.done
	r.steps = tr.calls
	testenv.Unmount(t, mnt)

	daemon := startDaemon(t, s.bin, opts, mnt)
	if names := testenv.DirNames(t, work+"/work"); len(names) != 0 {
		t.Errorf("workdir/work holds %v after the next mount", names)
	}
	r.view = viewOf(t, mnt)
	testenv.Unmount(t, mnt)
	daemon.Wait()
	return r
}

// forEachCase runs check for every case of crashCases, with the views
// before and after the operation and the steps it took, each from its own
// run, as a subtest.
func forEachCase(t *testing.T, check func(t *testing.T, s *stepRunner, before, after string, calls []string, setup string, op []string)) {
	testenv.RequireMount(t)
	s := &stepRunner{bin: testenv.Binary(t), base: t.TempDir()}
	s.lower = filepath.Join(s.base, "lower")
	makeCrashLower(t, s.lower)
	lowerSum := testenv.TreeSum(t, s.lower)
	for _, tc := range crashCases {
		s.mount = crashMounts[tc.name]
		t.Run(tc.name, func(t *testing.T) {
			before := s.run(t, tc.setup, nil, 0, 0).view
			ref := s.run(t, tc.setup, tc.op, 0, 0)
			if ref.err != nil {
				t.Fatalf("%q: %v", tc.op, ref.err)
			}
			if before == ref.view {
				t.Fatalf("%q changed nothing in the view:\n%s", tc.op, ref.view)
			}
			if len(ref.steps) == 0 {
				t.Fatalf("%q made no change the tracer saw", tc.op)
			}
			check(t, s, before, ref.view, ref.steps, tc.setup, tc.op)
		})
	}
	if testenv.TreeSum(t, s.lower) != lowerSum {
		t.Error("the lower layer changed")
	}
}

// TestCrashEveryStep kills the daemon with SIGKILL at every step of every
// operation in crashCases: for an operation that makes n changes to the
// layers and the workdir (system calls, see ptrace_test.go), n runs, each
// killed as the daemon enters one of them. After each kill, the view of a
// new mount must be the one before the operation or the one after it,
// never a mix (a name showing a half-made object or partial metadata, a
// lower object showing through a removed name), and workdir/work empty.
func TestCrashEveryStep(t *testing.T) {
	kills := 0
	forEachCase(t, func(t *testing.T, s *stepRunner, before, after string, calls []string, setup string, op []string) {
		// Until a run is not killed: the steps may vary from run to
		// run.
		var states []string
		for k := 1; !t.Failed(); k++ {
			r := s.run(t, setup, op, k, 0)
			if !r.hit {
				if r.err != nil || r.view != after {
					t.Errorf("not killed, in %d steps (%s): %v, and the view\n%s\nwant:\n%s", len(r.steps), strings.Join(r.steps, " "), r.err, r.view, after)
				}
				if len(r.steps) != len(calls) {
					t.Logf("this time %d steps: %s", len(r.steps), strings.Join(r.steps, " "))
				}
				break
			}
			switch r.view {
			case before:
				states = append(states, "old")
			case after:
				states = append(states, "new")
			default:
				t.Errorf("killed at step %d (%s): the view is neither the old one nor the new one:\n%s\nold:\n%s\nnew:\n%s", k, r.steps[len(r.steps)-1], r.view, before, after)
			}
			kills++
		}
		t.Logf("%d steps (%s); after a kill at each: %s", len(calls), strings.Join(calls, " "), strings.Join(states, " "))
	})
	t.Logf("%d operations, %d kills", len(crashCases), kills)
}

// TestFailEveryStep makes each step of every operation in crashCases
// fail with ENOSPC in turn, as a full upper filesystem could, by the
// same tracing as TestCrashEveryStep. The operation must then fail with
// ENOSPC and change nothing, or succeed with its whole result (a step
// done for good measure failed, such as restoring the parent's times);
// and a new mount must show what the mount that failed showed, with
// workdir/work empty. What workdir/work held right after the failure is
// logged.
func TestFailEveryStep(t *testing.T) {
	fails := 0
	forEachCase(t, func(t *testing.T, s *stepRunner, before, after string, calls []string, setup string, op []string) {
		var outcomes []string
		for k := 1; !t.Failed(); k++ {
			r := s.run(t, setup, op, k, unix.ENOSPC)
			if !r.hit {
				break
			}
			fails++
			step := r.steps[len(r.steps)-1]
			if r.live != r.view {
				t.Errorf("step %d (%s) failed: the mount showed\n%s\na new mount shows\n%s", k, step, r.live, r.view)
			}
			outcome := ""
			switch {
			case errors.Is(r.err, unix.ENOSPC) && r.live == before:
				outcome = "ENOSPC"
			case r.err == nil && r.live == after:
				outcome = "ok"
			default:
				t.Errorf("step %d (%s) failed: the operation returned %v, and the view is\n%s\nold:\n%s\nnew:\n%s", k, step, r.err, r.live, before, after)
				outcome = fmt.Sprint(r.err)
			}
			if len(r.workLeft) != 0 {
				// Left for the next mount to remove (checked by run).
				outcome += fmt.Sprintf("(workdir/work: %d left)", len(r.workLeft))
			}
			outcomes = append(outcomes, outcome)
		}
		t.Logf("%d steps; with each failing in turn: %s", len(calls), strings.Join(zipSteps(calls, outcomes), " "))
	})
	t.Logf("%d operations, %d failed steps", len(crashCases), fails)
}

// zipSteps pairs each step with the outcome of its failure.
func zipSteps(steps, outcomes []string) []string {
	var out []string
	for i, o := range outcomes {
		name := "?"
		if i < len(steps) {
			name = steps[i]
		}
		out = append(out, name+":"+o)
	}
	return out
}

// makeCrashLower makes the lower layer crashCases work on. Every object
// has an mtime in 2001, which views compare.
//
//	file "lower data", x "x", big (256 KiB), xattr (user.k=v),
//	dir/a, dir/b, emptydir/, link -> file, fifo, hl and hl2 (one file)
func makeCrashLower(t *testing.T, lower string) {
	t.Helper()
	testenv.MakeTree(t, lower, "f file lower data", "f x x", "f xattr xa", "x xattr user.k=v",
		"f dir/a a", "f dir/b b", "d emptydir", "l link file", "p fifo", "f hl hard link")
	testenv.Must(t, os.Link(filepath.Join(lower, "hl"), filepath.Join(lower, "hl2")))
	big := make([]byte, 256<<10)
	for i := range big {
		big[i] = byte(i * 31)
	}
	testenv.Must(t, os.WriteFile(filepath.Join(lower, "big"), big, 0o644))
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	ts := []unix.Timespec{unix.NsecToTimespec(old.UnixNano()), unix.NsecToTimespec(old.UnixNano())}
	testenv.Must(t, filepath.WalkDir(lower, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	}))
}
