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
	// Foreground runs PROG -f ... instead, as a child of the harness for
	// the mount's whole life, so that Log receives everything it writes
	// while serving: a daemonizing program detaches from its output
	// (ovlmount's daemon writes to /dev/null), and with it go the race
	// detector's reports and panics.
	Foreground bool
}

// Mount is a live mount made by an Impl.
type Mount struct {
	Dir  string
	Impl Impl
	// Log is the file receiving the program's stdout and stderr, including
	// whatever the daemon writes later if it keeps them ("" for the kernel).
	Log string
	// exited is closed once a FUSE.Foreground program has exited and been
	// reaped (nil otherwise); proc is that program.
	exited chan struct{}
	proc   *os.Process
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
	if f.Foreground {
		if err := f.mountForeground(opts, log, m); err != nil {
			return nil, err
		}
		return m, nil
	}
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

// mountForeground starts f.Prog -f with its output in log and waits until
// m.Dir is a mount point, or the program exits, or mountTimeout passes.
func (f FUSE) mountForeground(opts string, log *os.File, m *Mount) error {
	cmd := exec.Command(f.Prog, "-f", "-o", opts, m.Dir)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = raceEnv()
	// A session of its own, as a daemon's: a terminal's ^C goes to the
	// harness, which unmounts, rather than straight to the program.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	// Waiting reaps the program when it exits after its unmount; until
	// then the goroutine just waits.
	var waitErr error
	m.proc = cmd.Process
	m.exited = make(chan struct{})
	go func() {
		waitErr = cmd.Wait()
		close(m.exited)
	}()
	deadline := time.Now().Add(mountTimeout)
	for !IsMounted(m.Dir) {
		select {
		case <-m.exited:
			out, _ := os.ReadFile(m.Log)
			return &MountError{Command: fmt.Sprintf("%s -f -o %s %s", f.Prog, opts, m.Dir), Err: fmt.Errorf("exited before the mount was live: %v", waitErr), Output: string(out)}
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			return fmt.Errorf("%s -f -o %s %s: not mounted after %v (killed)", f.Prog, opts, m.Dir, mountTimeout)
		}
	}
	return nil
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
// process is left serving it (a Foreground program: until it has exited,
// its descriptors of the layers closed).
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
		if !mounted && len(daemons) == 0 && m.reaped() {
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

// reaped reports whether a Foreground program has exited; its command
// line goes from /proc before its descriptors are closed.
func (m *Mount) reaped() bool {
	if m.exited == nil {
		return true
	}
	select {
	case <-m.exited:
		return true
	default:
		return false
	}
}

// Abort aborts m's FUSE connection through fusectl: every request the
// daemon has not answered, and every later one, fails with ENOTCONN. It
// is the only way to free a process blocked on a daemon that stopped
// answering; even the test binary's own timeout cannot end such a process.
// A Foreground program is first sent SIGQUIT, so that a Go program's
// goroutines, where they are stuck, reach Log before it exits. fusectl is
// mounted at /sys/fs/fuse/connections if it is not yet (systemd mounts
// it at boot; other machines may not).
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
	if m.proc != nil && !m.reaped() {
		m.proc.Signal(syscall.SIGQUIT)
		select {
		case <-m.exited:
		case <-time.After(5 * time.Second):
		}
	}
	const connections = "/sys/fs/fuse/connections"
	if ents, err := os.ReadDir(connections); err == nil && len(ents) == 0 {
		// Empty: fusectl is not mounted (a live FUSE mount has an entry).
		if err := syscall.Mount("fusectl", connections, "fusectl", 0, ""); err != nil {
			return fmt.Errorf("mounting fusectl on %s: %w", connections, err)
		}
	}
	err = os.WriteFile(filepath.Join(connections, minor, "abort"), []byte("1"), 0)
	if errors.Is(err, os.ErrNotExist) && m.reaped() {
		// The program's exit has already ended the connection.
		return nil
	}
	return err
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
