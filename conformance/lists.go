package conformance

import (
	"bufio"
	"bytes"
	_ "embed"
	"strings"
)

//go:embed accepted.txt
var acceptedText []byte

//go:embed pending.txt
var pendingText []byte

// Accepted returns the scenarios where ovlmount is known to differ from
// the kernel, with the reason for each, from accepted.txt.
func Accepted() map[string]string { return parseList(acceptedText) }

// Pending returns the scenarios ovlmount does not support yet (it refuses
// or ignores their mount options, or differs on them), with the reason
// for each, from pending.txt.
func Pending() map[string]string { return parseList(pendingText) }

// Lists are what a program under test may show besides sameness: the
// scenarios allowed to differ (Accepted) and those it does not support
// yet (Pending), each with its reason. They are ovlmount's; other
// programs are run with none.
type Lists struct {
	Accepted map[string]string
	Pending  map[string]string
}

// OvlmountLists returns accepted.txt and pending.txt.
func OvlmountLists() Lists { return Lists{Accepted: Accepted(), Pending: Pending()} }

// parseList reads "name: reason" lines; blank lines and # comments are
// skipped.
func parseList(text []byte) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if name, why, ok := strings.Cut(line, ":"); ok {
			out[strings.TrimSpace(name)] = strings.TrimSpace(why)
		}
	}
	return out
}
