package testenv

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/mountinfo"
	"golang.org/x/sys/unix"
)

func TestMountType(t *testing.T) {
	if MountType("/") == "" {
		t.Error(`MountType("/") is empty; / is always a mountpoint`)
	}
	if typ := MountType(t.TempDir()); typ != "" {
		t.Errorf("a fresh temporary directory is listed as a %q mount", typ)
	}
	if typ := MountType("/proc"); typ != "proc" {
		t.Errorf(`MountType("/proc") = %q, want "proc"`, typ)
	}
}

func TestMain(m *testing.M) { Main(m) }

// TestCleanStale leaves what a killed test run would beside this live
// run's directory (Start's): a directory named for a process that is
// gone, with a tmpfs mounted on another, a process naming a path below
// it, and an ovlmount mount bound into its own upper layer, where a walk
// makes the daemon wait on its own requests (a daemon whose readers all
// wait so outlives SIGKILL). CleanStale must take all that down, and keep
// a live run's directory.
func TestCleanStale(t *testing.T) {
	RequireMount(t)
	bin := Binary(t)
	start, err := startTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if tmp, want := os.Getenv("TMPDIR"), filepath.Join(tempBase, fmt.Sprintf("%s%d-%s", dirPrefix, os.Getpid(), start)); tmp != want {
		t.Fatalf("TMPDIR is %s, want %s (Start's)", tmp, want)
	}
	// The stale and the live directory are made in a base of the test's
	// own, where the CleanStale of another package's tests, starting
	// meanwhile, does not take the stale one down before it is ready.
	// The live one names this process; the stale one its pid with a start
	// time it does not have: a process that has gone, its pid reused.
	base := t.TempDir()
	live := filepath.Join(base, fmt.Sprintf("%s%d-%s", dirPrefix, os.Getpid(), start))
	stale := filepath.Join(base, fmt.Sprintf("%s%d-%s0", dirPrefix, os.Getpid(), start))
	if err := os.Mkdir(live, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"m", "l", "u/sub", "w", "mnt"} {
		if err := os.MkdirAll(filepath.Join(stale, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { clean(stale) })
	if err := unix.Mount("tmpfs", stale+"/m", "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(stale+"/m/n", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", stale+"/m/n", "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale+"/m/n/f", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var procs []*exec.Cmd
	wait := func(cmd *exec.Cmd) chan error {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		return done
	}
	tail := exec.Command("tail", "-f", stale+"/m/n/f")
	daemon := exec.Command(bin, "-f", "-o", "lowerdir="+stale+"/l,upperdir="+stale+"/u,workdir="+stale+"/w", stale+"/mnt")
	for _, cmd := range []*exec.Cmd{tail, daemon} {
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd)
	}
	ended := []chan error{wait(tail), wait(daemon)}
	for deadline := time.Now().Add(time.Minute); MountType(stale+"/mnt") != "fuse.ovlmount"; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("ovlmount did not mount in a minute")
		}
	}
	if err := unix.Mount(stale+"/mnt", stale+"/u/sub", "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	// A walk through the bind makes the daemon's requests wait on its
	// own mount. With readers added while others are stuck, the walk may
	// end before every reader is (find stops at the loop it sees): walk
	// again until a daemon thread is caught waiting, for up to a minute,
	// and go on either way: what CleanStale must take down is there.
	caught := false
	for deadline := time.Now().Add(time.Minute); !caught && time.Now().Before(deadline); {
		client := exec.Command("find", stale+"/mnt")
		client.Stdout, client.Stderr = io.Discard, io.Discard
		if err := client.Start(); err != nil {
			t.Fatal(err)
		}
		done := wait(client)
		for !caught {
			if caught = waitsOnFUSE(daemon.Process.Pid); caught {
				procs = append(procs, client)
				ended = append(ended, done)
				break
			}
			select {
			case <-done:
			case <-time.After(10 * time.Millisecond):
				continue
			}
			break
		}
	}
	if !caught {
		t.Log("no daemon thread was caught waiting on its own mount; cleaning up what is there")
	}

	cleanStaleIn(base)
	for i, cmd := range procs {
		select {
		case <-ended[i]:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Errorf("%s still runs", cmd.Args)
		}
	}
	if m, err := mountinfo.Under(stale); err != nil || len(m) != 0 {
		t.Errorf("still mounted below the stale directory: %v (%v)", m, err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the stale directory is still there (%v)", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("the live run's directory was removed: %v", err)
	}
}

// waitsOnFUSE reports whether a thread of process pid waits for the
// answer to a FUSE request.
func waitsOnFUSE(pid int) bool {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/wchan", pid, task.Name()))
		if string(wchan) == "request_wait_answer" {
			return true
		}
	}
	return false
}

func TestMakeTree(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new")
	MakeTree(t, dir, "d a/b", "f a/f hello,  world ", "f empty", "l a/l ../out", "p fifo", "x a/f user.k=v=w", "d a", "x . user.root=r")
	for name, want := range map[string]uint32{"a": unix.S_IFDIR | 0o755, "a/b": unix.S_IFDIR | 0o755, "a/f": unix.S_IFREG | 0o644, "empty": unix.S_IFREG | 0o644, "fifo": unix.S_IFIFO | 0o644} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, name), &st); err != nil || st.Mode != want {
			t.Errorf("%s: mode %o (%v), want %o", name, st.Mode, err, want)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "a/f")); err != nil || string(b) != "hello,  world " {
		t.Errorf("a/f holds %q (%v)", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "empty")); err != nil || len(b) != 0 {
		t.Errorf("empty holds %q (%v)", b, err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "a/l")); err != nil || target != "../out" {
		t.Errorf("a/l points to %q (%v)", target, err)
	}
	v := make([]byte, 16)
	if n, err := unix.Lgetxattr(filepath.Join(dir, "a/f"), "user.k", v); err != nil || string(v[:n]) != "v=w" {
		t.Errorf("a/f: user.k is %q (%v)", v[:max(n, 0)], err)
	}
	if n, err := unix.Lgetxattr(dir, "user.root", v); err != nil || string(v[:n]) != "r" {
		t.Errorf("the root: user.root is %q (%v)", v[:max(n, 0)], err)
	}
}

// TestMakeTreeFollowsNoSymlink checks that names through a symlink, or
// out of the tree, are refused and leave nothing behind.
func TestMakeTreeFollowsNoSymlink(t *testing.T) {
	base := t.TempDir()
	dir, out := filepath.Join(base, "tree"), filepath.Join(base, "out")
	MakeTree(t, out)
	MakeTree(t, dir, "l out ../out", "l abs "+out)
	for _, line := range []string{"f out/x data", "d abs/x", "f abs x", "d out", "x out/x user.k=v", "f ../x", "f /x", "f a//x", "p ./x", "f a/.", "f .", "q x", "x abs user.k"} {
		if err := makeObject(dir, line); err == nil {
			t.Errorf("%q: made", line)
		}
	}
	if names := DirNames(t, out); len(names) != 0 {
		t.Errorf("made outside the tree: %v", names)
	}
	if b, err := os.ReadFile(filepath.Join(base, "x")); err == nil {
		t.Errorf("made ../x: %q", b)
	}
}
