package overlay

import (
	"log"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/inodes"
	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestRequestHistogram(t *testing.T) {
	var s requestStats
	for _, d := range []time.Duration{500 * time.Nanosecond, 3 * time.Microsecond, 3 * time.Microsecond, 3 * time.Microsecond, 100 * time.Microsecond, time.Hour} {
		s.record(opLookup, d, false)
	}
	s.record(opRead, time.Millisecond, true)
	s.record(4096, time.Microsecond, false) // CUSE_INIT: no slot of its own
	got := s.snapshot()
	if len(got) != 3 {
		t.Fatalf("snapshot %+v, want 3 opcodes", got)
	}
	l := got[0]
	if l.Op != "LOOKUP" || l.Count != 6 || l.Errors != 0 || l.Time != time.Hour+109500*time.Nanosecond {
		t.Errorf("LOOKUP %+v, want 6 requests taking 1h0m0.0001095s", l)
	}
	want := []Bucket{{UnderUS: 1, Count: 1}, {UnderUS: 4, Count: 3}, {UnderUS: 128, Count: 1}, {Count: 1}}
	if len(l.Histogram) != len(want) {
		t.Fatalf("LOOKUP histogram %+v, want %+v", l.Histogram, want)
	}
	for i := range want {
		if l.Histogram[i] != want[i] {
			t.Errorf("LOOKUP histogram %+v, want %+v", l.Histogram, want)
		}
	}
	for q, want := range map[float64]time.Duration{0.1: time.Microsecond, 0.5: 4 * time.Microsecond, 0.8: 128 * time.Microsecond, 0.99: 0} {
		if got := l.Quantile(q); got != want {
			t.Errorf("LOOKUP quantile %v = %v, want %v", q, got, want)
		}
	}
	if got[1].Op != "READ" && got[2].Op != "READ" {
		t.Errorf("no READ in %+v", got)
	}
	for _, r := range got[1:] {
		switch {
		case r.Op == "READ" && (r.Count != 1 || r.Errors != 1 || r.Mean() != time.Millisecond):
			t.Errorf("READ %+v, want one error taking 1ms", r)
		case r.Op == "other" && r.Count != 1:
			t.Errorf("other %+v, want one", r)
		case r.Op != "READ" && r.Op != "other":
			t.Errorf("unexpected %+v", r)
		}
	}
}

func TestProtocolVersion(t *testing.T) {
	v := ProtocolVersion()
	if !regexp.MustCompile(`^7\.(1[2-9]|[2-9][0-9])$`).MatchString(v) {
		t.Errorf("ProtocolVersion() = %q, want 7.N with N at least 12", v)
	}
}

// TestEngineStats checks the engine's counters: lookups and lookups of
// a held node, held directory fds, copy-ups and their bytes, open
// handles and nodes.
func TestEngineStats(t *testing.T) {
	lower := t.TempDir()
	testenv.MakeTree(t, lower, "f d/f 12345")
	fs, _, _ := openRW(t, lower, Options{Timeout: time.Second})
	d, err := fs.Lookup(inodes.RootID, "d")
	testenv.Must(t, err)
	if _, err := fs.Lookup(inodes.RootID, "d"); err != nil {
		t.Fatal(err)
	}
	f, err := fs.Lookup(d.ID, "f")
	testenv.Must(t, err)
	h, err := fs.Open(f.ID, unix.O_WRONLY, nil)
	testenv.Must(t, err)
	s := fs.Stats()
	if s.Lookups != 3 || s.LookupsHeld != 1 {
		t.Errorf("lookups %d, of a held node %d; want 3 and 1", s.Lookups, s.LookupsHeld)
	}
	// d and d/f, 5 bytes.
	if s.CopyUps != 2 || s.CopyUpBytes != 5 {
		t.Errorf("copy-ups %d of %d bytes, want 2 of 5", s.CopyUps, s.CopyUpBytes)
	}
	if s.OpenHandles != 1 || s.Nodes != 3 {
		t.Errorf("open handles %d, nodes %d; want 1 and 3", s.OpenHandles, s.Nodes)
	}
	if s.DirFdsHeld == 0 || s.DirFdOpens == 0 || s.DirFdUses <= s.DirFdOpens {
		t.Errorf("directory fds held %d, opened %d, used %d: want some held, and used more than opened", s.DirFdsHeld, s.DirFdOpens, s.DirFdUses)
	}
	fs.Release(h.Handle)
	if n := fs.Stats().OpenHandles; n != 0 {
		t.Errorf("open handles after release: %d", n)
	}
}

// TestTrace checks -d's trace: a line per request with the operation,
// node, path, name, result and time; none for FLUSH, which the kernel
// sends once and the daemon declines, nor for FORGET; and that the
// connection counts every request, FLUSH included.
func TestTrace(t *testing.T) {
	testenv.RequireMount(t)
	lower := t.TempDir()
	testenv.Must(t, os.WriteFile(filepath.Join(lower, "f"), []byte("1234"), 0o644))
	fsys, _, base := openRW(t, lower, Options{Timeout: time.Hour})
	mnt := filepath.Join(base, "mnt")
	testenv.Must(t, os.Mkdir(mnt, 0o755))
	var trace testenv.Buffer
	conn, err := fsys.Mount(mnt, MountConfig{
		Source: "ovlmount-test", Workers: 4, Fd: -1,
		ErrorLog: log.New(os.Stderr, "ovlmount: ", 0),
		Trace:    log.New(&trace, "", 0),
	})
	testenv.Must(t, err)
	ended := false
	t.Cleanup(func() {
		if !ended {
			testenv.Unmount(t, mnt)
			conn.Wait()
		}
	})
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(mnt, "missing"), &st); err != unix.ENOENT {
		t.Fatalf("stat missing: %v, want ENOENT", err)
	}
	fd, err := unix.Open(filepath.Join(mnt, "f"), unix.O_WRONLY|unix.O_APPEND, 0)
	testenv.Must(t, err)
	_, err = unix.Write(fd, []byte("5"))
	testenv.Must(t, err)
	testenv.Must(t, unix.Close(fd))
	testenv.Must(t, unix.Mkdir(filepath.Join(mnt, "d"), 0o755))
	testenv.Must(t, unix.Rename(filepath.Join(mnt, "d"), filepath.Join(mnt, "e")))
	s := conn.Stats()
	testenv.Unmount(t, mnt)
	conn.Wait()
	ended = true

	lines := strings.Split(strings.TrimSuffix(trace.String(), "\n"), "\n")
	line := regexp.MustCompile(`^[A-Z0-9_]+( .*)?: [A-Z].*, [0-9.]+(ns|µs|ms|s)$`)
	for _, l := range lines {
		if !line.MatchString(l) {
			t.Errorf("trace line %q is not OPERATION ...: RESULT, TIME", l)
		}
		for _, op := range []string{"FLUSH", "FORGET", "BATCH_FORGET", "OPENDIR", "INTERRUPT"} {
			if strings.HasPrefix(l, op+" ") || strings.HasPrefix(l, op+":") {
				t.Errorf("trace line for a request declined on purpose or unanswered: %q", l)
			}
		}
	}
	all := strings.Join(lines, "\n")
	for _, want := range []string{
		`(?m)^INIT: OK, FUSE protocol 7\.\d+ \(the kernel's 7\.\d+\), `,
		`(?m)^LOOKUP node 1 "/" name "missing": ENOENT, `,
		`(?m)^LOOKUP node 1 "/" name "f": OK node (\d+), `,
		`(?m)^OPEN node \d+ "/f" flags 0\d+: OK fh \d+, `,
		`(?m)^WRITE node \d+ "/f" fh \d+, 1 bytes at 4: OK, 1 bytes, `,
		`(?m)^RELEASE node \d+ "/f" fh \d+: OK, `,
		`(?m)^MKDIR node 1 "/" name "d": OK node \d+, `,
		`(?m)^RENAME node 1 "/" name "d" to node 1 "/" name "e": OK, `,
	} {
		if !regexp.MustCompile(want).MatchString(all) {
			t.Errorf("no trace line matching %s in:\n%s", want, all)
		}
	}

	counts := map[string]RequestStats{}
	for _, r := range s.Requests {
		counts[r.Op] = r
	}
	if counts["FLUSH"].Count == 0 || counts["FLUSH"].Errors != counts["FLUSH"].Count {
		t.Errorf("FLUSH counted %+v, want at least one, declined", counts["FLUSH"])
	}
	if counts["LOOKUP"].Count < 3 || counts["WRITE"].Count != 1 || counts["INIT"].Count != 1 {
		t.Errorf("requests counted %+v, want LOOKUP at least 3, WRITE and INIT once", s.Requests)
	}
	minor := func(v string) int {
		n, err := strconv.Atoi(strings.TrimPrefix(v, "7."))
		if err != nil || !strings.HasPrefix(v, "7.") {
			t.Errorf("protocol version %q, want 7.N", v)
		}
		return n
	}
	if want := min(minor(ProtocolVersion()), minor(s.KernelProtocol)); minor(s.Protocol) != want {
		t.Errorf("negotiated protocol %s, want 7.%d: the lower of ours, %s, and the kernel's, %s", s.Protocol, want, ProtocolVersion(), s.KernelProtocol)
	}
	if s.LookupsNegative == 0 || s.CopyUps != 1 || s.CopyUpBytes != 4 {
		t.Errorf("negative lookups %d, copy-ups %d of %d bytes; want some, 1 of 4", s.LookupsNegative, s.CopyUps, s.CopyUpBytes)
	}
}

// BenchmarkRequestCount is what counting costs a request: two clock
// reads and the histogram's and the total's adds (serveCounted).
func BenchmarkRequestCount(b *testing.B) {
	var s requestStats
	for b.Loop() {
		start := time.Since(clockBase)
		s.record(opLookup, time.Since(clockBase)-start, false)
	}
}
