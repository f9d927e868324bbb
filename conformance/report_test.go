package conformance

import (
	"strings"
	"testing"
)

// TestWriteMarkdown checks the report's shape on made-up outcomes: counts
// per area, the scenarios not supported, pending ones with their reason,
// and a side-by-side table for each divergent scenario only.
func TestWriteMarkdown(t *testing.T) {
	rep := SuiteReport{Impl: "prog", Version: "prog 1.0", Kernel: "6.1", Date: "2030-01-01", Outcomes: []Outcome{
		{Scenario: "rename/a", Area: "rename", Status: StatusSame},
		{Scenario: "rename/b", Area: "rename", Status: StatusDiffers,
			Ops:      []OpOutcome{{Op: "rename(a, b)", Kernel: "ok", Other: "EXDEV"}, {Op: "lstat(b)", Kernel: "ok", Other: "ok"}},
			Problems: []Problem{{"op", "op 1 ..."}, {"merged mode", "merged: b: mode: kernel 0100644, other 0100600"}}},
		{Scenario: "xattr/c", Area: "xattr", Status: StatusAccepted, Reason: "a | limit"},
		{Scenario: "ino/d", Area: "ino", Status: StatusError, Error: "mount failed\nmore"},
		{Scenario: "index/e", Area: "index", Status: StatusPending, List: "pending.txt", Reason: "index=on is coming",
			Unsupported: "prog refuses the scenario's mount: bad option"},
		{Scenario: "index/f", Area: "index", Status: StatusPending, List: "pending.txt", Reason: "nlink xattr",
			Problems: []Problem{{"upper layer overlay xattrs", `upper layer: h: overlay xattrs: kernel [nlink="U+1"], other []`}}},
		{Scenario: "index/g", Area: "index", Status: StatusUnsupported, Unsupported: "prog ignored index=on"},
	}}
	for _, o := range rep.Outcomes {
		rep.Counts.add(o.Status)
	}
	var b strings.Builder
	if err := WriteMarkdown(&b, []SuiteReport{rep}, "# intro\n"); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"| prog | prog 1.0 | 7 | 1 | 3 | 1 | 3 | 2 | 1 |",
		"| rename | 2 | 1 | 1 | 0 | 0 |",
		"| xattrs | 1 | 0 | 1 | 1 | 0 |",
		"| index: hard links and the inode index | 3 | 0 | 0 | 0 | 3 |",
		"| `index/e` | index=on is coming | prog refuses the scenario's mount: bad option |",
		"| `index/f` | nlink xattr | 1 differences (below) |",
		"| `index/g` |  | prog ignored index=on |",
		"### prog: `index/f`\n\nPending: nlink xattr",
		`| upper layer: h: overlay xattrs | [nlink="U+1"] | [] |`,
		"### prog: `rename/b`",
		"| `rename(a, b)` | ok | EXDEV |",
		"| merged: b: mode | 0100644 | 0100600 |",
		`Accepted: a \| limit`,
		"Could not run: `mount failed`",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	for _, unwanted := range []string{"`rename/a`", "lstat(b)", "### prog: `index/e`", "### prog: `index/g`"} {
		if strings.Contains(md, unwanted) {
			t.Errorf("report shows %q, which does not differ:\n%s", unwanted, md)
		}
	}
}

func TestListedString(t *testing.T) {
	got := listedString([]string{"b:reg", "a:dir", "b:reg", "gone:reg"}, "gone")
	if want := "[a:dir b:reg(x2)]"; got != want {
		t.Errorf("listedString = %s, want %s", got, want)
	}
}
