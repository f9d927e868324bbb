package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/options.md from the option table")

// optionsMarkdown renders the option table as docs/options.md shows it.
func optionsMarkdown() string {
	var b strings.Builder
	b.WriteString("# ovlmount options\n\n")
	b.WriteString("Generated from the option table in `cmd/ovlmount/options.go` by\n")
	b.WriteString("`go test ./cmd/ovlmount -run TestOptionsDoc -update`; a test keeps the two equal.\n\n")
	b.WriteString("Pass them as `-o OPT[,OPT...]`. Unknown options are ignored with a warning,\n")
	b.WriteString("as fuse-overlayfs does, except that one a letter or two from a known option\n")
	b.WriteString("is refused as a typo (`uperdir=`: \"did you mean upperdir?\"); options of\n")
	b.WriteString("mount(8), mount.fuse3 and libfuse such as `uid=`, `sync` or `nofail` are never\n")
	b.WriteString("taken for typos. *ignored* options are accepted and have no effect (a warning\n")
	b.WriteString("says so); *not yet* options are refused with a message naming them.\n\n")
	b.WriteString("| option | values | status | meaning |\n|---|---|---|---|\n")
	label := map[status]string{done: "implemented", ignored: "ignored", later: "not yet"}
	for _, o := range options {
		values := "a value"
		if o.values != nil {
			values = strings.Join(o.values, ", ")
			if values == "" {
				values = "none"
			}
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", o.name, values, label[o.status], strings.ReplaceAll(o.help, "|", "\\|"))
	}
	return b.String()
}

func TestOptionsDoc(t *testing.T) {
	const path = "../../docs/options.md"
	want := optionsMarkdown()
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatal("docs/options.md differs from the option table; run: go test ./cmd/ovlmount -run TestOptionsDoc -update")
	}
}
