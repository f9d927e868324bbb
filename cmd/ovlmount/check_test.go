package main

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
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

// writeStack makes lower files and dirs in s and changes them through
// mount in every way a format records: a renamed directory (a redirect),
// a chmod (metacopy), a write to a lower hard link (an index entry with
// index=on), a removal (a whiteout), a directory made over a removed one
// (opaque), a copy-up (an origin).
func writeStack(t *testing.T, s stackDirs, mount func(*testing.T, stackDirs, string) (string, func()), opts string) {
	t.Helper()
	testenv.MakeTree(t, s.lower, "f a/x x", "f a/sub/s s", "f meta 12345", "f meta2 data", "f link one", "f gone g",
		"f opq/old/f f", "f solo solo")
	testenv.Must(t, os.Link(s.lower+"/link", s.lower+"/link2"))
	mnt, unmount := mount(t, s, opts)
	script := `mv a b
		chmod 600 meta meta2
		echo more >> link
		rm gone
		rm -r opq
		mkdir opq
		echo x >> solo`
	if out, err := exec.Command("sh", "-ec", "cd "+mnt+"\n"+script).CombinedOutput(); err != nil {
		t.Fatalf("changes through the mount: %v\n%s", err, out)
	}
	// An ovlmount daemon holds the layers open until it exits, a while
	// after the unmount, and a check refuses them until then.
	daemons := processesFor(s.work)
	unmount()
	for _, pid := range daemons {
		if waitExit(pid, 10*time.Second) == nil {
			t.Fatalf("daemon %d still running 10s after the unmount", pid)
		}
	}
}

// TestCheckWrittenStacks checks that the stacks the kernel and ovlmount
// write with every format they have check clean, through the binary.
func TestCheckWrittenStacks(t *testing.T) {
	testenv.RequireMount(t)
	for _, tc := range []struct {
		name  string
		mount func(*testing.T, stackDirs, string) (string, func())
		opts  string
	}{
		{"kernel", kernelMount, "redirect_dir=on,metacopy=on,index=on"},
		{"kernel", kernelMount, ""},
		{"ovlmount", ovlMount, "redirect_dir=on,metacopy=on,index=on"},
		{"ovlmount", ovlMount, "redirect_dir=on,metacopy=on"},
		{"ovlmount", ovlMount, ""},
	} {
		t.Run(tc.name+" "+strings.ReplaceAll(tc.opts, ",", " "), func(t *testing.T) {
			s := newStackDirs(t)
			writeStack(t, s, tc.mount, tc.opts)
			if r := checkRun(t, 0, "-o", s.options(tc.opts)); r.stdout != "ovlmount check: no problem found\n" || r.stderr != "" {
				t.Errorf("stdout %q, stderr %q", r.stdout, r.stderr)
			}
		})
	}
}

// TestCheckKernelFaults plants a fault of each kind in a stack the kernel
// wrote with redirect_dir=on, metacopy=on and index=on, and checks what
// the binary says of them, what --repair does and says, and fsck's exit
// codes. Package check tests each fault against what the kernel does
// with it.
func TestCheckKernelFaults(t *testing.T) {
	testenv.RequireMount(t)
	s := newStackDirs(t)
	const opts = "redirect_dir=on,metacopy=on,index=on"
	writeStack(t, s, kernelMount, opts)
	o := s.options(opts)
	u, l := s.upper, s.lower

	index := indexEntries(t, s.work+"/index")
	if len(index) != 1 {
		t.Fatalf("index entries %v, want that of link", index)
	}
	trusted := func(x layers.Xattr) string { return layers.Trusted.Name(x) }
	setx := func(path, name, value string) {
		t.Helper()
		testenv.Must(t, unix.Lsetxattr(path, name, []byte(value), 0))
	}
	// Each fault: the path of its finding, a part of its line, and, for
	// those --repair fixes, a part of what it says it did.
	type fault struct{ path, problem, repair string }
	faults := []fault{
		{s.work + "/work/#99", "left by an interrupted", "removed"},
		{u + "/gone", "char device 0:5", "replaced by a 0:0 whiteout"},
		{u + "/opq", `is "yes"`, ""},
		{l + "/e/k", "not marked overlay.opaque=x", ""},
		{l + "/mixed", "carries user.overlay.* xattrs", ""},
		{u + "/b", "reaches no directory", ""},
		{u + "/meta", "whose data is in no layer below", ""},
		{u + "/meta2", "records fs-verity digest sha256:", ""},
		{u + "/solo", "names nothing in the lower layers", ""},
		{s.work + "/index/" + index[0], "orphan index entry", "removed"},
	}
	testenv.Must(t, os.MkdirAll(s.work+"/work/#99/sub", 0o755))
	testenv.Must(t, os.Remove(u+"/gone"))
	testenv.Must(t, unix.Mknod(u+"/gone", unix.S_IFCHR, int(unix.Mkdev(0, 5))))
	setx(u+"/opq", trusted(layers.XattrOpaque), "yes")
	testenv.MakeTree(t, l, "f e/k", "f mixed/m")
	setx(l+"/e/k", trusted(layers.XattrWhiteout), "")
	setx(l+"/mixed", layers.User.Name(layers.XattrOpaque), "y")
	setx(u+"/b", trusted(layers.XattrRedirect), "nothing")
	testenv.Must(t, os.Rename(l+"/meta", l+"/meta.moved"))
	setx(u+"/meta2", trusted(layers.XattrMetacopy), "\x00\x24\x00\x01"+strings.Repeat("\xaa", 32))
	testenv.Must(t, os.Remove(l+"/solo"))
	// The indexed file gone from the upper layer, and its index entry
	// saying that no name of the overlay links it.
	testenv.Must(t, os.Remove(u+"/link"))
	setx(s.work+"/index/"+index[0], trusted(layers.XattrNlink), "U-1")

	wantLines := func(r result, faults []fault, repaired bool) {
		t.Helper()
		lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
		if len(lines) != len(faults)+1 {
			t.Errorf("%d lines, want one for each of %d faults and a summary:\n%s", len(lines), len(faults), r.stdout)
		}
	next:
		for _, f := range faults {
			for _, line := range lines {
				if !strings.HasPrefix(line, f.path+": ") || !strings.Contains(line, f.problem) {
					continue
				}
				if want := repaired && f.repair != ""; want && !strings.HasSuffix(line, "; "+f.repair) {
					t.Errorf("line %q does not say %q", line, f.repair)
				}
				continue next
			}
			t.Errorf("no line for %s saying %q:\n%s", f.path, f.problem, r.stdout)
		}
	}
	r := checkRun(t, fsckUncorrected, "-o", o)
	wantLines(r, faults, false)
	if !strings.HasSuffix(r.stdout, "ovlmount check: 10 problems, 0 repaired, 10 left\n") {
		t.Errorf("summary: %s", r.stdout)
	}

	r = checkRun(t, fsckCorrected|fsckUncorrected, "--repair", "-o", o)
	wantLines(r, faults, true)
	if !strings.HasSuffix(r.stdout, "ovlmount check: 10 problems, 3 repaired, 7 left\n") {
		t.Errorf("summary: %s", r.stdout)
	}
	var st unix.Stat_t
	testenv.Must(t, unix.Lstat(u+"/gone", &st))
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("%s/gone: mode %o rdev %d after the repair, want a 0:0 whiteout", u, st.Mode, st.Rdev)
	}
	for _, p := range []string{s.work + "/work/#99", s.work + "/index/" + index[0]} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after the repair: %v", p, err)
		}
	}

	var left []fault
	for _, f := range faults {
		if f.repair == "" {
			left = append(left, f)
		}
	}
	r = checkRun(t, fsckUncorrected, "-o", o)
	wantLines(r, left, false)
}

// indexEntries lists the index entries of index, leaving out the
// kernel's temporaries.
func indexEntries(t *testing.T, index string) []string {
	t.Helper()
	var out []string
	for _, n := range testenv.DirNames(t, index) {
		if !strings.HasPrefix(n, "#") {
			out = append(out, n)
		}
	}
	return out
}

// TestCheckLayout checks that a stack whose directories are inside each
// other is a problem left, the only one reported.
func TestCheckLayout(t *testing.T) {
	d := t.TempDir()
	testenv.MakeTree(t, d, "d l1/u", "d u/w", "d w")
	for _, tc := range []struct{ opts, path, problem string }{
		{"lowerdir=" + d + "/l1,upperdir=" + d + "/u,workdir=" + d + "/u/w", d + "/u/w", "workdir is inside upperdir"},
		{"lowerdir=" + d + "/u:" + d + "/u", d + "/u", "lowerdir is also the lowerdir"},
		{"lowerdir=" + d + "/l1,upperdir=" + d + "/l1/u,workdir=" + d + "/w", d + "/l1/u", "upperdir is inside lowerdir"},
	} {
		r := checkRun(t, fsckUncorrected, "-o", tc.opts)
		if !strings.HasPrefix(r.stdout, tc.path+": "+tc.problem) || !strings.HasSuffix(r.stdout, "\novlmount check: 1 problems, 0 repaired, 1 left\n") {
			t.Errorf("-o %s: %s", tc.opts, r.stdout)
		}
	}
}
