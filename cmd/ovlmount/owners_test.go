package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// The owner options have no kernel equivalent: fuse-overlayfs is the
// reference. Each case runs one script on fresh layers under ovlmount and,
// when it is installed, under fuse-overlayfs, and wants the same output
// from both. The scripts keep to what both do alike (docs/differences.md
// lists where ovlmount differs).
var ownerCases = []struct {
	name, setup, opts, script, want string
}{{
	name: "uidmapping",
	setup: `touch l/a l/b l/c; mkdir l/d
chown 0:0 l/a; chown 1:1 l/b; chown 100005:100005 l/c; chown 5000:5000 l/d`,
	opts: "uidmapping=0:1000:1:1:100000:65536,gidmapping=0:1000:1:1:100000:65536",
	script: `stat -c '%n %u:%g' m/a m/b m/c m/d
touch m/new; stat -c '%n %u:%g' m/new u/new
chown 1000:1000 m/new; stat -c '%n %u:%g' m/new u/new
chown 5:5 m/new; echo chown unmapped: $?; stat -c '%n %u:%g' m/new u/new
chown 100000:100000 m/new; stat -c '%n %u:%g' m/new u/new
mkdir m/d/x; stat -c '%n %u:%g' m/d/x u/d/x u/d`,
	want: `m/a 1000:1000
m/b 100000:100000
m/c 65534:65534
m/d 104999:104999
m/new 165533:165533
u/new 65534:65534
m/new 1000:1000
u/new 0:0
chown unmapped: 0
m/new 165533:165533
u/new 65534:65534
m/new 100000:100000
u/new 1:1
m/d/x 165533:165533
u/d/x 65534:65534
u/d 5000:5000`,
}, {
	name:  "squash_to_uid",
	setup: `touch l/a; chown 3:3 l/a`,
	opts:  "squash_to_uid=7,squash_to_gid=8",
	script: `stat -c '%n %u:%g' m m/a
touch m/new; stat -c '%n %u:%g' m/new u/new
chown 9:9 m/new; stat -c '%n %u:%g' m/new u/new`,
	want: `m 7:8
m/a 7:8
m/new 7:8
u/new 0:0
m/new 7:8
u/new 9:9`,
}, {
	name:   "squash_to_root",
	setup:  `touch l/a; chown 3:3 l/a`,
	opts:   "squash_to_root,squash_to_uid=4",
	script: `stat -c '%n %u:%g' m m/a`,
	want: `m 4:0
m/a 4:0`,
}, {
	name: "xattr_permissions",
	setup: `touch l/f; mkdir l/d
setfattr -n user.containers.override_stat -v 0:0:0755 l
setfattr -n user.containers.override_stat -v 5:6:0700 l/f
setfattr -n user.containers.override_stat -v 7:8:01777 l/d`,
	opts: "xattr_permissions=2",
	script: `stat -c '%n %u:%g %a %F' m m/d m/f
chown 11:12 m/f; stat -c '%n %u:%g %a' m/f; stat -c '%n %u:%g' u/f
getfattr --only-values -n user.fuseoverlayfs.override_stat u/f | cut -d: -f1,2
mkdir m/nd; stat -c '%n %u:%g %a' m/nd`,
	want: `m 0:0 755 directory
m/d 7:8 1777 directory
m/f 5:6 700 regular empty file
m/f 11:12 700
u/f 0:0
11:12
m/nd 0:0 755`,
}}

func TestOwnerOptionsMount(t *testing.T) {
	testenv.RequireMount(t)
	testenv.RequireProgram(t, "getfattr", "attr")
	testenv.RequireProgram(t, "setfattr", "attr")
	programs := []string{testenv.Binary(t)}
	if p, err := exec.LookPath("fuse-overlayfs"); err == nil {
		programs = append(programs, p)
	} else {
		t.Log("fuse-overlayfs not found: checking ovlmount alone")
	}
	for _, tc := range ownerCases {
		t.Run(tc.name, func(t *testing.T) {
			for _, prog := range programs {
				d := t.TempDir()
				testenv.MakeTree(t, d, "d l", "d u", "d w", "d m")
				cleanupMount(t, filepath.Join(d, "m"))
				script := "set -e\ncd \"$1\"\n" + tc.setup +
					"\n\"$2\" -o \"lowerdir=$PWD/l,upperdir=$PWD/u,workdir=$PWD/w,$3\" m 2>/dev/null\nset +e\n" +
					tc.script + "\numount m"
				r := execute(t, "sh", "-c", script, "sh", d, prog, tc.opts)
				if got := strings.TrimSpace(r.stdout); r.code != 0 || got != tc.want {
					t.Errorf("%s: exit %d\n%s\nwant\n%s\nstderr: %s", filepath.Base(prog), r.code, got, tc.want, r.stderr)
				}
			}
		})
	}
}

// TestIno32 mounts an upper layer and a lower one on another filesystem,
// where the xino layout puts the filesystem index in bit 63; with ino32_t
// every number, stat's and readdir's, stays below 1<<32 and distinct.
func TestIno32(t *testing.T) {
	testenv.RequireMount(t)
	d := t.TempDir()
	testenv.MakeTree(t, d, "d l", "f u/up", "d w", "d m")
	lower := filepath.Join(d, "l")
	testenv.Must(t, unix.Mount("ovlmount-test", lower, "tmpfs", 0, "mode=755"))
	t.Cleanup(func() { unix.Unmount(lower, unix.MNT_DETACH) })
	testenv.MakeTree(t, lower, "f a", "f b", "f c")
	mnt := filepath.Join(d, "m")
	opts := "lowerdir=" + lower + ",upperdir=" + d + "/u,workdir=" + d + "/w"
	numbers := func(extra string) map[string]uint64 {
		t.Helper()
		mountDaemon(t, mnt, "-o", opts+extra, mnt)
		defer testenv.Unmount(t, mnt)
		ents, err := os.ReadDir(mnt)
		testenv.Must(t, err)
		out := map[string]uint64{}
		for _, e := range ents {
			var st unix.Stat_t
			testenv.Must(t, unix.Lstat(filepath.Join(mnt, e.Name()), &st))
			out[e.Name()] = st.Ino
		}
		// d_ino as readdir gives it.
		f, err := os.Open(mnt)
		testenv.Must(t, err)
		defer f.Close()
		buf := make([]byte, 4096)
		n, err := unix.ReadDirent(int(f.Fd()), buf)
		testenv.Must(t, err)
		for off := 0; off < n; {
			de := (*unix.Dirent)(unsafe.Pointer(&buf[off]))
			name := unix.ByteSliceToString((*[256]byte)(unsafe.Pointer(&de.Name))[:])
			if ino, ok := out[name]; ok && ino != de.Ino {
				t.Errorf("%s%s: d_ino %d, st_ino %d", opts, extra, de.Ino, ino)
			}
			off += int(de.Reclen)
		}
		return out
	}
	if wide := numbers(""); wide["a"] < 1<<32 {
		t.Fatalf("without ino32_t a lower number is %#x: the layers share a filesystem, the test proves nothing", wide["a"])
	}
	seen := map[uint64]string{}
	for name, ino := range numbers(",ino32_t") {
		if ino >= 1<<32 {
			t.Errorf("ino32_t: %s has %#x", name, ino)
		}
		if other, dup := seen[ino]; dup {
			t.Errorf("ino32_t: %s and %s share %d", name, other, ino)
		}
		seen[ino] = name
	}
}
