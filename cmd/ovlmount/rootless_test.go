package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
)

// TestUserNamespaceWrites mounts as root of a new user namespace, where
// trusted.* xattrs are refused, writes, and checks that the upper layer
// uses the user.overlay.* forms, and that ovlmount as real root and the
// kernel with userxattr show what the namespace saw.
func TestUserNamespaceWrites(t *testing.T) {
	testenv.RequireMount(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare not found")
	}
	bin := testenv.Binary(t)
	d := t.TempDir()
	for _, p := range []string{"l/d", "u", "w", "w2", "w3", "m"} {
		must(t, os.MkdirAll(filepath.Join(d, p), 0o755))
	}
	for p, s := range map[string]string{"l/a": "a", "l/c": "c", "l/d/b": "b"} {
		must(t, os.WriteFile(filepath.Join(d, p), []byte(s), 0o644))
	}
	script := `set -e
cd "$1"; bin="$2"
"$bin" -o "lowerdir=$PWD/l,upperdir=$PWD/u,workdir=$PWD/w" m
echo more >> m/a
rm m/c
rm -r m/d
mkdir m/d
echo new > m/d/new
mv m/a m/a2
find m -mindepth 1 | sort
umount m`
	out, err := exec.Command("unshare", "-U", "-r", "-m", "sh", "-c", script, "sh", d, bin).CombinedOutput()
	if err != nil {
		t.Fatalf("in the user namespace: %v\n%s", err, out)
	}
	inside := strings.TrimSpace(string(out))
	if inside != "m/a2\nm/d\nm/d/new" {
		t.Fatalf("view in the namespace:\n%s", inside)
	}
	xattrs, _ := exec.Command("getfattr", "-R", "-d", "-m", "-", filepath.Join(d, "u")).CombinedOutput()
	for _, want := range []string{`user.overlay.opaque="y"`, "user.overlay.origin="} {
		if !strings.Contains(string(xattrs), want) {
			t.Errorf("upper layer lacks %s:\n%s", want, xattrs)
		}
	}
	if strings.Contains(string(xattrs), "trusted.overlay") {
		t.Errorf("trusted.overlay.* written in a user namespace:\n%s", xattrs)
	}
	view := func(mount ...string) string {
		t.Helper()
		mnt := filepath.Join(d, "m")
		if out, err := exec.Command(mount[0], mount[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", mount, err, out)
		}
		defer testenv.Unmount(t, mnt)
		var names []string
		filepath.WalkDir(mnt, func(p string, _ os.DirEntry, err error) error {
			if err == nil && p != mnt {
				names = append(names, "m/"+strings.TrimPrefix(p, mnt+"/"))
			}
			return nil
		})
		slices.Sort(names)
		return strings.Join(names, "\n")
	}
	layers := "lowerdir=" + d + "/l,upperdir=" + d + "/u"
	if got := view(bin, "-o", layers+",workdir="+d+"/w2", d+"/m"); got != inside {
		t.Errorf("ovlmount as root shows\n%s\nwant\n%s", got, inside)
	}
	if got := view("mount", "-t", "overlay", "overlay", "-o", layers+",workdir="+d+"/w3,userxattr", d+"/m"); got != inside {
		t.Errorf("the kernel with userxattr shows\n%s\nwant\n%s", got, inside)
	}
}
