package stress

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ovlmount/ovlmount/conformance"
)

// Repro is a divergence reduced to what still shows it in a single
// process: the layers and the steps. Saved as JSON, it is what
// `ovlstress -replay FILE` runs.
type Repro struct {
	Seed  uint64
	Procs int
	Ops   string
	Plan  *Plan
	Steps []Step
	// Full: the divergence shows only in the comparisons after the
	// operations, so a replay must run them.
	Full      bool
	Signature string
	// From the original round: how many steps and layer objects there
	// were before shrinking.
	OrigSteps, OrigNodes int
	// Reproduced is false when a single process did not diverge the same
	// way: the divergence needs the workers' concurrency (or is flaky), and
	// only the seed reproduces it.
	Reproduced bool
	Divergence *Divergence
	Transcript []StepRecord
}

// replay runs steps in this process on a fresh session of plan under dir,
// stopping at the first divergence; with full and no divergence, the
// comparisons after the operations follow. It returns the divergence, if
// any, and what each step returned.
func replay(dir string, plan *Plan, steps []Step, oracle, subject conformance.Impl, full bool) (*Divergence, []StepRecord, error) {
	d, err := os.MkdirTemp(dir, "replay-")
	if err != nil {
		return nil, nil, err
	}
	s, err := newSession(d, plan, oracle, subject)
	if err != nil {
		RemoveRoundDir(d)
		return nil, nil, err
	}
	defer func() {
		if s.release(false) == nil {
			RemoveRoundDir(d)
		}
	}()
	runners := map[int]*runner{}
	// Their descriptors of the mount roots must be closed before any
	// unmount, or the unmount is only a lazy detach and the program keeps
	// serving.
	closeRunners := func() {
		for w, r := range runners {
			r.close()
			delete(runners, w)
		}
	}
	defer closeRunners()
	var records []StepRecord
	var div *Divergence
	progress := new(atomic.Int64)
	err = conformance.Guard(s.sides[1].mount, progress, func() error {
		for i, st := range steps {
			r := runners[st.Worker]
			if r == nil {
				if r, err = newRunner(plan.Pools[st.Worker], s.sides[0].mount.Dir, s.sides[1].mount.Dir, s.lowerInos); err != nil {
					return err
				}
				runners[st.Worker] = r
			}
			rec, d := r.step(i, st)
			records = append(records, rec)
			progress.Add(1)
			if d != nil {
				div = d
				return nil
			}
		}
		return nil
	})
	closeRunners()
	if err != nil {
		return &Divergence{Stage: stageHang, Worker: -1, Step: len(records) - 1, Details: []string{err.Error()}}, records, nil
	}
	if div == nil && full {
		divs, err := s.verify(nil)
		if err != nil {
			return nil, records, err
		}
		s.close()
		divs = append(divs, s.logs()...)
		if len(divs) > 0 {
			div = divs[0]
		}
	}
	if div == nil {
		s.close()
		if logs := s.logs(); len(logs) > 0 {
			div = logs[0]
		}
	}
	return div, records, nil
}

// ShrinkConfig says what to shrink and with what.
type ShrinkConfig struct {
	Round      *Result
	Divergence *Divergence // one of Round.Divergences
	Oracle     conformance.Impl
	Subject    conformance.Impl
	Dir        string    // scratch space
	Until      time.Time // shrinking stops here, with what it has
	Log        func(format string, args ...any)
}

// Shrink reduces a round's divergence to a minimal single-process
// reproduction: the diverging worker's steps up to the divergence (all
// its steps, or every worker's, for one found after the operations),
// then as few of them as still diverge the same way (delta debugging),
// as few operations within those, and as few layer objects.
func Shrink(c ShrinkConfig) (*Repro, error) {
	logf := c.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	res, d := c.Round, c.Divergence
	plan := res.Plan
	repro := &Repro{Seed: plan.Seed, Procs: plan.Procs, Ops: res.Config.Ops.String(), Signature: d.Signature()}
	worker := d.Worker
	if d.Step < 0 && len(d.Details) > 0 {
		// A difference in the trees: whose path is it?
		p, _, _ := strings.Cut(d.Details[0], ": ")
		worker = plan.owner(p)
	}
	// Where to look for a single-process reproduction, in order: the
	// worker's own steps (up to the divergence, or all it ran) on its own
	// namespace, then on the whole plan, then every worker's steps taken
	// in turns, which is what it takes when the divergence needs another
	// worker (one that reuses an inode number another freed, say).
	all := make([][]Step, plan.Procs)
	for w := range plan.Procs {
		n := res.Steps[w]
		if w == worker && d.Step >= 0 {
			n = d.Step + 1
		}
		all[w] = Steps(plan, w, res.Config.Ops, n)
	}
	type candidate struct {
		plan  *Plan
		steps []Step
	}
	var cands []candidate
	if worker >= 0 {
		cands = append(cands, candidate{plan.only(worker), all[worker]}, candidate{plan, all[worker]})
	}
	cands = append(cands, candidate{plan, interleave(all)})
	repro.Full = d.Step < 0
	repro.OrigNodes = plan.nodes()
	tries := 0
	fails := func(p *Plan, steps []Step) bool {
		tries++
		start := time.Now()
		got, _, err := replay(c.Dir, p, steps, c.Oracle, c.Subject, repro.Full)
		if err != nil {
			logf("replay: %v", err)
			return false
		}
		sig := "none"
		if got != nil {
			sig = got.Signature()
		}
		logf("replay %d: %d steps, %d layer objects: %s (%v)", tries, len(steps), p.nodes(), sig, time.Since(start).Round(time.Millisecond))
		return got != nil && got.Signature() == repro.Signature
	}
	var steps []Step
	for _, cand := range cands {
		if fails(cand.plan, cand.steps) {
			repro.Plan, steps = cand.plan, cand.steps
			break
		}
	}
	repro.OrigSteps = len(cands[0].steps)
	if repro.Plan == nil {
		logf("not reproduced in a single process (%s)", repro.Signature)
		return repro, nil
	}
	repro.OrigSteps = len(steps)
	repro.Reproduced = true
	logf("reproduced in a single process; shrinking %d steps", len(steps))
	keep := ddmin(len(steps), func(idx []int) bool {
		sub := make([]Step, len(idx))
		for i, j := range idx {
			sub[i] = steps[j]
		}
		return fails(repro.Plan, sub)
	}, c.Until)
	for _, j := range keep {
		repro.Steps = append(repro.Steps, steps[j])
	}
	// Then the operations within each step that is left.
	for i := range repro.Steps {
		ops := repro.Steps[i].Ops
		keepOps := ddmin(len(ops), func(idx []int) bool {
			sub := slices.Clone(repro.Steps)
			sub[i].Ops = make([]conformance.Op, len(idx))
			for k, j := range idx {
				sub[i].Ops[k] = ops[j]
			}
			return fails(repro.Plan, sub)
		}, c.Until)
		kept := make([]conformance.Op, len(keepOps))
		for k, j := range keepOps {
			kept[k] = ops[j]
		}
		repro.Steps[i].Ops = kept
	}
	logf("%d steps left after %d replays; shrinking %d layer objects", len(repro.Steps), tries, repro.Plan.nodes())
	nodes := repro.Plan.nodeRefs()
	keepNodes := ddmin(len(nodes), func(idx []int) bool {
		p := repro.Plan.withNodes(nodes, idx)
		return p.whiteoutsMerge() && fails(p, repro.Steps)
	}, c.Until)
	repro.Plan = repro.Plan.withNodes(nodes, keepNodes)
	logf("%d layer objects left after %d replays", repro.Plan.nodes(), tries)
	div, records, err := replay(c.Dir, repro.Plan, repro.Steps, c.Oracle, c.Subject, repro.Full)
	if err != nil {
		return repro, err
	}
	repro.Divergence, repro.Transcript = div, records
	return repro, nil
}

// interleave takes one step of each sequence in turn.
func interleave(seqs [][]Step) []Step {
	var out []Step
	for i := 0; ; i++ {
		added := false
		for _, seq := range seqs {
			if i < len(seq) {
				out = append(out, seq[i])
				added = true
			}
		}
		if !added {
			return out
		}
	}
}

// ddmin returns indices of a subset of 0..n-1 for which fails holds,
// assuming it holds for all of them: chunks are removed while the rest
// still fails, down to single items (Zeller's delta debugging, with
// complements only). The result is 1-minimal unless the deadline came
// first.
func ddmin(n int, fails func([]int) bool, until time.Time) []int {
	items := make([]int, n)
	for i := range items {
		items[i] = i
	}
	chunks := 2
	for len(items) > 1 && (until.IsZero() || time.Now().Before(until)) {
		size := (len(items) + chunks - 1) / chunks
		removed := false
		for start := 0; start < len(items); start += size {
			rest := slices.Concat(items[:start], items[min(start+size, len(items)):])
			if fails(rest) {
				items = rest
				chunks = max(chunks-1, 2)
				removed = true
				break
			}
			if !until.IsZero() && time.Now().After(until) {
				return items
			}
		}
		if !removed {
			if size == 1 {
				break
			}
			chunks = min(chunks*2, len(items))
		}
	}
	if len(items) == 1 && fails(nil) {
		return nil
	}
	return items
}

// nodeRef names one node of a plan's layers: layer index (upperLayer,
// topLower, bottomLower) and position.
type nodeRef struct{ layer, index int }

// nodeRefs lists every node of the plan's layers.
func (p *Plan) nodeRefs() []nodeRef {
	var out []nodeRef
	for l := range numLayers {
		for i := range p.layer(l) {
			out = append(out, nodeRef{l, i})
		}
	}
	return out
}

// withNodes returns a copy of p whose layers keep only the nodes
// refs[idx...], and the holes of kept files. Parents of kept nodes are
// made by the build with default metadata; a hard link whose target went
// makes the build fail, which shrinking counts as not reproducing.
func (p *Plan) withNodes(refs []nodeRef, idx []int) *Plan {
	out := *p
	layers := [numLayers]conformance.Layer{{}, {}, {}}
	kept := map[string]bool{}
	for _, i := range idx {
		r := refs[i]
		n := p.layer(r.layer)[r.index]
		layers[r.layer] = append(layers[r.layer], n)
		kept[layerNames[r.layer]+"/"+n.Path] = true
	}
	out.Spec = conformance.Spec{Upper: layers[upperLayer], Lowers: []conformance.Layer{layers[topLower], layers[bottomLower]}}
	out.Holes = nil
	for _, h := range p.Holes {
		if kept[h.Layer+"/"+h.Path] {
			out.Holes = append(out.Holes, h)
		}
	}
	return &out
}

// whiteoutsMerge reports whether every whiteout and xwhiteout of p's
// layers is in a directory that merges with a layer below it, as the
// plan generator places them. Shrinking the layers must not leave one in
// a directory that merges with nothing: the kernel then lists it, a
// quirk ovlmount leaves out on purpose (docs/differences.md), which would
// pass for the divergence being shrunk.
func (p *Plan) whiteoutsMerge() bool {
	for l := range numLayers {
		for _, n := range p.layer(l) {
			if n.Kind != conformance.Whiteout && n.Kind != conformance.XWhiteout {
				continue
			}
			dir := path.Dir(n.Path)
			if dir == "." {
				continue
			}
			var here *conformance.Node
			for i := range p.layer(l) {
				if m := &p.layer(l)[i]; m.Path == dir && m.Kind == conformance.Dir {
					here = m
				}
			}
			if here == nil || here.Opaque == conformance.OpaqueTrusted ||
				n.Kind == conformance.XWhiteout && here.Opaque != conformance.OpaqueXWhiteouts {
				return false
			}
			below := false
			for lower := l + 1; lower < numLayers && !below; lower++ {
				for _, m := range p.layer(lower) {
					if m.Path == dir && m.Kind == conformance.Dir {
						below = true
						break
					}
				}
			}
			if !below {
				return false
			}
		}
	}
	return true
}

// Save writes r as JSON to file.
func (r *Repro) Save(file string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, data, 0o644)
}

// LoadRepro reads a file Save wrote.
func LoadRepro(file string) (*Repro, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var r Repro
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return &r, nil
}

// Replay runs r again in this process under dir and returns its
// divergence (nil if it no longer diverges) and what each step returned.
func (r *Repro) Replay(dir string, oracle, subject conformance.Impl) (*Divergence, []StepRecord, error) {
	if r.Plan == nil {
		// Saved although no single process reproduced it: only the
		// round's seed can.
		return nil, nil, fmt.Errorf("no single process reproduced this divergence (%s); run its round again: -seed %#x -rounds 1 -procs %d -ops %s", r.Signature, r.Seed, r.Procs, r.Ops)
	}
	return replay(dir, r.Plan, r.Steps, oracle, subject, r.Full)
}
