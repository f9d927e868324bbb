package stress

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/ovlmount/ovlmount/conformance"
)

// Report renders a reproduction for people: how it was found, the layers
// it needs, and each step with both sides' results.
func (r *Repro) Report(file string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "divergence %s\n", r.Signature)
	fmt.Fprintf(&b, "  found with seed %#x, %d workers, operations %s\n", r.Seed, r.Procs, r.Ops)
	if !r.Reproduced {
		fmt.Fprintf(&b, "  a single process does not reproduce it: it needs the workers' concurrency; rerun the seed\n")
		return b.String()
	}
	fmt.Fprintf(&b, "  minimal: %d of %d steps, %d of %d layer objects", len(r.Steps), r.OrigSteps, r.Plan.nodes(), r.OrigNodes)
	if file != "" {
		fmt.Fprintf(&b, "; replay: ovlstress -bin PROG -replay %s", file)
	}
	b.WriteString("\n  layers (lowerdir=lower0:lower1):\n")
	for l := range numLayers {
		for _, n := range r.Plan.layer(l) {
			fmt.Fprintf(&b, "    %-6s %s\n", layerNames[l], nodeString(n))
		}
	}
	b.WriteString("  steps, with the oracle's result (and the subject's where it differs):\n")
	for i, rec := range r.Transcript {
		fmt.Fprintf(&b, "    %d. %s (worker %d)\n", i+1, rec.Step.Kind, rec.Step.Worker)
		for _, o := range rec.Results {
			fmt.Fprintf(&b, "       %s -> %s\n", o.Op, o.Oracle)
			if o.Subject != o.Oracle {
				fmt.Fprintf(&b, "       %s    subject: %s\n", strings.Repeat(" ", len(o.Op)), o.Subject)
			}
		}
	}
	switch d := r.Divergence; {
	case d == nil:
		b.WriteString("  the last replay did not diverge (flaky?)\n")
	case d.Stage == stageOp:
		// The transcript shows it.
	default:
		fmt.Fprintf(&b, "  %s\n", strings.ReplaceAll((&Divergence{Stage: d.Stage, Worker: d.Worker, Step: d.Step, Kind: d.Kind, Details: d.Details}).String(), "\n", "\n  "))
	}
	return b.String()
}

// nodeString renders a layer node on one line.
func nodeString(n conformance.Node) string {
	parts := []string{n.Path, n.Kind.String()}
	switch n.Kind {
	case conformance.File:
		parts = append(parts, summarize(n.Content))
	case conformance.Symlink:
		parts = append(parts, "-> "+strconv.Quote(n.Target))
	case conformance.HardLink:
		parts = append(parts, "to "+n.Target)
	case conformance.CharDev:
		parts = append(parts, fmt.Sprintf("%d:%d", n.Major, n.Minor))
	}
	if n.Kind != conformance.HardLink && n.Kind != conformance.Whiteout && n.Kind != conformance.XWhiteout {
		if n.Mode != 0 {
			parts = append(parts, fmt.Sprintf("%#o", uint32(n.Mode)))
		}
		if n.UID != 0 || n.GID != 0 {
			parts = append(parts, fmt.Sprintf("%d:%d", n.UID, n.GID))
		}
	}
	if n.Opaque != conformance.NotOpaque {
		parts = append(parts, fmt.Sprintf("opaque(%d)", n.Opaque))
	}
	for _, k := range slices.Sorted(maps.Keys(n.Xattrs)) {
		parts = append(parts, k+"="+strconv.Quote(n.Xattrs[k]))
	}
	return strings.Join(parts, " ")
}

func summarize(s string) string {
	if len(s) <= 24 {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("<%d bytes>", len(s))
}
