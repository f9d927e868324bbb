// Package e2e runs ovlmount under the programs that use it, end to end.
// It owns the scripts that drive those programs and the comparison of
// their results with the kernel's overlay and with fuse-overlayfs; it must
// not touch the host's own configuration or storage of those programs.
package e2e

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/mountinfo"
	"github.com/ovlmount/ovlmount/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const (
	// fuseOverlayfs is the program ovlmount stands in for, run for
	// comparison.
	fuseOverlayfs = "/usr/bin/fuse-overlayfs"
	// rootlessUser runs the rootless podman; testenv.User makes the
	// account when missing, with /etc/subuid and /etc/subgid ranges.
	rootlessUser = testenv.RootlessUser
)

// TestPodman runs e2e/podman.sh four times: with the kernel's overlay,
// with ovlmount and with fuse-overlayfs as containers-storage's
// mount_program, and with ovlmount under rootless podman. Each run must
// pass the script's own checks and leave no mount or process behind.
// ovlmount's results must equal the kernel's and fuse-overlayfs's except
// for the differences listed in kernelDiffs and fuseOverlayfsDiffs, the
// rootless ones must equal the root ones except for rootlessDiffs, and
// the owners and modes that uid mappings and force_mask are about must be
// those wanted (so that the comparisons cannot pass on a shared mistake).
func TestPodman(t *testing.T) {
	testenv.RequireMount(t)
	requirePodman(t)
	uid, gid := testenv.User(t, rootlessUser)
	bin := testenv.Binary(t)

	kernel := runPodman(t, "kernel", "kernel", "overlay", "")
	ovl := runPodman(t, "ovlmount", bin, "fuse.ovlmount", "")
	fo := runPodman(t, "fuse-overlayfs", fuseOverlayfs, "fuse.fuse-overlayfs", "")
	rootless := runPodman(t, "ovlmount-rootless", bin, "fuse.ovlmount", uid)

	compareRuns(t, "kernel", kernel, "ovlmount", ovl, kernelDiffs)
	compareRuns(t, "ovlmount", ovl, "fuse-overlayfs", fo, fuseOverlayfsDiffs)
	compareRuns(t, "ovlmount", ovl, "ovlmount rootless", rootless, rootlessDiffs)

	for _, w := range ownerWants {
		wantLines(t, "ovlmount", ovl, w.section, w.lines...)
	}
	// keep-id: the container runs as the user's uid and gid, and what it
	// makes is stored with them.
	u := uid + ":" + gid
	wantLines(t, "ovlmount rootless", rootless, "keep-id: inside",
		"id "+u, "/tmp/f -rwsr-x--- "+u, "/tmp/d drwxr-xr-x "+u, "/own/f -rw-r----- 1234:5678")
	wantLines(t, "ovlmount rootless", rootless, "keep-id: upper layer on disk",
		"./tmp/f -rwsr-x--- "+u, "./tmp/d drwxr-xr-x "+u)
}

// ownerWants are lines the root ovlmount run must show: owners and modes
// set in the image or by the container (e2e-own), seen inside and stored.
var ownerWants = []struct {
	section string
	lines   []string
}{
	{"uidmap: inside", []string{
		"id 0:0", "/own/f -rw-r----- 1234:5678", "/own/suid -rwsr-xr-x 0:0",
		"/lower/chm -rwsr-xr-x 0:0", "/lower/own -rw-r--r-- 1234:5678",
		"/new/f -rwxr-s--- 1234:5678", "/new/d drwx------ 1000:1000", "/own/d/g -rw------- 0:5678",
	}},
	// With a mount program, the upper layer keeps the container's ids
	// (uidmapping's first field), as the image layers do.
	{"uidmap: upper layer on disk", []string{
		"./lower/chm -rwsr-xr-x 0:0", "./lower/own -rw-r--r-- 1234:5678",
		"./new/f -rwxr-s--- 1234:5678", "./new/d drwx------ 1000:1000", "./own/d/g -rw------- 0:5678",
	}},
	// containers-storage 1.44 (podman 4.3.1) drops the setuid bit of
	// /own/suid in the image layer's override: 0755 is what it shows.
	{"force_mask: inside", []string{
		"id 0:0", "/own/f -rw-r----- 1234:5678", "/own/suid -rwxr-xr-x 0:0",
		"/lower/chm -rwsr-xr-x 0:0", "/lower/own -rw-r--r-- 1234:5678",
		"/new/f -rwxr-s--- 1234:5678", "/new/d drwx------ 1000:1000", "/own/d/g -rw------- 0:5678",
	}},
	{"force_mask: upper layer on disk", []string{
		"./lower/chm -rwxr-xr-x 0:0 user.containers.override_stat=0:0:0644 user.fuseoverlayfs.override_stat=0:0:4755",
		"./new/f -rw-r--r-- 0:0 user.fuseoverlayfs.override_stat=1234:5678:2750",
		"./new/d drwxr-xr-x 0:0 user.fuseoverlayfs.override_stat=1000:1000:0700",
		"./own/d/g -rwxr-xr-x 0:0 user.containers.override_stat=1234:5678:0600 user.fuseoverlayfs.override_stat=0:5678:0600",
	}},
	{"force_mask: image layer on disk", []string{
		"./own/f -rwxr-xr-x 0:0 user.containers.override_stat=1234:5678:0640",
	}},
	// The committed layer is unpacked under force_mask too: setuid and
	// setgid bits are lost again (/lower/chm, /new/f).
	{"force_mask: committed image", []string{
		"/lower/a -rw-r--r-- 0:0", "/lower/chm -rwxr-xr-x 0:0", "/lower/own -rw-r--r-- 1234:5678",
		"/new/f -rwxr-x--- 1234:5678", "/new/d drwx------ 1000:1000", "/own/d/g -rw------- 0:5678",
	}},
}

// wantLines fails the test for every line that section of r lacks.
func wantLines(t *testing.T, name string, r run, section string, lines ...string) {
	t.Helper()
	for _, l := range subtract(lines, r.sections[section]) {
		t.Errorf("%s, %s: no line %q", name, section, l)
	}
}

// A diff is a line of a result section that one run of a comparison may
// show and the other not, and why; or, with whole, a section the two may
// show differently or one not at all.
type diff struct {
	section string
	onlyA   []string // lines only the first run may show
	onlyB   []string // lines only the second run may show
	whole   bool
	why     string
}

// rootlessDiffs are the allowed differences between ovlmount as root (A)
// and rootless (B): the cases run one way only.
var rootlessDiffs = []diff{
	{section: "uidmap: inside", whole: true, why: "--uidmap 0:100000:65536 runs as root only"},
	{section: "uidmap: upper layer on disk", whole: true, why: "--uidmap 0:100000:65536 runs as root only"},
	{section: "keep-id: inside", whole: true, why: "--userns=keep-id runs rootless only"},
	{section: "keep-id: upper layer on disk", whole: true, why: "--userns=keep-id runs rootless only"},
}

// kernelDiffs are the allowed differences between the kernel's overlay
// (A) and ovlmount (B). They come from containers-storage, not from the
// file systems (the containers' own listings must be equal): with a mount
// program it finds a container's changes by comparing mode, owner, size
// and mtime with the layers below, and with the kernel by reading the
// upper layer.
var kernelDiffs = []diff{
	{
		section: "podman diff c1",
		onlyA:   []string{"C /lower/hl", "D /lower/opq"},
		onlyB:   []string{"C /lower/opq", "D /lower/opq/old"},
		why: "with a mount program, a file copied up unchanged (hl, before `ln hl hl2`) " +
			"is not a change, and a directory deleted and made again is a changed " +
			"directory whose old entries are deleted",
	},
	{
		section: "committed image listing",
		onlyA: []string{
			"/lower/hl -rw-r--r-- 0:0 9 2 758db386e927d3f7",
			"/lower/hl2 -rw-r--r-- 0:0 9 2 758db386e927d3f7",
		},
		onlyB: []string{
			"/lower/hl -rw-r--r-- 0:0 9 1 758db386e927d3f7",
			"/lower/hl2 -rw-r--r-- 0:0 9 1 758db386e927d3f7",
		},
		why: "with a mount program, the committed layer lacks the unchanged hl, " +
			"so hl2 is stored as a file of its own and the hard link is lost",
	},
	{section: "force_mask: inside", whole: true, why: forceMaskKernel},
	{section: "force_mask: upper layer on disk", whole: true, why: forceMaskKernel},
	{section: "force_mask: image layer on disk", whole: true, why: forceMaskKernel},
	{section: "force_mask: committed image", whole: true, why: forceMaskKernel},
}

// forceMaskKernel is why the kernel run has no force_mask case.
const forceMaskKernel = "without a mount program podman refuses force_mask " +
	"(\"'force_mask' is supported only with 'mount_program'\")"

// fuseOverlayfsDiffs are the allowed differences between ovlmount (A) and
// fuse-overlayfs (B), where fuse-overlayfs is the one that differs from
// the kernel.
var fuseOverlayfsDiffs = []diff{
	{
		section: "c1 listing",
		onlyA:   []string{"/lower/hl -rw-r--r-- 0:0 9 2 758db386e927d3f7"},
		onlyB:   []string{"/lower/hl -rw-r--r-- 0:0 9 1 758db386e927d3f7"},
		why: "fuse-overlayfs at times shows the lower file hl, copied up by `ln hl hl2`, " +
			"with one link (seen once so far; not reproduced outside podman); " +
			"the kernel and ovlmount show two",
	},
	{
		section: "podman diff c1",
		onlyA:   []string{"D /lower/opq/old"},
		why: "a directory fuse-overlayfs makes where a lower one was deleted has " +
			"trusted.overlay.opaque plus .wh..wh..opq and a 0/0 device .wh..opq; " +
			"containers-storage does not see the old entries' deletion from it",
	},
	{
		section: "committed image listing",
		onlyB: []string{
			"/lower/opq/old drwxr-xr-x 0:0",
			"/lower/opq/old/o -rw-r--r-- 0:0 16 1 b9d98841130b3d5e",
		},
		why: "the deleted lower directory comes back in the committed image (see podman diff c1)",
	},
	{
		section: "committed image contents",
		onlyB:   []string{"old"},
		why:     "the deleted lower directory comes back in the committed image (see podman diff c1)",
	},
	{
		section: "uidmap: upper layer on disk",
		onlyB:   foOpaque,
		why:     "fuse-overlayfs marks every directory it makes opaque, with two markers",
	},
	{
		section: "force_mask: upper layer on disk",
		onlyB:   foOpaque,
		why:     "fuse-overlayfs marks every directory it makes opaque, with two markers",
	},
	// fuse-overlayfs 1.10 with xattr_permissions=2 loses owners and modes.
	{
		section: "force_mask: committed image",
		onlyA: []string{
			"/lower/chm -rwxr-xr-x 0:0", "/lower/own -rw-r--r-- 1234:5678",
			"/new/d drwx------ 1000:1000", "/new/f -rwxr-x--- 1234:5678", "/own/d/g -rw------- 0:5678",
		},
		onlyB: []string{
			"/lower/chm -rw-r--r-- 0:0", "/lower/own -rw-r--r-- 0:0",
			"/new/d drwx------ 0:0", "/new/f -rwxr-x--- 0:0", "/own/d/g -rw------- 1234:5678",
		},
		why: "the layer podman commit reads through fuse-overlayfs lacks chmod and chown " +
			"of copied-up files (/lower/chm, /lower/own, /own/d/g) and the owners of new ones",
	},
	{
		section: "force_mask: inside",
		onlyA:   []string{"/lower/a -rw-r--r-- 0:0", "/own/d drwxr-x--- 1234:5678"},
		onlyB:   []string{"/lower/a -rwxr-xr-x 0:0", "/own/d drwxr-xr-x 0:0"},
		why: "fuse-overlayfs copies up a file or directory with an override of its " +
			"mode on disk (0755, force_mask's), not of the image layer's override",
	},
	{
		section: "force_mask: upper layer on disk",
		onlyA: []string{
			"./lower/a -rwxr-xr-x 0:0 user.containers.override_stat=0:0:0644 user.fuseoverlayfs.override_stat=0:0:0644",
			"./own/d drwxr-xr-x 0:0 user.containers.override_stat=1234:5678:0750 user.fuseoverlayfs.override_stat=1234:5678:0750",
		},
		onlyB: []string{
			"./lower/a -rwxr-xr-x 0:0 user.containers.override_stat=0:0:0644 user.fuseoverlayfs.override_stat=0:0:0755",
			"./own/d drwxr-xr-x 0:0 user.containers.override_stat=1234:5678:0750 user.fuseoverlayfs.override_stat=0:0:0755",
		},
		why: "fuse-overlayfs copies up a file or directory with an override of its " +
			"mode on disk (0755, force_mask's), not of the image layer's override",
	},
	{
		section: "force_mask: inside",
		onlyA:   []string{"/new/d drwx------ 1000:1000", "/new/f -rwxr-s--- 1234:5678"},
		onlyB:   []string{"/new/d drwx------ 0:0", "/new/f -rwxr-s--- 0:0"},
		why:     "fuse-overlayfs 1.10's chmod writes its override with the owner on disk (0:0), losing an earlier chown",
	},
	{
		section: "force_mask: upper layer on disk",
		onlyA: []string{
			"./new/d drwxr-xr-x 0:0 user.fuseoverlayfs.override_stat=1000:1000:0700",
			"./new/f -rw-r--r-- 0:0 user.fuseoverlayfs.override_stat=1234:5678:2750",
		},
		onlyB: []string{
			"./new/d drwxr-xr-x 0:0 user.fuseoverlayfs.override_stat=0:0:0700",
			"./new/f -rwxr-xr-x 0:0 user.fuseoverlayfs.override_stat=0:0:2750",
		},
		why: "fuse-overlayfs 1.10's chmod writes its override with the owner on disk (0:0), losing an earlier chown " +
			"(and makes new files 0755 on disk, ovlmount with the mode asked for)",
	},
}

// foOpaque are the opaque markers fuse-overlayfs 1.10 leaves in each
// directory it makes in an upper layer: a 0/0 device .wh..opq and a file
// .wh..wh..opq (only the file in a directory made inside a new one).
var foOpaque = []string{
	"./dev/.wh..opq crwx------ 0:0", "./dev/.wh..wh..opq -rwx------ 0:0",
	"./proc/.wh..opq crwx------ 0:0", "./proc/.wh..wh..opq -rwx------ 0:0",
	"./run/.wh..opq crwx------ 0:0", "./run/.wh..wh..opq -rwx------ 0:0",
	"./sys/.wh..opq crwx------ 0:0", "./sys/.wh..wh..opq -rwx------ 0:0",
	"./new/.wh..opq crwx------ 0:0", "./new/.wh..wh..opq -rwx------ 0:0",
	"./new/d/.wh..wh..opq -rwx------ 0:0",
}

// requirePodman installs podman, runc and busybox-static with apt-get
// when they are missing (the test runs as root: RequireMount checked).
// Failing that it skips, or fails when CI=true.
func requirePodman(t *testing.T) {
	t.Helper()
	var debs []string
	for _, p := range []struct{ bin, deb string }{
		{"podman", "podman"},
		{"runc", "runc"},
		{fuseOverlayfs, "fuse-overlayfs"},
		{"getfattr", "attr"},
		{"newuidmap", "uidmap"},
	} {
		if _, err := exec.LookPath(p.bin); err != nil {
			debs = append(debs, p.deb)
		}
	}
	// The image is made of the host's /bin/busybox: it must run without
	// the host's libraries.
	if !staticELF("/bin/busybox") {
		debs = append(debs, "busybox-static")
	}
	if len(debs) == 0 {
		return
	}
	t.Logf("installing %s", strings.Join(debs, " "))
	install := "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq " +
		"-o DPkg::Lock::Timeout=600 " + strings.Join(debs, " ")
	out, err := exec.Command("sh", "-c", install).CombinedOutput()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("the podman test needs %s; installing them failed: %v\n%s",
		strings.Join(debs, " "), err, out)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: failing instead of skipping)")
	}
	t.Skip(msg)
}

// staticELF reports whether path is an ELF executable with no program
// interpreter, that is, statically linked.
func staticELF(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// run is what one run of podman.sh left: its result sections and the
// argv lines the mount program got.
type run struct {
	sections map[string][]string
	argv     []string
}

// runPodman runs podman.sh with prog ("kernel", or a mount program) in a
// fresh directory, as root or, given a uid, rootless as rootlessUser. It
// logs the script's output, checks that the containers' / had type
// fstype and that nothing is left mounted or running, and returns what
// the run left.
func runPodman(t *testing.T, name, prog, fstype, uid string) run {
	t.Helper()
	dir := t.TempDir()
	w := filepath.Join(dir, name)
	args := []string{"podman.sh", prog, w}
	if uid != "" {
		// The rootless user must reach w.
		for _, d := range []string{filepath.Dir(dir), dir} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		args = append([]string{"podman.sh", "-u", rootlessUser}, args[1:]...)
	}
	t.Cleanup(func() { cleanUp(t, w, uid) })
	out, err := exec.Command("bash", args...).CombinedOutput()
	t.Logf("podman.sh %s:\n%s", name, out)
	if err != nil {
		t.Fatalf("podman.sh %s: %v", name, err)
	}
	if got := strings.TrimSpace(readFile(t, filepath.Join(w, "fstype"))); got != fstype {
		t.Errorf("%s: / in the containers is %q, want %q", name, got, fstype)
	}
	if mounts := mountsUnder(w); len(mounts) > 0 {
		t.Errorf("%s: mounts left: %q", name, mounts)
	}
	// A mount program's daemon ends once the kernel lets go of its
	// mount, shortly after the unmount returns.
	var procs []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		procs = procsUsing(w, uid)
		if len(procs) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(procs) > 0 {
		t.Errorf("%s: processes left: %q", name, procs)
	}

	r := run{sections: sections(readFile(t, filepath.Join(w, "result")))}
	if prog != "kernel" {
		r.argv = strings.Split(strings.TrimSpace(readFile(t, filepath.Join(w, "argv.log"))), "\n")
		if !slices.ContainsFunc(r.argv, func(a string) bool { return strings.HasPrefix(a, "-o lowerdir=") }) {
			t.Errorf("%s: podman never ran the mount program to mount: %q", name, r.argv)
		}
	}
	return r
}

// compareRuns fails the test for every line of a section that one run
// shows and the other not, unless allowed lists it.
func compareRuns(t *testing.T, nameA string, a run, nameB string, b run, allowed []diff) {
	t.Helper()
	var names []string
	for s := range a.sections {
		names = append(names, s)
	}
	for s := range b.sections {
		if _, ok := a.sections[s]; !ok {
			names = append(names, s)
		}
	}
	slices.Sort(names)
	for _, s := range names {
		onlyA, onlyB := subtract(a.sections[s], b.sections[s]), subtract(b.sections[s], a.sections[s])
		for _, d := range allowed {
			if d.section != s {
				continue
			}
			if d.whole {
				t.Logf("%s vs %s, %s: not compared: %s", nameA, nameB, s, d.why)
				onlyA, onlyB = nil, nil
				break
			}
			if n := len(onlyA) + len(onlyB); n > 0 {
				onlyA, onlyB = subtract(onlyA, d.onlyA), subtract(onlyB, d.onlyB)
				if len(onlyA)+len(onlyB) < n {
					t.Logf("%s vs %s, %s: known difference: %s", nameA, nameB, s, d.why)
				}
			}
		}
		for _, l := range onlyA {
			t.Errorf("%s vs %s, %s: only %s shows %q", nameA, nameB, s, nameA, l)
		}
		for _, l := range onlyB {
			t.Errorf("%s vs %s, %s: only %s shows %q", nameA, nameB, s, nameB, l)
		}
	}
}

// subtract returns the lines of a that b does not hold, each line of b
// taking away one equal line of a.
func subtract(a, b []string) []string {
	left := map[string]int{}
	for _, l := range b {
		left[l]++
	}
	var out []string
	for _, l := range a {
		if left[l] > 0 {
			left[l]--
			continue
		}
		out = append(out, l)
	}
	return out
}

// sections splits a result file at its "## NAME" headings.
func sections(text string) map[string][]string {
	m := map[string][]string{}
	cur := ""
	s := bufio.NewScanner(strings.NewReader(text))
	for s.Scan() {
		if name, ok := strings.CutPrefix(s.Text(), "## "); ok {
			cur = name
			m[cur] = []string{}
			continue
		}
		m[cur] = append(m[cur], s.Text())
	}
	return m
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mountsUnder returns the mountpoints at or below dir that
// /proc/self/mountinfo lists.
func mountsUnder(dir string) []string {
	ms, err := mountinfo.Under(dir)
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, m := range ms {
		out = append(out, m.Point)
	}
	return out
}

// procsUsing returns "PID ARGV" of every process whose command line names
// dir (mount program daemons, conmon), or, given a uid, that runs as uid
// (all of a rootless run's processes, its pause process too). Zombies
// have ended and are left out: rootless mount tests of other packages,
// run meanwhile as the same user, leave their daemons' to their own test
// process.
func procsUsing(dir, uid string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if !bytes.Contains(b, []byte(dir)) && (uid == "" || procStatus(e.Name(), "Uid:") != uid) {
			continue
		}
		if procStatus(e.Name(), "State:") == "Z" {
			continue
		}
		out = append(out, e.Name()+" "+strings.TrimSpace(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))))
	}
	return out
}

// procStatus returns the first word of the line of /proc/PID/status that
// key begins (the real uid for "Uid:", the state letter for "State:"),
// or "".
func procStatus(pid, key string) string {
	b, err := os.ReadFile(filepath.Join("/proc", pid, "status"))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == key {
			return f[1]
		}
	}
	return ""
}

// cleanUp takes down what a failed run left under w, so that the
// temporary directory can go: root containers and image mounts through
// podman, then any mount left (lazily), then the processes that served
// them and, rootless, every process of uid.
func cleanUp(t *testing.T, w, uid string) {
	if len(mountsUnder(w)) == 0 && len(procsUsing(w, uid)) == 0 {
		return
	}
	// Without its private configuration, podman would work on the
	// host's default storage.
	conf := filepath.Join(w, "storage.conf")
	if _, err := os.Stat(conf); err == nil && uid == "" {
		env := append(os.Environ(),
			"CONTAINERS_STORAGE_CONF="+conf,
			"CONTAINERS_CONF="+filepath.Join(w, "containers.conf"))
		for _, args := range [][]string{{"rm", "-a", "-f", "-t", "0"}, {"image", "unmount", "-a", "-f"}} {
			cmd := exec.Command("podman", args...)
			cmd.Env = env
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Logf("clean-up: podman %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
	}
	mounts := mountsUnder(w)
	slices.Reverse(mounts)
	for _, m := range mounts {
		testenv.Unmount(t, m)
	}
	for _, p := range procsUsing(w, uid) {
		var pid int
		if _, err := fmt.Sscan(p, &pid); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
