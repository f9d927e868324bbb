package stress

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ovlmount/ovlmount/conformance"
	"github.com/ovlmount/ovlmount/internal/mountinfo"
)

// Config describes one round.
type Config struct {
	Seed  uint64
	Procs int
	// Steps is how many steps each worker performs; 0 runs until Until.
	Steps int
	// Until, if set, is when workers stop starting steps.
	Until   time.Time
	Ops     OpSet
	Oracle  conformance.Impl // conformance.Kernel{} but to test the harness
	Subject conformance.Impl
	// Dir is an existing empty directory for the round's filesystem
	// images and mounts.
	Dir string
	// Stop, when closed, ends the round early: the workers are killed and
	// the comparisons after the operations are skipped.
	Stop <-chan struct{}
}

// Result is what a round did and found.
type Result struct {
	Config      Config
	Plan        *Plan
	Steps       []int // steps each worker began
	Ops         int64 // operations performed on each side
	Duration    time.Duration
	Divergences []*Divergence
	Stopped     bool // Config.Stop ended it
}

// Run runs one round: cfg.Procs worker processes at once, each performing
// its own sequence on both mounts and stopping at its first divergence,
// then the comparisons after the operations. Everything it mounts is
// unmounted before it returns. An error means the round could not run
// (layers, mounts, walks) or clean up (then the Result is returned too);
// divergences are in the Result.
func Run(cfg Config) (_ *Result, err error) {
	start := time.Now()
	if cfg.Steps == 0 && cfg.Until.IsZero() {
		return nil, fmt.Errorf("a round needs Steps or Until")
	}
	plan := NewPlan(cfg.Seed, cfg.Procs, cfg.Ops)
	res := &Result{Config: cfg, Plan: plan, Steps: make([]int, cfg.Procs)}
	s, err := newSession(cfg.Dir, plan, cfg.Oracle, cfg.Subject)
	if err != nil {
		return nil, err
	}
	// A round that diverged keeps its filesystem image, to look into.
	defer func() {
		if rerr := s.release(len(res.Divergences) > 0); rerr != nil && err == nil {
			err = fmt.Errorf("cleaning up: %w", rerr)
		}
	}()
	workers := make([]*workerProc, cfg.Procs)
	for w := range workers {
		wc := workerConfig{
			Pool: plan.Pools[w], Seed: cfg.Seed, Ops: cfg.Ops.String(), Steps: cfg.Steps, Deadline: cfg.Until,
			Oracle: s.sides[0].mount.Dir, Subject: s.sides[1].mount.Dir, Lowers: s.sides[0].layers.Lowers,
		}
		if workers[w], err = startWorker(wc); err != nil {
			for _, p := range workers[:w] {
				p.cmd.Process.Kill()
				p.cmd.Wait()
			}
			return nil, err
		}
	}
	// The watchdog: if no worker begins a step for a while, the program
	// hangs; aborting its connection frees the workers blocked in it.
	progress := new(atomic.Int64)
	var wg sync.WaitGroup
	for _, p := range workers {
		wg.Go(func() { p.wait(progress) })
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	var stopped atomic.Bool
	if cfg.Stop != nil {
		go func() {
			select {
			case <-cfg.Stop:
				stopped.Store(true)
				for _, p := range workers {
					p.cmd.Process.Kill()
				}
			case <-finished:
			}
		}()
	}
	hang := conformance.Guard(s.sides[1].mount, progress, func() error {
		<-finished
		return nil
	})
	if hang != nil {
		for _, p := range workers {
			p.cmd.Process.Kill()
		}
		<-finished
	}
	res.Stopped = stopped.Load()
	for w, p := range workers {
		res.Steps[w] = int(p.step.Load()) + 1
		if p.result != nil {
			res.Ops += p.result.Ops
			res.Steps[w] = p.result.Steps
			if p.result.Divergence != nil {
				res.Divergences = append(res.Divergences, p.result.Divergence)
			}
		} else if hang == nil && !res.Stopped {
			res.Divergences = append(res.Divergences, &Divergence{Stage: stageError, Worker: w, Step: -1,
				Details: []string{fmt.Sprintf("worker %d: %v: %s", w, p.err, strings.TrimSpace(p.stderr.String()))}})
		}
		if i := strings.Index(p.stderr.String(), "WARNING: DATA RACE"); i >= 0 {
			res.Divergences = append(res.Divergences, &Divergence{Stage: stageLog, Worker: w, Step: -1,
				Details: append([]string{fmt.Sprintf("worker %d's stderr:", w)}, strings.Split(p.stderr.String()[i:], "\n")...)})
		}
	}
	switch {
	case res.Stopped:
	case hang != nil:
		var at []string
		for w, p := range workers {
			at = append(at, fmt.Sprintf("worker %d at step %d", w, p.step.Load()))
		}
		res.Divergences = append(res.Divergences, &Divergence{Stage: stageHang, Worker: -1, Step: -1,
			Details: []string{hang.Error(), strings.Join(at, ", ")}})
	default:
		diverged := map[int]bool{}
		for _, d := range res.Divergences {
			if d.Worker >= 0 {
				diverged[d.Worker] = true
			}
		}
		divs, err := s.verify(diverged)
		res.Divergences = append(res.Divergences, divs...)
		if err != nil {
			res.Divergences = append(res.Divergences, &Divergence{Stage: stageError, Worker: -1, Step: -1, Details: []string{err.Error()}})
		}
	}
	s.close()
	res.Divergences = append(res.Divergences, s.logs()...)
	res.Duration = time.Since(start)
	return res, nil
}

// workerProc is a running worker process.
type workerProc struct {
	cmd    *exec.Cmd
	out    *bufio.Scanner
	stderr bytes.Buffer
	step   atomic.Int64 // the step it last began
	result *workerResult
	err    error
}

func startWorker(wc workerConfig) (*workerProc, error) {
	in, err := json.Marshal(wc)
	if err != nil {
		return nil, err
	}
	p := &workerProc{}
	p.step.Store(-1)
	// /proc/self/exe: this program, whatever its path (a test binary too).
	p.cmd = exec.Command("/proc/self/exe")
	p.cmd.Env = append(os.Environ(), envWorker+"=1")
	if !strings.Contains(os.Getenv("GORACE"), "atexit_sleep_ms") {
		// A race-instrumented worker would sleep a second at exit.
		p.cmd.Env = append(p.cmd.Env, strings.TrimSpace("GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	}
	p.cmd.Stdin = bytes.NewReader(in)
	p.cmd.Stderr = &p.stderr
	p.cmd.Dir = "/"
	// A process group of its own: a terminal's ^C reaches the round,
	// which stops the workers and unmounts, not the workers directly.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.out = bufio.NewScanner(stdout)
	p.out.Buffer(nil, 64<<20)
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	return p, nil
}

// wait reads the worker's output to its end, counting steps in progress,
// and reaps it.
func (p *workerProc) wait(progress *atomic.Int64) {
	for p.out.Scan() {
		line := p.out.Text()
		if n, ok := strings.CutPrefix(line, "step "); ok {
			i, _ := strconv.ParseInt(n, 10, 64)
			p.step.Store(i)
			progress.Add(1)
			continue
		}
		if js, ok := strings.CutPrefix(line, "result "); ok {
			var r workerResult
			if err := json.Unmarshal([]byte(js), &r); err != nil {
				p.err = fmt.Errorf("bad result line: %v", err)
				continue
			}
			p.result = &r
		}
	}
	if err := p.cmd.Wait(); err != nil && p.err == nil {
		p.err = err
	}
}

// RemoveRoundDir removes a directory a round or a shrink worked in,
// unless something is still mounted below it: removing through a live
// mount would reach into what it serves.
func RemoveRoundDir(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	under, err := mountinfo.Under(dir)
	if err != nil {
		return err
	}
	if len(under) > 0 {
		return fmt.Errorf("%s is still mounted; leaving %s", under[0].Point, dir)
	}
	return os.RemoveAll(dir)
}

// Summary renders a round's outcome in one line.
func (r *Result) Summary() string {
	steps := 0
	for _, n := range r.Steps {
		steps += n
	}
	status := "no divergence"
	if n := len(r.Divergences); n > 0 {
		status = fmt.Sprintf("%d divergences", n)
	}
	return fmt.Sprintf("seed %#x: %d workers, %d steps, %d operations on each side in %v: %s",
		r.Config.Seed, len(r.Steps), steps, r.Ops, r.Duration.Round(time.Millisecond), status)
}
