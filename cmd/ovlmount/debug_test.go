package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
)

// TestDebugTrace checks what -d prints: the mount, its layers and
// options once, then a line per request with the operation, node, name,
// result and time, and nothing for FLUSH, which the kernel sends at the
// first close and the daemon declines, nor for FORGET.
func TestDebugTrace(t *testing.T) {
	testenv.RequireMount(t)
	d := makeStack(t)
	mnt := d + "/mnt"
	p := startForeground(t, mnt, "-d", "-o", "lowerdir="+d+"/l1:"+d+"/l2,upperdir="+d+"/upper,workdir="+d+"/work", mnt)
	if _, err := os.Stat(mnt + "/shadow"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(mnt + "/missing"); !os.IsNotExist(err) {
		t.Fatalf("stat missing: %v, want ENOENT", err)
	}
	if err := os.WriteFile(mnt+"/d/f", []byte("written"), 0o644); err != nil {
		t.Fatal(err)
	}
	if n := requests(statsOf(t, mnt), "FLUSH"); n == 0 {
		t.Fatal("the kernel sent no FLUSH: the test shows nothing")
	}
	p.umountAndWait(t, mnt)

	var lines []string
	for _, l := range strings.Split(strings.TrimSuffix(p.stderr.String(), "\n"), "\n") {
		s, ok := strings.CutPrefix(l, "ovlmount: "+mnt+": ")
		if !ok && l != "ovlmount: mountpoint: "+mnt {
			t.Errorf("stderr line %q does not name the mountpoint", l)
		}
		for _, op := range []string{"FLUSH", "FORGET", "BATCH_FORGET", "OPENDIR", "INTERRUPT"} {
			if strings.HasPrefix(s, op+" ") || strings.HasPrefix(s, op+":") {
				t.Errorf("a line for %s, a request declined on purpose or not answered: %q", op, l)
			}
		}
		lines = append(lines, s)
	}
	text := strings.Join(lines, "\n")
	q := regexp.QuoteMeta
	for _, want := range []string{
		`(?m)^workdir: ` + q(d+"/work") + `$`,
		`(?m)^options: lowerdir=` + q(d+"/l1:"+d+"/l2,upperdir="+d+"/upper,workdir="+d+"/work") + `$`,
		`(?m)^layer 0: upper ` + q(d+"/upper") + ` `,
		`(?m)^layer 1: lower ` + q(d+"/l1") + ` `,
		`(?m)^layer 2: lower ` + q(d+"/l2") + ` `,
		`(?m)^INIT: OK, FUSE protocol 7\.\d+ \(the kernel's 7\.\d+\), \S+$`,
		`(?m)^LOOKUP node 1 "/" name "shadow": OK node \d+, \S+$`,
		`(?m)^LOOKUP node 1 "/" name "missing": ENOENT, \S+$`,
		`(?m)^LOOKUP node \d+ "/d" name "f": OK node \d+, \S+$`,
		`(?m)^OPEN node \d+ "/d/f" flags \d+: OK fh \d+(, passthrough)?, \S+$`,
		`(?m)^RELEASE node \d+ "/d/f" fh \d+: OK, \S+$`,
	} {
		if !regexp.MustCompile(want).MatchString(text) {
			t.Errorf("ovlmount -d printed no line matching %s:\n%s", want, text)
		}
	}
}
