package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovlmount/ovlmount/internal/mountinfo"
	"github.com/ovlmount/ovlmount/internal/testenv"
)

// nobody is the uid and gid the permission tests act as.
const nobody = "65534"

// asNobody runs argv as uid and gid 65534 with no supplementary groups.
func asNobody(t *testing.T, argv ...string) result {
	t.Helper()
	return execute(t, "setpriv", append([]string{"--reuid=" + nobody, "--regid=" + nobody, "--clear-groups", "--"}, argv...)...)
}

// secretStack is makeStack with l1/secret, root's and mode 0600.
func secretStack(t *testing.T) string {
	t.Helper()
	d := makeStack(t)
	if err := os.WriteFile(filepath.Join(d, "l1/secret"), []byte("root only"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The test directory itself must be searchable for nobody.
	for p := d; p != "/"; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o001 == 0 {
			os.Chmod(p, fi.Mode().Perm()|0o011)
		}
	}
	return d
}

// checkPermissionsChecked checks that the kernel checks permissions on
// the mount at mnt: mountinfo shows default_permissions, and another user
// can neither read l1/secret through it nor create in it.
func checkPermissionsChecked(t *testing.T, mnt string) {
	t.Helper()
	m, ok := mountinfo.At(mnt)
	if !ok {
		t.Fatalf("%s not in mountinfo", mnt)
	}
	if !m.Has("default_permissions") {
		t.Errorf("%s mounted without default_permissions: %q %q", mnt, m.Options, m.SuperOpts)
	}
	if r := asNobody(t, "cat", mnt+"/secret"); r.code == 0 || !strings.Contains(r.stderr, "Permission denied") {
		t.Errorf("cat of a root-only 0600 file as nobody: exit %d, stdout %q, stderr %q; want Permission denied", r.code, r.stdout, r.stderr)
	}
	if r := asNobody(t, "touch", mnt+"/d/new"); r.code == 0 {
		t.Errorf("create in a root-owned 0755 directory as nobody succeeded")
	}
}

// TestPermissionsChecked mounts every way a connection can come to be
// (ovlmount's own mount(2), mount(8) through mount.fuse3, and mount.fuse3
// -o drop_privileges handing over /dev/fd/N) with allow_other, and checks
// that another user is refused what the modes refuse; a /dev/fd/N
// connection mounted without default_permissions is not served at all.
func TestPermissionsChecked(t *testing.T) {
	testenv.RequireMount(t)
	t.Run("mount(2)", func(t *testing.T) {
		d := secretStack(t)
		mnt := d + "/mnt"
		mountDaemon(t, mnt, "-o", "allow_other,lowerdir="+d+"/l1:"+d+"/l2", mnt)
		checkPermissionsChecked(t, mnt)
	})
	for _, tc := range []struct{ name, extra string }{
		{"mount.fuse3", "allow_other,"},
		{"mount.fuse3 drop_privileges", "drop_privileges,default_permissions,allow_other,"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := secretStack(t)
			mnt := d + "/mnt"
			cleanupMount(t, mnt)
			r := execute(t, "mount", "-t", "fuse", testenv.Binary(t)+"#src", mnt, "-o", tc.extra+"lowerdir="+d+"/l1:"+d+"/l2")
			if r.code != 0 || !onlyWarnings(r.stderr) {
				t.Fatalf("mount: exit %d, stderr %q", r.code, r.stderr)
			}
			checkPermissionsChecked(t, mnt)
		})
	}
	t.Run("mount.fuse3 drop_privileges without default_permissions", func(t *testing.T) {
		d := secretStack(t)
		mnt := d + "/mnt"
		cleanupMount(t, mnt)
		r := execute(t, "mount", "-t", "fuse", testenv.Binary(t)+"#src", mnt, "-o", "drop_privileges,allow_other,lowerdir="+d+"/l1:"+d+"/l2")
		if r.code == 0 || !strings.Contains(r.stderr, "default_permissions") {
			t.Errorf("mount: exit %d, stderr %q; want a refusal naming default_permissions", r.code, r.stderr)
		}
		if _, ok := mountinfo.At(mnt); ok {
			if r := asNobody(t, "cat", mnt+"/secret"); r.code == 0 {
				t.Errorf("nobody read a root-only file: %q", r.stdout)
			}
		}
	})
}
