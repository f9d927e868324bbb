package conformance

import (
	"crypto/sha256"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Scenarios of the kernel's layer formats and the mount options that read
// and write them. Each group mounts with its options on both sides; a
// group's "both directions" are the option that writes a format and the
// settings that read (or refuse) what it wrote, often from an upper layer
// the kernel prepared (Scenario.Prepare).

// Overlay xattrs as the kernel names them by default.
const (
	xattrRedirect = "trusted.overlay.redirect"
	xattrMetacopy = "trusted.overlay.metacopy"
)

// redirectBase is the stack of the redirect_dir scenarios:
//
//	a/{x,sub/y}     lower-only directory, with a subdirectory
//	m/{l0,l1,up}    merged through all three layers
//	lo/deep/z       lower-only, deeper
//	e               empty lower directory
//	wd (whiteout)   a lower directory the upper whited out
//	f               lower file
func redirectBase() Spec {
	return Spec{
		Lowers: []Layer{
			{
				{Path: "m", Kind: Dir, Mode: 0o775},
				{Path: "m/l0", Kind: File, Content: "from l0"},
			},
			{
				{Path: "a/x", Kind: File, Content: "x in a"},
				{Path: "a/sub/y", Kind: File, Content: "y in a/sub"},
				{Path: "m/l1", Kind: File, Content: "from l1"},
				{Path: "lo/deep/z", Kind: File, Content: "z"},
				{Path: "e", Kind: Dir},
				{Path: "wd/inner", Kind: File, Content: "whited out with its dir"},
				{Path: "f", Kind: File, Content: "lower file"},
			},
		},
		Upper: Layer{
			{Path: "m", Kind: Dir},
			{Path: "m/up", Kind: File, Content: "upper"},
			{Path: "wd", Kind: Whiteout},
		},
	}
}

// redirectRenames are renames that make the kernel write redirects with
// redirect_dir=on: a relative one (b is a), an absolute one (b/mm is /m),
// and one of a subdirectory moved into a new directory (c/sub2 is /a/sub).
var redirectRenames = []Op{
	Rename("a", "b").Want("ok"), Rename("m", "b/mm").Want("ok"), Mkdir("c", 0o755).Want("ok"),
	Rename("b/sub", "c/sub2").Want("ok"),
}

// readRenamed looks at what redirectRenames made.
var readRenamed = []Op{
	Stat("a").Want("ENOENT"), Stat("m").Want("ENOENT"), Readdir("b"), Read("b/x"), Readdir("b/mm"), Read("b/mm/l0"),
	Read("b/mm/l1"), Read("b/mm/up"), Readdir("c/sub2"), Read("c/sub2/y"), InoMark("b/mm", "mm"), InoMark("c/sub2", "sub2"),
}

func redirectScenarios() []Scenario {
	on := []string{"redirect_dir=on"}
	base := redirectBase()
	written := WithOptions(on,
		Scenario{Name: "redirect/rename-lower-dir", Spec: base, Ops: []Op{Rename("a", "b").Want("ok"), Stat("a").Want("ENOENT"),
			Readdir("b"), Read("b/x"), Readdir("b/sub"), Read("b/sub/y"), Readdir(".")}},
		Scenario{Name: "redirect/rename-merged-dir", Spec: base, Ops: []Op{Rename("m", "m2").Want("ok"), Stat("m").Want("ENOENT"),
			Readdir("m2"), Read("m2/l0"), Read("m2/l1"), Read("m2/up"), Create("m2/new", 0o644, "n").Want("ok"), Readdir("m2")}},
		Scenario{Name: "redirect/rename-back", Spec: base, Ops: []Op{Rename("a", "b").Want("ok"), Rename("b", "a").Want("ok"),
			Readdir("a"), Read("a/x"), Rename("m", "m2").Want("ok"), Rename("m2", "m").Want("ok"), Readdir("m"), Stat("b").Want("ENOENT"),
			Stat("m2").Want("ENOENT")}},
		Scenario{Name: "redirect/nested", Spec: base, Ops: []Op{Rename("a/sub", "sub2").Want("ok"), Rename("lo", "a/lo").Want("ok"),
			Readdir("sub2"), Readdir("a/lo/deep"), Read("a/lo/deep/z"), Rename("a", "b").Want("ok"), Readdir("b"), Readdir("b/lo/deep"),
			Read("b/lo/deep/z"), Stat("b/sub").Want("ENOENT"), Rename("sub2", "b/sub").Want("ok"), Readdir("b/sub")}},
		Scenario{Name: "redirect/over-whiteout", Spec: base, Ops: []Op{Rename("a", "wd").Want("ok"), Readdir("wd"),
			Stat("wd/inner").Want("ENOENT"), Read("wd/x"), Rename("m", "f").Want("ENOTDIR"), Unlink("f").Want("ok"),
			Rename("m", "f").Want("ok"), Readdir("f")}},
		Scenario{Name: "redirect/over-empty-lower-dir", Spec: base, Ops: []Op{Rename("a", "e").Want("ok"), Readdir("e"), Read("e/x"),
			Rename("lo", "m").Want("ENOTEMPTY")}},
		Scenario{Name: "redirect/exchange", Spec: base, Ops: []Op{Rename2("a", "lo", unix.RENAME_EXCHANGE).Want("ok"), Readdir("a"),
			Readdir("lo"), Read("lo/x"), Read("a/deep/z")}},
		Scenario{Name: "redirect/rmdir-renamed", Spec: base, Ops: []Op{Rename("a", "b").Want("ok"), Unlink("b/x").Want("ok"),
			Unlink("b/sub/y").Want("ok"), Rmdir("b/sub").Want("ok"), Rmdir("b").Want("ok"), Mkdir("b", 0o755).Want("ok"), Readdir("b"),
			Mkdir("a", 0o700).Want("ok"), Readdir("a")}},
		Scenario{Name: "redirect/renames-then-reads", Spec: base, Ops: append(append([]Op{}, redirectRenames...), readRenamed...)},
		Scenario{Name: "redirect/kernel-written-read-back", Spec: base, Prepare: redirectRenames,
			Ops: append(append([]Op{}, readRenamed...), Rename("b/mm", "m").Want("ok"), Rename("b", "a").Want("ok"), Readdir("a"),
				Readdir("m"), Rename("c/sub2", "a/sub").Want("ok"), Readdir("a/sub"))},
	)
	// Reading redirects the kernel wrote with redirect_dir=on: follow (and
	// off, which means follow when the kernel is built to always follow,
	// as it is by default, and so does no option) merge them; nofollow
	// refuses to look up a directory with a redirect to follow (EPERM) and
	// leaves it out of its parent's listing. Without redirect_dir=on,
	// renaming a lower directory fails with EXDEV.
	var read []Scenario
	for _, mode := range []string{"follow", "nofollow", "off"} {
		read = append(read, Scenario{Name: "redirect/read-" + mode, Spec: base, Options: []string{"redirect_dir=" + mode},
			Prepare: redirectRenames, PrepareOptions: on,
			Ops: []Op{Readdir("b"), Read("b/x"), Readdir("b/mm"), Readdir("c/sub2"), Stat("a").Want("ENOENT"), InoMark("b", "b"),
				Create("b/mm/new", 0o644, "n"), Rename("b", "b2"), Rename("lo", "lo2").Want("EXDEV"), Readdir(".")}})
	}
	read = append(read,
		Scenario{Name: "redirect/read-default", Spec: base, Prepare: redirectRenames, PrepareOptions: on,
			Ops: []Op{Readdir("b"), Readdir("b/mm"), Readdir("c/sub2"), Rename("lo", "lo2").Want("EXDEV")}},
		Scenario{Name: "redirect/lower-layer-redirects", Spec: lowerRedirects(), Options: []string{"redirect_dir=follow"},
			Ops: []Op{Readdir("b"), Read("b/x"), Readdir("n/moved"), Read("n/moved/z"), Stat("a").Want("ENOENT")}},
		Scenario{Name: "redirect/lower-layer-redirects-nofollow", Spec: lowerRedirects(), Options: []string{"redirect_dir=nofollow"},
			Ops: []Op{Readdir("b"), Readdir("n/moved"), Stat("a").Want("ENOENT")}},
	)
	return append(written, read...)
}

// lowerRedirects is a stack whose top lower layer holds redirects in the
// kernel's format, as a container image layer made from an upper layer
// would: b is l1's a (relative), n/moved is l1's lo/deep (absolute).
func lowerRedirects() Spec {
	return Spec{
		Lowers: []Layer{
			{
				{Path: "a", Kind: Whiteout},
				{Path: "b", Kind: Dir, Xattrs: map[string]string{xattrRedirect: "a"}},
				{Path: "b/top", Kind: File, Content: "in l0's b"},
				{Path: "n/moved", Kind: Dir, Xattrs: map[string]string{xattrRedirect: "/lo/deep"}},
				{Path: "lo/deep", Kind: Whiteout},
			},
			redirectBase().Lowers[1],
		},
		Upper: Layer{},
	}
}

// metacopyBase is the stack of the metacopy scenarios:
//
//	f, x (xattrs), big, owned     lower files
//	h1, h2                        lower hard links
//	fifo, sym                     lower files that are not regular
//	mc                            a metacopy file in l0 over its data in l1
func metacopyBase() Spec {
	return Spec{
		Lowers: []Layer{
			{
				{Path: "mc", Kind: File, Content: strings.Repeat("\x00", 11), Sparse: true, Mode: 0o600, UID: 7,
					Xattrs: map[string]string{xattrMetacopy: ""}},
			},
			{
				{Path: "f", Kind: File, Content: "lower data\n", Mtime: tPast},
				{Path: "x", Kind: File, Content: "xattrs", Xattrs: map[string]string{"user.a": "1", "trusted.b": "2"}},
				{Path: "big", Kind: File, Content: strings.Repeat("0123456789abcdef", 1000)},
				{Path: "owned", Kind: File, Content: "owned by 1000", UID: 1000, GID: 1000},
				{Path: "h1", Kind: File, Content: "linked"},
				{Path: "h2", Kind: HardLink, Target: "h1"},
				{Path: "fifo", Kind: Fifo},
				{Path: "sym", Kind: Symlink, Target: "f"},
				{Path: "mc", Kind: File, Content: "data of mc\n"},
				{Path: "d/f", Kind: File, Content: "in d"},
			},
		},
		Upper: Layer{},
	}
}

func metacopyScenarios() []Scenario {
	on := []string{"metacopy=on"}
	base := metacopyBase()
	sc := func(name string, ops ...Op) Scenario { return Scenario{Name: "metacopy/" + name, Spec: base, Ops: ops} }
	written := WithOptions(on,
		sc("chmod", Chmod("f", 0o600).Want("ok"), Stat("f"), Blocks("f"), Read("f"), Chmod("d", 0o700).Want("ok")),
		sc("chown", Chown("f", 5, 6).Want("ok"), Stat("f"), Read("f"), Chown("fifo", 5, 6).Want("ok"), Chown("sym", 5, 6).Want("ok")),
		sc("setxattr", Setxattr("x", "user.k", "v", 0).Want("ok"), Listxattr("x"), Getxattr("x", "trusted.b"), Read("x"),
			Removexattr("f", "user.none").Want("ENODATA")),
		sc("utimens", Utimens("f", tPast, tFuture).Want("ok"), Stat("f"), Read("f")),
		sc("open-for-write", Chmod("f", 0o600).Want("ok"), Open("f", unix.O_RDWR, 0).Keep("h").Want("ok"), Pread("h", 0, 100),
			Pwrite("h", 0, "W").Want("ok"), Pread("h", 0, 100), Close("h"), Read("f")),
		sc("open-read-then-write", Chmod("big", 0o600).Want("ok"), Open("big", unix.O_RDONLY, 0).Keep("r"), Pread("r", 4090, 20),
			Write("big", 4096, "NEW").Want("ok"), Pread("r", 4090, 20), Close("r"), Read("big")),
		sc("write-append", Chown("f", 1, 1).Want("ok"), Append("f", "appended\n").Want("ok"), Read("f"), Stat("f")),
		sc("hard-links", Chmod("h1", 0o600).Want("ok"), Stat("h1"), Stat("h2"), Read("h1"), InoMark("h1", "h"), InoMark("h2", "h"),
			Write("h1", 0, "W").Want("ok"), Read("h1"), Read("h2")),
		sc("link-metacopy", Chmod("f", 0o600).Want("ok"), Link("f", "f2").Want("ok"), Stat("f2"), Read("f2"), Write("f2", 0, "L"),
			Read("f")),
		sc("truncate", Truncate("f", 4).Want("ok"), Read("f"), Chmod("big", 0o600).Want("ok"), Truncate("big", 100).Want("ok"),
			Read("big"), Truncate("x", 10000).Want("ok"), Stat("x")),
		sc("rename", Chmod("f", 0o600).Want("ok"), Rename("f", "d/g").Want("ok"), Read("d/g"), Stat("f").Want("ENOENT"),
			Chown("x", 3, 3).Want("ok"), Rename("x", "x2").Want("ok"), Rename("x2", "x").Want("ok"), Read("x")),
		sc("unlink", Chmod("f", 0o600).Want("ok"), Unlink("f").Want("ok"), Stat("f").Want("ENOENT"), Create("f", 0o644, "new").Want("ok")),
		sc("lower-metacopy", Stat("mc"), Read("mc"), Blocks("mc"), Chmod("mc", 0o640).Want("ok"), Stat("mc"), Read("mc"),
			Write("mc", 0, "D").Want("ok"), Read("mc")),
		Scenario{Name: "metacopy/kernel-written-read-back", Spec: base, Prepare: []Op{Chmod("f", 0o600).Want("ok"),
			Chown("big", 2, 2).Want("ok"), Rename("big", "d/big").Want("ok"), Chmod("h1", 0o640).Want("ok")},
			Ops: []Op{Read("f"), Stat("f"), Read("d/big"), Read("h1"), Read("h2"), Write("d/big", 0, "B").Want("ok"), Read("d/big")}},
	)
	// A metacopy file needs metacopy=on to be followed to its data: the
	// kernel refuses the lookup (EPERM) without it, whether the metacopy
	// file is in a lower layer or in the upper layer.
	read := []Scenario{
		{Name: "metacopy/off-refuses-lower-metacopy", Spec: base, Ops: []Op{Stat("mc").Want("EPERM"), Read("mc").Want("EPERM"),
			Readdir("."), Chmod("mc", 0o600).Want("EPERM")}},
		{Name: "metacopy/off-refuses-upper-metacopy", Spec: base, Prepare: []Op{Chmod("f", 0o600).Want("ok"), Chown("x", 1, 1).Want("ok")},
			PrepareOptions: on, Ops: []Op{Stat("f").Want("EPERM"), Read("x").Want("EPERM"), Readdir("."), Unlink("f").Want("EPERM")}},
	}
	return append(written, read...)
}

// indexBase is the stack of the index scenarios: a lower file with four
// names, one of them in a subdirectory, and a plain file.
func indexBase() Spec {
	return Spec{
		Lowers: []Layer{{
			{Path: "h1", Kind: File, Content: "linked"},
			{Path: "h2", Kind: HardLink, Target: "h1"},
			{Path: "h3", Kind: HardLink, Target: "h1"},
			{Path: "d/h4", Kind: HardLink, Target: "h1"},
			{Path: "p", Kind: File, Content: "plain"},
		}},
		Upper: Layer{},
	}
}

func indexScenarios() []Scenario {
	on := []string{"index=on"}
	base := indexBase()
	sc := func(name string, ops ...Op) Scenario { return Scenario{Name: "index/" + name, Spec: base, Ops: ops} }
	written := WithOptions(on,
		sc("copy-up-one-name", Write("h1", 0, "W").Want("ok"), Read("h1"), Read("h2"), Read("d/h4"), Stat("h1"), Stat("h3"),
			InoMark("h1", "h"), InoMark("h2", "h"), InoMark("d/h4", "h")),
		sc("copy-up-then-others", Write("h1", 0, "W").Want("ok"), Chmod("h2", 0o600).Want("ok"), Read("h2"), Stat("h3"),
			Chown("d/h4", 5, 5).Want("ok"), Stat("h1"), InoMark("h1", "h"), InoMark("h2", "h"), InoMark("h3", "h")),
		sc("link", Chmod("h1", 0o600).Want("ok"), Link("h1", "h5").Want("ok"), Stat("h1"), Link("h3", "d/h6").Want("ok"), Stat("d/h6"),
			InoMark("h5", "h"), InoMark("d/h6", "h")),
		sc("unlink-one-name", Chmod("h1", 0o600).Want("ok"), Unlink("h2").Want("ok"), Stat("h1"), Stat("h3"), Unlink("h3").Want("ok"),
			Stat("d/h4")),
		sc("unlink-before-copy-up", Unlink("h2").Want("ok"), Stat("h1"), Write("h3", 0, "3").Want("ok"), Stat("h1"), Read("d/h4")),
		sc("unlink-all-names", Chmod("h1", 0o600).Want("ok"), Unlink("h1").Want("ok"), Unlink("h2").Want("ok"), Unlink("h3").Want("ok"),
			Unlink("d/h4").Want("ok"), Readdir("."), Readdir("d")),
		sc("rename-copied-up", Chmod("h1", 0o600).Want("ok"), Rename("h1", "d/h1b").Want("ok"), Stat("d/h1b"), Rename("h2", "d/h2b").Want("ok"),
			Stat("h3"), InoMark("d/h1b", "h"), InoMark("d/h2b", "h")),
		sc("plain-file-and-dir", Chmod("p", 0o600).Want("ok"), Chmod("d", 0o700).Want("ok"), Stat("p"), Readdir("d")),
		Scenario{Name: "index/first-mount", Spec: Spec{Lowers: base.Lowers}, Pristine: true, Ops: []Op{Write("h1", 0, "W").Want("ok"),
			Read("h2")}},
		Scenario{Name: "index/kernel-indexed-read-back", Spec: base, Prepare: []Op{Write("h1", 0, "K").Want("ok"),
			Chmod("h2", 0o640).Want("ok")},
			Ops: []Op{Read("h2"), Read("h3"), Stat("d/h4"), InoMark("h1", "h"), InoMark("h3", "h"), Link("h3", "h7").Want("ok"),
				Unlink("h1").Want("ok"), Stat("h2")}},
	)
	// Without the index, names copied up apart are apart: a name not
	// copied up shows the lower file again.
	read := []Scenario{
		{Name: "index/off-reading-indexed", Spec: base, Prepare: []Op{Write("h1", 0, "K").Want("ok")}, PrepareOptions: on,
			Ops: []Op{Read("h1"), Read("h2"), Stat("h1"), Stat("h2"), InoMark("h1", "h"), InoMark("h2", "h"), Write("h2", 0, "2").Want("ok"),
				Read("h3")}},
	}
	return append(written, read...)
}

// dataOnly is a stack in composefs's format: a metadata layer whose
// metacopy files name their data in a data-only layer by absolute
// redirects.
//
//	f, g, big       metacopy files whose data is in the data-only layer
//	missing         names an object no layer has
//	plain, dir/s    an ordinary file and a symlink in the metadata layer
func dataOnly() Spec {
	big := strings.Repeat("composefs object ", 1000)
	meta := func(path, target string, size int, mode os.FileMode) Node {
		return Node{Path: path, Kind: File, Content: strings.Repeat("\x00", size), Sparse: true, Mode: mode, UID: 7, GID: 8,
			Xattrs: map[string]string{xattrMetacopy: "", xattrRedirect: target}}
	}
	return Spec{
		Lowers: []Layer{{
			meta("f", "/objects/ab/cdef", 11, 0o644),
			meta("g", "/objects/12/3456", 6, 0o755),
			meta("big", "/objects/b1/g", len(big), 0o444),
			meta("missing", "/objects/no/such", 5, 0o644),
			{Path: "plain", Kind: File, Content: "in the metadata layer"},
			{Path: "dir/s", Kind: Symlink, Target: "../f"},
		}},
		DataLowers: []Layer{{
			{Path: "objects/ab/cdef", Kind: File, Content: "hello data\n"},
			{Path: "objects/12/3456", Kind: File, Content: "first\n"},
			{Path: "objects/b1/g", Kind: File, Content: big},
			{Path: "only-here", Kind: File, Content: "never shown"},
		}},
	}
}

// dataOnlyOdd is dataOnly with metacopy files composefs does not make: a
// relative redirect, which data-only layers do not take (EINVAL), and
// one claiming a smaller size than its data's (the kernel reads the data
// to its end).
func dataOnlyOdd() Spec {
	s := dataOnly()
	for _, n := range []struct {
		path, target string
		size         int
	}{{"rel", "objects/ab/cdef", 11}, {"short", "/objects/ab/cdef", 4}} {
		s.Lowers[0] = append(s.Lowers[0], Node{Path: n.path, Kind: File, Content: strings.Repeat("\x00", n.size), Sparse: true,
			Xattrs: map[string]string{xattrMetacopy: "", xattrRedirect: n.target}})
	}
	return s
}

// dataOnlyTwo is dataOnly with a second data-only layer
// (lowerdir=L::D0::D1), which the first shadows; h's data is only in it.
func dataOnlyTwo() Spec {
	s := dataOnly()
	s.Lowers[0] = append(s.Lowers[0], Node{Path: "h", Kind: File, Content: strings.Repeat("\x00", 7), Sparse: true,
		Xattrs: map[string]string{xattrMetacopy: "", xattrRedirect: "/objects/cd/ef"}})
	s.DataLowers = append(s.DataLowers, Layer{
		{Path: "objects/12/3456", Kind: File, Content: "second, shadowed\n"},
		{Path: "objects/cd/ef", Kind: File, Content: "second\n"},
		{Path: "only-in-second", Kind: File, Content: "never shown"},
	})
	return s
}

func dataOnlyScenarios() []Scenario {
	base := dataOnly()
	withUpper := dataOnly()
	withUpper.Upper = Layer{}
	reads := []Op{Readdir("."), Stat("f"), Read("f"), Read("g"), Read("big"), Blocks("big"), Stat("missing").Want("ok"),
		Read("missing").Want("ENOENT"), Read("dir/s"), Stat("objects").Want("ENOENT"), Stat("only-here").Want("ENOENT")}
	// Data-only layers do not need metacopy=on: a metacopy file of the
	// lowest layer above them is followed to its data without it, but
	// one of a higher layer is refused (EPERM).
	twoLayers := dataOnly()
	twoLayers.Lowers = append(twoLayers.Lowers, Layer{{Path: "bottom", Kind: File, Content: "below the metadata layer"}})
	return []Scenario{
		{Name: "data-only/read", Spec: base, LowersOnly: true, Ops: reads},
		{Name: "data-only/read-metacopy-on", Spec: base, LowersOnly: true, Options: []string{"metacopy=on"}, Ops: reads},
		{Name: "data-only/read-with-upper", Spec: withUpper, Ops: reads},
		{Name: "data-only/odd-metacopy-files", Spec: dataOnlyOdd(), LowersOnly: true, Ops: []Op{Readdir("."),
			Stat("rel").Want("EINVAL"), Read("rel").Want("EINVAL"), Stat("short"), Read("short").Want("ok")}},
		{Name: "data-only/two-data-layers", Spec: dataOnlyTwo(), LowersOnly: true, Ops: []Op{Readdir("."), Read("g"), Read("h"),
			Stat("objects").Want("ENOENT"), Stat("only-in-second").Want("ENOENT")}},
		{Name: "data-only/copy-up-data", Spec: withUpper, Ops: []Op{Chmod("f", 0o640).Want("ok"), Stat("f"), Read("f"),
			Write("g", 0, "G").Want("ok"), Read("g"), Truncate("big", 5).Want("ok"), Read("big"), Chmod("missing", 0o600).Want("ENOENT")}},
		{Name: "data-only/copy-up-metadata", Spec: withUpper, Options: []string{"metacopy=on"}, Ops: []Op{Chmod("f", 0o640).Want("ok"),
			Stat("f"), Read("f"), Chown("big", 1, 1).Want("ok"), Rename("big", "dir/big").Want("ok"), Read("dir/big"),
			Write("g", 0, "G").Want("ok"), Read("g"), Chmod("missing", 0o600).Want("ENOENT")}},
		{Name: "data-only/kernel-written-read-back", Spec: withUpper, Options: []string{"metacopy=on"},
			Prepare: []Op{Chmod("f", 0o640).Want("ok"), Chown("big", 1, 1).Want("ok"), Rename("big", "dir/big").Want("ok")},
			Ops:     []Op{Read("f"), Stat("f"), Read("dir/big"), Append("dir/big", "+").Want("ok"), Stat("dir/big")}},
		{Name: "data-only/metadata-layer-not-lowest", Spec: twoLayers, LowersOnly: true, Ops: []Op{Read("bottom"),
			Stat("f").Want("EPERM"), Read("plain")}},
		{Name: "data-only/metadata-layer-not-lowest-metacopy-on", Spec: twoLayers, LowersOnly: true, Options: []string{"metacopy=on"},
			Ops: []Op{Read("bottom"), Read("f").Want("ok"), Read("plain")}},
	}
}

// metacopyDigest is a metacopy xattr value carrying an fs-verity digest
// (struct ovl_metacopy: version 0, its length, flags 0, the hash
// algorithm, 1 for SHA-256, then the digest). The digest here is any
// 32 bytes: this kernel has no fs-verity, so it can never match.
func metacopyDigest(seed string) string {
	sum := sha256.Sum256([]byte(seed))
	return "\x00\x24\x00\x01" + string(sum[:])
}

// verityStack is dataOnly with two more metacopy files, one of which
// carries a digest of its data, and an upper layer.
func verityStack() Spec {
	s := dataOnly()
	s.Lowers[0] = append(s.Lowers[0],
		Node{Path: "digest", Kind: File, Content: strings.Repeat("\x00", 11), Sparse: true,
			Xattrs: map[string]string{xattrMetacopy: metacopyDigest("hello data\n"), xattrRedirect: "/objects/ab/cdef"}},
		Node{Path: "nodigest", Kind: File, Content: strings.Repeat("\x00", 6), Sparse: true,
			Xattrs: map[string]string{xattrMetacopy: "", xattrRedirect: "/objects/12/3456"}},
	)
	s.Upper = Layer{}
	return s
}

// verityScenarios: this kernel has no CONFIG_FS_VERITY, and still takes
// verity=on and verity=require. With verity=on a metacopy file whose
// xattr carries a digest cannot be opened (its data has no fs-verity to
// compare, EIO); with verity=require no metacopy file can be. verity=on
// does not turn metacopy on by itself: a copy-up is then a full one.
func verityScenarios() []Scenario {
	s := verityStack()
	reads := []Op{Stat("digest"), Read("digest"), Read("nodigest"), Read("f"), Read("plain")}
	return []Scenario{
		{Name: "verity/on", Spec: s, Options: []string{"verity=on"}, Ops: append(append([]Op{}, reads...),
			Chmod("nodigest", 0o600).Want("ok"), Chmod("digest", 0o600))},
		{Name: "verity/on-metacopy-on", Spec: s, Options: []string{"metacopy=on", "verity=on"}, Ops: append(append([]Op{}, reads...),
			Chmod("nodigest", 0o600).Want("ok"), Read("nodigest"), Chmod("digest", 0o600), Write("nodigest", 0, "N"))},
		{Name: "verity/require", Spec: s, Options: []string{"metacopy=on", "verity=require"}, Ops: append(append([]Op{}, reads...),
			Chmod("nodigest", 0o600), Stat("nodigest"))},
		{Name: "verity/off-ignores-digests", Spec: s, Options: []string{"metacopy=on", "verity=off"}, Ops: append(append([]Op{}, reads...),
			Chmod("digest", 0o600).Want("ok"), Read("digest"))},
	}
}

// uuidScenarios: what each uuid= setting records on a first mount, on an
// upper layer that an older overlay already used (its root is impure and
// has no uuid), and on one that has a uuid.
func uuidScenarios() []Scenario {
	lowers := writeBase().Lowers
	ops := []Op{Chmod("f", 0o600).Want("ok"), Mkdir("new", 0o755).Want("ok"), Rename("d/a", "m/a").Want("ok")}
	legacy := Layer{{Path: ".", Kind: Dir, Xattrs: map[string]string{"trusted.overlay.impure": "y"}}}
	withUUID := Layer{{Path: ".", Kind: Dir, Xattrs: map[string]string{"trusted.overlay.uuid": "\x01\x23\x45\x67\x89\xab\xcd\xef\x01\x23\x45\x67\x89\xab\xcd\xef"}}}
	var out []Scenario
	for _, mode := range []string{"on", "auto", "null", "off"} {
		opt := []string{"uuid=" + mode}
		out = append(out,
			Scenario{Name: "uuid/" + mode + "-first-mount", Spec: Spec{Lowers: lowers}, Pristine: true, Options: opt, Ops: ops},
			Scenario{Name: "uuid/" + mode + "-used-upper", Spec: Spec{Lowers: lowers, Upper: legacy}, Pristine: true, Options: opt, Ops: ops},
			Scenario{Name: "uuid/" + mode + "-upper-with-uuid", Spec: Spec{Lowers: lowers, Upper: withUUID}, Pristine: true, Options: opt,
				Ops: ops},
		)
	}
	return out
}

// userxattrBase is writeBase's kind of stack in the userxattr format:
// markers in user.overlay.*, and a directory with the trusted.overlay.*
// opaque marker that userxattr does not read.
func userxattrBase() Spec {
	return Spec{
		Lowers: []Layer{
			{
				{Path: "m/l0", Kind: File, Content: "from l0"},
				{Path: "m/gone", Kind: Whiteout},
				{Path: "opq", Kind: Dir, Opaque: OpaqueUser},
				{Path: "opq/top", Kind: File, Content: "above the opaque marker"},
				{Path: "topq", Kind: Dir, Opaque: OpaqueTrusted},
				{Path: "topq/top", Kind: File, Content: "above a marker userxattr does not read"},
				{Path: "xw", Kind: Dir, Xattrs: map[string]string{"user.overlay.opaque": "x"}},
				{Path: "xw/a", Kind: File, Xattrs: map[string]string{"user.overlay.whiteout": ""}},
			},
			{
				{Path: "f", Kind: File, Content: "lower file\n"},
				{Path: "x", Kind: File, Content: "xattrs", Xattrs: map[string]string{"user.a": "1"}},
				{Path: "m/l1", Kind: File, Content: "from l1"},
				{Path: "m/gone", Kind: File, Content: "hidden by l0"},
				{Path: "opq/hidden", Kind: File, Content: "below an opaque dir"},
				{Path: "topq/below", Kind: File, Content: "below a trusted opaque marker"},
				{Path: "xw/a", Kind: File, Content: "a from l1"},
				{Path: "xw/b", Kind: File, Content: "b from l1"},
				{Path: "d/a", Kind: File, Content: "a"},
				{Path: "d/sub/c", Kind: File, Content: "c"},
				{Path: "h1", Kind: File, Content: "linked"},
				{Path: "h2", Kind: HardLink, Target: "h1"},
			},
		},
		Upper: Layer{
			{Path: "m", Kind: Dir},
			{Path: "m/up", Kind: File, Content: "upper"},
			{Path: "wf", Kind: Whiteout},
		},
	}
}

// userxattrScenarios: the userxattr format, written and read. What the
// kernel makes of user.overlay.* markers without userxattr (nothing: they
// are ordinary xattrs) is left out: ovlmount reads user.overlay.opaque as
// fuse-overlayfs does, always (whiteout/user-overlay-opaque).
func userxattrScenarios() []Scenario {
	on := []string{"userxattr"}
	base := userxattrBase()
	sc := func(name string, ops ...Op) Scenario {
		return Scenario{Name: "userxattr/" + name, Spec: base, Ops: ops}
	}
	return WithOptions(on,
		sc("markers", Readdir("m"), Readdir("opq"), Readdir("topq"), Readdir("xw"), Stat("m/gone").Want("ENOENT"),
			Listxattr("opq"), Listxattr("topq"), Getxattr("opq", "user.overlay.opaque").Want("ENODATA")),
		sc("copy-up", Chmod("f", 0o600).Want("ok"), Write("x", 0, "X").Want("ok"), Setxattr("m/l1", "user.k", "v", 0).Want("ok"),
			Listxattr("x"), Write("d/sub/c", 0, "C").Want("ok"), InoMark("f", "f")),
		sc("remove-and-recreate", Unlink("d/a").Want("ok"), Unlink("d/sub/c").Want("ok"), Rmdir("d/sub").Want("ok"), Rmdir("d").Want("ok"),
			Mkdir("d", 0o755).Want("ok"), Readdir("d"), Unlink("m/l0").Want("ok"), Readdir("m")),
		sc("rename-dir-exdev", Rename("d", "d2").Want("EXDEV"), Rename("m", "m2").Want("EXDEV"), Rename("f", "d/f").Want("ok")),
		sc("private-names", Setxattr("m/up", "user.overlay.opaque", "y", 0), Listxattr("m/up"), Getxattr("m/up", "user.overlay.opaque"),
			Setxattr("f", "trusted.overlay.opaque", "y", 0), Listxattr("f")),
		sc("hard-links", Write("h1", 0, "W").Want("ok"), Read("h2"), InoMark("h1", "h"), InoMark("h2", "h")),
	)
}

// xinoScenarios: with every layer on one filesystem the kernel ignores
// xino=on (and says so); inode numbers stay the real ones.
func xinoScenarios() []Scenario {
	var out []Scenario
	for _, mode := range []string{"on", "auto", "off"} {
		out = append(out, Scenario{Name: "xino/" + mode + "-one-filesystem", Spec: mergeBase(), Options: []string{"xino=" + mode},
			Ops: []Op{Readdir("merged"), InoMark("merged/from-l1", "l1"), Chmod("merged/from-l1", 0o600).Want("ok"),
				InoMark("merged/from-l1", "l1"), Create("merged/new", 0o644, "n").Want("ok"), Stat("merged/new")}})
	}
	return out
}

// newDirScenarios: a directory made in a merged one is marked opaque
// when the mount rules out offline changes to the lower layers (index,
// metacopy, redirect_dir=on, xino=on), and only then.
func newDirScenarios() []Scenario {
	var out []Scenario
	for _, opt := range []string{"", "index=on", "metacopy=on", "redirect_dir=on", "redirect_dir=follow", "xino=on", "xino=auto"} {
		sc := Scenario{Name: "create/mkdir-in-merged", Spec: mergeBase(), Ops: []Op{Mkdir("merged/newdir", 0o755).Want("ok"),
			Mkdir("newtop", 0o755).Want("ok"), Readdir("merged/newdir")}}
		if opt != "" {
			sc.Name += "-" + strings.ReplaceAll(opt, "=", "-")
			sc.Options = []string{opt}
		}
		out = append(out, sc)
	}
	return out
}

// optionScenarios are the scenarios of the kernel's layer formats and
// mount options.
func optionScenarios() []Scenario {
	return slices.Concat(redirectScenarios(), metacopyScenarios(), indexScenarios(), dataOnlyScenarios(), verityScenarios(),
		uuidScenarios(), userxattrScenarios(), xinoScenarios(), newDirScenarios())
}
