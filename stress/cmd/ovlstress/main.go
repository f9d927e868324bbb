// Command ovlstress is the long run of the stress suite: rounds of the
// random-operation differential tester (package stress), kernel overlayfs
// against a FUSE overlay program, with a new seed each round, until a
// duration has passed. Every divergence is printed with its seed, shrunk
// to a minimal reproduction and saved as a file that -replay runs again.
// Run as root.
//
//	ovlstress -bin bin/ovlmount-race -duration 30m -procs 4
//	ovlstress -bin bin/ovlmount -replay repro-....json
package main

import (
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ovlmount/ovlmount/conformance"
	"github.com/ovlmount/ovlmount/stress"
)

func main() {
	stress.ServeSubprocess()
	os.Exit(run())
}

type options struct {
	bin          string
	duration     time.Duration
	rounds       int
	procs        int
	steps        int
	seed         uint64
	ops          stress.OpSet
	dir          string
	shrink       time.Duration
	keep         bool
	verbose      bool
	maxDiverge   int
	kernelKernel bool
	replay       string
	summary      string
}

func parse() (*options, error) {
	o := &options{}
	var seed, ops string
	flag.StringVar(&o.bin, "bin", "", "the FUSE overlay program to test (fuse-overlayfs's command line; run with -f)")
	flag.DurationVar(&o.duration, "duration", 30*time.Minute, "run rounds for this long (shrinking comes after)")
	flag.IntVar(&o.rounds, "rounds", 0, "stop after this many rounds (0: no limit)")
	flag.IntVar(&o.procs, "procs", 4, "worker processes per round")
	flag.IntVar(&o.steps, "steps", 3000, "steps per worker per round")
	flag.StringVar(&seed, "seed", "", "seed of the first round; round i uses seed+i (default: from the clock)")
	flag.StringVar(&ops, "ops", "all", "operations: all, step kinds, groups (pending, hardlinks), -name to leave one out")
	flag.StringVar(&o.dir, "dir", "", "scratch directory for layers, mounts and reproductions (default: a new one in $TMPDIR)")
	flag.DurationVar(&o.shrink, "shrink", 2*time.Minute, "time allowed to shrink the first divergence of each kind (0: do not shrink)")
	flag.BoolVar(&o.keep, "keep", false, "keep every round's directory, with its filesystem images if it diverged")
	flag.BoolVar(&o.verbose, "v", false, "show shrinking's progress")
	flag.IntVar(&o.maxDiverge, "max-divergences", 0, "stop once this many rounds diverged (0: never)")
	flag.BoolVar(&o.kernelKernel, "kernel-vs-kernel", false, "test the harness: the kernel on both sides (-bin is not needed)")
	flag.StringVar(&o.replay, "replay", "", "run a saved reproduction again and show both sides' results")
	flag.StringVar(&o.summary, "json", "", "write a summary of the run to this file")
	flag.Parse()
	if flag.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", flag.Args())
	}
	if o.bin == "" && !o.kernelKernel {
		return nil, fmt.Errorf("-bin is required")
	}
	if o.bin != "" {
		abs, err := filepath.Abs(o.bin)
		if err != nil {
			return nil, err
		}
		o.bin = abs
	}
	if seed == "" {
		o.seed = uint64(time.Now().UnixNano())
	} else {
		s, err := strconv.ParseUint(seed, 0, 64)
		if err != nil {
			return nil, fmt.Errorf("-seed: %v", err)
		}
		o.seed = s
	}
	set, err := stress.ParseOpSet(ops)
	if err != nil {
		return nil, fmt.Errorf("-ops: %v", err)
	}
	o.ops = set
	if o.procs < 1 || o.steps < 1 {
		return nil, fmt.Errorf("-procs and -steps must be positive")
	}
	return o, nil
}

func (o *options) subject() conformance.Impl {
	if o.kernelKernel {
		return conformance.Kernel{}
	}
	return conformance.FUSE{Prog: o.bin, Foreground: true}
}

// summary is what -json writes.
type summary struct {
	Seed       string
	Program    string
	Ops        string
	Procs      int
	Rounds     int
	Steps      int
	Operations int64
	RunTime    string // the rounds, from the first's start to the last's end
	RoundTime  string // of it, in rounds (layers, operations, comparisons)
	// Signatures counts divergences by signature and step kind.
	Signatures map[string]int
	// Divergences holds the first of each signature and step kind.
	Divergences []divergenceSummary
}

type divergenceSummary struct {
	RoundSeed  string
	Signature  string
	Text       string
	Repro      string `json:",omitempty"`
	Reproduced bool
	Steps      int
}

func run() int {
	o, err := parse()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ovlstress:", err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "ovlstress: run as root (it mounts overlays)")
		return 2
	}
	if o.dir == "" {
		if o.dir, err = os.MkdirTemp("", "ovlstress-"); err != nil {
			fmt.Fprintln(os.Stderr, "ovlstress:", err)
			return 2
		}
	}
	if o.replay != "" {
		return replay(o)
	}
	stop := make(chan struct{})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		fmt.Println("ovlstress: stopping (the round in progress is abandoned)")
		close(stop)
	}()

	sum := summary{Seed: fmt.Sprintf("%#x", o.seed), Program: cmp.Or(o.bin, "kernel"), Ops: o.ops.String(), Procs: o.procs,
		Signatures: map[string]int{}}
	fmt.Printf("ovlstress: %s against the kernel, %d workers, %d steps each per round, for %v; seed %#x; operations %s; in %s\n",
		sum.Program, o.procs, o.steps, o.duration, o.seed, sum.Ops, o.dir)
	start := time.Now()
	until := start.Add(o.duration)
	var inRounds time.Duration
	diverged := 0
	// The first divergence of each signature and step kind, to shrink
	// once the rounds are over.
	type first struct {
		res *stress.Result
		d   *stress.Divergence
	}
	var firsts []first
	for i := 0; o.rounds == 0 || i < o.rounds; i++ {
		if time.Now().After(until) || o.maxDiverge > 0 && diverged >= o.maxDiverge {
			break
		}
		select {
		case <-stop:
			i = -1
		default:
		}
		if i < 0 {
			break
		}
		seed := o.seed + uint64(i)
		dir := filepath.Join(o.dir, fmt.Sprintf("round-%#x", seed))
		if err := os.Mkdir(dir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "ovlstress:", err)
			return 2
		}
		cfg := stress.Config{Seed: seed, Procs: o.procs, Steps: o.steps, Until: until, Ops: o.ops,
			Oracle: conformance.Kernel{}, Subject: o.subject(), Dir: dir, Stop: stop}
		res, err := stress.Run(cfg)
		if err != nil {
			fmt.Fprintf(os.Stderr, "ovlstress: round %#x: %v (kept in %s)\n", seed, err, dir)
			if res != nil {
				fmt.Printf("round %d: %s\n", i+1, res.Summary())
				for _, d := range res.Divergences {
					fmt.Printf("  %s\n", indent(d.String()))
				}
			}
			return 2
		}
		inRounds += res.Duration
		if res.Stopped {
			break
		}
		sum.Rounds++
		for _, n := range res.Steps {
			sum.Steps += n
		}
		sum.Operations += res.Ops
		fmt.Printf("round %d: %s\n", i+1, res.Summary())
		if len(res.Divergences) == 0 {
			removeRound(o, dir)
			continue
		}
		diverged++
		for _, d := range res.Divergences {
			// The same bug keeps coming back in later rounds: shown in
			// full, and shrunk, once per signature and step kind.
			key := d.Signature() + " in " + d.Kind
			sum.Signatures[key]++
			if sum.Signatures[key] > 1 {
				fmt.Printf("  again: %s\n", strings.SplitN(d.String(), "\n", 2)[0]+" ("+key+")")
				continue
			}
			fmt.Printf("  %s\n", indent(d.String()))
			firsts = append(firsts, first{res, d})
		}
		// The seed and the saved reproductions are what it takes to see
		// a divergence again.
		removeRound(o, dir)
	}
	inRoundsWall := time.Since(start)
	if o.shrink > 0 && len(firsts) > 0 {
		fmt.Printf("ovlstress: shrinking %d divergences\n", len(firsts))
	}
	for i, f := range firsts {
		ds := divergenceSummary{RoundSeed: fmt.Sprintf("%#x", f.res.Config.Seed), Signature: f.d.Signature(), Text: f.d.String()}
		if o.shrink > 0 {
			ds.Repro, ds.Reproduced, ds.Steps = shrink(o, f.res, f.d, i+1)
		}
		sum.Divergences = append(sum.Divergences, ds)
	}
	sum.RoundTime = inRounds.Round(time.Second).String()
	sum.RunTime = inRoundsWall.Round(time.Second).String()
	total := 0
	for _, n := range sum.Signatures {
		total += n
	}
	fmt.Printf("ovlstress: %d rounds in %s (%s of it in rounds), %d steps, %d operations on each side; %d divergences in %d rounds, %d kinds:\n",
		sum.Rounds, sum.RunTime, sum.RoundTime, sum.Steps, sum.Operations, total, diverged, len(sum.Signatures))
	for _, k := range slices.Sorted(maps.Keys(sum.Signatures)) {
		fmt.Printf("  %6d  %s\n", sum.Signatures[k], k)
	}
	if o.summary != "" {
		data, _ := json.MarshalIndent(sum, "", "  ")
		if err := os.WriteFile(o.summary, data, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "ovlstress:", err)
		}
	}
	if total > 0 {
		return 1
	}
	return 0
}

// shrink shrinks d, found in res, prints its reproduction and saves it
// as repro-N.json; it returns the file, whether a single process
// reproduced d, and how many steps it took.
func shrink(o *options, res *stress.Result, d *stress.Divergence, n int) (string, bool, int) {
	logf := func(string, ...any) {}
	if o.verbose {
		logf = func(f string, a ...any) { fmt.Printf("    shrinking: "+f+"\n", a...) }
	}
	dir, err := os.MkdirTemp(o.dir, "shrink-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "ovlstress:", err)
		return "", false, 0
	}
	defer removeRound(o, dir)
	repro, err := stress.Shrink(stress.ShrinkConfig{Round: res, Divergence: d, Oracle: res.Config.Oracle, Subject: res.Config.Subject,
		Dir: dir, Until: time.Now().Add(o.shrink), Log: logf})
	if err != nil {
		fmt.Fprintf(os.Stderr, "ovlstress: shrinking: %v\n", err)
		return "", false, 0
	}
	file := filepath.Join(o.dir, fmt.Sprintf("repro-%d.json", n))
	if err := repro.Save(file); err != nil {
		fmt.Fprintln(os.Stderr, "ovlstress:", err)
	}
	fmt.Printf("%d. %s\n", n, strings.TrimSuffix(repro.Report(file), "\n"))
	return file, repro.Reproduced, len(repro.Steps)
}

func replay(o *options) int {
	r, err := stress.LoadRepro(o.replay)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ovlstress:", err)
		return 2
	}
	d, records, err := r.Replay(o.dir, conformance.Kernel{}, o.subject())
	if err != nil {
		fmt.Fprintln(os.Stderr, "ovlstress:", err)
		return 2
	}
	r.Divergence, r.Transcript = d, records
	fmt.Print(r.Report(o.replay))
	if d != nil {
		return 1
	}
	fmt.Println("ovlstress: no divergence")
	return 0
}

// removeRound removes a round's directory unless -keep.
func removeRound(o *options, dir string) {
	if o.keep {
		return
	}
	if err := stress.RemoveRoundDir(dir); err != nil {
		fmt.Fprintln(os.Stderr, "ovlstress:", err)
	}
}

// indent indents every line of s but the first by two spaces.
func indent(s string) string {
	out := []byte{}
	for i := 0; i < len(s); i++ {
		out = append(out, s[i])
		if s[i] == '\n' && i+1 < len(s) {
			out = append(out, ' ', ' ')
		}
	}
	return string(out)
}
