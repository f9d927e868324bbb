package conformance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ovlmount/ovlmount/internal/mountinfo"
)

// Impl is an overlay implementation that can mount built layers.
type Impl interface {
	Name() string
	// Mount mounts l at dir (an existing, absolute directory path) and
	// returns once the mount is live.
	Mount(l Layers, dir string) (*Mount, error)
}

// Kernel is the kernel's overlayfs, mounted with mount(8). Options, if
// set, are appended to the layer options (for example "xino=on").
type Kernel struct {
	Options string
}

// FUSE is a FUSE overlay program with fuse-overlayfs's command line:
// PROG -o lowerdir=L1:L2,upperdir=U,workdir=W MOUNTPOINT. The program must
// daemonize and exit 0 once the mount is live.
type FUSE struct {
	Prog string
}

// Mount is a live mount made by an Impl.
type Mount struct {
	Dir  string
	Impl Impl
	// Log is the file receiving the program's stdout and stderr, including
	// whatever the daemon writes later if it keeps them ("" for the kernel).
	Log string
}

// How long a mount may take to go live, and a FUSE daemon to exit after
// its unmount before it counts as leaked. Generous: a daemon may still be
// finishing a syncfs (which any sync(2) on the machine sends to every FUSE
// mount) when its mount goes, and that waits for the upper filesystem.
const (
	mountTimeout   = 30 * time.Second
	unmountTimeout = 60 * time.Second
)

// How often, and how far apart, a plain unmount is tried (see Unmount).
const (
	umountTries      = 50
	umountRetryDelay = 20 * time.Millisecond
)

func (Kernel) Name() string { return "kernel" }

func (k Kernel) Mount(l Layers, dir string) (*Mount, error) {
	opts, err := l.options()
	if err != nil {
		return nil, err
	}
	if k.Options != "" {
		opts += "," + k.Options
	}
	ctx, cancel := context.WithTimeout(context.Background(), mountTimeout)
	defer cancel()
	// mount(8) rather than mount(2): util-linux reports the kernel's mount
	// messages, which say which option was rejected.
	out, err := exec.CommandContext(ctx, "mount", "-t", "overlay", "overlay", "-o", opts, dir).CombinedOutput()
	if err != nil {
		return nil, &MountError{Command: fmt.Sprintf("mount -t overlay -o %s %s", opts, dir), Err: err, Output: string(out)}
	}
	return &Mount{Dir: dir, Impl: k}, nil
}

func (f FUSE) Name() string { return filepath.Base(f.Prog) }

func (f FUSE) Mount(l Layers, dir string) (*Mount, error) {
	opts, err := l.options()
	if err != nil {
		return nil, err
	}
	m := &Mount{Dir: dir, Impl: f, Log: dir + ".log"}
	// A file, not a pipe: the daemon inherits the descriptors, and waiting
	// for a pipe to close would wait for the daemon to exit.
	// Appended to, so that mounting the same directory again keeps what
	// the earlier daemon wrote.
	log, err := os.OpenFile(m.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	ctx, cancel := context.WithTimeout(context.Background(), mountTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, f.Prog, "-o", opts, dir)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = raceEnv()
	if err := cmd.Run(); err != nil {
		out, _ := os.ReadFile(m.Log)
		return nil, &MountError{Command: fmt.Sprintf("%s -o %s %s", f.Prog, opts, dir), Err: err, Output: string(out)}
	}
	// fuse-overlayfs's callers rely on the mount being live at exit.
	if !IsMounted(dir) {
		return nil, fmt.Errorf("%s exited 0 but %s is not a mount point", f.Prog, dir)
	}
	return m, nil
}

// MountError is a mount command that failed, with what it said.
type MountError struct {
	Command string
	Err     error
	Output  string
}

func (e *MountError) Error() string { return fmt.Sprintf("%s: %v: %s", e.Command, e.Err, e.Output) }

func (e *MountError) Unwrap() error { return e.Err }

// options renders l in overlay mount-option syntax: data-only layers
// follow the others after "::" each (lowerdir=L0:L1::D0::D1), and
// l.Options come last. Paths holding the option separators are refused
// instead of escaped: the kernel and fuse-overlayfs escape differently,
// and temporary paths never need it.
func (l Layers) options() (string, error) {
	if len(l.Lowers) == 0 {
		return "", errors.New("no lower layers")
	}
	if (l.Upper == "") != (l.Work == "") {
		return "", errors.New("upperdir and workdir go together")
	}
	for _, p := range slices.Concat(l.Lowers, l.Data, []string{l.Upper, l.Work}) {
		if strings.ContainsAny(p, ",:\\") {
			return "", fmt.Errorf("layer path %q contains one of , : \\", p)
		}
	}
	opts := "lowerdir=" + strings.Join(l.Lowers, ":")
	for _, d := range l.Data {
		opts += "::" + d
	}
	if l.Upper != "" {
		opts += ",upperdir=" + l.Upper + ",workdir=" + l.Work
	}
	for _, o := range l.Options {
		opts += "," + o
	}
	return opts, nil
}

// Unmount unmounts m (lazily if a plain unmount keeps failing) and waits
// until the directory is no longer a mount point and, for FUSE, until no
// process is left serving it.
//
// A plain unmount is tried again while it fails: a process that another
// goroutine is starting holds a copy of every descriptor of the test
// between its fork and its exec, so a mount the test has a descriptor in
// is busy for a moment. A lazy unmount would leave the filesystem alive
// until the last reference goes, and with it the upper directory in use:
// a mount of the same layers with index=on fails (EBUSY) meanwhile.
func (m *Mount) Unmount() error {
	var out []byte
	err := errors.New("not tried")
	for try := 0; try < umountTries && err != nil; try++ {
		if try > 0 {
			time.Sleep(umountRetryDelay)
		}
		out, err = exec.Command("umount", m.Dir).CombinedOutput()
	}
	if err != nil {
		if out2, err2 := exec.Command("umount", "-l", m.Dir).CombinedOutput(); err2 != nil {
			return fmt.Errorf("umount %s: %v: %s; umount -l: %v: %s", m.Dir, err, out, err2, out2)
		}
	}
	deadline := time.Now().Add(unmountTimeout)
	for {
		mounted := IsMounted(m.Dir)
		var daemons []int
		if _, ok := m.Impl.(FUSE); ok {
			var err error
			if daemons, err = processesServing(m.Dir); err != nil {
				return err
			}
		}
		if !mounted && len(daemons) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			// A daemon that outlives its mount would stay forever; it is
			// known by the mount point in its arguments, which is unique
			// to the test.
			for _, pid := range daemons {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			return fmt.Errorf("%s still mounted (%v) or served by pids %v %v after unmount (killed)", m.Dir, mounted, daemons, unmountTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Abort aborts m's FUSE connection through fusectl: every request the
// daemon has not answered, and every later one, fails with ENOTCONN. It
// is the only way to free a process blocked on a daemon that stopped
// answering; even the test binary's own timeout cannot end such a process.
func (m *Mount) Abort() error {
	if _, ok := m.Impl.(FUSE); !ok {
		return fmt.Errorf("%s is not a FUSE mount", m.Dir)
	}
	dev, err := mountDevice(m.Dir)
	if err != nil {
		return err
	}
	// The connection directory is named after the mount's device number,
	// major 0 for the anonymous devices FUSE uses.
	major, minor, ok := strings.Cut(dev, ":")
	if !ok || major != "0" {
		return fmt.Errorf("%s: unexpected device %q", m.Dir, dev)
	}
	return os.WriteFile(filepath.Join("/sys/fs/fuse/connections", minor, "abort"), []byte("1"), 0)
}

// mountDevice returns the major:minor of the filesystem mounted at dir,
// from mountinfo: a stat of a hung FUSE mount would block.
func mountDevice(dir string) (string, error) {
	m, ok := mountinfo.At(filepath.Clean(dir))
	if !ok {
		return "", fmt.Errorf("%s is not a mount point", dir)
	}
	return m.Dev, nil
}

// IsMounted reports whether dir is a mount point in this mount namespace.
func IsMounted(dir string) bool {
	_, ok := mountinfo.At(filepath.Clean(dir))
	return ok
}

// processesServing lists processes with dir among their arguments: a FUSE
// daemon still running after its mount is gone is a leak.
func processesServing(dir string) ([]int, error) {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		// Processes come and go; an unreadable one is not serving dir.
		cmdline, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, arg := range strings.Split(string(cmdline), "\x00") {
			if arg == dir {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids, nil
}

// raceEnv is the environment for programs the harness starts: its own,
// with the race detector's exit delay turned off. A race-instrumented
// program sleeps a second before exiting by default (atexit_sleep_ms),
// which a daemonizing mount pays twice per mount; other GORACE options
// are kept.
func raceEnv() []string {
	env := os.Environ()
	gorace := os.Getenv("GORACE")
	if strings.Contains(gorace, "atexit_sleep_ms") {
		return env
	}
	return append(env, strings.TrimSpace("GORACE="+gorace+" atexit_sleep_ms=0"))
}
