package conformance

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ovlmount/ovlmount/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// envKeep set to 1 keeps each scenario's directories (layers, uppers,
// program logs) for inspection.
const envKeep = "OVL_CONFORMANCE_KEEP"

// Status of a scenario run against one implementation.
const (
	StatusSame     = "same"     // no difference from the kernel
	StatusDiffers  = "differs"  // differences, not accepted
	StatusAccepted = "accepted" // differences, listed as accepted
	// StatusUnsupported: the program refused the scenario's mount options
	// or data-only layers, or said it ignored options, and the scenario is
	// not listed as pending.
	StatusUnsupported = "unsupported"
	// StatusPending: listed as pending, and the program does not support
	// the scenario (refuses, ignores or differs).
	StatusPending = "pending"
	StatusStale   = "stale" // listed as accepted or pending, but no longer differs
	StatusError   = "error" // could not be run (mount failed, daemon hung, kernel refused)
)

// Outcome is one scenario's result against one implementation, as reports
// and CI see it.
type Outcome struct {
	Scenario string `json:"scenario"`
	Area     string `json:"area"`
	Status   string `json:"status"`
	// List is the file that lists the scenario (accepted.txt,
	// pending.txt), and Reason why it is listed.
	List   string `json:"list,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Unsupported says how the program showed it does not support the
	// scenario: its refusal, or the options it said it ignored.
	Unsupported string      `json:"unsupported,omitempty"`
	Error       string      `json:"error,omitempty"`
	Problems    []Problem   `json:"problems,omitempty"`
	Ops         []OpOutcome `json:"ops,omitempty"` // every operation, both results
	Log         string      `json:"-"`             // the program's log file, if any
}

// OpOutcome is one operation of a scenario and what each side returned.
type OpOutcome struct {
	Op     string `json:"op"`
	Kernel string `json:"kernel"`
	Other  string `json:"other"`
}

// Evaluate runs s on the kernel and on impl in dir and classifies the
// result against lists.
func Evaluate(dir string, s Scenario, impl Impl, lists Lists) Outcome {
	out := Outcome{Scenario: s.Name, Area: s.Area()}
	accepted, pending := "", ""
	if why, ok := lists.Accepted[s.Name]; ok {
		out.List, out.Reason, accepted = "accepted.txt", why, why
	}
	if why, ok := lists.Pending[s.Name]; ok {
		out.List, out.Reason, pending = "pending.txt", why, why
	}
	rep, k, o, err := RunScenario(dir, s, impl)
	if o != nil {
		out.Log = o.Log
	}
	if k != nil && o != nil && len(k.Results) == len(s.Ops) && len(o.Results) == len(s.Ops) {
		for i, op := range s.Ops {
			out.Ops = append(out.Ops, OpOutcome{Op: op.String(), Kernel: k.Results[i].String(), Other: o.Results[i].String()})
		}
	}
	refused, isRefusal := errors.AsType[*RefusedError](err)
	switch {
	case isRefusal && refused.Impl == impl.Name() && k != nil && s.HasOptions():
		out.Unsupported = refused.Error()
	case err != nil:
		out.Status, out.Error = StatusError, err.Error()
		return out
	case len(o.Ignored) > 0:
		out.Unsupported = fmt.Sprintf("%s ignored %s", impl.Name(), strings.Join(o.Ignored, ","))
	}
	if err == nil {
		out.Problems = rep.Problems()
	}
	switch {
	case out.Unsupported != "" && pending != "":
		out.Status = StatusPending
	case out.Unsupported != "":
		out.Status = StatusUnsupported
	case len(out.Problems) == 0 && out.List != "":
		out.Status = StatusStale
	case len(out.Problems) == 0:
		out.Status = StatusSame
	case pending != "":
		out.Status = StatusPending
	case accepted != "":
		out.Status = StatusAccepted
	default:
		out.Status = StatusDiffers
	}
	return out
}

// SuiteReport is the result of running scenarios against one
// implementation.
type SuiteReport struct {
	Impl     string    `json:"impl"`
	Version  string    `json:"version"`
	Kernel   string    `json:"kernel"` // uname -r of the reference
	Date     string    `json:"date"`
	Counts   Counts    `json:"counts"`
	Outcomes []Outcome `json:"outcomes"`
}

// Counts totals outcomes by status.
type Counts struct {
	Scenarios   int `json:"scenarios"`
	Same        int `json:"same"`
	Differs     int `json:"differs"`
	Accepted    int `json:"accepted"`
	Unsupported int `json:"unsupported"`
	Pending     int `json:"pending"`
	Stale       int `json:"stale"`
	Errors      int `json:"errors"`
}

// Divergent is the number of scenarios in which the implementation
// differs from the kernel, accepted or not (errors included), among those
// it supports.
func (c Counts) Divergent() int { return c.Differs + c.Accepted + c.Errors }

// NotSupported is the number of scenarios the implementation does not
// support, pending or not.
func (c Counts) NotSupported() int { return c.Unsupported + c.Pending }

// Failing is the number of scenarios that fail the gate when the lists
// apply: differences and scenarios not supported that no list allows,
// errors, and listed scenarios that now run like the kernel.
func (c Counts) Failing() int { return c.Differs + c.Unsupported + c.Errors + c.Stale }

func (c *Counts) add(status string) {
	c.Scenarios++
	switch status {
	case StatusSame:
		c.Same++
	case StatusDiffers:
		c.Differs++
	case StatusAccepted:
		c.Accepted++
	case StatusUnsupported:
		c.Unsupported++
	case StatusPending:
		c.Pending++
	case StatusStale:
		c.Stale++
	case StatusError:
		c.Errors++
	}
}

// RunSuite runs every scenario against impl, parallel at a time, each in a
// fresh directory under tmp, and returns the report in scenario order.
// progress, if set, is called after each scenario (from any goroutine,
// one at a time).
func RunSuite(tmp string, scenarios []Scenario, impl Impl, lists Lists, parallel int, progress func(Outcome)) SuiteReport {
	rep := SuiteReport{Impl: impl.Name(), Kernel: kernelRelease(), Date: time.Now().UTC().Format("2006-01-02")}
	if f, ok := impl.(FUSE); ok {
		rep.Version = f.Version()
	}
	outcomes := make([]Outcome, len(scenarios))
	var mu sync.Mutex
	work := make(chan int)
	var wg sync.WaitGroup
	for range max(parallel, 1) {
		wg.Go(func() {
			for i := range work {
				outcomes[i] = evaluateIn(tmp, scenarios[i], impl, lists)
				if progress != nil {
					mu.Lock()
					progress(outcomes[i])
					mu.Unlock()
				}
			}
		})
	}
	for i := range scenarios {
		work <- i
	}
	close(work)
	wg.Wait()
	rep.Outcomes = outcomes
	for _, o := range outcomes {
		rep.Counts.add(o.Status)
	}
	return rep
}

// evaluateIn is Evaluate in a directory of its own under tmp, named after
// the scenario, removed afterwards unless envKeep is set or something is
// still mounted below it.
func evaluateIn(tmp string, s Scenario, impl Impl, lists Lists) Outcome {
	dir, err := os.MkdirTemp(tmp, strings.ReplaceAll(s.Name, "/", "_")+"-")
	if err != nil {
		return Outcome{Scenario: s.Name, Area: s.Area(), Status: StatusError, Error: err.Error()}
	}
	out := Evaluate(dir, s, impl, lists)
	if os.Getenv(envKeep) != "1" && !mountedBelow(dir) {
		os.RemoveAll(dir)
	}
	return out
}

// mountedBelow reports whether anything is mounted at or below dir, or
// mountinfo cannot tell: removing such a tree would reach into the mount.
func mountedBelow(dir string) bool {
	ms, err := mountinfo.Under(dir)
	return err != nil || len(ms) > 0
}

// Version returns the first line of `PROG --version` that names the
// program, or the first line.
func (f FUSE) Version() string {
	out, _ := exec.Command(f.Prog, "--version").CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for _, l := range lines {
		if strings.Contains(l, filepath.Base(f.Prog)) {
			return strings.TrimSpace(l)
		}
	}
	return strings.TrimSpace(lines[0])
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// Areas lists the areas of scenarios in report order, with a title each.
var Areas = []struct{ Name, Title string }{
	{"lookup", "lookup"},
	{"readdir", "readdir"},
	{"whiteout", "whiteouts and opaque directories"},
	{"copy-up", "copy-up"},
	{"data", "data through open files"},
	{"create", "creating objects"},
	{"remove", "removing objects"},
	{"rename", "rename"},
	{"link", "hard and symbolic links"},
	{"xattr", "xattrs"},
	{"perm", "permissions"},
	{"special", "special files"},
	{"ino", "inode numbers"},
	{"persist", "persistence across remounts"},
	{"errors", "error cases"},
	{"mount", "mount-time bookkeeping"},
	{"redirect", "redirect_dir: renamed directories"},
	{"metacopy", "metacopy: metadata-only copy-up"},
	{"index", "index: hard links and the inode index"},
	{"data-only", "data-only lower layers"},
	{"verity", "verity: fs-verity digests of metacopy data"},
	{"uuid", "uuid: the upper layer's identity"},
	{"userxattr", "userxattr: markers in user.overlay.*"},
	{"xino", "xino: inode numbers"},
}

// WriteMarkdown writes reports as a Markdown document: per implementation,
// a summary per area, the scenarios it does not support (those pending
// first), and, for each scenario that differs, the kernel's and the
// implementation's observations side by side.
func WriteMarkdown(w io.Writer, reports []SuiteReport, intro string) error {
	var b strings.Builder
	b.WriteString(intro)
	b.WriteString("\n| implementation | version | scenarios | same | divergent | of which accepted | not supported | of which pending | errors |\n" +
		"|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range reports {
		c := r.Counts
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d | %d | %d | %d |\n", r.Impl, mdCell(r.Version), c.Scenarios, c.Same,
			c.Divergent(), c.Accepted, c.NotSupported(), c.Pending, c.Errors)
	}
	for _, r := range reports {
		c := r.Counts
		fmt.Fprintf(&b, "\n## %s\n\n%s against kernel overlayfs (Linux %s), %s: %d scenarios, %d the same, %d divergent (%d accepted, %d errors), "+
			"%d not supported (%d pending)", r.Impl, mdCell(r.Version), r.Kernel, r.Date, c.Scenarios, c.Same, c.Divergent(), c.Accepted, c.Errors,
			c.NotSupported(), c.Pending)
		if c.Stale > 0 {
			fmt.Fprintf(&b, "; %d listed as accepted or pending but no longer divergent", c.Stale)
		}
		b.WriteString(".\n\n| area | scenarios | same | divergent | accepted | not supported |\n|---|---|---|---|---|---|\n")
		for _, a := range Areas {
			var c Counts
			for _, o := range r.Outcomes {
				if o.Area == a.Name {
					c.add(o.Status)
				}
			}
			if c.Scenarios > 0 {
				fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d |\n", a.Title, c.Scenarios, c.Same, c.Divergent(), c.Accepted, c.NotSupported())
			}
		}
		writeNotSupported(&b, r)
		for _, o := range r.Outcomes {
			switch o.Status {
			case StatusSame, StatusStale, StatusUnsupported:
				continue
			case StatusPending:
				if o.Unsupported != "" {
					continue
				}
			}
			writeDivergence(&b, r.Impl, o)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeNotSupported lists the scenarios r's implementation does not
// support: pending ones (pending.txt) with the reason, then the others,
// each with how the implementation showed it.
func writeNotSupported(b *strings.Builder, r SuiteReport) {
	if r.Counts.NotSupported() == 0 {
		return
	}
	fmt.Fprintf(b, "\n### %s: scenarios not supported\n\n| scenario | pending because | shown by |\n|---|---|---|\n", r.Impl)
	for _, status := range []string{StatusPending, StatusUnsupported} {
		for _, o := range r.Outcomes {
			if o.Status != status {
				continue
			}
			how := o.Unsupported
			if how == "" {
				how = fmt.Sprintf("%d differences (below)", len(o.Problems))
			}
			fmt.Fprintf(b, "| `%s` | %s | %s |\n", o.Scenario, mdCell(o.Reason), mdCell(firstLine(how)))
		}
	}
}

// mdRows caps the rows shown per divergent scenario; the JSON report has
// them all.
const mdRows = 12

func writeDivergence(b *strings.Builder, impl string, o Outcome) {
	fmt.Fprintf(b, "\n### %s: `%s`\n\n", impl, o.Scenario)
	switch o.Status {
	case StatusAccepted:
		fmt.Fprintf(b, "Accepted: %s\n\n", mdCell(o.Reason))
	case StatusPending:
		fmt.Fprintf(b, "Pending: %s\n\n", mdCell(o.Reason))
	}
	if o.Error != "" {
		fmt.Fprintf(b, "Could not run: `%s`\n", mdCell(firstLine(o.Error)))
		return
	}
	fmt.Fprintf(b, "| observation | kernel | %s |\n|---|---|---|\n", impl)
	rows := 0
	for _, op := range o.Ops {
		if op.Kernel != op.Other && rows < mdRows {
			fmt.Fprintf(b, "| `%s` | %s | %s |\n", mdCell(op.Op), mdCell(op.Kernel), mdCell(op.Other))
			rows++
		}
	}
	// Up to three findings of each kind: a kind's repeats are mostly one
	// cause, and the JSON report has them all.
	perKind := map[string]int{}
	for _, p := range o.Problems {
		if p.Kind == "op" || perKind[p.Kind] == 3 {
			continue
		}
		if rows >= mdRows {
			fmt.Fprintf(b, "| ... | %d findings in all, see the JSON report | |\n", len(o.Problems))
			break
		}
		perKind[p.Kind]++
		what, kernel, other := splitProblem(p.Text)
		fmt.Fprintf(b, "| %s | %s | %s |\n", mdCell(what), mdCell(kernel), mdCell(other))
		rows++
	}
}

// splitProblem splits a problem's text at its ": kernel X, other Y" tail
// into what was observed and the two values, when it has one.
func splitProblem(text string) (what, kernel, other string) {
	i := strings.LastIndex(text, ": kernel ")
	if i < 0 {
		// A remount finding compares one side with itself.
		if j := strings.LastIndex(text, ": before "); j >= 0 {
			return text[:j], "", text[j+2:]
		}
		return text, "", ""
	}
	k, o, ok := strings.Cut(text[i+len(": kernel "):], ", other ")
	if !ok {
		return text, "", ""
	}
	return text[:i], k, o
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// mdCell makes s safe inside a Markdown table cell.
func mdCell(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "|", `\|`)
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
