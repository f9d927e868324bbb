package conformance

import (
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// writeBase is the layer stack most write scenarios run on; a scenario
// that needs other layers gives its own Spec. Two lowers and an upper:
//
//	f, x, h1/h2, sym, fifo, null, big, ro, owned   lower files of every kind
//	d/{a,b,sub/c}, e                                lower-only directories
//	m                                               merged through all three layers
//	mw                                              merged, every name whited out
//	u/{file,dir/inner}                              upper only
//	wf, wd                                          whited out by the upper
//	priv (0700), pub (0777), sticky (1777), sgid    permission cases
func writeBase() Spec {
	old := time.Date(2015, 1, 2, 3, 4, 5, 600000000, time.UTC)
	big := strings.Repeat("0123456789abcdef", 1000) // 16000 bytes, four pages
	return Spec{
		Lowers: []Layer{
			{ // top
				{Path: "m", Kind: Dir, Mode: 0o775},
				{Path: "m/l0", Kind: File, Content: "from l0"},
				{Path: "m/gone", Kind: Whiteout},
				{Path: "m/sub/l0", Kind: File, Content: "sub l0"},
			},
			{ // bottom
				{Path: "f", Kind: File, Content: "lower file\n", Mtime: old},
				{Path: "x", Kind: File, Content: "xattrs", Xattrs: map[string]string{"user.a": "1", "trusted.b": "2"}},
				{Path: "h1", Kind: File, Content: "linked"},
				{Path: "h2", Kind: HardLink, Target: "h1"},
				{Path: "sym", Kind: Symlink, Target: "f"},
				{Path: "fifo", Kind: Fifo},
				{Path: "null", Kind: CharDev, Major: 1, Minor: 3, Mode: 0o666},
				{Path: "big", Kind: File, Content: big},
				{Path: "ro", Kind: File, Content: "read only", Mode: 0o444},
				{Path: "owned", Kind: File, Content: "owned by 1000", UID: 1000, GID: 1000},
				{Path: "d/a", Kind: File, Content: "a"},
				{Path: "d/b", Kind: File, Content: "b"},
				{Path: "d/sub/c", Kind: File, Content: "c"},
				{Path: "e", Kind: Dir},
				{Path: "m", Kind: Dir, Mode: 0o700},
				{Path: "m/l1", Kind: File, Content: "from l1"},
				{Path: "m/gone", Kind: File, Content: "hidden by l0"},
				{Path: "m/wh", Kind: File, Content: "hidden by the upper"},
				{Path: "m/sub/l1", Kind: File, Content: "sub l1"},
				{Path: "mw/a", Kind: File, Content: "a"},
				{Path: "wf", Kind: File, Content: "whited out"},
				{Path: "wd/inner", Kind: File, Content: "whited out with its dir"},
				{Path: "priv", Kind: Dir, Mode: 0o700},
				{Path: "priv/secret", Kind: File, Content: "secret", Mode: 0o600},
				{Path: "pub", Kind: Dir, Mode: 0o777},
				{Path: "pub/rootfile", Kind: File, Content: "root's"},
				{Path: "sticky", Kind: Dir, Mode: 0o1777},
				{Path: "sticky/rootfile", Kind: File, Content: "root's, world-writable", Mode: 0o666},
				{Path: "sgid", Kind: Dir, Mode: 0o2775, GID: 50},
			},
		},
		Upper: Layer{
			{Path: "m", Kind: Dir, Mode: 0o755},
			{Path: "m/up", Kind: File, Content: "upper"},
			{Path: "m/wh", Kind: Whiteout},
			{Path: "mw", Kind: Dir},
			{Path: "mw/a", Kind: Whiteout},
			{Path: "u/file", Kind: File, Content: "upper only"},
			{Path: "u/dir/inner", Kind: File, Content: "inner"},
			{Path: "wf", Kind: Whiteout},
			{Path: "wd", Kind: Whiteout},
		},
	}
}

var (
	tPast   = time.Date(2010, 10, 10, 10, 10, 10, 101010101, time.UTC)
	tFuture = time.Date(2035, 5, 5, 5, 5, 5, 5, time.UTC) // in the future
)

// scenario is shorthand for a scenario on writeBase.
func scenario(name string, ops ...Op) Scenario {
	return Scenario{Name: name, Spec: writeBase(), Ops: ops}
}

// writeScenarios is the table of write-path scenarios. Want marks what the
// kernel does where that is the point of a scenario; it is checked against
// the kernel, so the table doubles as a record of kernel behaviour.
func writeScenarios() []Scenario {
	const user = 1000
	long := strings.Repeat("l", 256)
	return []Scenario{
		// Copy-up triggers.
		scenario("copy-up/write", Write("f", 5, "XY").Want("ok"), Read("f")),
		scenario("copy-up/open-trunc", Open("f", unix.O_WRONLY|unix.O_TRUNC, 0).Want("ok"), Read("f")),
		scenario("copy-up/open-rdwr-only", Open("f", unix.O_RDWR, 0).Want("ok")),
		scenario("copy-up/open-rdonly-none", Open("f", unix.O_RDONLY, 0).Want("ok"), Read("x")),
		scenario("copy-up/chmod", Chmod("f", 0o600).Want("ok"), Chmod("d", 0o700).Want("ok")),
		scenario("copy-up/chown", Chown("f", 1000, 100).Want("ok"), Chown("sym", 7, 8).Want("ok"), Chown("fifo", -1, 9).Want("ok")),
		scenario("copy-up/utimens", Utimens("f", tPast, tFuture).Want("ok"), UtimensNs("x", UtimeOmit, tPast.UnixNano()).Want("ok"),
			UtimensNs("d", UtimeNow, UtimeNow).Want("ok")),
		scenario("copy-up/truncate", Truncate("f", 4).Want("ok"), Read("f")),
		scenario("copy-up/truncate-extend-sparse", Truncate("f", 5<<20).Want("ok"), Stat("f"), Truncate("big", 1<<20)),
		scenario("copy-up/setxattr", Setxattr("x", "user.c", "3", 0).Want("ok"), Listxattr("x"), Getxattr("x", "user.a"),
			Setxattr("f", "trusted.t", "t", 0).Want("ok")),
		scenario("copy-up/setxattr-create-exists", Setxattr("x", "user.a", "z", unix.XATTR_CREATE).Want("EEXIST"), Getxattr("x", "user.a")),
		scenario("copy-up/removexattr", Removexattr("x", "user.a").Want("ok"), Listxattr("x"), Getxattr("x", "user.a").Want("ENODATA")),
		scenario("copy-up/removexattr-absent", Removexattr("f", "user.nope").Want("ENODATA"), Removexattr("d", "user.nope").Want("ENODATA")),
		scenario("copy-up/nested", Write("d/sub/c", 0, "new c").Want("ok"), Read("d/sub/c")),
		scenario("copy-up/hard-link-breaks", Write("h1", 0, "changed").Want("ok"), Read("h1"), Read("h2"), Stat("h1"), Stat("h2")),
		scenario("copy-up/special-files", Chmod("fifo", 0o600).Want("ok"), Chmod("null", 0o600).Want("ok"),
			Open("null", unix.O_WRONLY, 0).Want("ok"), Open("fifo", unix.O_WRONLY|unix.O_NONBLOCK, 0).Want("ENXIO")),

		// Data through open files.
		scenario("data/append", Append("f", "one\n").Want("ok"), Append("f", "two\n"), Read("f")),
		scenario("data/append-pwrite", Open("f", unix.O_WRONLY|unix.O_APPEND, 0).Keep("a"), Pwrite("a", 0, "ignores the offset"),
			Close("a"), Read("f")),
		scenario("data/mmap", MmapWrite("big", 4090, "MMAP across a page").Want("ok"), Read("big"), MmapWrite("u/file", 0, "UP")),
		scenario("data/fallocate", Open("f", unix.O_RDWR, 0).Keep("h"), Fallocate("h", 0, 0, 1<<16).Want("ok"),
			Fallocate("h", unix.FALLOC_FL_KEEP_SIZE, 1<<16, 1<<16).Want("ok"),
			Fallocate("h", unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 4096).Want("ok"), Fstat("h"), Close("h")),
		scenario("data/fsync-ftruncate", Open("f", unix.O_RDWR, 0).Keep("h"), Pwrite("h", 100, "past the end"), Fsync("h").Want("ok"),
			Ftruncate("h", 3).Want("ok"), Pread("h", 0, 200), Fstat("h"), Close("h")),
		scenario("data/unlink-while-open", Open("f", unix.O_RDWR, 0).Keep("h"), Unlink("f").Want("ok"),
			Pwrite("h", 0, "after unlink"), Pread("h", 0, 100), Fstat("h"), Fchmod("h", 0o600).Want("ok"), Fstat("h"),
			Close("h"), Stat("f").Want("ENOENT")),
		scenario("data/unlink-while-open-upper", Open("u/file", unix.O_RDWR, 0).Keep("h"), Unlink("u/file").Want("ok"),
			Pwrite("h", 0, "after unlink"), Fstat("h"), Fchmod("h", 0o600).Want("ok"), Fstat("h"), Close("h")),
		scenario("data/read-only-open-then-copy-up", Open("f", unix.O_RDONLY, 0).Keep("r"), Write("f", 0, "new "),
			Pread("r", 0, 100), Close("r")),

		// Creating.
		scenario("create/new", Create("m/new", 0o640, "new").Want("ok"), Create("m/new", 0o600, "again").Want("EEXIST"),
			Open("m/new", unix.O_WRONLY|unix.O_CREAT, 0o600).Want("ok"), Create("d/new", 0o600, "copies d up").Want("ok")),
		scenario("create/over-whiteout", Create("wf", 0o600, "reborn").Want("ok"), Read("wf"), Create("m/wh", 0o644, "").Want("ok")),
		scenario("create/mkdir-over-whiteout", Mkdir("wd", 0o750).Want("ok"), Stat("wd/inner").Want("ENOENT"),
			Create("wd/fresh", 0o644, "fresh")),
		scenario("create/mkdir", Mkdir("m/newdir", 0o755).Want("ok"), Create("m/newdir/x", 0o644, "x"),
			Mkdir("d/sub/deeper", 0o700).Want("ok"), Mkdir("top", 0o1777).Want("ok")),
		scenario("create/mknod", Mkfifo("m/fifo", 0o600).Want("ok"), Mknod("m/chr", unix.S_IFCHR|0o600, 1, 3).Want("ok"),
			Mknod("m/blk", unix.S_IFBLK|0o600, 7, 0).Want("ok"), MkSocket("m/sock").Want("ok"),
			Mknod("m/reg", unix.S_IFREG|0o600, 0, 0).Want("ok")),
		scenario("create/mknod-whiteout", Mknod("m/wo", unix.S_IFCHR, 0, 0).Want("EPERM"), Mknod("wf", unix.S_IFCHR, 0, 0).Want("EPERM")),
		scenario("create/symlink", MkSymlink("no/such/target", "m/ln").Want("ok"), Readlink("m/ln"),
			MkSymlink("f", "d/ln").Want("ok"), MkSymlink("x", "f").Want("EEXIST")),
		scenario("create/link", Link("f", "f-link").Want("ok"), Stat("f"), Stat("f-link"), Link("u/file", "m/ulink").Want("ok"),
			Link("h1", "h3").Want("ok"), Stat("h2"), Link("d", "d-link").Want("EPERM")),

		// Removing.
		scenario("remove/unlink-lower", Unlink("f").Want("ok"), Unlink("d/a").Want("ok"), Stat("f").Want("ENOENT")),
		scenario("remove/unlink-upper", Unlink("u/file").Want("ok"), Unlink("m/up").Want("ok"), Unlink("m/l1").Want("ok")),
		scenario("remove/unlink-copied-up", Chmod("f", 0o600), Unlink("f").Want("ok"), Create("f", 0o644, "recreated").Want("ok")),
		scenario("remove/rmdir-not-empty", Rmdir("m").Want("ENOTEMPTY"), Rmdir("d").Want("ENOTEMPTY"), Rmdir("u").Want("ENOTEMPTY")),
		scenario("remove/rmdir-only-whiteouts", Unlink("d/a"), Unlink("d/b"), Unlink("d/sub/c"), Rmdir("d/sub").Want("ok"),
			Rmdir("d").Want("ok"), Rmdir("mw").Want("ok"), Rmdir("e").Want("ok"), Mkdir("d", 0o755).Want("ok")),
		scenario("remove/rmdir-upper", Unlink("u/dir/inner"), Rmdir("u/dir").Want("ok")),

		// Renaming.
		scenario("rename/lower-file", Rename("f", "g").Want("ok"), Read("g"), Rename("x", "m/x").Want("ok"), Listxattr("m/x")),
		scenario("rename/over-existing", Rename("f", "m/l1").Want("ok"), Rename("u/file", "x").Want("ok"), Rename("h1", "h2").Want("ok")),
		scenario("rename/upper-file", Rename("u/file", "u/file2").Want("ok"), Rename("m/up", "m/up2").Want("ok")),
		scenario("rename/lower-dir-exdev", Rename("d", "d2").Want("EXDEV"), Rename("e", "e2").Want("EXDEV"), Rename("m", "m2").Want("EXDEV"),
			Rename("d/sub", "sub").Want("EXDEV")),
		scenario("rename/upper-dir", Rename("u/dir", "u/dir2").Want("ok"), Rename("u/dir2", "m/moved").Want("ok"), Rename("u", "u2").Want("ok")),
		scenario("rename/dir-over-dir", Mkdir("m/empty", 0o755), Rename("u/dir", "m/empty").Want("ok"),
			Mkdir("u/e2", 0o755), Rename("u/e2", "m").Want("ENOTEMPTY"), Rename("mw", "u/newname").Want("EXDEV"),
			Rename("u/e2", "mw").Want("ok"), Mkdir("u/e3", 0o700), Rename("u/e3", "e").Want("ok")),
		scenario("rename/flags", Rename2("f", "m/l1", unix.RENAME_NOREPLACE).Want("EEXIST"),
			Rename2("f", "f2", unix.RENAME_NOREPLACE).Want("ok"),
			Rename2("x", "u/file", unix.RENAME_EXCHANGE).Want("ok"),
			Rename2("h1", "nosuch", unix.RENAME_EXCHANGE).Want("ENOENT"),
			Rename2("m/up", "m/up3", unix.RENAME_WHITEOUT).Want("EINVAL"),
			Rename2("u/dir", "m/l0", unix.RENAME_EXCHANGE)),
		scenario("rename/type-errors", Rename("f", "d").Want("EISDIR"), Rename("u/dir", "f").Want("ENOTDIR"),
			Rename("u/dir", "u/dir/in").Want("EINVAL"), Rename("nosuch", "x").Want("ENOENT")),

		// Errors that change nothing.
		scenario("errors/misc", Mkdir("f", 0o755).Want("EEXIST"), Create("f/x", 0o644, "").Want("ENOTDIR"),
			Unlink("d").Want("EISDIR"), Rmdir("f").Want("ENOTDIR"), Open("nosuch", unix.O_RDONLY, 0).Want("ENOENT"),
			Create("nosuch/x", 0o644, "").Want("ENOENT"), Open("d", unix.O_WRONLY, 0).Want("EISDIR"),
			Unlink("nosuch").Want("ENOENT"), Unlink("wf").Want("ENOENT"), Rmdir("wd").Want("ENOENT"),
			Create("m/"+long, 0o644, "").Want("ENAMETOOLONG"), Mkdir("d/"+long, 0o755).Want("ENAMETOOLONG"),
			Open("d", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CREAT, 0o644).Want("EINVAL"),
			Open("sym", unix.O_RDONLY|unix.O_NOFOLLOW, 0).Want("ELOOP"),
			Setxattr("sym", "user.a", "1", 0).Want("EPERM")),
		scenario("errors/private-xattr-names", Setxattr("f", "trusted.overlay.opaque", "y", 0), Getxattr("f", "trusted.overlay.opaque"),
			Listxattr("f"), Setxattr("u/file", "trusted.overlay.foo", "1", 0), Listxattr("u/file"), Removexattr("u/file", "trusted.overlay.foo")),

		scenario("copy-up/setxattr-dir", Setxattr("d", "user.k", "v", 0).Want("ok"), Setxattr("m", "user.k", "v", 0).Want("ok"),
			Removexattr("m", "user.k").Want("ok"), Listxattr("m")),
		scenario("copy-up/symlink-utimens", Utimens("sym", tPast, tPast).Want("ok"), Readlink("sym")),
		scenario("copy-up/open-creat-existing", Open("f", unix.O_WRONLY|unix.O_CREAT, 0o600).Want("ok"), Stat("f")),
		scenario("data/o-tmpfile", Open("m", unix.O_TMPFILE|unix.O_RDWR, 0o600).Keep("t").Want("ok"), Pwrite("t", 0, "anonymous"),
			Fstat("t"), Close("t"), Open("d", unix.O_TMPFILE|unix.O_RDWR, 0o600).Want("ok")),
		scenario("create/upper-hard-link", Link("f", "f2").Want("ok"), Write("f2", 0, "both").Want("ok"), Read("f"), Stat("f")),
		scenario("remove/unlink-one-link-name", Unlink("h1").Want("ok"), Stat("h2"), Read("h2")),
		scenario("rename/back-over-own-whiteout", Rename("f", "g").Want("ok"), Rename("g", "f").Want("ok"), Read("f")),
		scenario("rename/over-whiteout", Rename("u/file", "wf").Want("ok"), Rename("u/dir", "wd").Want("ok"), Stat("wd/inner").Want("ok")),
		scenario("rename/exchange-dirs", Rename2("d", "e", unix.RENAME_EXCHANGE).Want("EXDEV"),
			Rename2("u/dir", "d", unix.RENAME_EXCHANGE).Want("EXDEV"), Mkdir("u/e2", 0o700),
			Rename2("u/dir", "u/e2", unix.RENAME_EXCHANGE).Want("ok")),
		{Name: "mount/pristine-empty-upper", Spec: Spec{Lowers: writeBase().Lowers}, Ops: []Op{Write("f", 0, "x").Want("ok")}},
		{Name: "mount/pristine-lookups", Spec: writeBase(), Pristine: true, Ops: []Op{Stat("m/sub").Want("ok"), Stat("mw").Want("ok")}},

		// Permissions, as an unprivileged user.
		scenario("perm/private-dir", Create("priv/new", 0o644, "").AsUser(user, user).Want("EACCES"),
			Read("priv/secret").AsUser(user, user).Want("EACCES"), Stat("priv/secret").AsUser(user, user).Want("EACCES"),
			Unlink("priv/secret").AsUser(user, user).Want("EACCES")),
		scenario("perm/chown-chmod", Chown("owned", 0, 0).AsUser(user, user).Want("EPERM"),
			Chown("f", user, user).AsUser(user, user).Want("EPERM"), Chmod("f", 0o777).AsUser(user, user).Want("EPERM"),
			Chmod("owned", 0o600).AsUser(user, user).Want("ok"), Chown("owned", -1, user).AsUser(user, user).Want("ok"),
			Chown("owned", -1, 50).AsUser(user, user).Want("EPERM")),
		scenario("perm/create-as-user", Create("pub/mine", 0o644, "mine").AsUser(user, user).Want("ok"),
			Mkdir("pub/mydir", 0o755).AsUser(user, user).Want("ok"), Unlink("pub/rootfile").AsUser(user, user).Want("ok"),
			Create("m/no", 0o644, "").AsUser(user, user).Want("EACCES")),
		scenario("perm/sticky", Unlink("sticky/rootfile").AsUser(user, user).Want("EPERM"),
			Write("sticky/rootfile", 0, "user").AsUser(user, user).Want("ok"), Create("sticky/users", 0o600, "").AsUser(user, user).Want("ok")),
		scenario("perm/setgid-dir", Create("sgid/new", 0o644, "").Want("ok"), Mkdir("sgid/sub", 0o755).Want("ok")),
		scenario("perm/write-read-only", Write("ro", 0, "x").AsUser(user, user).Want("EACCES"), Write("ro", 0, "R").Want("ok"),
			UtimensNs("f", UtimeNow, UtimeNow).AsUser(user, user).Want("EACCES"),
			UtimensNs("owned", UtimeNow, UtimeNow).AsUser(user, user).Want("ok")),
		scenario("perm/user-handles", Open("owned", unix.O_RDWR, 0).Keep("h").AsUser(user, user).Want("ok"),
			Unlink("owned").AsUser(user, user).Want("EACCES"), Pwrite("h", 0, "mine").AsUser(user, user),
			Fchmod("h", 0o640).AsUser(user, user).Want("ok"), Fstat("h").AsUser(user, user)),
		scenario("perm/write-clears-setuid", Chmod("pub/rootfile", 0o6777).Want("ok"),
			Write("pub/rootfile", 0, "user").AsUser(user, user).Want("ok"), Stat("pub/rootfile")),
		scenario("perm/chown-clears-setuid", Chmod("f", 0o6755).Want("ok"), Chown("f", user, user).Want("ok"), Stat("f")),
		// chown(f, -1, -1) changes no owner but still drops setuid, and
		// setgid of a group-executable file only.
		scenario("perm/chown-unchanged-clears-setuid", Chmod("f", 0o6755).Want("ok"), Chmod("owned", 0o6745).Want("ok"),
			Chown("f", -1, -1).Want("ok"), Chown("owned", -1, -1).Want("ok"), Stat("f"), Stat("owned")),
		scenario("perm/denied-no-copy-up", Truncate("ro", 0).AsUser(user, user).Want("EACCES"),
			Open("f", unix.O_WRONLY|unix.O_TRUNC, 0).AsUser(user, user).Want("EACCES"),
			Setxattr("f", "user.u", "1", 0).AsUser(user, user).Want("EACCES"), Utimens("f", tPast, tPast).AsUser(user, user).Want("EPERM")),
		scenario("perm/write-as-owner", Write("owned", 0, "OWNED").AsUser(user, user).Want("ok"), Stat("owned")),
	}
}
