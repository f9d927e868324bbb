//go:build amd64

package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/mountinfo"
	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// A traced daemon runs under ptrace from its first instruction, every
// thread of it, so that the test can act at a precise step: as one of its
// threads enters its nth system call that changes a file (a step),
// counted over all threads from the moment the test arms the counter, the
// test kills the daemon with SIGKILL (the thread is stopped at the entry,
// so the call never runs), or makes that one call fail with an errno
// without running it. No hook in the daemon is needed, and every change
// it makes, whichever package makes it, is a step.
//
// strace's fault injection cannot do this: it counts invocations of each
// system call per thread, and the daemon's requests move between threads.

// changeCalls are the amd64 system calls that change files; openat counts
// only when it creates or truncates, ioctl only for FICLONE and
// FS_IOC_SETFLAGS. The daemon's replies to the kernel (writev on
// /dev/fuse) are not steps.
var changeCalls = map[uint64]string{
	unix.SYS_MKDIRAT: "mkdirat", unix.SYS_MKNODAT: "mknodat", unix.SYS_SYMLINKAT: "symlinkat",
	unix.SYS_LINKAT: "linkat", unix.SYS_RENAMEAT: "renameat", unix.SYS_RENAMEAT2: "renameat2",
	unix.SYS_UNLINKAT: "unlinkat", unix.SYS_FCHOWNAT: "fchownat", unix.SYS_FCHOWN: "fchown",
	unix.SYS_FCHMODAT: "fchmodat", unix.SYS_FCHMODAT2: "fchmodat2", unix.SYS_FCHMOD: "fchmod",
	unix.SYS_CHMOD: "chmod", unix.SYS_UTIMENSAT: "utimensat", unix.SYS_SETXATTR: "setxattr",
	unix.SYS_LSETXATTR: "lsetxattr", unix.SYS_FSETXATTR: "fsetxattr", unix.SYS_SETXATTRAT: "setxattrat",
	unix.SYS_REMOVEXATTR: "removexattr", unix.SYS_LREMOVEXATTR: "lremovexattr",
	unix.SYS_FREMOVEXATTR: "fremovexattr", unix.SYS_REMOVEXATTRAT: "removexattrat",
	unix.SYS_FTRUNCATE: "ftruncate", unix.SYS_PWRITE64: "pwrite64", unix.SYS_FALLOCATE: "fallocate",
	unix.SYS_COPY_FILE_RANGE: "copy_file_range", unix.SYS_FSYNC: "fsync", unix.SYS_FDATASYNC: "fdatasync",
	unix.SYS_OPENAT: "openat", unix.SYS_IOCTL: "ioctl",
}

// isStep reports whether the system call a thread enters with regs
// changes a file, and names it.
func isStep(regs *unix.PtraceRegs) (string, bool) {
	name, ok := changeCalls[regs.Orig_rax]
	switch regs.Orig_rax {
	case unix.SYS_OPENAT:
		// O_TMPFILE holds O_DIRECTORY; its own bit is enough.
		ok = regs.Rdx&(unix.O_CREAT|unix.O_TRUNC|(unix.O_TMPFILE&^unix.O_DIRECTORY)) != 0
	case unix.SYS_IOCTL:
		ok = regs.Rsi == unix.FICLONE || regs.Rsi == unix.FS_IOC_SETFLAGS
	}
	return name, ok
}

// traced is an ovlmount -f process under the test's ptrace.
type traced struct {
	pid    int
	stderr *os.File
	armed  atomic.Bool
	at     atomic.Int64 // the step to act at, counted from arming; 0: none
	// fail is the errno step at fails with; 0 kills the daemon there.
	// Set before arming.
	fail  syscall.Errno
	steps atomic.Int64  // steps seen since arming
	hit   atomic.Value  // the call acted at, a string
	done  chan struct{} // closed once every thread of the daemon is gone
	// calls names the steps seen since arming; read it once done is
	// closed.
	calls []string
}

// startTraced starts ovlmount -f -o opts mnt under ptrace and waits until
// the mount is live.
func startTraced(t *testing.T, bin, opts, mnt string) *traced {
	t.Helper()
	stderr, err := os.CreateTemp(t.TempDir(), "stderr")
	testenv.Must(t, err)
	tr := &traced{stderr: stderr, done: make(chan struct{})}
	cmd := exec.Command(bin, "-f", "-o", opts, mnt)
	// Its own process group: the tracer waits for the group's threads
	// only, never for the test's other children.
	cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true, Setpgid: true}
	cmd.Stderr = stderr
	started := make(chan error, 1)
	go tr.trace(cmd, started)
	testenv.Must(t, <-started)
	tr.pid = cmd.Process.Pid
	t.Cleanup(func() {
		unix.Kill(tr.pid, unix.SIGKILL)
		<-tr.done
		testenv.Unmount(t, mnt)
	})
	// Live once the mount's readahead is set, the daemon's last change
	// (a write to sysfs) before it serves: that write must not count as
	// a step.
	deadline := time.Now().Add(10 * time.Second)
	for !readaheadSet(mnt) {
		select {
		case <-tr.done:
			t.Fatalf("traced ovlmount ended before mounting: %s", tr.output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not mounted with its readahead after 10s", mnt)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return tr
}

// readaheadSet reports whether an ovlmount mount is on mnt with the
// readahead the daemon sets.
func readaheadSet(mnt string) bool {
	m, ok := mountinfo.At(mnt)
	if !ok || m.Type != "fuse.ovlmount" {
		return false
	}
	b, err := os.ReadFile("/sys/class/bdi/" + m.Dev + "/read_ahead_kb")
	return err == nil && strings.TrimSpace(string(b)) == readaheadKB
}

// arm starts counting steps, to act as the daemon enters step n (never
// for 0): kill it if fail is 0, else fail the call with errno fail.
func (tr *traced) arm(n int, fail syscall.Errno) {
	tr.steps.Store(0)
	tr.calls = nil
	tr.fail = fail
	tr.at.Store(int64(n))
	tr.armed.Store(true)
}

// hitAt returns the call the daemon was killed at or made to fail, if
// any.
func (tr *traced) hitAt() (string, bool) {
	name, ok := tr.hit.Load().(string)
	return name, ok
}

func (tr *traced) output() string {
	b, _ := os.ReadFile(tr.stderr.Name())
	return string(b)
}

// trace starts cmd as a tracee and follows every thread of it until all
// are gone. Every ptrace request must come from the thread that started
// the tracee, so the goroutine keeps its thread, which ends with it.
func (tr *traced) trace(cmd *exec.Cmd, started chan<- error) {
	defer close(tr.done)
	runtime.LockOSThread()
	if err := cmd.Start(); err != nil {
		started <- err
		return
	}
	pid := cmd.Process.Pid
	var ws unix.WaitStatus
	// The tracee stops with SIGTRAP after its exec.
	_, err := unix.Wait4(pid, &ws, unix.WALL, nil)
	if err == nil {
		err = unix.PtraceSetOptions(pid, unix.PTRACE_O_TRACESYSGOOD|unix.PTRACE_O_TRACECLONE|unix.PTRACE_O_EXITKILL)
	}
	if err == nil {
		err = unix.PtraceSyscall(pid, 0)
	}
	if err != nil {
		unix.Kill(pid, unix.SIGKILL)
		unix.Wait4(pid, &ws, unix.WALL, nil)
		started <- fmt.Errorf("tracing ovlmount: %v", err)
		return
	}
	started <- nil
	inCall := map[int]bool{}  // threads between a syscall's entry and its exit
	failing := map[int]bool{} // threads in a call made to fail
	for {
		tid, err := unix.Wait4(-pid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return // ECHILD: every thread is gone
		}
		if !ws.Stopped() {
			delete(inCall, tid) // a thread ended
			continue
		}
		sig := ws.StopSignal()
		deliver := 0
		switch {
		case sig == unix.SIGTRAP|0x80:
			inCall[tid] = !inCall[tid]
			var regs unix.PtraceRegs
			if !inCall[tid] {
				if failing[tid] && unix.PtraceGetRegs(tid, &regs) == nil {
					regs.Rax = uint64(-int64(tr.fail))
					unix.PtraceSetRegs(tid, &regs)
				}
				delete(failing, tid)
				break
			}
			if !tr.armed.Load() || unix.PtraceGetRegs(tid, &regs) != nil {
				break
			}
			name, ok := isStep(&regs)
			if !ok {
				break
			}
			tr.calls = append(tr.calls, name)
			if tr.steps.Add(1) != tr.at.Load() {
				break
			}
			tr.hit.Store(name)
			if tr.fail == 0 {
				// Left stopped at the entry: SIGKILL ends it before the
				// call runs.
				unix.Kill(pid, unix.SIGKILL)
				continue
			}
			// No call has number -1: the kernel runs none, and the exit
			// stop sets the errno.
			regs.Orig_rax = ^uint64(0)
			failing[tid] = unix.PtraceSetRegs(tid, &regs) == nil
		case sig == unix.SIGTRAP:
			// An event (a new thread), or the exec.
		case sig == unix.SIGSTOP:
			// A new thread's first stop.
		default:
			deliver = int(sig)
		}
		unix.PtraceSyscall(tid, deliver)
	}
}
