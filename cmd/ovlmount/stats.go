package main

// Stats on demand. A running mount answers `ovlmount stats MOUNTPOINT`
// through a unix socket, and logs the same lines on SIGUSR1.
//
// The socket is named by the mount's device number (MAJ:MIN in
// /proc/self/mountinfo), which no two live mounts share, so the command
// finds it without touching the mount (a stat of a hung mount would hang)
// and a daemon that finds a socket of its name left by one that crashed
// replaces it. It lives in a directory only its owner may enter (0700):
// /run/ovlmount for root; otherwise $XDG_RUNTIME_DIR/ovlmount, or
// /tmp/ovlmount-UID without one (UID as the host sees it, for a daemon in
// a user namespace), a directory the daemon refuses to use unless it owns
// it. Only the mount's owner and root read its stats, as for its log. The
// daemon removes the socket when it ends; one that is killed leaves it,
// and the next mount of that number replaces it, or the next daemon to
// start in that directory removes it.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ovlmount/ovlmount/internal/mountinfo"
	"github.com/ovlmount/ovlmount/overlay"
	"golang.org/x/sys/unix"
)

// statsReport is what a daemon answers: its mount's counters and the
// process's.
type statsReport struct {
	Mountpoint string  `json:"mountpoint"`
	PID        int     `json:"pid"`
	Uptime     float64 `json:"uptime_seconds"`
	RSS        uint64  `json:"rss_bytes"` // resident memory
	Fds        int     `json:"fds"`       // open file descriptors
	overlay.Stats
}

// report returns the report of the mount at mnt served by conn since
// start.
func report(mnt string, conn *overlay.Conn, start time.Time) statsReport {
	r := statsReport{Mountpoint: mnt, PID: os.Getpid(), Uptime: time.Since(start).Seconds(), RSS: rss(), Stats: conn.Stats()}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		r.Fds = len(fds) - 1 // the directory's own fd
	}
	return r
}

// rss returns the process's resident memory, from /proc/self/status.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// lines formats r but its mountpoint as text, one counter a line,
// "name: value"; a request
// type's line holds its count, errors, total and mean time, and the
// bounds of its latency percentiles (from a histogram of powers of two).
func (r statsReport) lines() []string {
	var total uint64
	for _, q := range r.Requests {
		total += q.Count
	}
	out := []string{
		fmt.Sprintf("pid: %d", r.PID),
		fmt.Sprintf("uptime: %v", time.Duration(r.Uptime*float64(time.Second)).Round(time.Second)),
		"fuse_protocol: " + r.Protocol,
		"kernel_fuse_protocol: " + r.KernelProtocol,
		fmt.Sprintf("requests: %d", total),
	}
	for _, q := range r.Requests {
		out = append(out, fmt.Sprintf("request %s: %d, errors %d, total %v, mean %v, p50 %s, p90 %s, p99 %s",
			q.Op, q.Count, q.Errors, q.Time.Round(time.Microsecond), q.Mean().Round(100*time.Nanosecond),
			under(q.Quantile(0.5)), under(q.Quantile(0.9)), under(q.Quantile(0.99))))
	}
	for _, c := range []struct {
		name string
		v    any
	}{
		{"lookups", r.Lookups},
		{"lookups_held", r.LookupsHeld},
		{"lookups_negative", r.LookupsNegative},
		{"dir_fds_held", r.DirFdsHeld},
		{"dir_fd_uses", r.DirFdUses},
		{"dir_fd_opens", r.DirFdOpens},
		{"copy_ups", r.CopyUps},
		{"copy_up_bytes", r.CopyUpBytes},
		{"open_handles", r.OpenHandles},
		{"passthrough_backings", r.Backings},
		{"spliced_reads", r.SplicedReads},
		{"nodes", r.Nodes},
		{"fds", r.Fds},
		{"rss_bytes", r.RSS},
	} {
		out = append(out, fmt.Sprintf("%s: %v", c.name, c.v))
	}
	return out
}

// under formats a percentile's bucket bound (overlay.RequestStats.Quantile).
func under(d time.Duration) string {
	if d == 0 {
		return "slower than any bucket"
	}
	return "<" + d.String()
}

// statsSocketName is the socket's name for the mount of device dev
// ("MAJ:MIN").
func statsSocketName(dev string) string { return dev + ".sock" }

// statsDirs returns the directories a daemon may keep its socket in, best
// first.
func statsDirs() []string {
	var dirs []string
	if os.Geteuid() == 0 {
		dirs = append(dirs, "/run/ovlmount")
	}
	if x := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(x) {
		dirs = append(dirs, filepath.Join(x, "ovlmount"))
	}
	return append(dirs, fmt.Sprintf("/tmp/ovlmount-%d", hostUID()))
}

// hostUID returns the effective uid as the initial user namespace sees
// it, from /proc/self/uid_map: a rootless daemon is root in a user
// namespace of its own, and the command may run outside it.
func hostUID() int {
	euid := os.Geteuid()
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return euid
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 {
			continue
		}
		in, err1 := strconv.Atoi(f[0])
		host, err2 := strconv.Atoi(f[1])
		n, err3 := strconv.Atoi(f[2])
		if err1 == nil && err2 == nil && err3 == nil && euid >= in && euid-in < n {
			return host + euid - in
		}
	}
	return euid
}

// ownDir makes directory dir for the daemon's socket, or checks the one
// there: a directory, not a symlink, owned by the daemon, entered by no
// one else.
func ownDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s: not a directory of uid %d", dir, os.Geteuid())
	}
	if st.Mode&0o077 != 0 {
		return os.Chmod(dir, 0o700)
	}
	return nil
}

// statsServer answers ovlmount stats for one mount.
type statsServer struct {
	ln   *net.UnixListener
	path string
	ino  uint64 // the socket's, so that close removes its own only
}

// serveStats starts answering ovlmount stats for the mount of device dev
// with what report returns.
func serveStats(dev string, report func() statsReport) (*statsServer, error) {
	var errs []error
	for _, dir := range statsDirs() {
		if err := ownDir(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		sweep(dir)
		s, err := listenStats(filepath.Join(dir, statsSocketName(dev)))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		go s.answer(report)
		return s, nil
	}
	return nil, fmt.Errorf("no socket for ovlmount stats: %w", errors.Join(errs...))
}

// sweep removes from dir the sockets that daemons killed left: nothing
// listens on them. One made in the last minute is left alone, since a
// live daemon's refuses connections too between its bind and its listen.
func sweep(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || fi.Mode().Type() != os.ModeSocket || !strings.HasSuffix(e.Name(), ".sock") || time.Since(fi.ModTime()) < time.Minute {
			continue
		}
		p := filepath.Join(dir, e.Name())
		c, err := net.Dial("unix", p)
		if err == nil {
			c.Close()
		} else if errors.Is(err, unix.ECONNREFUSED) {
			os.Remove(p)
		}
	}
}

// listenStats listens on socket path, replacing what is there: a socket
// of the same device number is one a mount gone before left.
func listenStats(path string) (*statsServer, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	var st unix.Stat_t
	// The daemon's umask is 0; the directory keeps others out already.
	if err = unix.Chmod(path, 0o600); err == nil {
		err = unix.Lstat(path, &st)
	}
	if err != nil {
		ln.Close()
		os.Remove(path)
		return nil, err
	}
	return &statsServer{ln: ln, path: path, ino: st.Ino}, nil
}

// answer writes the report, as JSON, to each connection, until the
// listener is closed. One at a time: a report takes microseconds, and a
// reader that does not read is cut off.
func (s *statsServer) answer(report func() statsReport) {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of fds, say: wait rather than spin.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		json.NewEncoder(c).Encode(report())
		c.Close()
	}
}

// close stops answering and removes the socket, unless another daemon
// (a new mount of the same device number) has replaced it meanwhile.
func (s *statsServer) close() {
	s.ln.Close()
	var st unix.Stat_t
	if unix.Lstat(s.path, &st) == nil && st.Ino == s.ino {
		os.Remove(s.path)
	}
}

// statsUsage is the stats command's usage.
const statsUsage = "usage: ovlmount stats [--json] MOUNTPOINT"

// isStatsCommand reports whether args are the stats command's: "stats"
// and no mount options. A mount needs -o lowerdir=, so a mount whose
// source is called stats is never taken for it.
func isStatsCommand(args []string) bool {
	if len(args) == 0 || args[0] != "stats" {
		return false
	}
	for _, a := range args[1:] {
		if strings.HasPrefix(a, "-o") || a == "-f" || a == "-d" {
			return false
		}
	}
	return true
}

// statsCommand runs ovlmount stats ARGS: it prints the counters of the
// mount at MOUNTPOINT, as text or, with --json, as its daemon sent them.
func statsCommand(args []string) int {
	asJSON := false
	var pos []string
	for _, a := range args {
		switch {
		case a == "--json":
			asJSON = true
		case a == "-h" || a == "--help":
			fmt.Println(statsUsage)
			return 0
		case strings.HasPrefix(a, "-") && a != "-":
			return fail("stats: unknown flag %q\n%s", a, statsUsage)
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 1 {
		return fail("%s", statsUsage)
	}
	mnt, err := mountinfo.Path(pos[0])
	if err != nil {
		return fail("stats: %v", err)
	}
	m, ok := mountinfo.At(mnt)
	if !ok || m.Type != "fuse.ovlmount" {
		return fail("stats: %s: not an ovlmount mount", mnt)
	}
	b, err := fetchStats(m.Dev)
	if err != nil {
		return fail("stats: %s: %v", mnt, err)
	}
	if asJSON {
		os.Stdout.Write(b)
		return 0
	}
	var r statsReport
	if err := json.Unmarshal(b, &r); err != nil {
		return fail("stats: %s: the daemon's answer: %v", mnt, err)
	}
	fmt.Printf("mountpoint: %s\n%s\n", r.Mountpoint, strings.Join(r.lines(), "\n"))
	return 0
}

// statsCandidate is where a daemon's socket may be: a directory, and the
// uid that must own it for its answer to be trusted.
type statsCandidate struct {
	dir   string
	owner int
}

// statsCandidates returns where the socket of a mount may be, from this
// command's side: where a daemon of this user would put it, and, for
// root, where any user's daemon would.
func statsCandidates() []statsCandidate {
	euid := os.Geteuid()
	c := []statsCandidate{{"/run/ovlmount", 0}}
	if x := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(x) {
		c = append(c, statsCandidate{filepath.Join(x, "ovlmount"), euid})
	}
	c = append(c, statsCandidate{fmt.Sprintf("/tmp/ovlmount-%d", hostUID()), euid})
	if euid != 0 {
		return c
	}
	for _, pattern := range []string{"/run/user/*/ovlmount", "/tmp/ovlmount-*"} {
		dirs, _ := filepath.Glob(pattern)
		for _, d := range dirs {
			uid := strings.TrimPrefix(filepath.Base(d), "ovlmount-")
			if filepath.Base(d) == "ovlmount" {
				uid = filepath.Base(filepath.Dir(d))
			}
			if n, err := strconv.Atoi(uid); err == nil {
				c = append(c, statsCandidate{d, n})
			}
		}
	}
	return c
}

// fetchStats returns the answer of the daemon of the mount of device
// dev.
func fetchStats(dev string) ([]byte, error) {
	var looked []string
	for _, c := range statsCandidates() {
		var st unix.Stat_t
		if unix.Lstat(c.dir, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != c.owner {
			continue
		}
		path := filepath.Join(c.dir, statsSocketName(dev))
		looked = append(looked, path)
		if err := unix.Lstat(path, &st); err == unix.EACCES {
			return nil, fmt.Errorf("%s: %v (a mount's stats are its owner's and root's)", path, err)
		} else if err != nil {
			continue
		}
		conn, err := net.DialTimeout("unix", path, 5*time.Second)
		if err != nil {
			return nil, fmt.Errorf("no daemon answers at %s: %v", path, err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		return io.ReadAll(conn)
	}
	if len(looked) == 0 {
		return nil, errors.New("no directory of stats sockets found")
	}
	return nil, fmt.Errorf("no stats socket (looked for %s)", strings.Join(looked, ", "))
}
