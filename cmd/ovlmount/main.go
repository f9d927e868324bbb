// Command ovlmount mounts an overlay of directories through FUSE, like
// kernel overlayfs, with the command line of fuse-overlayfs:
//
//	ovlmount [-f] [-d] [-o lowerdir=L1:L2,upperdir=U,workdir=W,...] [SOURCE] MOUNTPOINT
//
// Without -f or -d it runs as a daemon and exits 0 once the mount is live.
// ovlmount stats [--json] MOUNTPOINT prints a running mount's counters;
// ovlmount check [--repair] -o lowerdir=...,upperdir=...,workdir=... checks
// a stack that is not mounted.
package main

import (
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ovlmount/ovlmount/copyup"
	"github.com/ovlmount/ovlmount/internal/mountinfo"
	"github.com/ovlmount/ovlmount/layers"
	"github.com/ovlmount/ovlmount/overlay"
	"golang.org/x/sys/unix"
)

// readaheadKB is the mount's readahead: FUSE takes the lower of the
// daemon's maximum and the bdi default, 128 KiB, so a sequential read
// came in 128 KiB requests; ones of the largest read the daemon takes
// (1 MiB less a page, overlay.Mount) need an eighth of the round trips.
const readaheadKB = "1020"

// setReadahead raises the readahead of the FUSE mount m.
func setReadahead(m mountinfo.Mount) {
	os.WriteFile("/sys/class/bdi/"+m.Dev+"/read_ahead_kb", []byte(readaheadKB), 0)
}

// checkMount finds the FUSE mount just made at mountpoint and checks
// that the kernel checks permissions on it: ovlmount checks none itself,
// so a mount without default_permissions must not be served. The mount
// comes from /proc/self/mountinfo: a stat of the mountpoint would be a
// request to this very daemon, and a daemon killed meanwhile could never
// finish exiting, waiting for its own answer. ok is false for a
// mountpoint that is not the mount itself (mount.fuse3's /dev/fd/N,
// checked by its options instead).
func checkMount(mountpoint string) (m mountinfo.Mount, ok bool, err error) {
	if strings.HasPrefix(mountpoint, "/dev/fd/") {
		return m, false, nil
	}
	m, ok = mountinfo.At(mountpoint)
	if !ok || !strings.HasPrefix(m.Type, "fuse") {
		return m, false, fmt.Errorf("mount %s: not in /proc/self/mountinfo after mounting", mountpoint)
	}
	if !m.Has("default_permissions") {
		return m, false, fmt.Errorf("mount %s: the kernel does not check permissions on it (no default_permissions); refusing to serve it", mountpoint)
	}
	return m, true, nil
}

// workers is how many requests are served at once: enough that a few
// slow host calls do not stall the rest (libfuse's default pool is 10).
const workers = 16

func main() {
	os.Exit(run(os.Args[1:]))
}

func fail(format string, a ...any) int {
	logError(format, a...)
	return 1
}

func run(args []string) int {
	if isStatsCommand(args) {
		return statsCommand(args[1:])
	}
	if isCheckCommand(args) {
		return checkCommand(args[1:])
	}
	c, err := parseArgs(args)
	if !isDaemonChild() {
		// Before any error: an unknown option may be why there is one.
		for _, w := range c.warnings {
			fmt.Fprintf(os.Stderr, "ovlmount: warning: %s\n", w)
		}
	}
	if err != nil {
		return fail("%v", err)
	}
	if c.help {
		usage(os.Stdout)
		return 0
	}
	if c.version {
		fmt.Print(versionText())
		return 0
	}
	known := len(c.warnings)
	if err := c.validate(); err != nil {
		return fail("%v", err)
	}
	if !isDaemonChild() {
		// What validate found the layers allow.
		for _, w := range c.warnings[known:] {
			fmt.Fprintf(os.Stderr, "ovlmount: warning: %s\n", w)
		}
	}
	if !isDaemonChild() && !c.foreground {
		return daemonize(c.mountpoint)
	}
	startLogging(c.mountpoint, isDaemonChild())
	if isDaemonChild() {
		// Said on stderr already; the log keeps what the mount ignores.
		for _, w := range c.warnings {
			logWarning("%s", w)
		}
	}
	return serve(c, childReady)
}

// serve mounts the overlay described by c, calls ready with the outcome
// once the mount is live (or failed), and serves until unmounted.
func serve(c *config, ready func(error)) int {
	// The kernel applies the caller's umask before a request reaches the
	// daemon; the daemon's own would strip bits again and cost a chmod.
	unix.Umask(0)
	fs, stack, err := open(c)
	if err != nil {
		ready(err)
		return fail("%v", err)
	}
	defer func() {
		for _, l := range stack {
			l.Close()
		}
	}()
	source := c.source
	if source == "" {
		source = "ovlmount"
	}
	errLog := log.New(errorLog{}, "", 0)
	cfg := overlay.MountConfig{
		Source:     source,
		AllowOther: c.allowOther || os.Geteuid() == 0,
		MaxWrite:   int(c.maxWrite),
		Workers:    workers,
		Fd:         -1,
		ErrorLog:   errLog,
	}
	if n, ok := devFd(c.mountpoint); ok {
		cfg.Fd = n
	}
	if c.readOnly || c.upper == "" {
		cfg.Flags = append(cfg.Flags, "ro")
	}
	if os.Geteuid() == 0 {
		// As fuse-overlayfs does for root: setuid programs in a
		// container's layers must keep working, and device nodes in the
		// layers (a container's /dev/null) open as on a kernel overlay
		// mount, which mount.fuse3 asks for too. The options given
		// come after, and may say otherwise.
		cfg.Flags = append(cfg.Flags, "suid", "dev")
	}
	if !slices.Contains(c.mountFlags, "atime") {
		cfg.Flags = append(cfg.Flags, "noatime")
	}
	cfg.Flags = append(cfg.Flags, c.mountFlags...)
	if c.debug {
		// What is mounted, once; then a line a request.
		cfg.Trace = log.New(debugLog{}, "", 0)
		logDebug(c.describe())
		logDebug([]string{fmt.Sprintf("mount flags: %s; allow_other: %v", strings.Join(cfg.Flags, ","), cfg.AllowOther)})
		logDebug(fs.Describe())
	}
	// Caught before the mount is live: a SIGTERM as soon as it is (the
	// caller saw the command succeed) must unmount, not end the daemon
	// and leave a dead mount behind.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	// SIGUSR1 too, whose default would end the daemon: it logs the
	// stats once the mount is live.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	conn, err := fs.Mount(c.mountpoint, cfg)
	if err != nil {
		err = fmt.Errorf("mount %s: %v", c.mountpoint, err)
		ready(err)
		return fail("%v", err)
	}
	start := time.Now()
	stats := func() statsReport { return report(c.mountpoint, conn, start) }
	if m, ok, err := checkMount(c.mountpoint); err != nil {
		unmount(c.mountpoint)
		ready(err)
		return fail("%v", err)
	} else if ok {
		setReadahead(m)
		// Before the mount is reported live: ovlmount stats may
		// follow at once.
		if s, err := serveStats(m.Dev, stats); err != nil {
			logWarning("%v", err)
		} else {
			defer s.close()
		}
	}
	go func() {
		for range usr1 {
			logStats(stats().lines())
		}
	}()
	tuneGC()
	ready(nil)
	if p := os.Getenv("OVLMOUNT_CPUPROFILE"); p != "" {
		// For profiling: a CPU profile of the daemon until unmount.
		if f, err := os.Create(p); err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	if p := os.Getenv("OVLMOUNT_MEMPROFILE"); p != "" {
		// For profiling: the daemon's allocations until unmount.
		defer func() {
			if f, err := os.Create(p); err == nil {
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}

	go func() {
		<-sig
		unmount(c.mountpoint)
	}()
	conn.Wait()
	return 0
}

// devFd returns N for a mountpoint /dev/fd/N: a FUSE connection that
// mount.fuse3 mounted (drop_privileges).
func devFd(mountpoint string) (int, bool) {
	s, ok := strings.CutPrefix(mountpoint, "/dev/fd/")
	if !ok {
		return -1, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0
}

// open opens the layers of c, upper first, and builds the merged view.
func open(c *config) (*overlay.FS, []*layers.Layer, error) {
	var stack []*layers.Layer
	fail := func(err error) (*overlay.FS, []*layers.Layer, error) {
		for _, l := range stack {
			l.Close()
		}
		return nil, nil, err
	}
	if c.upper != "" {
		if err := claimLayers(c); err != nil {
			return fail(err)
		}
		l, err := layers.Open(c.upper, 0, true)
		if err != nil {
			return fail(fmt.Errorf("upperdir %v", err))
		}
		stack = append(stack, l)
	}
	for i, p := range append(c.lower, c.data...) {
		l, err := layers.Open(p, len(stack), false)
		if err != nil {
			return fail(fmt.Errorf("lowerdir %v", err))
		}
		l.DataOnly = i >= len(c.lower)
		stack = append(stack, l)
	}
	opts := overlay.Options{
		Timeout:          c.timeout,
		XinoOff:          c.xinoOff,
		XinoOn:           c.xinoOn,
		Ino32:            c.ino32,
		StaticNlink:      c.staticNlink,
		ACL:              !c.noACL,
		UserXattr:        c.userXattr,
		Passthrough:      !c.noPassthru,
		NoFsync:          c.noFsync,
		XattrPermissions: c.xattrPerm,
		Redirects:        c.redirects(),
		Metacopy:         c.metacopy == "on",
		UUID:             c.uuid,
		Verity:           c.verity,
	}
	opts.UIDs, opts.GIDs = c.idMaps()
	if c.index {
		opts.Index = c.work
	}
	if c.upper != "" {
		// workdir/work holds the temporaries of atomic changes; like the
		// kernel, create it and empty it of an interrupted session's.
		w, err := copyup.Open(c.work)
		if err != nil {
			return fail(fmt.Errorf("workdir %s: %v", c.work, err))
		}
		opts.Work = w
	}
	fs, err := overlay.New(stack, opts)
	if err != nil {
		if opts.Work != nil {
			opts.Work.Close()
		}
		return fail(err)
	}
	return fs, stack, nil
}

// unmount ends the mount at mnt: directly as root, through fusermount3
// otherwise; lazily if it is busy.
func unmount(mnt string) {
	if err := overlay.Unmount(mnt); err != nil {
		logError("unmount %s: %v", mnt, err)
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: ovlmount [-f] [-d] [-o OPT[,OPT...]] [SOURCE] MOUNTPOINT
       ovlmount stats [--json] MOUNTPOINT
       ovlmount check [--repair] -o lowerdir=...[,upperdir=...,workdir=...]

Mounts at MOUNTPOINT the merged view of lower layers and an optional upper
layer, like kernel overlayfs, through FUSE. Without -f or -d, ovlmount runs
as a daemon and exits 0 once the mount is live. Unmount with umount or
fusermount3 -u; SIGTERM and SIGINT unmount too.

ovlmount stats prints the counters of a running mount (requests and their
latency, lookups, copy-ups, open files, memory); SIGUSR1 logs them.

ovlmount check checks a stack that is not mounted, as the kernel would read
it, and with --repair fixes what is safe to fix; ovlmount check --help says
more.

  -f             stay in the foreground
  -d             debug: log a line per request to stderr, stay in the
                 foreground
  -o OPTS        comma-separated options (below)
  -h, --help     this text
  -V, --version  the version

Options:
`)
	groups := []struct {
		s     status
		title string
	}{{done, "implemented"}, {ignored, "accepted and ignored (a warning says so)"}, {later, "not implemented yet (refused)"}}
	for _, g := range groups {
		fmt.Fprintf(w, "\n %s:\n", g.title)
		var rows []string
		for _, o := range options {
			if o.status == g.s {
				rows = append(rows, helpRow(o))
			}
		}
		sort.Strings(rows)
		fmt.Fprintln(w, strings.Join(rows, "\n"))
	}
	fmt.Fprint(w, "\nUnknown options are ignored with a warning, as fuse-overlayfs does; one a\n"+
		"letter or two from a known option is refused as a typo.\n")
}
