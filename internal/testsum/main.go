// Command testsum runs go test -json and shows its progress for people: a
// line for each top-level test and each package as they end, the output
// of every failing test and the reason of every skipped one, where go
// test -v would show every line of every test. It owns the presentation
// only: it must not decide the outcome, and exits with go test's status.
//
//	testsum go test -json [flags] [packages]
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testsum go test -json [flags] [packages]")
		os.Exit(2)
	}
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdin, cmd.Stderr = os.Stdin, os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsum:", err)
		os.Exit(2)
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "testsum:", err)
		os.Exit(2)
	}
	s := newSummary(os.Stdout, modulePath())
	s.read(out)
	err = cmd.Wait()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		os.Exit(exit.ExitCode())
	case err != nil:
		fmt.Fprintln(os.Stderr, "testsum:", err)
		os.Exit(2)
	case s.failed:
		// go test said success, but a test said otherwise.
		os.Exit(1)
	}
}

// modulePath returns the module of go.mod in the current directory, whose
// prefix the package names are shown without; "" if there is none.
func modulePath() string {
	data, err := os.ReadFile("go.mod")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(data), "\n") {
		if m, ok := strings.CutPrefix(strings.TrimSpace(l), "module "); ok {
			return strings.Trim(strings.TrimSpace(m), `"`)
		}
	}
	return ""
}

// event is one line of go test -json (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

// counts of a package's top-level tests.
type counts struct{ pass, fail, skip int }

// summary turns events into the lines it writes to w.
type summary struct {
	w      io.Writer
	module string
	output map[[2]string][]string // a test's output lines, by package and test ("" for the package's own)
	counts map[string]*counts
	failed bool
}

func newSummary(w io.Writer, module string) *summary {
	return &summary{w: w, module: module, output: map[[2]string][]string{}, counts: map[string]*counts{}}
}

// read handles every line of r: events, and any other line (go test's own
// messages) written as it is.
func (s *summary) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var e event
		if line := sc.Bytes(); !bytes.HasPrefix(line, []byte("{")) || json.Unmarshal(line, &e) != nil {
			fmt.Fprintf(s.w, "%s\n", line)
			continue
		}
		s.event(e)
	}
}

func (s *summary) event(e event) {
	key := [2]string{e.Package, e.Test}
	pkg := s.short(e.Package)
	c := s.counts[e.Package]
	if c == nil {
		c = &counts{}
		s.counts[e.Package] = c
	}
	topLevel := e.Test != "" && !strings.Contains(e.Test, "/")
	switch e.Action {
	case "build-output":
		fmt.Fprint(s.w, e.Output)
	case "output":
		s.output[key] = append(s.output[key], e.Output)
	case "pass":
		if e.Test == "" {
			fmt.Fprintf(s.w, "ok    %s %.1fs (%d passed, %d skipped)\n", pkg, e.Elapsed, c.pass, c.skip)
		} else if topLevel {
			c.pass++
			fmt.Fprintf(s.w, "PASS  %s %s (%.1fs)\n", pkg, e.Test, e.Elapsed)
		}
		delete(s.output, key)
	case "skip":
		if e.Test == "" {
			fmt.Fprintf(s.w, "ok    %s (no tests)\n", pkg)
			break
		}
		if topLevel {
			c.skip++
		}
		fmt.Fprintf(s.w, "SKIP  %s %s\n", pkg, e.Test)
		s.writeOutput(key)
	case "fail":
		s.failed = true
		if e.Test == "" {
			s.writeOutput(key)
			fmt.Fprintf(s.w, "FAIL  %s %.1fs (%d passed, %d skipped, %d failed)\n", pkg, e.Elapsed, c.pass, c.skip, c.fail)
			break
		}
		if topLevel {
			c.fail++
		}
		fmt.Fprintf(s.w, "FAIL  %s %s (%.1fs)\n", pkg, e.Test, e.Elapsed)
		s.writeOutput(key)
	}
}

// writeOutput writes what a test (or a package) said, indented, without
// the lines that only mark its progress, and forgets it.
func (s *summary) writeOutput(key [2]string) {
	for _, l := range s.output[key] {
		t := strings.TrimSpace(l)
		if t == "" || t == "PASS" || t == "FAIL" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- ") ||
			strings.HasPrefix(t, "ok  \t") || strings.HasPrefix(t, "FAIL\t") {
			continue
		}
		fmt.Fprintf(s.w, "      %s\n", strings.TrimRight(l, "\n"))
	}
	delete(s.output, key)
}

// short returns a package's path without the module's prefix.
func (s *summary) short(pkg string) string {
	if pkg == s.module {
		return "."
	}
	if s.module != "" {
		if p, ok := strings.CutPrefix(pkg, s.module+"/"); ok {
			return p
		}
	}
	return pkg
}
