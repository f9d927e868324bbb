package main

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
)

// privateMountsEnv names, in a test process privateMounts started, the
// test that process is to run in its private mount namespace.
const privateMountsEnv = "OVLMOUNT_TEST_PRIVATE_MOUNTS"

// privateMounts lets a test change the mount table without the host
// seeing it (a tmpfs over /dev or /usr/local/sbin). It returns true when
// the test runs in a private mount namespace made for it. Otherwise it
// runs the test again, alone, in a new private mount namespace (the same
// test binary, -test.run naming just the test), reports that run's
// outcome as the test's own and returns false: the caller then returns.
// The mounts the test makes there, and those of the daemons it starts,
// are gone with the namespace once its last process ends.
func privateMounts(t *testing.T) bool {
	t.Helper()
	if os.Getenv(privateMountsEnv) == t.Name() {
		return true
	}
	var run []string
	for _, part := range strings.Split(t.Name(), "/") {
		run = append(run, "^"+regexp.QuoteMeta(part)+"$")
	}
	cmd := exec.Command(os.Args[0], "-test.run="+strings.Join(run, "/"), "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), privateMountsEnv+"="+t.Name(), "OVLMOUNT_BIN="+testenv.Binary(t))
	// Go makes the new namespace's mounts private, as unshare(1) does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	switch {
	case strings.Contains(string(out), "--- SKIP: "+t.Name()+" "):
		t.Skipf("in a private mount namespace:\n%s", out)
	case err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()+" "):
		t.Errorf("in a private mount namespace: %v\n%s", err, out)
	}
	return false
}
