package check

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// The kernel is the oracle: every stack a kernel overlay mount writes must
// check clean, and each fault planted in one must be found, with the
// kernel doing with it what the finding says.

// kernelOpts are the options of the stacks most tests write: every format
// the kernel has, but for nfs_export (exclusive of metacopy).
const kernelOpts = "redirect_dir=on,metacopy=on,index=on"

// in runs the shell commands script in directory dir (a mount).
func in(t *testing.T, dir, script string) {
	t.Helper()
	cmd := exec.Command("sh", "-ec", script)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("in %s: %s: %v\n%s", dir, script, err, out)
	}
}

// lowerTree is the lower layers most tests start from: files, hard links,
// directories to merge and rename, a symlink, a fifo.
func lowerTree(t *testing.T, s *testStack) {
	t.Helper()
	s.build(t, "l1/d/", "l1/d/f=one", "l1/d/sub/", "l1/d/sub/x=x", "l1/meta=metadata only", "l1/big=0123456789",
		"l1/ren/", "l1/ren/in=in", "l1/ren/deep/", "l1/ren/deep/y=y", "l1/move/", "l1/move/z=z",
		"l2/d/", "l2/d/g=linked", "l2/d/g2>l2/d/g", "l2/d/g3>l2/d/g", "l2/d/h=h", "l2/e/", "l2/e/k=k",
		"l2/sym->d/h", "l2/solo=solo", "l2/gone=gone", "l2/merged/", "l2/merged/w=w")
	testenv.Must(t, unix.Mkfifo(s.p("l2/fifo"), 0o644))
}

// kernelStack returns a stack the kernel wrote with opts: lowerTree's
// layers, changed through a kernel mount in every way the formats record.
func kernelStack(t *testing.T, opts string) *testStack {
	t.Helper()
	requireRoot(t)
	s := newStack(t, 2)
	lowerTree(t, s)
	umount := s.mount(t, opts)
	in(t, s.p("m"), `
		rm d/f
		rm -r d/sub
		mv ren ren2
		mv ren2 ren3
		mv move d/moved
		chown 1:1 meta
		mv meta meta2
		chmod 600 big
		echo more >> big
		echo more >> d/g
		rm d/g2
		ln d/g3 d/g4
		mkdir d/sub
		touch d/sub/new
		touch e/k
		ln -s target newlink
		mkfifo newfifo
		mkdir merged2 && mv merged/w merged2/ && rmdir merged && mv merged2 merged
		chown 2:2 solo
		echo x > solo
		rm gone
		touch gone
	`)
	umount()
	return s
}

func TestKernelStacksClean(t *testing.T) {
	for _, opts := range []string{
		"",
		kernelOpts,
		"redirect_dir=on,index=on,nfs_export=on",
		"userxattr",
		"xino=on,uuid=null",
	} {
		t.Run(strings.ReplaceAll(opts, ",", " "), func(t *testing.T) {
			s := kernelStack(t, opts)
			s.clean(t)
			// A second mount, which cleans up as it starts, changes
			// nothing a check sees.
			s.mount(t, opts)()
			s.clean(t)
		})
	}
}

// TestKernelLowerFromUpper checks a stack whose lower layer is the upper
// layer of another, with its redirects and metacopy files.
func TestKernelLowerFromUpper(t *testing.T) {
	first := kernelStack(t, kernelOpts)
	s := newStack(t, 0)
	s.Lower = []string{first.Upper, first.Lower[0], first.Lower[1]}
	umount := s.mount(t, kernelOpts)
	in(t, s.p("m"), `cat meta2 ren3/in >/dev/null; mv ren3 ren4; chown 3:3 meta2; rm d/g3`)
	umount()
	s.clean(t)
}

// TestKernelDataOnly checks a metacopy file whose data is in a data-only
// layer, reached by an absolute redirect, as composefs images make them.
func TestKernelDataOnly(t *testing.T) {
	requireRoot(t)
	s := newStack(t, 1)
	s.Data = []string{s.p("data")}
	s.Upper, s.Work = "", ""
	s.build(t, "data/objects/ab/cdef=the data", "l1/file=")
	s.setx(t, "l1/file", tMetacopy, "")
	s.setx(t, "l1/file", tRedirect, "/objects/ab/cdef")
	testenv.Must(t, os.Truncate(s.p("l1/file"), 8))
	umount := s.mount(t, "metacopy=on,redirect_dir=follow")
	b, err := os.ReadFile(s.p("m/file"))
	if err != nil || string(b) != "the data" {
		t.Fatalf("the kernel reads %q, %v", b, err)
	}
	umount()
	s.clean(t)

	s.setx(t, "l1/file", tRedirect, "/objects/nowhere")
	umount = s.mount(t, "metacopy=on,redirect_dir=follow")
	if _, err := os.ReadFile(s.p("m/file")); !errors.Is(err, unix.ENOENT) {
		t.Errorf("the kernel reads a metacopy file without data: %v, want ENOENT", err)
	}
	umount()
	fs, _ := s.check(t, Options{})
	s.wantFindings(t, fs, map[string]string{"l1/file": "is in no data-only layer"}, false)
}

// fault is a fault planted in a stack the kernel wrote.
type fault struct {
	name string
	opts string // of the kernel mounts
	// plant plants it and returns the findings the check must make: a
	// part of the problem by path.
	plant func(t *testing.T, s *testStack) map[string]string
	// kernel, if set, checks what a kernel mount does with the fault,
	// mounted on s.p("m"); with the finding repaired if after.
	kernel func(t *testing.T, s *testStack, after bool)
	// refused: the kernel refuses to mount the stack (before a repair).
	refused bool
	// repaired: the findings are all repaired; else none is.
	repaired bool
}

func TestKernelFaults(t *testing.T) {
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			s := kernelStack(t, f.opts)
			want := f.plant(t, s)
			if f.refused {
				if err := s.tryMount(f.opts); err == nil {
					unix.Unmount(s.p("m"), 0)
					t.Error("the kernel mounts the stack")
				}
			}
			if f.kernel != nil {
				umount := s.mount(t, f.opts)
				f.kernel(t, s, false)
				umount()
				// That mount may have changed the stack: plant again.
				s = kernelStack(t, f.opts)
				want = f.plant(t, s)
			}
			fs, res := s.check(t, Options{})
			s.wantFindings(t, fs, want, false)
			fs, res = s.check(t, Options{Repair: true})
			s.wantFindings(t, fs, want, f.repaired)
			if f.repaired && res.Repaired != res.Found {
				t.Errorf("result %+v: all should be repaired", res)
			}
			if !f.repaired {
				return
			}
			s.clean(t)
			if f.kernel != nil {
				umount := s.mount(t, f.opts)
				f.kernel(t, s, true)
				umount()
			}
		})
	}
}

// whiteoutIn returns an upper whiteout of s.
const upperWhiteout = "u/d/f"

var faults = []fault{
	{
		name: "whiteout 0:5",
		opts: kernelOpts,
		plant: func(t *testing.T, s *testStack) map[string]string {
			testenv.Must(t, os.Remove(s.p(upperWhiteout)))
			s.build(t, upperWhiteout+"=c0:5")
			return map[string]string{upperWhiteout: "char device 0:5"}
		},
		kernel: func(t *testing.T, s *testStack, after bool) {
			var st unix.Stat_t
			err := unix.Lstat(s.p("m/d/f"), &st)
			if after && err != unix.ENOENT || !after && (err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR) {
				t.Errorf("the kernel shows d/f: %v, mode %o (repaired: %v)", err, st.Mode, after)
			}
		},
		repaired: true,
	},
	{
		name: "work leftovers",
		plant: func(t *testing.T, s *testStack) map[string]string {
			s.build(t, "w/work/#1f=copy", "w/work/#20/", "w/work/#20/a=", "w/work/#21/sub/")
			return map[string]string{"w/work/#1f": "interrupted", "w/work/#20": "interrupted", "w/work/#21": "interrupted"}
		},
		kernel: func(t *testing.T, s *testStack, after bool) {
			ents, err := os.ReadDir(s.p("w/work"))
			testenv.Must(t, err)
			for _, e := range ents {
				var st unix.Stat_t
				if unix.Lstat(s.p("w/work/"+e.Name()), &st) == nil && !layers.IsWhiteout(&st) {
					t.Errorf("the kernel left %s in work", e.Name())
				}
			}
		},
		repaired: true,
	},
	{
		name: "index leftovers",
		opts: kernelOpts,
		plant: func(t *testing.T, s *testStack) map[string]string {
			s.build(t, "w/index/#1f=copy")
			return map[string]string{"w/index/#1f": "interrupted"}
		},
		kernel: func(t *testing.T, s *testStack, after bool) {
			if _, err := os.Lstat(s.p("w/index/#1f")); err == nil {
				t.Error("the kernel left w/index/#1f")
			}
		},
		repaired: true,
	},
	{
		name: "volatile",
		plant: func(t *testing.T, s *testStack) map[string]string {
			s.mount(t, "volatile")()
			return map[string]string{"w/work/incompat/volatile": "refuses to mount"}
		},
		refused: true,
	},
	{
		name: "opaque yes",
		opts: kernelOpts,
		plant: func(t *testing.T, s *testStack) map[string]string {
			s.setx(t, "u/d", tOpaque, "yes")
			return map[string]string{"u/d": `is "yes"`}
		},
		kernel: func(t *testing.T, s *testStack, after bool) {
			if _, err := os.Stat(s.p("m/d/h")); err != nil {
				t.Errorf("the kernel takes opaque=yes for opaque: %v", err)
			}
		},
	},
	{
		name: "xwhiteout without opaque=x",
		opts: kernelOpts,
		plant: func(t *testing.T, s *testStack) map[string]string {
			s.build(t, "l1/e/", "l1/e/k=")
			s.setx(t, "l1/e/k", tWhiteout, "")
			return map[string]string{"l1/e/k": "not marked overlay.opaque=x"}
		},
	},
	{
		name: "user xattr in a trusted stack",
		opts: kernelOpts,
		plant: func(t *testing.T, s *testStack) map[string]string {
			testenv.Must(t, unix.Lremovexattr(s.p("u/d/sub"), tOpaque))
			s.setx(t, "u/d/sub", uOpaque, "y")
			return map[string]string{"u/d/sub": "carries user.overlay.* xattrs"}
		},
		kernel: func(t *testing.T, s *testStack, after bool) {
			if _, err := os.Stat(s.p("m/d/sub/x")); err != nil {
				t.Errorf("the kernel reads user.overlay.opaque in a trusted mount: %v", err)
			}
		},
	},
	{
		name: "redirect to nothing",
		opts: kernelOpts,
		plant: func(t *testing.T, s *testStack) map[string]string {
			s.setx(t, "u/ren3", tRedirect, "nothing")
			return map[string]string{"u/ren3": "reaches no directory"}
		},
		kernel: func(t *testing.T, s *testStack, after bool) {
			if ents, err := os.ReadDir(s.p("m/ren3")); err != nil || len(ents) != 0 {
				t.Errorf("the kernel lists %d entries in ren3 (%v), want an empty directory", len(ents), err)
			}
		},
	},
	{
		name: "metacopy without data",
		opts: kernelOpts,
		plant: func(t *testing.T, s *testStack) map[string]string {
			// Moved, not removed, so that its origin still
			// resolves.
			testenv.Must(t, os.Rename(s.p("l1/meta"), s.p("l1/meta.moved")))
			return map[string]string{"u/meta2": "whose data is in no layer below"}
		},
		kernel: func(t *testing.T, s *testStack, after bool) {
			if _, err := os.ReadFile(s.p("m/meta2")); !errors.Is(err, unix.EIO) {
				t.Errorf("the kernel reads meta2: %v, want EIO", err)
			}
		},
	},
	{
		name: "metacopy data of another size",
		opts: kernelOpts,
		plant: func(t *testing.T, s *testStack) map[string]string {
			testenv.Must(t, os.Truncate(s.p("l1/meta"), 3))
			return map[string]string{"u/meta2": "has 3"}
		},
	},
	{
		name: "origin gone",
		opts: kernelOpts,
		plant: func(t *testing.T, s *testStack) map[string]string {
			testenv.Must(t, os.Remove(s.p("l2/solo")))
			return map[string]string{"u/solo": "names nothing in the lower layers"}
		},
		kernel: func(t *testing.T, s *testStack, after bool) {
			var over, up unix.Stat_t
			testenv.Must(t, unix.Stat(s.p("m/solo"), &over))
			testenv.Must(t, unix.Stat(s.p("u/solo"), &up))
			if over.Ino != up.Ino {
				t.Errorf("the kernel shows solo with inode %d, not its upper one %d", over.Ino, up.Ino)
			}
		},
	},
	{
		name: "stale index entry",
		opts: kernelOpts,
		plant: func(t *testing.T, s *testStack) map[string]string {
			// Every name of the indexed file gone behind the
			// overlay's back: the upper ones and the lower ones.
			for _, n := range []string{"g", "g3", "g4"} {
				testenv.Must(t, os.Remove(s.p("u/d/"+n)))
			}
			testenv.Must(t, os.Remove(s.p("l2/d/g")))
			testenv.Must(t, os.Remove(s.p("l2/d/g2")))
			testenv.Must(t, os.Remove(s.p("l2/d/g3")))
			return map[string]string{indexEntryPath(t, s): "its origin is gone"}
		},
		kernel: func(t *testing.T, s *testStack, after bool) {
			if names := testenv.DirNames(t, s.p("w/index")); len(indexNames(names)) != 0 {
				t.Errorf("the kernel kept index entries %v", names)
			}
		},
		repaired: true,
	},
	{
		name: "orphan index entry",
		opts: kernelOpts,
		plant: func(t *testing.T, s *testStack) map[string]string {
			e := indexEntryPath(t, s)
			for _, n := range []string{"g", "g3", "g4"} {
				testenv.Must(t, os.Remove(s.p("u/d/"+n)))
			}
			s.setx(t, e, tNlink, "U-1")
			return map[string]string{e: "orphan index entry"}
		},
		kernel: func(t *testing.T, s *testStack, after bool) {
			if names := testenv.DirNames(t, s.p("w/index")); len(indexNames(names)) != 0 {
				t.Errorf("the kernel kept index entries %v", names)
			}
		},
		repaired: true,
	},
	{
		name: "upper link not the index entry",
		opts: kernelOpts,
		plant: func(t *testing.T, s *testStack) map[string]string {
			b, err := os.ReadFile(s.p("u/d/g4"))
			testenv.Must(t, err)
			origin, err := layers.GetxattrAt(unix.AT_FDCWD, s.p("u/d/g4"), tOrigin)
			testenv.Must(t, err)
			testenv.Must(t, os.Remove(s.p("u/d/g4")))
			s.build(t, "u/d/g4="+string(b))
			s.setx(t, "u/d/g4", tOrigin, string(origin))
			return map[string]string{"u/d/g4": "another inode"}
		},
	},
	{
		name: "index entry linked from elsewhere",
		opts: kernelOpts,
		plant: func(t *testing.T, s *testStack) map[string]string {
			e := indexEntryPath(t, s)
			testenv.Must(t, os.Link(s.p(e), s.p("w/elsewhere")))
			return map[string]string{e: "with 5 links, of which 3 are upper files"}
		},
	},
	{
		name: "index entry name",
		opts: kernelOpts,
		plant: func(t *testing.T, s *testStack) map[string]string {
			s.build(t, "w/index/notahandle=")
			return map[string]string{"w/index/notahandle": "refuses to mount the stack with index=on"}
		},
		refused: true,
	},
	{
		name: "index of another upper",
		opts: kernelOpts,
		plant: func(t *testing.T, s *testStack) map[string]string {
			s.setx(t, "w/index", layers.Trusted.Name(layers.XattrUpper), origin(t, s.p("u/d")))
			return map[string]string{"w/index": "the index belongs to another upper layer"}
		},
		refused: true,
	},
	{
		name: "upper root made over other lowers",
		opts: kernelOpts,
		plant: func(t *testing.T, s *testStack) map[string]string {
			s.setx(t, "u", tOrigin, origin(t, s.p("l2")))
			return map[string]string{"u": "not the root of lowerdir"}
		},
		refused: true,
	},
}

// indexEntryPath returns the path, relative to the base, of the one index
// entry of a kernelStack: that of the lower hard links d/g, d/g2, d/g3.
func indexEntryPath(t *testing.T, s *testStack) string {
	t.Helper()
	names := indexNames(testenv.DirNames(t, s.p("w/index")))
	if len(names) != 1 {
		t.Fatalf("index entries %v, want one", names)
	}
	return filepath.Join("w/index", names[0])
}

// indexNames leaves out the kernel's temporaries.
func indexNames(names []string) []string {
	var out []string
	for _, n := range names {
		if !strings.HasPrefix(n, "#") {
			out = append(out, n)
		}
	}
	return out
}

func TestInUseKernel(t *testing.T) {
	requireRoot(t)
	s := newStack(t, 2)
	s.build(t, "l1/d/", "l2/e/", "apart/")
	umount := s.mount(t, "")
	for _, tc := range []struct {
		stack Stack
		want  string
	}{
		{s.Stack, s.Lower[0] + " is lowerdir " + s.Lower[0] + " of the overlay mounted at " + s.p("m")},
		{Stack{Lower: []string{s.p("apart")}, Upper: s.Upper, Work: s.p("apart")}, s.Upper + " is upperdir " + s.Upper},
		{Stack{Lower: []string{s.p("l2/e")}}, s.p("l2/e") + " is inside lowerdir " + s.Lower[1]},
		{Stack{Lower: []string{s.base}}, s.base + " holds"},
		{Stack{Lower: []string{s.p("apart")}}, ""},
	} {
		what, busy := InUse(tc.stack)
		if busy != (tc.want != "") || !strings.HasPrefix(what, tc.want) {
			t.Errorf("InUse(%v) = %q, %v; want %q", tc.stack, what, busy, tc.want)
		}
	}
	umount()
	if what, busy := InUse(s.Stack); busy {
		t.Errorf("InUse after unmount: %s", what)
	}
}

func TestOverlayDirs(t *testing.T) {
	// As /proc/self/mountinfo shows them (6.18): lowerdir as given, with
	// "\:" for a colon in a path, then escaped as mountinfo escapes.
	opts := []string{"rw", `lowerdir=/a\134:b:/c\134\054d::/data`, `lowerdir+=/e\040f`, "datadir+=/g", "upperdir=/u", "workdir=/w", "lowerdir=rel"}
	var got []string
	for _, d := range overlayDirs(opts) {
		got = append(got, d.role+" "+d.path)
	}
	want := []string{"lowerdir /a:b", "lowerdir /c,d", "lowerdir /data", "lowerdir /e f", "lowerdir /g", "upperdir /u", "workdir /w"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("overlayDirs = %q, want %q", got, want)
	}
}

// TestKernelLowerOnTmpfs checks a stack whose lower layer is on another
// filesystem, one with a uuid, which origins carry and must match.
func TestKernelLowerOnTmpfs(t *testing.T) {
	requireRoot(t)
	s := newStack(t, 2)
	testenv.Must(t, unix.Mount("tmpfs", s.Lower[1], "tmpfs", 0, "mode=0755"))
	t.Cleanup(func() { unix.Unmount(s.Lower[1], unix.MNT_DETACH) })
	lowerTree(t, s)
	umount := s.mount(t, kernelOpts+",xino=on")
	in(t, s.p("m"), `echo more >> solo; chown 5:5 d/h e; echo more >> d/g; mv e e2`)
	umount()
	v, err := layers.GetxattrAt(unix.AT_FDCWD, s.p("u/solo"), tOrigin)
	testenv.Must(t, err)
	if fh, _, bad := parseHandle(v); bad != "" || fh.uuid == [16]byte{} {
		t.Fatalf("the origin of a tmpfs file: %x (%s), want one with the uuid of the tmpfs", v, bad)
	}
	s.clean(t)
	testenv.Must(t, os.Remove(s.p("l2/solo")))
	fs, _ := s.check(t, Options{})
	s.wantFindings(t, fs, map[string]string{"u/solo": "names nothing in the lower layers"}, false)
}
