package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/testenv"
)

// The checks themselves are package check's to test; these test the
// command: its line, its output and fsck's exit codes.

func TestIsCheckCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"check", "-o", "lowerdir=/l"}, true},
		{[]string{"check", "--repair", "-olowerdir=/l"}, true},
		{[]string{"check"}, true},
		// mount.fuse3's form for a mount whose source is named check.
		{[]string{"check", "/mnt", "-o", "lowerdir=/l"}, false},
		{[]string{"-o", "lowerdir=/l", "check", "/mnt"}, false},
	} {
		if got := isCheckCommand(tc.args); got != tc.want {
			t.Errorf("isCheckCommand(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}

func TestCheckStack(t *testing.T) {
	s, err := checkStack([]string{"lowerdir=/a:/b\\:c::/d::/e", "upperdir=/u", "workdir=/w", "metacopy=on", "redirect_dir=on", "index=on", "xino=auto"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(s.Lower, "|") != "/a|/b:c" || strings.Join(s.Data, "|") != "/d|/e" || s.Upper != "/u" || s.Work != "/w" {
		t.Errorf("checkStack: %+v", s)
	}
	for _, opts := range [][]string{{"upperdir=/u", "workdir=/w"}, {"lowerdir=/a", "upperdir=/u"}, {"lowerdir=/a", "workdir=/w"}, {"lowerdir=/a", "uperdir=/u"}} {
		if _, err := checkStack(opts); err == nil {
			t.Errorf("checkStack(%q) takes them", opts)
		}
	}
}

// checkRun runs ovlmount check with args and checks its exit code.
func checkRun(t *testing.T, code int, args ...string) result {
	t.Helper()
	r := ovlmount(t, append([]string{"check"}, args...)...)
	if r.code != code {
		t.Fatalf("ovlmount check %q: exit %d, want %d\nstdout: %s\nstderr: %s", args, r.code, code, r.stdout, r.stderr)
	}
	return r
}

func TestCheckCommand(t *testing.T) {
	d := makeStack(t)
	opts := "lowerdir=" + d + "/l1:" + d + "/l2,upperdir=" + d + "/upper,workdir=" + d + "/work"

	checkRun(t, fsckUsage)
	checkRun(t, fsckUsage, "-o", "upperdir="+d+"/upper")
	checkRun(t, fsckUsage, "--fix", "-o", opts)
	checkRun(t, fsckUsage, "-o", opts+",uperdir=x")
	checkRun(t, fsckOperational, "-o", "lowerdir="+d+"/missing")
	if r := checkRun(t, 0, "--help"); !strings.Contains(r.stdout, "fsck") {
		t.Errorf("--help says: %s", r.stdout)
	}

	if r := checkRun(t, 0, "-o", opts+",metacopy=on"); !strings.Contains(r.stdout, "no problem found") {
		t.Errorf("a clean stack: %s", r.stdout)
	}
	testenv.Must(t, os.MkdirAll(d+"/work/work/#7/sub", 0o755))
	testenv.Must(t, os.MkdirAll(d+"/work/work/incompat/volatile", 0o755))
	r := checkRun(t, fsckUncorrected, "-o", opts)
	for _, want := range []string{d + "/work/work/#7: ", d + "/work/work/incompat/volatile: ", "2 problems, 0 repaired, 2 left"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	r = checkRun(t, fsckCorrected|fsckUncorrected, "--repair", "-o", opts)
	if !strings.Contains(r.stdout, d+"/work/work/#7: ") || !strings.Contains(r.stdout, "; removed\n") {
		t.Errorf("--repair says:\n%s", r.stdout)
	}
	testenv.Must(t, os.RemoveAll(d+"/work/work/incompat"))
	checkRun(t, 0, "-o", opts)
	testenv.Must(t, os.Mkdir(d+"/work/work/#8", 0o755))
	checkRun(t, fsckCorrected, "--repair", "-o", opts)
	checkRun(t, 0, "-o", opts)
}

// TestCheckInUse checks that the command refuses a stack that a live
// ovlmount mount or a kernel one uses, and checks what an ovlmount mount
// wrote once it is unmounted.
func TestCheckInUse(t *testing.T) {
	testenv.RequireMount(t)
	d := makeStack(t)
	mnt := d + "/mnt"
	opts := "lowerdir=" + d + "/l1:" + d + "/l2,upperdir=" + d + "/upper,workdir=" + d + "/work"
	mountDaemon(t, mnt, "-o", opts, mnt)
	for _, f := range []string{"d/f", "g"} {
		testenv.Must(t, os.Remove(filepath.Join(mnt, f)))
	}
	testenv.Must(t, os.WriteFile(mnt+"/d/new", []byte("new"), 0o644))
	testenv.Must(t, os.Chmod(mnt+"/shadow", 0o600))
	testenv.Must(t, os.Mkdir(mnt+"/newdir", 0o755))
	r := checkRun(t, fsckOperational, "-o", opts)
	if !strings.Contains(r.stderr, "FUSE daemon") {
		t.Errorf("refused with: %s", r.stderr)
	}
	checkRun(t, fsckOperational, "-o", "lowerdir="+d+"/l1/d")
	pid := daemonFor(t, d+"/")
	testenv.Unmount(t, mnt)
	waitExit(pid, 10*time.Second)
	checkRun(t, 0, "-o", opts)

	if out, err := exec.Command("mount", "-t", "overlay", "overlay", "-o", opts, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount -t overlay: %v\n%s", err, out)
	}
	t.Cleanup(func() { testenv.Unmount(t, mnt) })
	r = checkRun(t, fsckOperational, "-o", "lowerdir="+d+"/l2")
	if !strings.Contains(r.stderr, "of the overlay mounted at "+mnt) {
		t.Errorf("refused with: %s", r.stderr)
	}
}
