package conformance

import (
	"bufio"
	"bytes"
	_ "embed"
	"strings"
)

//go:embed accepted.txt
var acceptedText []byte

// Accepted returns the scenarios where ovlmount is known to differ from
// the kernel, with the reason for each, from accepted.txt.
func Accepted() map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(acceptedText))
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
