package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
)

// nsScript mounts the layers of directory $1 with ovlmount $2, changes
// them and lists the view; it runs in a user namespace.
const nsScript = `set -e
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

// requireRootlessTools requires the programs the rootless tests run.
func requireRootlessTools(t *testing.T) {
	t.Helper()
	testenv.RequireProgram(t, "unshare", "util-linux")
	testenv.RequireProgram(t, "setpriv", "util-linux")
	testenv.RequireProgram(t, "getfattr", "attr")
}

// nsLayers makes the layers nsScript changes in a new directory that
// uid:gid can use, and a copy of the binary under test there that it can
// run. The directory of stats sockets a user's daemons make,
// /tmp/ovlmount-UID, goes at the end of the test.
func nsLayers(t *testing.T, uid, gid int) (d, bin string) {
	t.Helper()
	if uid != 0 {
		t.Cleanup(func() { os.RemoveAll("/tmp/ovlmount-" + strconv.Itoa(uid)) })
	}
	d = t.TempDir()
	// The test's temporary directories are root's alone.
	testenv.Must(t, os.Chmod(filepath.Dir(d), 0o755))
	testenv.Must(t, os.Chmod(d, 0o755))
	testenv.MakeTree(t, d, "f l/a a", "f l/c c", "f l/d/b b", "d u", "d w", "d w2", "d w3", "d m", "d dev")
	// Everything but dev is the user's, as a rootless user's storage is.
	testenv.Must(t, filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
		if err != nil || p == d || e.Name() == "dev" {
			return err
		}
		return os.Lchown(p, uid, gid)
	}))
	src, err := os.Open(testenv.Binary(t))
	testenv.Must(t, err)
	defer src.Close()
	bin = filepath.Join(d, "ovlmount")
	dst, err := os.OpenFile(bin, os.O_WRONLY|os.O_CREATE, 0o755)
	testenv.Must(t, err)
	_, err = io.Copy(dst, src)
	testenv.Must(t, err)
	testenv.Must(t, dst.Close())
	return d, bin
}

// checkNamespaceWrites checks what nsScript printed and left: the view in
// the namespace, an upper layer in the user.overlay.* forms, and the same
// view from ovlmount as real root and from the kernel with userxattr.
func checkNamespaceWrites(t *testing.T, d, bin string, out []byte, err error) {
	t.Helper()
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

// TestUserNamespaceWrites mounts as root of a new user namespace, where
// trusted.* xattrs are refused, writes, and checks that the upper layer
// uses the user.overlay.* forms, and that ovlmount as real root and the
// kernel with userxattr show what the namespace saw.
func TestUserNamespaceWrites(t *testing.T) {
	testenv.RequireMount(t)
	testenv.RequireProgram(t, "unshare", "util-linux")
	d, bin := nsLayers(t, 0, 0)
	out, err := exec.Command("unshare", "-U", "-r", "-m", "sh", "-c", nsScript, "sh", d, bin).CombinedOutput()
	checkNamespaceWrites(t, d, bin, out, err)
}

// asRootlessUser runs a command as rootlessUID in a user namespace of
// its own, where the user is root, with a /dev/fuse of its own (on a
// tmpfs on d/dev).
func asRootlessUser(d string, cmd ...string) ([]byte, error) {
	id := strconv.Itoa(rootlessUID)
	return asUser(d, id, id, []string{"-r"}, cmd...)
}

// asUser runs a command as uid:gid in a user namespace of its own, made
// by unshare with the flags userns (the id maps), with a /dev/fuse of its
// own (on a tmpfs on d/dev).
func asUser(d, uid, gid string, userns []string, cmd ...string) ([]byte, error) {
	setup := `set -e
dev="$1"; shift
mount -t tmpfs -o mode=755 ovlmount-test-dev "$dev"
mknod -m 600 "$dev/fuse" c 10 229
chown ` + uid + `:` + gid + ` "$dev/fuse"
mount --bind "$dev/fuse" /dev/fuse
exec setpriv --reuid=` + uid + ` --regid=` + gid + ` --clear-groups -- unshare -U -m ` + strings.Join(userns, " ") + ` "$@"`
	args := append([]string{"-m", "--propagation", "private", "sh", "-c", setup, "sh", filepath.Join(d, "dev")}, cmd...)
	return exec.Command("unshare", args...).CombinedOutput()
}

// rootlessUID is the unprivileged user TestRootless runs as. It needs no
// account: setpriv switches to the bare ids.
const rootlessUID = 64123

// TestRootless does what TestUserNamespaceWrites does as a real
// unprivileged user, as rootless podman runs ovlmount: the user creates a
// user namespace of its own, where its one uid is root. /dev/fuse is
// root's alone on these machines, so the test gives the user its own node
// in a private mount namespace (the host's /dev/fuse stays as it is).
func TestRootless(t *testing.T) {
	testenv.RequireMount(t)
	requireRootlessTools(t)
	d, bin := nsLayers(t, rootlessUID, rootlessUID)
	out, err := asRootlessUser(d, "sh", "-c", nsScript, "sh", d, bin)
	checkNamespaceWrites(t, d, bin, out, err)
	// What the user made belongs to it on the host.
	var st syscall.Stat_t
	testenv.Must(t, syscall.Lstat(filepath.Join(d, "u/d/new"), &st))
	if st.Uid != rootlessUID || st.Gid != rootlessUID {
		t.Errorf("u/d/new owned by %d:%d, want %d:%d", st.Uid, st.Gid, rootlessUID, rootlessUID)
	}
}

// TestRootlessOverride: a rootless user cannot make a file setuid root or
// owned by another user for real; with xattr_permissions=2 the mount
// keeps what the namespace asked for in user.fuseoverlayfs.override_stat
// and shows it, and the file itself stays the user's, without the bit.
func TestRootlessOverride(t *testing.T) {
	testenv.RequireMount(t)
	requireRootlessTools(t)
	d, bin := nsLayers(t, rootlessUID, rootlessUID)
	script := `set -e
cd "$1"
"$2" -o "lowerdir=$PWD/l,upperdir=$PWD/u,workdir=$PWD/w,xattr_permissions=2" m
echo x > m/s
chmod 4755 m/s
chmod 700 m/a
stat -c '%n %u:%g %a' m/s m/a
umount m
"$2" -o "lowerdir=$PWD/l,upperdir=$PWD/u,workdir=$PWD/w2" m
stat -c '%n %a' m/s
getfattr -n user.fuseoverlayfs.override_stat m/s 2>&1 | grep -c 'No such attribute'
umount m`
	out, err := asRootlessUser(d, "sh", "-c", script, "sh", d, bin)
	// A later mount without the option reads the upper layer the same way:
	// its root carries the marker.
	want := "m/s 0:0 4755\nm/a 0:0 700\nm/s 4755\n1"
	if got := strings.TrimSpace(string(out)); err != nil || got != want {
		t.Fatalf("in the namespace: %v\n%s\nwant\n%s", err, got, want)
	}
	for rel, v := range map[string]string{"s": "0:0:04755", "a": "0:0:0700"} {
		got, err := exec.Command("getfattr", "--only-values", "-n", "user.fuseoverlayfs.override_stat", filepath.Join(d, "u", rel)).Output()
		if err != nil || string(got) != v {
			t.Errorf("u/%s override %q, %v; want %q", rel, got, err, v)
		}
		var st syscall.Stat_t
		testenv.Must(t, syscall.Lstat(filepath.Join(d, "u", rel), &st))
		if st.Uid != rootlessUID || st.Mode&0o7000 != 0 {
			t.Errorf("u/%s itself: owner %d mode %o, want the user's without special bits", rel, st.Uid, st.Mode&0o7777)
		}
	}
}
