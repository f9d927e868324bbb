package conformance

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// mergeBase is the layer stack of the lookup, readdir and whiteout
// scenarios: every way layers combine, each kernel marker kind.
//
//	merged/{from-up,from-l0,from-l1,sub/in-l1}   merged through all three layers
//	merged/{gone-up,gone-l0,deaddir}            whited out by the upper, by l0
//	opaque, opq-up                              opaque in l0, in the upper
//	xw                                          opaque=x in l0: xwhiteout a hides l1's a
//	flip (file over a dir), flip2 (dir over a file)
//	loop1 <-> loop2, dangling, lsym -> merged   symlinks
//	lower-only/{a,b}, upper-only/f
func mergeBase() Spec {
	return Spec{
		Lowers: []Layer{
			{ // l0, top
				{Path: "merged", Kind: Dir, Mode: 0o775},
				{Path: "merged/from-l0", Kind: File, Content: "l0", UID: 65534, GID: 65534},
				{Path: "merged/gone-l0", Kind: Whiteout},
				{Path: "merged/deaddir", Kind: Whiteout},
				{Path: "merged/sub/in-l0", Kind: File, Content: "sub l0"},
				{Path: "opaque", Kind: Dir, Opaque: OpaqueTrusted},
				{Path: "opaque/top", Kind: File, Content: "above the opaque marker"},
				{Path: "xw", Kind: Dir, Opaque: OpaqueXWhiteouts},
				{Path: "xw/a", Kind: XWhiteout},
				{Path: "xw/kept", Kind: File, Content: "not a whiteout"},
				{Path: "flip", Kind: File, Content: "a file over a dir"},
				{Path: "flip2/inside", Kind: File, Content: "a dir over a file"},
				{Path: "shadow", Kind: File, Content: "l0's", Mode: 0o600},
			},
			{ // l1, bottom
				{Path: "merged", Kind: Dir, Mode: 0o700, Xattrs: map[string]string{"user.layer": "l1"}},
				{Path: "merged/from-l1", Kind: File, Content: "l1"},
				{Path: "merged/gone-l0", Kind: File, Content: "hidden by l0"},
				{Path: "merged/gone-up", Kind: File, Content: "hidden by the upper"},
				{Path: "merged/deaddir/x", Kind: File, Content: "hidden with its dir"},
				{Path: "merged/sub/in-l1", Kind: File, Content: "sub l1"},
				{Path: "opaque/hidden", Kind: File, Content: "below an opaque dir"},
				{Path: "opq-up/old", Kind: File, Content: "below an opaque upper dir"},
				{Path: "xw/a", Kind: File, Content: "a from l1"},
				{Path: "xw/b", Kind: File, Content: "b from l1"},
				{Path: "flip/inner", Kind: File, Content: "below a file"},
				{Path: "flip2", Kind: File, Content: "below a dir"},
				{Path: "loop1", Kind: Symlink, Target: "loop2"},
				{Path: "loop2", Kind: Symlink, Target: "loop1"},
				{Path: "dangling", Kind: Symlink, Target: "no/such/file"},
				{Path: "lsym", Kind: Symlink, Target: "merged"},
				{Path: "lower-only/a", Kind: File, Content: "a"},
				{Path: "lower-only/b", Kind: File, Content: "b"},
				{Path: "shadow", Kind: File, Content: "l1's, shadowed"},
			},
		},
		Upper: Layer{
			{Path: "merged", Kind: Dir, Mode: 0o755},
			{Path: "merged/from-up", Kind: File, Content: "upper"},
			{Path: "merged/gone-up", Kind: Whiteout},
			{Path: "opq-up", Kind: Dir, Opaque: OpaqueTrusted},
			{Path: "opq-up/new", Kind: File, Content: "above the opaque marker"},
			{Path: "upper-only/f", Kind: File, Content: "only in the upper"},
		},
	}
}

// on is a scenario on other layers than writeBase.
func on(name string, spec Spec, ops ...Op) Scenario {
	return Scenario{Name: name, Spec: spec, Ops: ops}
}

func lookupScenarios() []Scenario {
	basic := unix.STATX_BASIC_STATS
	var out []Scenario
	// One scenario per kind of path: lstat and statx of it, and the call
	// that reads what it holds.
	for _, c := range []struct {
		name, path string
		want       string
		read       Op
	}{
		{"upper-file", "upper-only/f", "ok", Read("upper-only/f")},
		{"lower-file", "lower-only/a", "ok", Read("lower-only/a")},
		{"shadowed-file", "shadow", "ok", Read("shadow")},
		{"merged-dir", "merged", "ok", Readdir("merged")},
		{"merged-upper-file", "merged/from-up", "ok", Read("merged/from-up")},
		{"merged-l0-file", "merged/from-l0", "ok", Read("merged/from-l0")},
		{"merged-l1-file", "merged/from-l1", "ok", Read("merged/from-l1")},
		{"merged-subdir", "merged/sub", "ok", Readdir("merged/sub")},
		{"whited-out-by-upper", "merged/gone-up", "ENOENT", Read("merged/gone-up")},
		{"whited-out-by-lower", "merged/gone-l0", "ENOENT", Read("merged/gone-l0")},
		{"whited-out-dir", "merged/deaddir/x", "ENOENT", Readdir("merged/deaddir")},
		{"below-opaque", "opaque/hidden", "ENOENT", Readdir("opaque")},
		{"below-opaque-upper", "opq-up/old", "ENOENT", Readdir("opq-up")},
		{"below-xwhiteout", "xw/a", "ENOENT", Read("xw/b")},
		{"file-over-dir", "flip/inner", "ENOTDIR", Read("flip")},
		{"dir-over-file", "flip2", "ok", Readdir("flip2")},
		{"symlink", "lsym", "ok", Readlink("lsym")},
		{"through-symlink", "lsym/from-l1", "ok", Read("lsym/from-l1")},
		{"dangling-symlink", "dangling", "ok", Read("dangling").Want("ENOENT")},
		{"symlink-loop", "loop1", "ok", Read("loop1").Want("ELOOP")},
		{"missing", "nosuch", "ENOENT", Read("nosuch/x").Want("ENOENT")},
		{"trailing-slash-file", "lower-only/a/", "ENOTDIR", Read("merged/from-l1/.")},
		{"dotdot", "merged/sub/../from-l0", "ok", Read("merged/../shadow")},
		{"name-too-long", "merged/" + strings.Repeat("n", 256), "ENAMETOOLONG", Stat("merged/" + strings.Repeat("n", 255)).Want("ENOENT")},
	} {
		out = append(out, on("lookup/"+c.name, mergeBase(),
			Stat(c.path).Want(c.want), Statx(c.path, basic), c.read))
	}
	out = append(out,
		on("lookup/statx-btime", mergeBase(), Statx("upper-only/f", unix.STATX_BASIC_STATS|unix.STATX_BTIME),
			Statx("merged/from-l1", unix.STATX_BTIME)),
		Scenario{Name: "lookup/lowers-only", Spec: Spec{Lowers: mergeBase().Lowers}, LowersOnly: true,
			Ops: []Op{Stat("merged/from-l0").Want("ok"), Stat("merged/gone-l0").Want("ENOENT"), Readdir("merged"),
				Read("opaque/top"), Stat("opaque/hidden").Want("ENOENT"), Readdir("xw")}},
	)
	return out
}

func readdirScenarios() []Scenario {
	big := func(n int) Spec {
		s := mergeBase()
		s.AddBigDir("big", n)
		return s
	}
	out := []Scenario{}
	for _, dir := range []string{".", "merged", "merged/sub", "opaque", "opq-up", "xw", "flip2", "lower-only", "upper-only"} {
		name := strings.ReplaceAll(dir, "/", "-")
		if dir == "." {
			name = "root"
		}
		out = append(out, on("readdir/"+name, mergeBase(), Readdir(dir).Want("ok")))
	}
	return append(out,
		on("readdir/not-a-dir", mergeBase(), Readdir("shadow").Want("ENOTDIR"), Readdir("flip").Want("ENOTDIR")),
		on("readdir/big", big(600), Readdir("big").Want("ok")),
		on("readdir/seek-continue", big(300), Open("big", unix.O_RDONLY|unix.O_DIRECTORY, 0).Keep("d"),
			Getdents("d", 50), Getdents("d", 100), Getdents("d", 1000), Getdents("d", 10), Close("d")),
		on("readdir/seek-rewind", big(300), Open("big", unix.O_RDONLY|unix.O_DIRECTORY, 0).Keep("d"),
			Getdents("d", 120), Lseek("d", 0, unix.SEEK_SET).Want("ok"), Getdents("d", 1000), Close("d")),
		on("readdir/seek-merged", mergeBase(), Open("merged", unix.O_RDONLY|unix.O_DIRECTORY, 0).Keep("d"),
			Getdents("d", 3), Getdents("d", 100), Lseek("d", 0, unix.SEEK_SET), Getdents("d", 2), Getdents("d", 100), Close("d")),
		on("readdir/unlink-while-listing", big(200), Open("big", unix.O_RDONLY|unix.O_DIRECTORY, 0).Keep("d"),
			Getdents("d", 20), Unlink("big/entry-00150").Want("ok"), GetdentsExcept("d", 1000, "entry-00150"),
			Lseek("d", 0, unix.SEEK_SET), Getdents("d", 1000), Close("d")),
		on("readdir/create-while-listing", mergeBase(), Open("merged", unix.O_RDONLY|unix.O_DIRECTORY, 0).Keep("d"),
			Getdents("d", 2), Create("merged/new", 0o644, "n"), GetdentsExcept("d", 100, "new"), Lseek("d", 0, unix.SEEK_SET),
			Getdents("d", 100), Close("d")),
		// A listing read on one fd goes on, each entry once, after
		// another fd of the directory started again from the top.
		on("readdir/rewound-by-another", big(300), Open("big", unix.O_RDONLY|unix.O_DIRECTORY, 0).Keep("d"),
			Getdents("d", 40), Create("big/new", 0o644, "n"), Open("big", unix.O_RDONLY|unix.O_DIRECTORY, 0).Keep("e"),
			Getdents("e", 1000), Close("e"), GetdentsExcept("d", 1000, "new"), Close("d")),
		on("readdir/after-copy-up", mergeBase(), Chmod("merged/from-l1", 0o600), Readdir("merged"), Chmod("merged/sub", 0o700),
			Readdir("merged/sub")),
		on("readdir/after-unlink", mergeBase(), Unlink("merged/from-l1").Want("ok"), Unlink("merged/from-up").Want("ok"), Readdir("merged")),
		on("readdir/after-rmdir-mkdir", mergeBase(), Unlink("lower-only/a"), Unlink("lower-only/b"), Rmdir("lower-only").Want("ok"),
			Mkdir("lower-only", 0o755).Want("ok"), Readdir("lower-only"), Create("lower-only/c", 0o644, "c"), Readdir("lower-only")),
		on("readdir/lseek-end", mergeBase(), Open("merged", unix.O_RDONLY|unix.O_DIRECTORY, 0).Keep("d"),
			Lseek("d", 0, unix.SEEK_END), Close("d")),
		Scenario{Name: "readdir/lowers-only-big", Spec: Spec{Lowers: big(400).Lowers}, LowersOnly: true,
			Ops: []Op{Readdir("big").Want("ok"), Open("big", unix.O_RDONLY|unix.O_DIRECTORY, 0).Keep("d"), Getdents("d", 77),
				Getdents("d", 1000), Close("d")}},
	)
}

func whiteoutScenarios() []Scenario {
	// markers lists a layer stack per marker kind the kernel reads; each
	// hides or covers "d/x" of the bottom layer.
	kernelMarkers := []struct {
		name  string
		top   Layer
		upper Layer
	}{
		{"whiteout-in-lower", Layer{{Path: "d/x", Kind: Whiteout}, {Path: "d/y", Kind: File}}, nil},
		{"whiteout-in-upper", nil, Layer{{Path: "d/x", Kind: Whiteout}}},
		{"dir-whiteout-in-lower", Layer{{Path: "d", Kind: Whiteout}}, nil},
		{"dir-whiteout-in-upper", nil, Layer{{Path: "d", Kind: Whiteout}}},
		{"opaque-lower", Layer{{Path: "d", Kind: Dir, Opaque: OpaqueTrusted}, {Path: "d/y", Kind: File}}, nil},
		{"opaque-upper", nil, Layer{{Path: "d", Kind: Dir, Opaque: OpaqueTrusted}, {Path: "d/y", Kind: File}}},
		{"xwhiteout-lower", Layer{{Path: "d", Kind: Dir, Opaque: OpaqueXWhiteouts}, {Path: "d/x", Kind: XWhiteout}}, nil},
		{"xwhiteout-upper", nil, Layer{{Path: "d", Kind: Dir, Opaque: OpaqueXWhiteouts}, {Path: "d/x", Kind: XWhiteout}}},
		{"whiteout-of-nothing", Layer{{Path: "d/nothing", Kind: Whiteout}}, nil},
		{"whiteout-in-unmerged-dir", Layer{{Path: "solo/ghost", Kind: Whiteout}, {Path: "solo/f", Kind: File}}, nil},
	}
	var out []Scenario
	for _, m := range kernelMarkers {
		s := Spec{Lowers: []Layer{m.top, {{Path: "d/x", Kind: File, Content: "x"}, {Path: "d/z", Kind: File, Content: "z"}}}, Upper: m.upper}
		if m.top == nil {
			s.Lowers = s.Lowers[1:]
		}
		if s.Upper == nil {
			s.Upper = Layer{}
		}
		out = append(out, on("whiteout/"+m.name, s, Stat("d/x"), Readdir("d"), Create("d/x", 0o644, "new x"), Readdir("d")))
	}
	// Markers only userspace overlays read; the kernel is shown the same
	// layers in its own format.
	for _, m := range []struct {
		name string
		top  Layer
	}{
		{"aufs-whiteout", Layer{{Path: "d/x", Kind: AUFSWhiteout}, {Path: "d/y", Kind: File}}},
		{"aufs-dir-whiteout", Layer{{Path: "d", Kind: AUFSWhiteout}, {Path: "e", Kind: File}}},
		{"aufs-opaque", Layer{{Path: "d", Kind: Dir, Opaque: OpaqueAUFS}, {Path: "d/y", Kind: File}}},
		{"user-overlay-opaque", Layer{{Path: "d", Kind: Dir, Opaque: OpaqueUser}, {Path: "d/y", Kind: File}}},
		{"fuse-overlayfs-opaque", Layer{{Path: "d", Kind: Dir, Opaque: OpaqueFuse}, {Path: "d/y", Kind: File}}},
	} {
		s := Spec{Lowers: []Layer{m.top, {{Path: "d/x", Kind: File, Content: "x"}, {Path: "d/z", Kind: File, Content: "z"}}}, Upper: Layer{}}
		out = append(out, Scenario{Name: "whiteout/" + m.name, Spec: s, Foreign: true,
			Ops: []Op{Stat("d/x"), Readdir("d"), Create("d/x", 0o644, "new x"), Readdir("d")}})
	}
	for _, depth := range []int{1, 3} {
		path := "w"
		for j := 0; j < depth; j++ {
			path += fmt.Sprintf("/l%d", j)
		}
		out = append(out, on(fmt.Sprintf("whiteout/unlink-depth-%d", depth), Spec{
			Lowers: []Layer{{{Path: path + "/f", Kind: File, Content: "f"}, {Path: path + "/g", Kind: File}}}, Upper: Layer{}},
			Unlink(path+"/f").Want("ok"), Stat(path+"/f").Want("ENOENT"), Readdir(path), Create(path+"/f", 0o600, "back"),
			Unlink(path+"/f").Want("ok"), Readdir(path)))
	}
	return append(out,
		on("whiteout/rmdir-makes-opaque", mergeBase(), Unlink("merged/sub/in-l0"), Unlink("merged/sub/in-l1"),
			Rmdir("merged/sub").Want("ok"), Mkdir("merged/sub", 0o700).Want("ok"), Readdir("merged/sub")),
		on("whiteout/rmdir-lower-then-file", mergeBase(), Unlink("lower-only/a"), Unlink("lower-only/b"),
			Rmdir("lower-only").Want("ok"), Create("lower-only", 0o644, "now a file").Want("ok"), Read("lower-only")),
		on("whiteout/unlink-over-lower-whiteout", mergeBase(), Unlink("merged/from-l0").Want("ok"), Unlink("merged/from-l1").Want("ok"),
			Readdir("merged")),
		on("whiteout/opaque-dir-unlink", mergeBase(), Unlink("opaque/top").Want("ok"), Readdir("opaque"), Rmdir("opaque").Want("ok"),
			Stat("opaque").Want("ENOENT")),
		on("whiteout/xwhiteout-dir-writes", mergeBase(), Create("xw/a", 0o644, "new a").Want("ok"), Unlink("xw/b").Want("ok"),
			Readdir("xw"), Read("xw/a")),
	)
}
