package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
)

// The man page, docs/ovlmount.8, is written by hand but for its .TH line
// (the release, from VERSION) and the list of mount options between two
// marker lines, which manOptions writes from the option table.
const (
	manPath       = "../../docs/ovlmount.8"
	manBegin      = `.\" BEGIN GENERATED: mount options` + "\n"
	manEnd        = `.\" END GENERATED: mount options` + "\n"
	manTitleStart = ".TH OVLMOUNT 8 "
)

// manOptions renders the option table as the man page's list of mount
// options, in the table's order, grouped as --help groups them.
func manOptions() string {
	var b strings.Builder
	for _, g := range []struct {
		s     status
		title string
	}{{done, "Implemented"}, {ignored, "Accepted and ignored (a warning says so)"}, {later, "Not implemented yet (refused)"}} {
		fmt.Fprintf(&b, ".SS %s\n", g.title)
		for _, o := range options {
			if o.status != g.s {
				continue
			}
			switch {
			case o.values == nil:
				fmt.Fprintf(&b, ".TP\n.BI %s= value\n", o.name)
			default:
				fmt.Fprintf(&b, ".TP\n.B %s\n", roffEscape(optionSyntax(o)))
			}
			fmt.Fprintf(&b, "%s\n", roffEscape(o.help))
		}
	}
	return b.String()
}

// roffEscape makes s a line of roff text: a backslash is \e, and a line
// must not start with a control character.
func roffEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// manPage returns the man page src with its generated parts written for
// release.
func manPage(t *testing.T, src, release string) string {
	t.Helper()
	begin, end := strings.Index(src, manBegin), strings.Index(src, manEnd)
	if begin < 0 || end < begin {
		t.Fatalf("%s lacks the lines %q and %q", manPath, manBegin, manEnd)
	}
	src = src[:begin+len(manBegin)] + manOptions() + src[end:]
	lines := strings.SplitAfter(src, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, manTitleStart) {
			lines[i] = manTitleStart + fmt.Sprintf(`"" "ovlmount %s" "System Administration"`, release) + "\n"
			return strings.Join(lines, "")
		}
	}
	t.Fatalf("%s has no line starting %q", manPath, manTitleStart)
	return ""
}

// TestManPage checks that the man page lists every option as the table
// says, names the release of VERSION, and that man renders it without a
// warning, every option in it.
func TestManPage(t *testing.T) {
	src, err := os.ReadFile(manPath)
	if err != nil {
		t.Fatal(err)
	}
	version, err := os.ReadFile("../../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	want := manPage(t, string(src), strings.TrimSpace(string(version)))
	if *update {
		if err := os.WriteFile(manPath, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	} else if string(src) != want {
		t.Fatalf("%s differs from the option table or VERSION; run: go test ./cmd/ovlmount -run TestManPage -update", manPath)
	}

	testenv.RequireProgram(t, "man", "man-db")
	abs, err := filepath.Abs(manPath)
	if err != nil {
		t.Fatal(err)
	}
	out, warnings := renderMan(t, "-l", abs)
	if warnings != "" {
		t.Errorf("man -l %s warns:\n%s", manPath, warnings)
	}
	checkManText(t, out)
}

// renderMan runs man with all of groff's warnings on and returns the
// text and what it said on stderr.
func renderMan(t *testing.T, args ...string) (text, stderr string) {
	t.Helper()
	cmd := exec.Command("man", append([]string{"--warnings=w"}, args...)...)
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "MANWIDTH=80", "MANPAGER=cat", "PAGER=cat")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		t.Fatalf("man %q: %v\n%s", args, err, e.String())
	}
	return o.String(), e.String()
}

// checkManText checks the rendered man page: its sections, and a line
// that starts with each option (a short one shares it with its help).
func checkManText(t *testing.T, text string) {
	t.Helper()
	lines, starts := map[string]bool{}, map[string]bool{}
	for _, l := range strings.Split(text, "\n") {
		lines[strings.TrimSpace(l)] = true
		if f := strings.Fields(l); len(f) > 0 {
			starts[f[0]] = true
		}
	}
	for _, section := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "MOUNT OPTIONS", "LOGS AND SIGNALS", "SEE ALSO"} {
		if !lines[section] {
			t.Errorf("the man page has no section %s", section)
		}
	}
	for _, o := range options {
		tag := optionSyntax(o)
		if o.values == nil {
			tag = o.name + "=value"
		}
		if !starts[tag] {
			t.Errorf("the man page has no line starting %q for option %s", tag, o.name)
		}
	}
}
