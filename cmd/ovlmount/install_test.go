package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// makeTarget runs make with args in the repository and fails the test
// if it fails.
func makeTarget(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("make", append([]string{"-C", "../.."}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make %q: %v\n%s", args, err, out)
	}
}

// releaseAndCommit returns what --version must say of a binary the
// Makefile built: the release in VERSION and, in a git checkout, the
// commit ("" outside one).
func releaseAndCommit(t *testing.T) (string, string) {
	t.Helper()
	v, err := os.ReadFile("../../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	rev, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return strings.TrimSpace(string(v)), ""
	}
	return strings.TrimSpace(string(v)), strings.TrimSpace(string(rev))
}

// checkStamped checks that the --version of bin says the release and
// commit releaseAndCommit gives.
func checkStamped(t *testing.T, bin string) {
	t.Helper()
	release, commit := releaseAndCommit(t)
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", bin, err)
	}
	lines := strings.Split(string(out), "\n")
	if lines[0] != "ovlmount "+release {
		t.Errorf("%s --version: first line %q, want %q", bin, lines[0], "ovlmount "+release)
	}
	if commit != "" && (len(lines) < 2 || !strings.HasPrefix(lines[1], "commit: "+commit)) {
		t.Errorf("%s --version: %q, want the commit %s on its second line", bin, out, commit)
	}
}

// TestMakeInstall stages make install and make uninstall in a temporary
// DESTDIR: the binary, stamped with the release and the commit, and the
// man page go in, and uninstall removes them.
func TestMakeInstall(t *testing.T) {
	dest := t.TempDir()
	makeTarget(t, "install", "DESTDIR="+dest, "PREFIX=/usr")
	bin, man := dest+"/usr/bin/ovlmount", dest+"/usr/share/man/man8/ovlmount.8"
	for path, mode := range map[string]os.FileMode{bin: 0o755, man: 0o644} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatalf("make install: %v", err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), mode)
		}
	}
	src, _ := os.ReadFile(manPath)
	if got, _ := os.ReadFile(man); string(got) != string(src) {
		t.Errorf("installed man page differs from %s", manPath)
	}
	checkStamped(t, bin)
	makeTarget(t, "uninstall", "DESTDIR="+dest, "PREFIX=/usr")
	for _, path := range []string{bin, man} {
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Errorf("%s after make uninstall: %v, want it gone", path, err)
		}
	}
}
