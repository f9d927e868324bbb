package stress

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ovlmount/ovlmount/conformance"
	"golang.org/x/sys/unix"
)

// Divergence is one way the subject differed from the oracle, or one
// failure of the run itself (Stage "error", "hang").
type Divergence struct {
	Stage  string
	Worker int // -1 when not one worker's
	Step   int // index in the worker's sequence; -1 after the operations
	Kind   string
	// Ops holds, for a step that diverged, each of its operations with
	// both sides' results.
	Ops     []OpResult `json:",omitempty"`
	Details []string   `json:",omitempty"`
}

// Stages of a Divergence.
const (
	stageOp      = "op"  // an operation's result
	stageIno     = "ino" // st_ino identities
	stageMerged  = "merged tree"
	stageDino    = "d_ino vs st_ino"
	stageUpper   = "upper layer"
	stageOracle  = "oracle after remount"
	stageSubject = "subject after remount"
	stageOnSubj  = "oracle on the subject's upper layer"
	stageOnOrac  = "subject on the oracle's upper layer"
	stageLog     = "program output"
	stageHang    = "hang"
	stageError   = "error"
)

// OpResult is one operation of a step and what each side returned.
type OpResult struct {
	Op      string
	Kind    conformance.OpKind
	Oracle  string
	Subject string
}

func (d *Divergence) String() string {
	var b strings.Builder
	where := "after the operations"
	if d.Step >= 0 {
		where = fmt.Sprintf("worker %d, step %d (%s)", d.Worker, d.Step, d.Kind)
	}
	fmt.Fprintf(&b, "%s: %s", d.Stage, where)
	// A long step (a scan) shows only what differed.
	same := 0
	for _, o := range d.Ops {
		mark := "  "
		if o.Oracle != o.Subject {
			mark = "≠ "
		} else if len(d.Ops) > 12 {
			same++
			continue
		}
		fmt.Fprintf(&b, "\n  %s%s\n      oracle:  %s\n      subject: %s", mark, o.Op, o.Oracle, o.Subject)
	}
	if same > 0 {
		fmt.Fprintf(&b, "\n  (and %d operations with the same results)", same)
	}
	for _, s := range d.Details {
		fmt.Fprintf(&b, "\n  %s", s)
	}
	return b.String()
}

// Signature is what shrinking keeps fixed: the stage, and the kind of the
// first operation that differed, the first field of a tree difference, or
// the error.
func (d *Divergence) Signature() string {
	key := ""
	for _, o := range d.Ops {
		if o.Oracle != o.Subject {
			key = string(o.Kind)
			break
		}
	}
	if key == "" && len(d.Details) > 0 {
		parts := strings.Split(d.Details[0], ": ")
		switch d.Stage {
		case stageLog:
			key = "output"
		case stageError, stageHang:
			// "walking DIR: open PATH: is a directory": the error itself.
			key = parts[len(parts)-1]
		default:
			// "path: field: ...": the field.
			key = parts[min(1, len(parts)-1)]
		}
	}
	return d.Stage + ": " + key
}

// mountSide is one side's mount as a worker uses it.
type mountSide struct {
	dir string
	fd  int // O_PATH descriptor of dir, for lstat
}

// runner performs steps on both mounts and compares them, for one worker.
type runner struct {
	pool      Pool
	sides     [2]mountSide // oracle, subject
	lowerInos map[uint64]bool
	ops       int64 // operations performed on each side
}

func newRunner(pool Pool, oracle, subject string, lowerInos map[uint64]bool) (*runner, error) {
	r := &runner{pool: pool, lowerInos: lowerInos}
	for i, dir := range []string{oracle, subject} {
		fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			r.close()
			return nil, &os.PathError{Op: "open", Path: dir, Err: err}
		}
		r.sides[i] = mountSide{dir: dir, fd: fd}
	}
	return r, nil
}

func (r *runner) close() {
	for _, s := range r.sides {
		if s.fd > 0 {
			unix.Close(s.fd)
		}
	}
}

// StepRecord is a step and both sides' results, for transcripts.
type StepRecord struct {
	Step    Step
	Results []OpResult
}

// step performs s (the i-th of the worker's sequence) on the oracle, then
// on the subject, and compares results and inode identities.
func (r *runner) step(i int, s Step) (StepRecord, *Divergence) {
	paths := namedPaths(s)
	stable := !slices.ContainsFunc(s.Ops, changesNames)
	var before map[string]inoObs
	if stable {
		before = r.observe(paths)
	}
	var res [2][]conformance.Result
	for side := range 2 {
		out, err := conformance.RunOps(r.sides[side].dir, s.Ops, nil)
		if err != nil {
			// The oracle's failing is the harness's; the subject's (its
			// mount gone, say) is a divergence like any other.
			out = make([]conformance.Result, len(s.Ops))
			for j := range out {
				out[j] = conformance.Result{Err: "run: " + err.Error()}
			}
		}
		for j, o := range s.Ops {
			if o.Kind == conformance.OpReaddir && o.Path == sharedDir {
				out[j] = ownEntries(out[j], r.pool.Prefix)
			}
		}
		res[side] = out
	}
	r.ops += int64(len(s.Ops))
	rec := StepRecord{Step: s}
	differ := false
	for j, o := range s.Ops {
		k, v := res[0][j], res[1][j]
		rec.Results = append(rec.Results, OpResult{Op: o.String(), Kind: o.Kind, Oracle: k.String(), Subject: v.String()})
		differ = differ || k != v
	}
	if differ {
		return rec, &Divergence{Stage: stageOp, Worker: s.Worker, Step: i, Kind: s.Kind, Ops: rec.Results}
	}
	after := r.observe(paths)
	if problems := r.checkInos(paths, before, after); len(problems) > 0 {
		return rec, &Divergence{Stage: stageIno, Worker: s.Worker, Step: i, Kind: s.Kind, Ops: rec.Results, Details: problems}
	}
	return rec, nil
}

// ownEntries keeps, of a listing of the shared directory, the names of
// the worker with prefix: the others' come and go at their own pace.
func ownEntries(res conformance.Result, prefix string) conformance.Result {
	if res.Err != "" {
		return res
	}
	var keep []string
	for _, e := range strings.Fields(strings.Trim(res.Out, "[]")) {
		name, _, _ := strings.Cut(e, ":")
		if name == "." || name == ".." || strings.HasPrefix(name, prefix+"-") {
			keep = append(keep, e)
		}
	}
	res.Out = "[" + strings.Join(keep, " ") + "]"
	res.N = int64(len(keep))
	return res
}

// namedPaths lists the paths s's operations name, once each.
func namedPaths(s Step) []string {
	var out []string
	for _, o := range s.Ops {
		for _, p := range []string{o.Path, o.Target} {
			if p == "" || (p == o.Target && o.Kind != conformance.OpLink && o.Kind != conformance.OpRename) {
				continue
			}
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// changesNames reports whether o can make a path name another object:
// then an inode number seen at a path before o need not be seen after it.
func changesNames(o conformance.Op) bool {
	switch o.Kind {
	case conformance.OpMkdir, conformance.OpMknod, conformance.OpSocket, conformance.OpSymlink,
		conformance.OpLink, conformance.OpUnlink, conformance.OpRmdir, conformance.OpRename:
		return true
	case conformance.OpWrite, conformance.OpOpen:
		return o.Flags&unix.O_CREAT != 0
	}
	return false
}

// inoObs is lstat's st_ino of one path on each side (ok false: no object).
type inoObs struct {
	ok  [2]bool
	ino [2]uint64
}

func (r *runner) observe(paths []string) map[string]inoObs {
	obs := map[string]inoObs{}
	for _, p := range paths {
		var o inoObs
		for side := range 2 {
			var st unix.Stat_t
			if unix.Fstatat(r.sides[side].fd, p, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
				o.ok[side], o.ino[side] = true, st.Ino
			}
		}
		obs[p] = o
	}
	return obs
}

// checkInos compares inode identities, the way the conformance suite
// does after a scenario: a number of a lower layer's object (which both
// sides share, and which a copy-up keeps) must be the same on both sides;
// any other number belongs to an object each side made on its own, so only
// which names share it is compared. With before (a step that renames,
// creates or removes nothing), a name must keep or change its number on
// both sides alike.
func (r *runner) checkInos(paths []string, before, now map[string]inoObs) []string {
	var out []string
	var both []string
	for _, p := range paths {
		o := now[p]
		if !o.ok[0] || !o.ok[1] {
			continue
		}
		both = append(both, p)
		if (r.lowerInos[o.ino[0]] || r.lowerInos[o.ino[1]]) && o.ino[0] != o.ino[1] {
			out = append(out, fmt.Sprintf("%s: lower st_ino: oracle %d, subject %d (one of them a lower layer's object)", p, o.ino[0], o.ino[1]))
		}
		if b, ok := before[p]; ok && b.ok[0] && b.ok[1] && (b.ino[0] == o.ino[0]) != (b.ino[1] == o.ino[1]) {
			out = append(out, fmt.Sprintf("%s: st_ino kept: oracle %d -> %d, subject %d -> %d", p, b.ino[0], o.ino[0], b.ino[1], o.ino[1]))
		}
	}
	for i, p := range both {
		for _, q := range both[i+1:] {
			a, b := now[p], now[q]
			if (a.ino[0] == b.ino[0]) != (a.ino[1] == b.ino[1]) {
				out = append(out, fmt.Sprintf("%s: st_ino shared with %s: oracle %d and %d, subject %d and %d", p, q, a.ino[0], b.ino[0], a.ino[1], b.ino[1]))
			}
		}
	}
	return out
}

// A worker process reads a workerConfig on stdin, writes "step N" on
// stdout before each step (the round's watchdog counts them) and one
// "result JSON" line at the end.
const envWorker = "OVL_STRESS_WORKER"

type workerConfig struct {
	Pool     Pool
	Seed     uint64
	Ops      string
	Steps    int       // 0: until Deadline
	Deadline time.Time // zero: none
	Oracle   string
	Subject  string
	Lowers   []string
}

type workerResult struct {
	Steps      int // steps begun
	Ops        int64
	Divergence *Divergence
}

// ServeSubprocess makes the process a stress worker, or the conformance
// package's operations helper, and exits, if it was started as one;
// otherwise it returns at once. A program running rounds (a test's
// TestMain, ovlstress's main) must call it first thing: workers are the
// program itself, re-executed.
func ServeSubprocess() {
	conformance.ServeHelper()
	if os.Getenv(envWorker) != "" {
		os.Exit(workerMain())
	}
}

func workerMain() int {
	var cfg workerConfig
	if err := json.NewDecoder(os.Stdin).Decode(&cfg); err != nil {
		fmt.Fprintln(os.Stderr, "stress worker:", err)
		return 2
	}
	res, err := work(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stress worker:", err)
		return 2
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprint(out, "result ")
	json.NewEncoder(out).Encode(res)
	if err := out.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "stress worker:", err)
		return 2
	}
	return 0
}

func work(cfg workerConfig) (*workerResult, error) {
	ops, err := ParseOpSet(cfg.Ops)
	if err != nil {
		return nil, err
	}
	lowerInos, err := conformance.InodeNumbers(cfg.Lowers)
	if err != nil {
		return nil, err
	}
	r, err := newRunner(cfg.Pool, cfg.Oracle, cfg.Subject, lowerInos)
	if err != nil {
		return nil, err
	}
	defer r.close()
	g := newGenerator(cfg.Seed, cfg.Pool, ops)
	res := &workerResult{}
	for i := 0; cfg.Steps == 0 || i < cfg.Steps; i++ {
		if !cfg.Deadline.IsZero() && time.Now().After(cfg.Deadline) {
			break
		}
		// Unbuffered: the round's watchdog reads progress as it comes.
		if _, err := fmt.Fprintf(os.Stdout, "step %d\n", i); err != nil {
			return nil, err
		}
		res.Steps = i + 1
		if _, d := r.step(i, g.next()); d != nil {
			res.Divergence = d
			break
		}
	}
	res.Ops = r.ops
	return res, nil
}
