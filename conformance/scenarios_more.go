package conformance

import (
	"strings"

	"golang.org/x/sys/unix"
)

// user is the unprivileged identity of AsUser operations; writeBase's
// "owned" belongs to it.
const user = 1000

func moreCopyUpScenarios() []Scenario {
	sparse := Spec{
		Lowers: []Layer{{
			{Path: "holes", Kind: File, Content: "start" + strings.Repeat("\x00", 1<<20) + "end"},
			{Path: "setid", Kind: File, Content: "s", Mode: 0o6755},
			{Path: "deep/a/b/c/d/f", Kind: File, Content: "deep"},
			{Path: "deep/a", Kind: Dir, Mode: 0o710, UID: 7, GID: 8, Xattrs: map[string]string{"user.dir": "a"}},
			{Path: "sock", Kind: Socket},
			{Path: "blk", Kind: BlockDev, Major: 7, Minor: 1, Mode: 0o660},
			{Path: "empty", Kind: File},
		}},
		Upper: Layer{},
	}
	return []Scenario{
		scenario("copy-up/keeps-mode-owner-mtime", Setxattr("owned", "user.k", "v", 0).Want("ok"), Stat("owned")),
		scenario("copy-up/keeps-xattrs", Chmod("x", 0o600).Want("ok"), Listxattr("x"), Getxattr("x", "trusted.b")),
		scenario("copy-up/open-rdwr-then-write", Open("f", unix.O_RDWR, 0).Keep("h"), Pread("h", 0, 100), Pwrite("h", 0, "W").Want("ok"),
			Pread("h", 0, 100), Close("h"), Read("f")),
		scenario("copy-up/truncate-same-size", Truncate("f", 11).Want("ok"), Read("f")),
		scenario("copy-up/big-file", Write("big", 15990, "tail that extends the file").Want("ok"), Read("big")),
		scenario("copy-up/fifo-owner", Chown("fifo", 5, 6).Want("ok"), Stat("fifo")),
		scenario("copy-up/symlink-owner", Chown("sym", 5, 6).Want("ok"), Readlink("sym"), Stat("sym")),
		scenario("copy-up/dir-chmod-keeps-children", Chmod("d", 0o711).Want("ok"), Readdir("d"), Read("d/sub/c")),
		scenario("copy-up/two-lowers-deep", Write("m/sub/l1", 0, "S").Want("ok"), Readdir("m/sub"), Read("m/sub/l1")),
		on("copy-up/sparse-keeps-holes", sparse, Chmod("holes", 0o600).Want("ok"), Stat("holes")),
		on("copy-up/setid-kept-by-chown-as-root", sparse, Chown("setid", -1, 5).Want("ok"), Stat("setid")),
		on("copy-up/deep-parents", sparse, Write("deep/a/b/c/d/f", 0, "D").Want("ok"), Stat("deep/a"), Listxattr("deep/a")),
		on("copy-up/socket", sparse, Chmod("sock", 0o700).Want("ok"), Stat("sock")),
		on("copy-up/block-device", sparse, Chown("blk", 0, 6).Want("ok"), Stat("blk")),
		on("copy-up/empty-file", sparse, Append("empty", "first").Want("ok"), Read("empty")),
	}
}

func moreRenameScenarios() []Scenario {
	return []Scenario{
		// The whiteout left at d/b moves to d/a (RENAME_EXCHANGE), with
		// its owner: one made there would take the setgid group.
		scenario("rename/over-whiteout-setgid-dir", Chown("d", -1, 50).Want("ok"), Chmod("d", 0o2755).Want("ok"),
			Unlink("d/b").Want("ok"), Rename("d/a", "d/b").Want("ok"), Readdir("d")),
		scenario("rename/into-merged-dir", Rename("d/a", "m/a").Want("ok"), Readdir("m"), Readdir("d")),
		scenario("rename/onto-itself", Rename("f", "f").Want("ok"), Rename("u/file", "u/file").Want("ok"), Read("f")),
		scenario("rename/hard-link-names", Rename("h1", "h3").Want("ok"), Stat("h3"), Stat("h2")),
		scenario("rename/symlink", Rename("sym", "sym2").Want("ok"), Readlink("sym2")),
		scenario("rename/special-files", Rename("fifo", "m/fifo").Want("ok"), Rename("null", "u/null").Want("ok")),
		scenario("rename/copied-up-file", Chmod("f", 0o600), Rename("f", "m/f").Want("ok"), Stat("m/f")),
		scenario("rename/new-dir-into-lower-dir", Mkdir("n", 0o755), Create("n/f", 0o644, "f"), Rename("n", "d/n").Want("ok"), Readdir("d/n")),
		scenario("rename/file-over-empty-dir", Mkdir("m/empty", 0o755), Rename("f", "m/empty").Want("EISDIR")),
		scenario("rename/dir-over-file", Rename("u/dir", "u/file").Want("ENOTDIR")),
		scenario("rename/into-missing-dir", Rename("f", "nosuch/f").Want("ENOENT"), Rename("f", "x/f").Want("ENOTDIR")),
		scenario("rename/name-too-long", Rename("f", "m/"+strings.Repeat("r", 256)).Want("ENAMETOOLONG")),
		scenario("rename/noreplace-over-whiteout", Rename2("u/file", "wf", unix.RENAME_NOREPLACE).Want("ok"), Read("wf")),
		scenario("rename/exchange-files", Rename2("u/file", "m/up", unix.RENAME_EXCHANGE).Want("ok"), Read("u/file"), Read("m/up")),
		scenario("rename/whiteout-flag", Rename2("u/file", "u/moved", unix.RENAME_WHITEOUT).Want("EINVAL")),
		scenario("rename/chain", Rename("f", "g").Want("ok"), Rename("g", "m/g").Want("ok"), Rename("m/g", "u/g").Want("ok"), Read("u/g")),
		scenario("rename/upper-over-lower-dir", Mkdir("u/e4", 0o755), Rename("u/e4", "e").Want("ok"), Readdir("e")),
	}
}

func linkScenarios() []Scenario {
	return []Scenario{
		scenario("link/lower-file", Link("f", "m/f").Want("ok"), Stat("f"), Stat("m/f"), Read("m/f")),
		scenario("link/upper-file", Link("u/file", "u/file2").Want("ok"), Stat("u/file")),
		scenario("link/symlink", Link("sym", "sym-link").Want("ok"), Readlink("sym-link"), Stat("sym")),
		scenario("link/fifo", Link("fifo", "fifo2").Want("ok"), Stat("fifo2")),
		scenario("link/exists", Link("f", "x").Want("EEXIST"), Link("f", "m/l0").Want("EEXIST")),
		scenario("link/dir", Link("e", "e2").Want("EPERM"), Link("u/dir", "u/dir2").Want("EPERM")),
		scenario("link/whited-out-source", Link("wf", "wf2").Want("ENOENT"), Link("m/wh", "m/wh2").Want("ENOENT")),
		scenario("link/over-whiteout", Link("f", "wf").Want("ok"), Read("wf"), Stat("f")),
		scenario("link/count", Link("u/file", "l1"), Link("u/file", "l2"), Link("l1", "l3"), Unlink("l2").Want("ok"), Stat("u/file")),
		scenario("link/unlink-all-names", Link("u/file", "u/second"), Unlink("u/file").Want("ok"), Unlink("u/second").Want("ok"),
			Stat("u/file").Want("ENOENT")),
		// The kernel's readdir of an impure upper-only directory caches the
		// entries needing another number at its first read, and a link
		// made since is not a change it counts: l2 shows its own
		// number as d_ino until the directory is read afresh.
		scenario("link/into-impure-dir-after-readdir", Link("f", "u/dir/l1").Want("ok"), Readdir("u/dir"),
			Link("u/dir/l1", "u/dir/l2").Want("ok"), Readdir("u/dir"), Rename("u/dir/l1", "u/dir/l3").Want("ok")),
		scenario("link/into-impure-dir-after-readdir-kept", Link("f", "u/dir/l1").Want("ok"), Readdir("u/dir"),
			Link("u/dir/l1", "u/dir/l2").Want("ok")),
		scenario("link/lower-hard-link-pair", Link("h2", "h4").Want("ok"), Stat("h1"), Stat("h4")),
		scenario("link/symlink-targets", MkSymlink("/abs/path", "abs").Want("ok"), MkSymlink("../../up", "m/rel").Want("ok"),
			MkSymlink(strings.Repeat("t", 1000), "long").Want("ok"), Readlink("abs"), Readlink("m/rel"), Readlink("long")),
		scenario("link/readlink-not-symlink", Readlink("f").Want("EINVAL"), Readlink("d").Want("EINVAL")),
		scenario("link/symlink-over-whiteout", MkSymlink("f", "wf").Want("ok"), Readlink("wf")),
	}
}

func xattrScenarios() []Scenario {
	long := strings.Repeat("v", 4000)
	// A vfs_cap_data, revision 2, effective, permitting
	// CAP_NET_BIND_SERVICE. The kernel asks for it before every write
	// and removes it on a write.
	caps := "\x01\x00\x00\x02\x00\x04\x00\x00" + strings.Repeat("\x00", 12)
	return []Scenario{
		scenario("xattr/capability-and-writes", Write("f", 0, "a").Want("ok"),
			Setxattr("f", "security.capability", caps, 0).Want("ok"), Getxattr("f", "security.capability").Want("ok"),
			Write("f", 1, "b").Want("ok"), Getxattr("f", "security.capability").Want("ENODATA"),
			Create("n", 0o755, "c").Want("ok"), Setxattr("n", "security.capability", caps, 0).Want("ok"),
			Getxattr("n", "security.capability").Want("ok")),
		scenario("xattr/get-lower", Getxattr("x", "user.a").Want("ok"), Getxattr("x", "trusted.b").Want("ok"), Getxattr("x", "user.none").Want("ENODATA")),
		scenario("xattr/list-kinds", Listxattr("f"), Listxattr("d"), Listxattr("sym"), Listxattr("fifo"), Listxattr("m"), Listxattr("u/file")),
		scenario("xattr/set-upper", Setxattr("u/file", "user.n", "1", 0).Want("ok"), Getxattr("u/file", "user.n")),
		scenario("xattr/replace-absent", Setxattr("x", "user.none", "1", unix.XATTR_REPLACE).Want("ENODATA"),
			Setxattr("x", "user.a", "2", unix.XATTR_REPLACE).Want("ok"), Getxattr("x", "user.a")),
		scenario("xattr/empty-and-long-values", Setxattr("u/file", "user.empty", "", 0).Want("ok"),
			Setxattr("u/file", "user.long", long, 0).Want("ok"), Getxattr("u/file", "user.empty"), Getxattr("u/file", "user.long")),
		scenario("xattr/user-on-special", Setxattr("fifo", "user.a", "1", 0).Want("EPERM"), Setxattr("null", "user.a", "1", 0).Want("EPERM")),
		scenario("xattr/trusted-on-special", Setxattr("fifo", "trusted.a", "1", 0).Want("ok"), Getxattr("fifo", "trusted.a")),
		scenario("xattr/whited-out", Getxattr("wf", "user.a").Want("ENOENT"), Listxattr("wd").Want("ENOENT")),
		scenario("xattr/as-user-trusted-hidden", Listxattr("x").AsUser(user, user), Getxattr("x", "trusted.b").AsUser(user, user).Want("ENODATA"),
			Getxattr("x", "user.a").AsUser(user, user).Want("ok")),
		scenario("xattr/as-user-set-own", Setxattr("owned", "user.mine", "1", 0).AsUser(user, user).Want("ok"),
			Setxattr("f", "user.theirs", "1", 0).AsUser(user, user).Want("EACCES"),
			Setxattr("owned", "trusted.t", "1", 0).AsUser(user, user).Want("EPERM")),
		scenario("xattr/as-user-remove", Removexattr("x", "user.a").AsUser(user, user).Want("EACCES"), Getxattr("x", "user.a")),
		scenario("xattr/merged-dir", Listxattr("m"), Setxattr("m", "user.m", "1", 0).Want("ok"), Listxattr("m")),
		scenario("xattr/security-namespace", Setxattr("u/file", "security.test", "s", 0), Getxattr("u/file", "security.test")),
		scenario("xattr/remove-then-list", Removexattr("x", "trusted.b").Want("ok"), Removexattr("x", "user.a").Want("ok"), Listxattr("x")),
		scenario("xattr/invalid-namespace", Setxattr("u/file", "bogus.name", "1", 0).Want("ENOTSUP"), Getxattr("u/file", "bogus.name").Want("ENOTSUP")),
		scenario("xattr/overlay-names-escaped", Setxattr("u/file", "trusted.overlay.opaque", "y", 0), Listxattr("u/file"),
			Getxattr("u/file", "trusted.overlay.opaque")),
	}
}

func permScenarios() []Scenario {
	as := func(o Op) Op { return o.AsUser(user, user) }
	return []Scenario{
		scenario("perm/read-denied", as(Read("priv/secret")).Want("EACCES"), as(Open("priv", unix.O_RDONLY|unix.O_DIRECTORY, 0)).Want("EACCES")),
		scenario("perm/search-denied", as(Stat("priv/secret")).Want("EACCES"), as(Readdir("priv")).Want("EACCES")),
		scenario("perm/rename-sticky", as(Rename("sticky/rootfile", "sticky/mine")).Want("EPERM"),
			as(Create("sticky/own", 0o644, "o")), as(Rename("sticky/own", "sticky/own2")).Want("ok")),
		scenario("perm/unlink-in-unwritable-dir", as(Unlink("d/a")).Want("EACCES"), as(Rmdir("d/sub")).Want("EACCES")),
		scenario("perm/rmdir-as-user", as(Mkdir("pub/ud", 0o755)), as(Rmdir("pub/ud")).Want("ok")),
		scenario("perm/chmod-own", as(Chmod("owned", 0o4755)).Want("ok"), Stat("owned")),
		scenario("perm/chown-group-not-member", as(Chown("owned", -1, 0)).Want("EPERM")),
		scenario("perm/utimens-explicit-not-owner", as(Utimens("f", tPast, tPast)).Want("EPERM"),
			as(Utimens("owned", tPast, tPast)).Want("ok"), Stat("owned")),
		scenario("perm/truncate-own", as(Truncate("owned", 3)).Want("ok"), Read("owned")),
		scenario("perm/open-trunc-denied", as(Open("ro", unix.O_WRONLY|unix.O_TRUNC, 0)).Want("EACCES")),
		scenario("perm/user-creates-owner", as(Create("pub/f", 0o600, "u")), Stat("pub/f"), as(Mkfifo("pub/p", 0o600)).Want("ok"), Stat("pub/p")),
		scenario("perm/link-not-owned", as(Link("pub/rootfile", "pub/mylink"))),
		scenario("perm/setgid-new-file-as-user", Chmod("sgid", 0o2777), as(Create("sgid/u", 0o2755, "")).Want("ok"),
			Stat("sgid/u"), as(Mkdir("sgid/ud", 0o755)).Want("ok"), Stat("sgid/ud")),
		scenario("perm/exec-bit-read", Chmod("f", 0o711), as(Read("f")).Want("EACCES"), as(Stat("f")).Want("ok")),
		scenario("perm/mknod-device-as-user", as(Mknod("pub/dev", unix.S_IFCHR|0o600, 1, 3)).Want("EPERM")),
		scenario("perm/user-copy-up-own-lower", as(Write("owned", 0, "X")).Want("ok"), Stat("owned"),
			as(Setxattr("owned", "user.a", "1", 0)).Want("ok")),
	}
}

func specialScenarios() []Scenario {
	return []Scenario{
		scenario("special/read-null", Read("null").Want("ok"), Write("null", 0, "into the void").Want("ok")),
		scenario("special/fifo-nonblock-read", Open("fifo", unix.O_RDONLY|unix.O_NONBLOCK, 0).Want("ok")),
		scenario("special/mknod-kinds", Mkfifo("p", 0o640).Want("ok"), Mknod("c", unix.S_IFCHR|0o600, 4, 64).Want("ok"),
			Mknod("b", unix.S_IFBLK|0o600, 8, 1).Want("ok"), MkSocket("s").Want("ok"), Stat("c"), Stat("b")),
		scenario("special/mknod-over-whiteout", Mkfifo("wf", 0o600).Want("ok"), Stat("wf")),
		scenario("special/mknod-exists", Mkfifo("fifo", 0o600).Want("EEXIST"), Mknod("null", unix.S_IFCHR, 1, 3).Want("EEXIST")),
		scenario("special/chmod-device", Chmod("null", 0o600).Want("ok"), Read("null")),
		scenario("special/unlink", Unlink("fifo").Want("ok"), Unlink("null").Want("ok"), Readdir(".")),
		scenario("special/truncate-fifo", Truncate("fifo", 0).Want("EINVAL")),
		scenario("special/socket-over-whiteout", MkSocket("wf").Want("ok"), Stat("wf")),
		scenario("special/mknod-in-merged", Mknod("m/c", unix.S_IFCHR|0o644, 1, 5).Want("ok"), Stat("m/c"), Readdir("m")),
	}
}

func inoScenarios() []Scenario {
	return []Scenario{
		scenario("ino/copy-up-keeps-file", InoMark("f", "f"), Chmod("f", 0o600), InoMark("f", "f"), Write("f", 0, "w"), InoMark("f", "f")),
		scenario("ino/copy-up-keeps-dir", InoMark("d", "d"), Chmod("d", 0o700), InoMark("d", "d"), Create("d/n", 0o644, ""), InoMark("d", "d")),
		scenario("ino/copy-up-keeps-symlink-fifo", InoMark("sym", "s"), Chown("sym", 1, 1), InoMark("sym", "s"),
			InoMark("fifo", "p"), Chmod("fifo", 0o600), InoMark("fifo", "p")),
		scenario("ino/rename-keeps", InoMark("u/file", "u"), Rename("u/file", "m/moved"), InoMark("m/moved", "u"),
			InoMark("f", "f"), Rename("f", "g"), InoMark("g", "f")),
		scenario("ino/hard-links-share", InoMark("h1", "h"), InoMark("h2", "h"), Link("h1", "h3"), InoMark("h3", "h"), InoMark("h1", "h")),
		scenario("ino/new-objects-differ", Create("a", 0o644, ""), Create("b", 0o644, ""), InoMark("a", "a"), InoMark("b", "a"),
			Mkdir("c", 0o755), InoMark("c", "a")),
		scenario("ino/unlink-recreate", InoMark("f", "f"), Unlink("f"), Create("f", 0o644, "new"), InoMark("f", "f")),
		scenario("ino/open-handle-across-copy-up", Open("f", unix.O_RDONLY, 0).Keep("r"), InoMark("f", "f"), Chmod("f", 0o640),
			InoMark("f", "f"), Fstat("r"), Close("r")),
		scenario("ino/merged-dir-children", Readdir("m"), InoMark("m/l1", "l1"), Write("m/l1", 0, "x"), InoMark("m/l1", "l1"), Readdir("m")),
		scenario("ino/upper-files", InoMark("u/file", "u"), InoMark("u/dir", "d"), InoMark("u/file", "u"), InoMark("u/dir", "u")),
		scenario("ino/whiteout-recreate-dir", InoMark("wd", "w").Want("ENOENT"), Mkdir("wd", 0o755), InoMark("wd", "w")),
		on("ino/lowers-layers", mergeBase(), InoMark("merged/from-l0", "a"), InoMark("merged/from-l1", "a"), InoMark("merged", "m"),
			Chmod("merged/from-l1", 0o600), InoMark("merged/from-l1", "a")),
	}
}

func persistScenarios() []Scenario {
	return []Scenario{
		scenario("persist/chmod-chown", Chmod("f", 0o640), Chown("x", 3, 4), Chmod("d/sub", 0o700)),
		scenario("persist/xattrs", Setxattr("f", "user.p", "persist", 0), Removexattr("x", "user.a"), Setxattr("m", "trusted.p", "d", 0)),
		scenario("persist/opaque-dir", Unlink("d/a"), Unlink("d/b"), Unlink("d/sub/c"), Rmdir("d/sub"), Rmdir("d"), Mkdir("d", 0o755),
			Create("d/fresh", 0o644, "f")),
		scenario("persist/renames", Rename("f", "m/f"), Rename("u/dir", "m/dir"), Rename("m/up", "top")),
		scenario("persist/unlinks", Unlink("f"), Unlink("m/l0"), Unlink("m/up"), Unlink("sym")),
		scenario("persist/new-objects", Mkdir("n", 0o700), Create("n/f", 0o600, "f"), MkSymlink("n/f", "n/s"), Mkfifo("n/p", 0o600),
			Link("n/f", "n/h")),
		scenario("persist/data", Write("big", 100, "middle"), Truncate("f", 2), Append("u/file", " more")),
		scenario("persist/times", Utimens("f", tPast, tFuture), Utimens("d", tFuture, tPast), Utimens("u/file", tPast, tPast)),
		scenario("persist/hard-link-copy-up", Chmod("h1", 0o600), Link("h1", "h5")),
		scenario("persist/deep-copy-up", Write("d/sub/c", 0, "deep"), Chmod("m/sub/l1", 0o600)),
	}
}

func errorScenarios() []Scenario {
	long := strings.Repeat("e", 256)
	ro := func(name string, ops ...Op) Scenario {
		return Scenario{Name: name, Spec: Spec{Lowers: writeBase().Lowers}, LowersOnly: true, Ops: ops}
	}
	return []Scenario{
		scenario("errors/enoent", Stat("nosuch").Want("ENOENT"), Chmod("nosuch", 0o600).Want("ENOENT"),
			Setxattr("nosuch", "user.a", "1", 0).Want("ENOENT"), Link("nosuch", "n2").Want("ENOENT"), Truncate("nosuch", 0).Want("ENOENT")),
		scenario("errors/enoent-whited-out", Chmod("wf", 0o600).Want("ENOENT"), Readlink("wf").Want("ENOENT"),
			Rename("wf", "wf2").Want("ENOENT"), Stat("wd/inner").Want("ENOENT"), Stat("m/gone").Want("ENOENT")),
		scenario("errors/eexist", Mkdir("d", 0o755).Want("EEXIST"), Mkdir("m/l0", 0o755).Want("EEXIST"), MkSymlink("x", "u/file").Want("EEXIST"),
			Mkfifo("d", 0o600).Want("EEXIST"), Open("f", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o644).Want("EEXIST")),
		scenario("errors/enotempty", Rmdir("d/sub").Want("ENOTEMPTY"), Rmdir("m/sub").Want("ENOTEMPTY"), Rmdir("u/dir").Want("ENOTEMPTY"),
			Mkdir("u/e9", 0o755), Rename("u/e9", "d").Want("ENOTEMPTY")),
		// A source a lower object would show through is renamed with
		// RENAME_WHITEOUT, which ext4 undoes on ENOTEMPTY, setting the
		// old parent's times.
		scenario("errors/enotempty-whiteout-source", Unlink("d/a").Want("ok"), Mkdir("d/a", 0o755).Want("ok"),
			Utimens("d", tPast, tPast).Want("ok"), Rename("d/a", "u/dir").Want("ENOTEMPTY"), Stat("d")),
		scenario("errors/exdev", Rename("d/sub", "d/sub2").Want("EXDEV"), Rename("m/sub", "msub").Want("EXDEV")),
		scenario("errors/eisdir", Write("d", 0, "x").Want("EISDIR"), Truncate("m", 0).Want("EISDIR"), Unlink("m").Want("EISDIR"),
			Open("u/dir", unix.O_RDWR, 0).Want("EISDIR")),
		scenario("errors/enotdir", Stat("f/x").Want("ENOTDIR"), Mkdir("f/x", 0o755).Want("ENOTDIR"), Rmdir("u/file").Want("ENOTDIR"),
			Open("f", unix.O_RDONLY|unix.O_DIRECTORY, 0).Want("ENOTDIR"), Readdir("sym").Want("ENOTDIR")),
		scenario("errors/enametoolong", Stat(long).Want("ENAMETOOLONG"), Mkfifo("m/"+long, 0o600).Want("ENAMETOOLONG"),
			MkSymlink("t", long).Want("ENAMETOOLONG"), Link("f", long).Want("ENAMETOOLONG")),
		on("errors/eloop", mergeBase(), Read("loop1").Want("ELOOP"), Stat("loop1/x").Want("ELOOP"), Open("loop2", unix.O_WRONLY|unix.O_CREAT, 0o644).Want("ELOOP"),
			Create("loop2", 0o644, "").Want("EEXIST"),
			Open("lsym", unix.O_RDONLY|unix.O_NOFOLLOW, 0).Want("ELOOP")),
		scenario("errors/einval", Rename("d", "d/sub/x").Want("EINVAL"), Rmdir("d/.").Want("EINVAL"),
			Truncate("f", -1).Want("EINVAL")),
		ro("errors/erofs-create", Create("new", 0o644, "").Want("EROFS"), Mkdir("d/new", 0o755).Want("EROFS"),
			MkSymlink("t", "s2").Want("EROFS"), Mkfifo("p2", 0o600).Want("EROFS"), Link("f", "f2").Want("EROFS")),
		ro("errors/erofs-modify", Write("f", 0, "x").Want("EROFS"), Truncate("f", 0).Want("EROFS"), Chmod("f", 0o600).Want("EROFS"),
			Chown("f", 1, 1).Want("EROFS"), Utimens("f", tPast, tPast).Want("EROFS"), Setxattr("x", "user.z", "1", 0).Want("EROFS"),
			Removexattr("x", "user.a").Want("EROFS")),
		ro("errors/erofs-remove", Unlink("f").Want("EROFS"), Rmdir("e").Want("EROFS"), Rename("f", "g").Want("EROFS"),
			Open("f", unix.O_RDONLY, 0).Want("ok"), Read("f")),
		ro("errors/erofs-as-user", Open("owned", unix.O_WRONLY, 0).AsUser(user, user).Want("EROFS"),
			Read("priv/secret").AsUser(user, user).Want("EACCES")),
	}
}
