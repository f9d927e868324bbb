package testenv

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// RootlessUser is the account the tests that run as an unprivileged user
// with a subordinate id range use (rootless podman, rootless mounts with
// owners of many ids). No one logs in as it: it has no home and no login
// shell.
const RootlessUser = "ovlmount-e2e"

// User makes the account name when missing (useradd, which also gives it
// ranges in /etc/subuid and /etc/subgid; it stays afterwards) and returns
// its uid and gid.
func User(t testing.TB, name string) (uid, gid string) {
	t.Helper()
	if _, err := exec.Command("id", "-u", name).Output(); err != nil {
		t.Logf("adding the user %s (useradd); it stays afterwards", name)
		if out, err := exec.Command("useradd", "-M", "-s", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
			t.Fatalf("useradd %s: %v\n%s", name, err, out)
		}
	}
	var ids [2]string
	for i, flag := range []string{"-u", "-g"} {
		out, err := exec.Command("id", flag, name).Output()
		if err != nil {
			t.Fatalf("id %s %s: %v", flag, name, err)
		}
		ids[i] = strings.TrimSpace(string(out))
	}
	return ids[0], ids[1]
}

// SubIDs returns the first range of subordinate ids that file
// (/etc/subuid or /etc/subgid) gives the account name: its first id and
// how many.
func SubIDs(t testing.TB, file, name string) (first, count int) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) != 3 || fields[0] != name {
			continue
		}
		first, err1 := strconv.Atoi(fields[1])
		count, err2 := strconv.Atoi(fields[2])
		if err1 == nil && err2 == nil {
			return first, count
		}
	}
	t.Fatalf("%s gives %s no range", file, name)
	return 0, 0
}
