package main

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// fileBackedScript runs in the user namespace, as its root: it mounts
// the layers of directory $1 with ovlmount $2 and xattr_permissions=2,
// makes symlinks and fifos as root and as another user, changes owners
// and modes of files, directories, fifos and symlinks, lower and new, and
// lists the view; then lists it again from a mount without the option,
// one with it, and fuse-overlayfs, $3.
const fileBackedScript = `set -e
umask 022
export LC_ALL=C
cd "$1"; bin="$2"; fo="$3"
list() {
	find m -mindepth 1 | sort | while read -r p; do
		t=
		if [ -L "$p" ]; then t=" -> $(readlink "$p" 2>/dev/null || echo '?')"; fi
		echo "$(stat -c '%n %F %u:%g %a' "$p")$t"
	done
}
"$bin" -o "lowerdir=$PWD/l,upperdir=$PWD/u,workdir=$PWD/w,xattr_permissions=2" m
cd m
ln -s f mine
ln -s f theirs
chown -h 1000:1001 theirs
mkdir pub
chmod 1777 pub
setpriv --reuid=1000 --regid=1000 --clear-groups ln -s ../f pub/byuser
setpriv --reuid=1000 --regid=1000 --clear-groups mkfifo pub/ufifo
chown -h 2000:2000 lsym
chmod 600 lfifo
chown 3:3 lfifo
mkfifo fifo
chown 4:5 fifo
chmod 640 fifo
chown 6:7 f ld
chmod 750 ld
chmod 611 theirs
ln -P theirs hl
mv pub/ufifo ufifo2
echo "== checks"
cat pub/byuser
dd if=theirs iflag=nofollow of=/dev/null 2>&1 | grep -o 'Too many levels of symbolic links'
echo "listed as symlinks:" $(find . -type l | sort)
echo "listed as fifos:" $(find . -type p | sort)
cd ..
echo "== ovlmount"; list
umount m
"$bin" -o "lowerdir=$PWD/l,upperdir=$PWD/u,workdir=$PWD/w" m
echo "== remount"; list
umount m
"$bin" -o "lowerdir=$PWD/l,upperdir=$PWD/u,workdir=$PWD/w,xattr_permissions=2" m
echo "== remount with the option"; list
umount m
"$fo" -o "lowerdir=$PWD/l,upperdir=$PWD/u,workdir=$PWD/w2,xattr_permissions=2" m 2>/dev/null
echo "== fuse-overlayfs"; list
umount m`

// fileBackedView is what the namespace sees, on the first mount and after
// a remount with the option or without. ln -s by the namespace's root,
// which is the daemon's own uid, makes a symlink; everything else is
// file-backed.
const fileBackedView = `m/f regular file 6:7 611
m/fifo fifo 4:5 640
m/hl symbolic link 1000:1001 777 -> f
m/keep symbolic link 0:0 777 -> f
m/ld directory 6:7 750
m/lfifo fifo 3:3 600
m/lsym symbolic link 2000:2000 777 -> f
m/mine symbolic link 0:0 777 -> f
m/pub directory 0:0 1777
m/pub/byuser symbolic link 1000:1000 777 -> ../f
m/theirs symbolic link 1000:1001 777 -> f
m/ufifo2 fifo 1000:1000 644`

// fileBackedUpper is the upper layer on disk: every object the user's
// own (the namespace's root), with the modes it was made or copied up
// with; owners, modes and types are in the override.
const fileBackedUpper = `f file user 644 6:7:0611
fifo file user 600 4:5:0640:pipe
hl file user 600 1000:1001:0120777:symlink
ld dir user 755 6:7:0750
lfifo file user 600 3:3:0600:pipe
lsym file user 600 2000:2000:0120777:symlink
mine symlink user 777 -
pub dir user 755 0:0:01777
pub/byuser file user 600 1000:1000:0120777:symlink
theirs file user 600 1000:1001:0120777:symlink
ufifo2 file user 600 1000:1000:0644:pipe`

// fileBackedKernel is what a kernel overlay mount of the layers shows, as
// real root: it has no override xattrs, and shows the files themselves.
const fileBackedKernel = `f file user 644 "hello\n"
fifo file user 600 ""
hl file user 600 "f"
keep symlink user 777 -> f
ld dir user 755
lfifo file user 600 ""
lsym file user 600 "f"
mine symlink user 777 -> f
pub dir user 755
pub/byuser file user 600 "../f"
theirs file user 600 "f"
ufifo2 file user 600 ""`

// TestRootlessFileBacked runs a mount with xattr_permissions=2 as an
// unprivileged user with a subordinate id range, in a user namespace as
// rootless podman makes one (its root the user, ids 1 and up the range):
// symlinks and fifos of other owners, chown -h and chmod are kept in
// overrides of files standing for them. Every owner, mode and type is
// still as set after a remount, the upper layer holds no real change of
// owner or mode, fuse-overlayfs shows the same where it reads the format,
// and the kernel shows the files themselves.
func TestRootlessFileBacked(t *testing.T) {
	testenv.RequireMount(t)
	testenv.RequireProgram(t, "unshare", "util-linux")
	testenv.RequireProgram(t, "setpriv", "util-linux")
	testenv.RequireProgram(t, "newuidmap", "uidmap")
	testenv.RequireProgram(t, "newgidmap", "uidmap")
	fo := testenv.RequireProgram(t, "fuse-overlayfs", "fuse-overlayfs")
	uid, gid := testenv.User(t, testenv.RootlessUser)
	uidN, _ := strconv.Atoi(uid)
	gidN, _ := strconv.Atoi(gid)
	subuid, nuid := testenv.SubIDs(t, "/etc/subuid", testenv.RootlessUser)
	subgid, ngid := testenv.SubIDs(t, "/etc/subgid", testenv.RootlessUser)
	d, bin := nsLayers(t, uidN, gidN)
	testenv.Must(t, os.WriteFile(filepath.Join(d, "l/f"), []byte("hello\n"), 0o644))
	testenv.Must(t, os.Symlink("f", filepath.Join(d, "l/lsym")))
	testenv.Must(t, os.Symlink("f", filepath.Join(d, "l/keep")))
	testenv.Must(t, unix.Mkfifo(filepath.Join(d, "l/lfifo"), 0o644))
	testenv.Must(t, os.Mkdir(filepath.Join(d, "l/ld"), 0o755))
	for _, p := range []string{"l/f", "l/lsym", "l/keep", "l/lfifo", "l/ld"} {
		testenv.Must(t, os.Lchown(filepath.Join(d, p), uidN, gidN))
	}
	// nsLayers's lower files, which this test does not look at.
	for _, p := range []string{"l/a", "l/c", "l/d"} {
		testenv.Must(t, os.RemoveAll(filepath.Join(d, p)))
	}
	userns := []string{
		"--map-root-user",
		fmt.Sprintf("--map-users=%d,1,%d", subuid, min(nuid, 65536)),
		fmt.Sprintf("--map-groups=%d,1,%d", subgid, min(ngid, 65536)),
	}
	out, err := asUser(d, uid, gid, userns, "sh", "-c", fileBackedScript, "sh", d, bin, fo)
	if err != nil {
		t.Fatalf("in the user namespace: %v\n%s", err, out)
	}
	sections := map[string]string{}
	var name string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if s, ok := strings.CutPrefix(line, "== "); ok {
			name = s
			continue
		}
		sections[name] += line + "\n"
	}
	wantChecks := "hello\nToo many levels of symbolic links\n" +
		"listed as symlinks: ./hl ./keep ./lsym ./mine ./pub/byuser ./theirs\n" +
		"listed as fifos: ./fifo ./lfifo ./ufifo2\n"
	if sections["checks"] != wantChecks {
		t.Errorf("in the namespace:\n%swant\n%s", sections["checks"], wantChecks)
	}
	for _, s := range []string{"ovlmount", "remount", "remount with the option"} {
		if got := strings.TrimSpace(sections[s]); got != fileBackedView {
			t.Errorf("%s shows\n%s\nwant\n%s", s, got, fileBackedView)
		}
	}
	if got := describeTree(t, filepath.Join(d, "u"), uidN, gidN, true); got != fileBackedUpper {
		t.Errorf("the upper layer holds\n%s\nwant\n%s", got, fileBackedUpper)
	}
	compareFuseOverlayfs(t, sections["fuse-overlayfs"])
	mnt := filepath.Join(d, "m")
	opts := "lowerdir=" + d + "/l,upperdir=" + d + "/u,workdir=" + d + "/w3,userxattr"
	if out, err := exec.Command("mount", "-t", "overlay", "overlay", "-o", opts, mnt).CombinedOutput(); err != nil {
		t.Fatalf("kernel mount: %v\n%s", err, out)
	}
	got := describeTree(t, mnt, uidN, gidN, false)
	testenv.Unmount(t, mnt)
	if got != fileBackedKernel {
		t.Errorf("the kernel shows\n%s\nwant\n%s", got, fileBackedKernel)
	}
}

// compareFuseOverlayfs checks fuse-overlayfs's listing of the layers
// against fileBackedView: the same owners, modes and types, but what it
// does not read. fuse-overlayfs before 1.15 reads no type field, so a
// file standing for a fifo is a regular file there; none reads a
// symlink's target from a file.
func compareFuseOverlayfs(t *testing.T, listing string) {
	t.Helper()
	got := strings.Split(strings.TrimSpace(listing), "\n")
	want := strings.Split(fileBackedView, "\n")
	if len(got) != len(want) {
		t.Fatalf("fuse-overlayfs shows\n%s\nwant the lines of\n%s", listing, fileBackedView)
	}
	backed := map[string]bool{"m/hl": true, "m/lsym": true, "m/theirs": true, "m/pub/byuser": true}
	for i, w := range want {
		g := got[i]
		name, _, _ := strings.Cut(w, " ")
		if backed[name] {
			w = strings.Split(w, " -> ")[0] + " -> ?"
		}
		if g != w && g != strings.Replace(w, " fifo ", " regular empty file ", 1) {
			t.Errorf("fuse-overlayfs shows %q, want %q", g, w)
		}
	}
}

// describeTree lists the objects under root, sorted: name, type, owner
// ("user" for uid:gid), mode, and with overrides the override xattr
// ("-" for none), else a regular file's content or a symlink's target.
func describeTree(t *testing.T, root string, uid, gid int, overrides bool) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		owner := fmt.Sprintf("%d:%d", st.Uid, st.Gid)
		if int(st.Uid) == uid && int(st.Gid) == gid {
			owner = "user"
		}
		kind := map[uint32]string{unix.S_IFREG: "file", unix.S_IFDIR: "dir", unix.S_IFLNK: "symlink", unix.S_IFIFO: "fifo"}[st.Mode&unix.S_IFMT]
		line := fmt.Sprintf("%s %s %s %o", rel, kind, owner, st.Mode&0o7777)
		switch {
		case overrides:
			v, err := testenv.Xattr(p, "user.fuseoverlayfs.override_stat")
			if err != nil {
				v = "-"
			}
			line += " " + v
		case kind == "file":
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %q", b)
		case kind == "symlink":
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += " -> " + target
		}
		lines = append(lines, line)
		return nil
	})
	testenv.Must(t, err)
	return strings.Join(lines, "\n")
}
