package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/mountinfo"
	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if os.Getenv(clientEnv) != "" {
		os.Exit(clientMain(os.Args[1:]))
	}
	// A daemonized ovlmount outlives the process that started it. As a
	// child subreaper this test process becomes its parent, so a test can
	// wait for it and see how it ended.
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	done := testenv.Start()
	code := m.Run()
	reapAll()
	testenv.RemoveBinary()
	done()
	os.Exit(code)
}

// makeStack makes two lower layers, an upper and a work directory and a
// mountpoint in a fresh temporary directory, and returns its path.
//
//	l1/d/f "from l1", l1/shadow "l1"; l2/g "from l2", l2/shadow "l2"
func makeStack(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	testenv.MakeTree(t, d, "f l1/d/f from l1", "f l1/shadow l1", "f l2/g from l2", "f l2/shadow l2", "f file", "d upper", "d work", "d mnt")
	return d
}

type result struct {
	code           int
	stdout, stderr string
}

// execute runs name with args, at most 15 seconds.
func execute(t *testing.T, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	// On timeout, end the command's whole process group (a daemon it
	// started has its own session and is left to the test's cleanup).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("%s %q: %v", name, args, err)
	}
	return r
}

// ovlmount runs the binary under test.
func ovlmount(t *testing.T, args ...string) result {
	t.Helper()
	return execute(t, testenv.Binary(t), args...)
}

// umount unmounts mnt with umount(8), failing the test if that fails.
func umount(t *testing.T, mnt string) {
	t.Helper()
	if r := execute(t, "umount", mnt); r.code != 0 {
		t.Fatalf("umount %s: exit %d, stderr %q", mnt, r.code, r.stderr)
	}
}

// cleanupMount makes sure that, at the end of the test, nothing is
// mounted on mnt and no daemon naming mnt's directory is left.
func cleanupMount(t *testing.T, mnt string) {
	t.Helper()
	t.Cleanup(func() {
		testenv.Unmount(t, mnt)
		for _, pid := range processesFor(filepath.Dir(mnt) + "/") {
			if waitExit(pid, 5*time.Second) == nil {
				t.Errorf("process %d serving %s still running after the unmount; killed", pid, mnt)
				unix.Kill(pid, unix.SIGKILL)
				waitExit(pid, 5*time.Second)
			}
		}
	})
}

// mountDaemon mounts with the binary in daemon mode and checks the
// command succeeded, saying nothing but warnings.
func mountDaemon(t *testing.T, mnt string, args ...string) {
	t.Helper()
	cleanupMount(t, mnt)
	r := ovlmount(t, args...)
	if r.code != 0 || r.stdout != "" || !onlyWarnings(r.stderr) {
		t.Fatalf("ovlmount %q: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
	}
}

// mountOverlay mounts lower under new, empty upper and work directories
// on a new mountpoint until the test ends, with the kernel's overlay
// (impl "kernel") or ovlmount, and returns the three.
func mountOverlay(t *testing.T, impl, lower string) (upper, work, mnt string) {
	t.Helper()
	d := t.TempDir()
	testenv.MakeTree(t, d, "d upper", "d work")
	s := stackDirs{upper: d + "/upper", work: d + "/work", lowers: lower}
	return s.upper, s.work, implMount(t, impl, s)
}

// onlyWarnings reports whether every line of stderr is a warning.
func onlyWarnings(stderr string) bool {
	for _, l := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
		if l != "" && !strings.HasPrefix(l, "ovlmount: warning: ") {
			return false
		}
	}
	return true
}

// checkLive checks that mnt is an ovlmount mount right now and serves d's
// layers l1 above l2.
func checkLive(t *testing.T, d, mnt string) {
	t.Helper()
	if typ := testenv.MountType(mnt); typ != "fuse.ovlmount" {
		t.Fatalf("mountinfo lists %s as %q, want fuse.ovlmount", mnt, typ)
	}
	for name, want := range map[string]string{"d/f": "from l1", "g": "from l2", "shadow": "l1"} {
		got, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil || string(got) != want {
			t.Errorf("read %s: %q, %v; want %q", name, got, err, want)
		}
	}
}

// processesFor returns the live processes whose command line holds key,
// a path unique to the test (mount.fuse3 -o drop_privileges passes
// /dev/fd/N instead of the mountpoint, but lowerdir still names it).
func processesFor(key string) []int {
	return testenv.Processes(func(arg string) bool { return strings.Contains(arg, key) })
}

// procState returns the state letter of pid, "" if there is none.
func procState(pid int) string {
	state, _ := procStat(pid)
	return state
}

// procStat returns the state letter and parent of pid from
// /proc/PID/stat, or "" if there is no such process.
func procStat(pid int) (state string, ppid int) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0
	}
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 {
		if f := strings.Fields(string(stat[i+1:])); len(f) > 1 {
			ppid, _ = strconv.Atoi(f[1])
			return f[0], ppid
		}
	}
	return "", 0
}

// daemonFor returns the one process whose command line names key (a
// path unique to the test), normally a child of this test process (see
// TestMain).
func daemonFor(t *testing.T, key string) int {
	t.Helper()
	pids := processesFor(key)
	if len(pids) != 1 {
		t.Fatalf("processes naming %s: %v, want exactly one", key, pids)
	}
	return pids[0]
}

// waitExit waits up to timeout for pid, a child of this process, to end
// and returns how it ended, or nil if it is still running. When pid is
// not a child, it waits for it to disappear or become a zombie and
// returns a zero status, which says nothing.
func waitExit(pid int, timeout time.Duration) *unix.WaitStatus {
	deadline := time.Now().Add(timeout)
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if got == pid {
			return &ws
		}
		if err == unix.ECHILD && (procState(pid) == "" || procState(pid) == "Z") {
			return new(unix.WaitStatus)
		}
		if time.Now().After(deadline) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkDaemonEnds checks that the daemon pid ends with status 0, leaves
// no process naming key behind, and that mnt is unmounted.
func checkDaemonEnds(t *testing.T, pid int, key, mnt string) {
	t.Helper()
	child := true
	if _, ppid := procStat(pid); ppid != os.Getpid() {
		child = false
		t.Logf("daemon %d is not a child of the test (parent %d): its exit status cannot be checked", pid, ppid)
	}
	ws := waitExit(pid, 10*time.Second)
	switch {
	case ws == nil:
		t.Errorf("daemon %d still running 10s after the unmount", pid)
		return
	case !child:
	case ws.Signaled():
		t.Errorf("daemon %d killed by %v, want exit 0", pid, ws.Signal())
	case ws.ExitStatus() != 0:
		t.Errorf("daemon %d exited %d, want 0", pid, ws.ExitStatus())
	}
	if left := processesFor(key); len(left) != 0 {
		t.Errorf("processes still naming %s: %v", key, left)
	}
	if typ := testenv.MountType(mnt); typ != "" {
		t.Errorf("%s still mounted (%s)", mnt, typ)
	}
}

// reapAll collects every child that ended, daemons included, so that no
// zombie outlives the tests.
func reapAll() {
	for {
		var ws unix.WaitStatus
		if pid, _ := unix.Wait4(-1, &ws, unix.WNOHANG, nil); pid <= 0 {
			return
		}
	}
}

func TestDaemonExitsWhenMountIsLive(t *testing.T) {
	testenv.RequireMount(t)
	d := makeStack(t)
	mnt := d + "/mnt"
	mountDaemon(t, mnt, "-o", "lowerdir="+d+"/l1:"+d+"/l2", mnt)
	checkLive(t, d, mnt)

	// Relative paths and the mount helper argument order.
	d2 := makeStack(t)
	t.Chdir(d2)
	cleanupMount(t, d2+"/mnt")
	if r := ovlmount(t, "mysource", "mnt", "-o", "lowerdir=l1:l2,upperdir=upper,workdir=work"); r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	checkLive(t, d2, d2+"/mnt")
}

func TestUnmountEndsDaemon(t *testing.T) {
	testenv.RequireMount(t)
	for _, tc := range []struct {
		name string
		cmd  []string
	}{
		{"umount", []string{"umount"}},
		{"fusermount3", []string{"fusermount3", "-u"}},
		{"umount lazy", []string{"umount", "-l"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := makeStack(t)
			mnt := d + "/mnt"
			mountDaemon(t, mnt, "-o", "lowerdir="+d+"/l1:"+d+"/l2,upperdir="+d+"/upper,workdir="+d+"/work", mnt)
			checkLive(t, d, mnt)
			pid := daemonFor(t, d+"/")
			if r := execute(t, tc.cmd[0], append(tc.cmd[1:], mnt)...); r.code != 0 {
				t.Fatalf("%s: exit %d: %s", tc.cmd, r.code, r.stderr)
			}
			checkDaemonEnds(t, pid, d+"/", mnt)
			// Nothing orphaned in the workdir: only the empty work/.
			if names := testenv.DirNames(t, d+"/work"); strings.Join(names, " ") != "work" {
				t.Errorf("workdir holds %q, want only work", names)
			}
			if names := testenv.DirNames(t, d+"/work/work"); len(names) != 0 {
				t.Errorf("workdir/work holds %q, want nothing", names)
			}
		})
	}
}

// foreground is an ovlmount -f process.
type foreground struct {
	cmd    *exec.Cmd
	stderr testenv.Buffer
	done   chan struct{} // closed once the process ended; err is then set
	err    error
}

// wait waits up to timeout for the process to end and returns how it
// ended, or false if it is still running.
func (p *foreground) wait(timeout time.Duration) (error, bool) {
	select {
	case <-p.done:
		return p.err, true
	case <-time.After(timeout):
		return nil, false
	}
}

// umountAndWait unmounts mnt, which p serves, and checks that p then
// exits 0 within 10 seconds.
func (p *foreground) umountAndWait(t *testing.T, mnt string) {
	t.Helper()
	umount(t, mnt)
	if err, ended := p.wait(10 * time.Second); !ended || err != nil {
		t.Fatalf("ovlmount -f after umount: ended %v, %v; stderr %q", ended, err, p.stderr.String())
	}
}

// startForeground starts ovlmount -f and waits until the mount is live.
func startForeground(t *testing.T, mnt string, args ...string) *foreground {
	t.Helper()
	p := &foreground{done: make(chan struct{})}
	p.cmd = exec.Command(testenv.Binary(t), append([]string{"-f"}, args...)...)
	p.cmd.Stderr = &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		testenv.Unmount(t, mnt)
		if _, ended := p.wait(10 * time.Second); !ended {
			t.Errorf("ovlmount -f (pid %d) still running after the unmount; killed", p.cmd.Process.Pid)
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for testenv.MountType(mnt) != "fuse.ovlmount" {
		if err, ended := p.wait(0); ended {
			t.Fatalf("ovlmount -f ended before mounting (%v): %s", err, p.stderr.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("ovlmount -f: %s not mounted after 10s", mnt)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p
}

func TestSignalsUnmount(t *testing.T) {
	testenv.RequireMount(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			d := makeStack(t)
			mnt := d + "/mnt"
			p := startForeground(t, mnt, "-o", "lowerdir="+d+"/l1:"+d+"/l2", mnt)
			checkLive(t, d, mnt)
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			err, ended := p.wait(10 * time.Second)
			if !ended {
				t.Fatalf("still running 10s after %v", sig)
			}
			if err != nil {
				t.Errorf("after %v: %v, want exit 0; stderr %q", sig, err, p.stderr.String())
			}
			if typ := testenv.MountType(mnt); typ != "" {
				t.Errorf("%s still mounted (%s) after %v", mnt, typ, sig)
			}
		})
	}
}

func TestForegroundUnmount(t *testing.T) {
	testenv.RequireMount(t)
	d := makeStack(t)
	mnt := d + "/mnt"
	p := startForeground(t, mnt, "-o", "lowerdir="+d+"/l1:"+d+"/l2", mnt)
	p.umountAndWait(t, mnt)
}

// snapshot lists every path under dir with its type, mode and size.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v %d\n", p, fi.Mode(), fi.Size())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestBadInput(t *testing.T) {
	testenv.RequireMount(t)
	cases := badInput
	cases = append(cases[:len(cases):len(cases)], struct{ name, opts, mnt, want string }{
		"workdir on another filesystem", "lowerdir=%D/l1,upperdir=%D/upper,workdir=%D/tmpfs", "%D/mnt", "workdir",
	})
	for _, tc := range cases {
		for _, mode := range []string{"daemon", "foreground"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				d := layout(t)
				if strings.Contains(tc.opts, "%D/tmpfs") {
					if err := os.Mkdir(d+"/tmpfs", 0o755); err != nil {
						t.Fatal(err)
					}
					if err := unix.Mount("tmpfs", d+"/tmpfs", "tmpfs", 0, "size=1m"); err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { testenv.Unmount(t, d+"/tmpfs") })
				}
				mnt := fill(tc.mnt, d)
				cleanupMount(t, mnt)
				cleanupMount(t, d+"/mnt")
				before := snapshot(t, d)
				args := []string{"-o", fill(tc.opts, d), mnt}
				if mode == "foreground" {
					args = append([]string{"-f"}, args...)
				}
				r := ovlmount(t, args...)
				if r.code == 0 {
					t.Errorf("exit 0, want failure")
				}
				want := fill(tc.want, d)
				if lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n"); len(lines) != 1 || !strings.HasPrefix(r.stderr, "ovlmount: ") || !strings.Contains(r.stderr, want) {
					t.Errorf("stderr %q, want one line starting \"ovlmount: \" naming %s", r.stderr, want)
				}
				if r.stdout != "" {
					t.Errorf("stdout %q, want nothing", r.stdout)
				}
				for _, m := range []string{mnt, d + "/mnt"} {
					if typ := testenv.MountType(m); typ != "" {
						t.Errorf("%s mounted (%s) after a refused command", m, typ)
					}
				}
				if after := snapshot(t, d); after != before {
					t.Errorf("files changed by a refused command:\nbefore:\n%safter:\n%s", before, after)
				}
			})
		}
	}
}

func TestReadOnly(t *testing.T) {
	testenv.RequireMount(t)
	for name, opts := range map[string]string{"ro": "ro,lowerdir=%D/l1:%D/l2", "lowers only": "lowerdir=%D/l1:%D/l2"} {
		t.Run(name, func(t *testing.T) {
			d := makeStack(t)
			mnt := d + "/mnt"
			mountDaemon(t, mnt, "-o", fill(opts, d), mnt)
			checkLive(t, d, mnt)
			if err := os.WriteFile(mnt+"/new", []byte("x"), 0o644); !errors.Is(err, unix.EROFS) {
				t.Errorf("create a file: %v, want EROFS", err)
			}
			if f, err := os.OpenFile(mnt+"/g", os.O_WRONLY, 0); !errors.Is(err, unix.EROFS) {
				if f != nil {
					f.Close()
				}
				t.Errorf("open a lower file for writing: %v, want EROFS", err)
			}
			if err := os.Mkdir(mnt+"/newdir", 0o755); !errors.Is(err, unix.EROFS) {
				t.Errorf("mkdir: %v, want EROFS", err)
			}
			if err := os.Remove(mnt + "/g"); !errors.Is(err, unix.EROFS) {
				t.Errorf("unlink: %v, want EROFS", err)
			}
		})
	}
}

func TestVersionAndHelp(t *testing.T) {
	for _, flag := range []string{"--version", "-V"} {
		r := ovlmount(t, flag)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "ovlmount ") || r.stderr != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", flag, r.code, r.stdout, r.stderr)
		}
	}
	for _, flag := range []string{"--help", "-h"} {
		r := ovlmount(t, flag)
		if r.code != 0 || r.stderr != "" || !strings.HasPrefix(r.stdout, "usage: ovlmount") {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", flag, r.code, r.stdout, r.stderr)
			continue
		}
		for _, o := range options {
			if !strings.Contains(r.stdout, "  "+o.name) {
				t.Errorf("%s does not list option %s", flag, o.name)
			}
		}
	}
}

// onShellPath makes mount.fuse3 find the binary under test for -t
// fuse.ovlmount, in the test's private mount namespace. util-linux
// mount(8) removes PATH from the environment of the helpers it runs, and
// mount.fuse3 runs the program through /bin/sh, which then falls back to
// its built-in default (dash's, Debian's), /usr/local/sbin first: a
// tmpfs there holds only a link to the binary, so whatever is installed
// on the host is not run, and nothing is installed.
func onShellPath(t *testing.T) {
	t.Helper()
	if err := unix.Mount("tmpfs", "/usr/local/sbin", "tmpfs", 0, "mode=755"); err != nil {
		t.Fatalf("mount a tmpfs on /usr/local/sbin: %v", err)
	}
	if err := os.Symlink(testenv.Binary(t), "/usr/local/sbin/ovlmount"); err != nil {
		t.Fatal(err)
	}
}

// checkExe checks that process pid runs the program at path.
func checkExe(t *testing.T, pid int, path string) {
	t.Helper()
	exe, err := os.Stat(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(exe, want) {
		link, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		t.Errorf("process %d runs %s, want %s", pid, link, path)
	}
}

// TestMountHelper mounts through mount(8) and mount.fuse3, from the
// command line and from an fstab line, as type fuse.ovlmount (the program
// named ovlmount on the shell's default PATH: the binary under test, in a
// private mount namespace) and as type fuse with the "PROGRAM#SOURCE"
// form (the binary under test, wherever it is).
func TestMountHelper(t *testing.T) {
	testenv.RequireMount(t)
	testenv.RequireProgram(t, "mount.fuse3", "fuse3")
	for _, tc := range []struct {
		name  string
		typ   string
		fstab bool
		extra string
	}{
		{"type fuse.ovlmount", "fuse.ovlmount", false, ""},
		{"type fuse.ovlmount from fstab", "fuse.ovlmount", true, ""},
		{"program#source", "fuse", false, ""},
		{"program#source from fstab", "fuse", true, ""},
		{"program#source from fstab with mount(8) options", "fuse", true, "defaults,noauto,nofail,_netdev,x-systemd.requires=/,"},
		{"program#source with options around", "fuse", false, "nodev,noexec,"},
		{"type fuse.ovlmount drop_privileges", "fuse.ovlmount", false, "drop_privileges,default_permissions,"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			source := "ovlsrc"
			if tc.typ == "fuse.ovlmount" {
				if !privateMounts(t) {
					return
				}
				onShellPath(t)
			} else {
				source = testenv.Binary(t) + "#" + source
			}
			d := makeStack(t)
			mnt := d + "/mnt"
			opts := tc.extra + "lowerdir=" + d + "/l1:" + d + "/l2"
			cleanupMount(t, mnt)
			var r result
			if tc.fstab {
				fstab := d + "/fstab"
				line := fmt.Sprintf("# test\n%s %s %s %s 0 0\n", source, mnt, tc.typ, opts)
				if err := os.WriteFile(fstab, []byte(line), 0o644); err != nil {
					t.Fatal(err)
				}
				r = execute(t, "mount", "-T", fstab, mnt)
			} else {
				r = execute(t, "mount", "-t", tc.typ, source, mnt, "-o", opts)
			}
			if r.code != 0 || !onlyWarnings(r.stderr) {
				t.Fatalf("mount: exit %d, stderr %q", r.code, r.stderr)
			}
			checkLive(t, d, mnt)
			pid := daemonFor(t, d+"/")
			checkExe(t, pid, testenv.Binary(t))
			if !strings.HasPrefix(tc.extra, "drop_privileges") {
				if info := mountOptions(t, mnt); strings.Contains(tc.extra, "nodev") != strings.Contains(info, "nodev") ||
					strings.Contains(tc.extra, "noexec") != strings.Contains(info, "noexec") {
					t.Errorf("mount options %q, want nodev and noexec as in %q", info, tc.extra)
				}
			}
			umount(t, mnt)
			checkDaemonEnds(t, pid, d+"/", mnt)
		})
	}
}

// mountOptions returns the per-mount options mountinfo lists for mnt.
func mountOptions(t *testing.T, mnt string) string {
	t.Helper()
	m, ok := mountinfo.At(mnt)
	if !ok {
		t.Fatalf("%s not in mountinfo", mnt)
	}
	return strings.Join(m.Options, ",")
}

// TestMountFlags checks the mount(2) flags the kernel shows: as root the
// defaults of fuse-overlayfs (suid, noatime; nodev as for every FUSE
// mount), and of two flags that cancel each other the last one given.
func TestMountFlags(t *testing.T) {
	testenv.RequireMount(t)
	for _, tc := range []struct {
		opts     string
		has, not []string
	}{
		{"", []string{"noatime", "ro"}, []string{"nosuid", "noexec", "nodev"}},
		{"nodev", []string{"nodev"}, nil},
		{"nosuid,noexec", []string{"nosuid", "noexec"}, nil},
		{"nosuid,suid", nil, []string{"nosuid"}},
		{"suid,nosuid", []string{"nosuid"}, nil},
		{"dev", nil, []string{"nodev"}},
		{"exec,noexec", []string{"noexec"}, nil},
		{"noexec,exec", nil, []string{"noexec"}},
		{"atime", nil, []string{"noatime"}},
		{"atime,noatime", []string{"noatime"}, nil},
	} {
		// Commas in a test name would reach the temporary paths.
		name := strings.ReplaceAll(tc.opts, ",", " then ")
		if name == "" {
			name = "defaults"
		}
		t.Run(name, func(t *testing.T) {
			d := makeStack(t)
			mnt := d + "/mnt"
			mountDaemon(t, mnt, "-o", tc.opts+",lowerdir="+d+"/l1", mnt)
			flags := strings.Split(mountOptions(t, mnt), ",")
			for _, f := range tc.has {
				if !slices.Contains(flags, f) {
					t.Errorf("-o %s: mount flags %q lack %s", tc.opts, flags, f)
				}
			}
			for _, f := range tc.not {
				if slices.Contains(flags, f) {
					t.Errorf("-o %s: mount flags %q have %s", tc.opts, flags, f)
				}
			}
		})
	}
}

// TestReadahead checks that a mount as root reads ahead 1 MiB, where FUSE
// would keep the 128 KiB default of its bdi.
func TestReadahead(t *testing.T) {
	testenv.RequireMount(t)
	d := makeStack(t)
	mnt := d + "/mnt"
	mountDaemon(t, mnt, "-o", "lowerdir="+d+"/l1", mnt)
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		t.Fatal(err)
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != readaheadKB {
		t.Errorf("%s = %s, want %s", p, got, readaheadKB)
	}
}
