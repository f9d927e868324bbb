package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ovlmount/ovlmount/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// impl is one overlay implementation under test.
type impl struct {
	name string
	// mount mounts lower (top first), upper and work on mnt; extra are
	// FUSE options a workload asks for (the kernel takes none).
	mount func(lower, upper, work, mnt, extra string) error
	// daemon is true when a user-space process serves the mount.
	daemon bool
}

// implementations returns the implementations by name; ovlmount-before is
// beforeBin, a build of an earlier ovlmount (-before), when given.
func implementations(ovlBin, beforeBin string) map[string]*impl {
	opts := func(lower, upper, work, extra string) string {
		o := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
		if extra != "" {
			o += "," + extra
		}
		return o
	}
	fuse := func(name, bin string) *impl {
		return &impl{name: name, daemon: true, mount: func(lower, upper, work, mnt, extra string) error {
			return run(bin, "-o", opts(lower, upper, work, extra), mnt)
		}}
	}
	all := map[string]*impl{
		"ovlmount":       fuse("ovlmount", ovlBin),
		"fuse-overlayfs": fuse("fuse-overlayfs", "fuse-overlayfs"),
		"kernel": {name: "kernel", mount: func(lower, upper, work, mnt, _ string) error {
			return run("mount", "-t", "overlay", "overlay", "-o", opts(lower, upper, work, ""), mnt)
		}},
	}
	if beforeBin != "" {
		all["ovlmount-before"] = fuse("ovlmount-before", beforeBin)
	}
	return all
}

// run runs a command and returns its error with its output.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// mounted is one live mount of an implementation on fresh upper and work
// directories.
type mounted struct {
	impl *impl
	mnt  string
	base string // holds upper, work and mnt
	pid  int    // the serving daemon, 0 for the kernel
}

// mountFresh makes empty upper and work directories under base and
// mounts im there, with extra FUSE options.
func mountFresh(im *impl, lower, base, extra string) (*mounted, error) {
	if err := os.RemoveAll(base); err != nil {
		return nil, err
	}
	m := &mounted{impl: im, base: base, mnt: filepath.Join(base, "mnt")}
	for _, d := range []string{"upper", "work", "mnt"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := im.mount(lower, filepath.Join(base, "upper"), filepath.Join(base, "work"), m.mnt, extra); err != nil {
		return nil, err
	}
	if _, ok := mountinfo.At(m.mnt); !ok {
		return nil, fmt.Errorf("%s: %s is not mounted after the mount command", im.name, m.mnt)
	}
	if im.daemon {
		pids := processesFor(m.mnt)
		if len(pids) != 1 {
			m.unmount()
			return nil, fmt.Errorf("%s: processes naming %s: %v, want one", im.name, m.mnt, pids)
		}
		m.pid = pids[0]
	}
	return m, nil
}

// unmount takes the mount down, waits for its daemon to end and removes
// the upper and work directories. A mount that stays busy is detached,
// and a daemon that does not end then has its FUSE connection aborted, as
// a user would; either is reported on stderr.
func (m *mounted) unmount() error {
	var st unix.Stat_t
	conn := uint64(0)
	if m.pid != 0 && unix.Stat(m.mnt, &st) == nil {
		conn = st.Dev
	}
	err := unix.Unmount(m.mnt, 0)
	for i := 0; err == unix.EBUSY && i < 50; i++ {
		time.Sleep(100 * time.Millisecond)
		err = unix.Unmount(m.mnt, 0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "unmount %s: %v; detaching it\n", m.mnt, err)
		if err := unix.Unmount(m.mnt, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %v", m.mnt, err)
		}
	}
	if m.pid != 0 && !m.waitDaemon(10*time.Second) {
		fmt.Fprintf(os.Stderr, "%s daemon %d still running 10s after unmount; aborting its connection\n", m.impl.name, m.pid)
		abort(conn)
		if !m.waitDaemon(10 * time.Second) {
			return fmt.Errorf("%s daemon %d still running after its connection was aborted", m.impl.name, m.pid)
		}
	}
	return os.RemoveAll(m.base)
}

// waitDaemon waits up to timeout for the daemon to end and reports
// whether it did.
func (m *mounted) waitDaemon(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for alive(m.pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// abort aborts FUSE connection conn (the device number of the mount).
func abort(conn uint64) {
	if conn == 0 {
		return
	}
	const ctl = "/sys/fs/fuse/connections"
	if _, err := os.Stat(ctl + "/" + strconv.FormatUint(conn, 10)); err != nil {
		unix.Mount("none", ctl, "fusectl", 0, "")
	}
	os.WriteFile(ctl+"/"+strconv.FormatUint(conn, 10)+"/abort", []byte("1"), 0)
}

// peakRSS returns the daemon's peak resident set (VmHWM) in bytes, 0 for
// the kernel.
func (m *mounted) peakRSS() int64 {
	if m.pid == 0 {
		return 0
	}
	return procStatus(m.pid, "VmHWM")
}

// procStatus returns a kB field of /proc/PID/status in bytes, 0 if it
// cannot be read.
func procStatus(pid int, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if !ok || k != field {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		return n << 10
	}
	return 0
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || !bytes.HasPrefix(stat[i+1:], []byte(" Z"))
}

// processesFor returns the live processes with an argument equal to arg.
func processesFor(arg string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || !alive(pid) {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		for _, a := range bytes.Split(cmdline, []byte{0}) {
			if string(a) == arg {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// dropCaches writes dirty data back and makes the kernel drop its page,
// dentry and inode caches, so the next workload starts cold.
func dropCaches() error {
	unix.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}
