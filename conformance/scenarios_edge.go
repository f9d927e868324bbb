package conformance

import (
	"encoding/binary"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// edgeScenarios cover what a FUSE overlay can only match the kernel on
// when its FUSE library lets it: hard-link groups, rename flags, holes,
// st_blocks, copy_file_range, O_TMPFILE names, POSIX ACLs, the setuid
// bits a write clears, and inode flags.
func edgeScenarios() []Scenario {
	sparse := strings.Repeat("\x00", 64<<10) + "data" + strings.Repeat("\x00", 128<<10) + "tail" + strings.Repeat("\x00", 64<<10)
	aclDir := aclValue("u::rwx,u:1000:rwx,g::r-x,m::rwx,o::---")
	edge := Spec{
		Lowers: []Layer{{
			{Path: "sparse", Kind: File, Content: sparse, Sparse: true},
			{Path: "h1", Kind: File, Content: "linked"},
			{Path: "h2", Kind: HardLink, Target: "h1"},
			{Path: "h3", Kind: HardLink, Target: "h1"},
			{Path: "deny", Kind: File, Mode: 0o644, Content: "secret",
				Xattrs: map[string]string{"system.posix_acl_access": aclValue("u::rw-,u:1000:---,g::r--,m::r--,o::r--")}},
			{Path: "acl", Kind: Dir, Mode: 0o755, Xattrs: map[string]string{"system.posix_acl_default": aclDir}},
			{Path: "acl/lower", Kind: File, Content: "l"},
			{Path: "acl/wd", Kind: Dir},
			{Path: "suid", Kind: File, Mode: 0o4777, Content: "s"},
			{Path: "sgid-x", Kind: File, Mode: 0o2777, Content: "g"},
			{Path: "sgid", Kind: File, Mode: 0o2767, Content: "g"},
			{Path: "src", Kind: File, Content: "copied by copy_file_range"},
			{Path: "dir", Kind: Dir},
			{Path: "dir/f", Kind: File, Content: "f"},
		}},
		Upper: Layer{
			{Path: "acl", Kind: Dir, Mode: 0o755, Xattrs: map[string]string{"system.posix_acl_default": aclDir}},
			{Path: "acl/lower", Kind: Whiteout},
			{Path: "acl/wd", Kind: Whiteout},
			{Path: "up", Kind: Dir},
			{Path: "up/f", Kind: File, Content: "upper"},
		},
	}
	acl := "system.posix_acl_access"
	return []Scenario{
		on("link/upper-names-outlive-one", edge, Create("up/a", 0o644, "a").Want("ok"), Link("up/a", "up/b").Want("ok"),
			Link("up/a", "up/c").Want("ok"), Chmod("up/b", 0o600).Want("ok"), Chown("up/c", 5, 6).Want("ok"),
			Unlink("up/a").Want("ok"), Stat("up/b"), Stat("up/c"), InoMark("up/b", "b"), InoMark("up/c", "b"),
			MkSymlink("x", "up/d"), Rename("up/d", "up/b").Want("ok"), Stat("up/c"), Read("up/c")),
		on("link/upper-names-special", edge, Mkfifo("up/p", 0o644).Want("ok"), Link("up/p", "up/q").Want("ok"),
			Chmod("up/q", 0o600).Want("ok"), Unlink("up/p").Want("ok"), Stat("up/q"),
			Mknod("up/n", unix.S_IFCHR|0o644, 1, 3).Want("ok"), Link("up/n", "up/o").Want("ok"), Unlink("up/n").Want("ok"), Stat("up/o")),
		on("link/lower-group-copy-up", edge, InoMark("h1", "h"), InoMark("h2", "h"), Write("h1", 0, "W").Want("ok"),
			Read("h1"), Read("h2"), Stat("h1"), Stat("h2"), InoMark("h1", "h"), InoMark("h2", "h"), InoMark("h3", "h")),
		// Listed before the copy-up: the listing the kernel's FUSE
		// module caches must not keep the link's old d_ino.
		on("link/lower-group-copy-up-listed", edge, Readdir("."), Setxattr("h1", "user.c", "c", 0).Want("ok"), Readdir("."),
			InoMark("h1", "h"), InoMark("h2", "h")),
		on("link/lower-group-chmod", edge, Chmod("h2", 0o600).Want("ok"), Stat("h1"), Stat("h2"), Stat("h3"),
			Link("h2", "h4").Want("ok"), Stat("h4"), InoMark("h2", "x"), InoMark("h4", "x"), InoMark("h1", "x")),
		on("link/lower-group-rename-over", edge, Rename("h1", "h2").Want("ok"), Read("h2"), Stat("h2"), Stat("h3"), Stat("h1")),

		on("rename/exchange-kinds", edge, Rename2("up/f", "dir", unix.RENAME_EXCHANGE).Want("EXDEV"),
			Mkdir("up/sub", 0o750).Want("ok"), Rename2("up/f", "up/sub", unix.RENAME_EXCHANGE).Want("ok"), Stat("up/f"), Read("up/sub"),
			Rename2("h1", "h2", unix.RENAME_EXCHANGE).Want("ok"), Stat("h1"), Stat("h2"),
			Rename2("src", "h3", unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE).Want("EINVAL"),
			Mkdir("up/e", 0o755), Rename2("up/e", "acl/wd", unix.RENAME_EXCHANGE).Want("ENOENT"),
			Rename2("up/e", "acl", unix.RENAME_EXCHANGE).Want("EXDEV")),

		on("data/seek-data-lower", edge, Open("sparse", unix.O_RDONLY, 0).Keep("s"),
			Lseek("s", 0, unix.SEEK_DATA), Lseek("s", 0, unix.SEEK_HOLE), Lseek("s", 70000, unix.SEEK_HOLE),
			Lseek("s", 70000, unix.SEEK_DATA), Lseek("s", 300000, unix.SEEK_DATA).Want("ENXIO"), Close("s"), Blocks("sparse")),
		on("data/seek-data-copied-up", edge, Chmod("sparse", 0o600).Want("ok"), Open("sparse", unix.O_RDONLY, 0).Keep("s"),
			Lseek("s", 0, unix.SEEK_DATA), Lseek("s", 0, unix.SEEK_HOLE), Lseek("s", 70000, unix.SEEK_DATA), Close("s"), Blocks("sparse")),
		on("data/du-sparse", edge, Blocks("sparse"), Blocks("src"), Blocks("dir"), Write("sparse", 200000, "x").Want("ok"), Blocks("sparse")),
		on("data/copy-file-range", edge, CopyRange("src", "copy", 100).Want("ok"), Read("copy"), CopyRange("src", "up/f", 6).Want("ok"),
			Read("up/f"), Read("src")),
		on("data/o-tmpfile-named", edge, Open("dir", unix.O_TMPFILE|unix.O_RDWR, 0o640).Keep("t").Want("ok"), Pwrite("t", 0, "anonymous"),
			LinkFd("t", "dir/named").Want("ok"), Close("t"), Read("dir/named"), Stat("dir/named"), Readdir("dir")),

		on("perm/acl-denies-user", edge, Read("deny").AsUser(user, user).Want("EACCES"), Read("deny").AsUser(1001, 1001).Want("ok"),
			Getxattr("deny", acl), Chmod("deny", 0o664).Want("ok"), Getxattr("deny", acl), Read("deny").AsUser(user, user).Want("EACCES"),
			Removexattr("deny", acl).Want("ok"), Read("deny").AsUser(user, user).Want("ok")),
		on("perm/acl-default-inherited", edge, Create("acl/new", 0o666, "n").Want("ok"), Stat("acl/new"), Getxattr("acl/new", acl),
			Mkdir("acl/sub", 0o777).Want("ok"), Stat("acl/sub"), Getxattr("acl/sub", "system.posix_acl_default"),
			Create("acl/sub/deeper", 0o600, "d").Want("ok"), Stat("acl/sub/deeper"), Getxattr("acl/sub/deeper", acl),
			Read("acl/new").AsUser(user, user).Want("ok"), Create("acl/as-user", 0o644, "u").AsUser(user, user).Want("EACCES"),
			Create("acl/sub/as-user", 0o644, "u").AsUser(user, user).Want("ok"),
			Stat("acl/sub/as-user"), Getxattr("acl/sub/as-user", acl)),
		on("perm/acl-default-over-whiteout", edge, Create("acl/lower", 0o640, "again").Want("ok"), Stat("acl/lower"),
			Getxattr("acl/lower", acl), Mkdir("acl/wd", 0o750).Want("ok"), Stat("acl/wd"), Getxattr("acl/wd", acl),
			Getxattr("acl/wd", "system.posix_acl_default"), Mknod("acl/fifo", unix.S_IFIFO|0o666, 0, 0).Want("ok"), Getxattr("acl/fifo", acl)),
		on("perm/setuid-written-by-user", edge, Write("suid", 0, "u").AsUser(user, user).Want("ok"), Stat("suid"),
			Write("sgid-x", 0, "u").AsUser(user, user).Want("ok"), Stat("sgid-x"),
			Write("sgid", 0, "u").AsUser(user, user).Want("ok"), Stat("sgid"), Read("suid")),
		on("perm/setuid-truncated-by-user", edge, Truncate("suid", 0).AsUser(user, user).Want("ok"), Stat("suid"),
			Truncate("sgid-x", 0).AsUser(user, user).Want("ok"), Stat("sgid-x")),
		on("perm/setuid-written-by-root", edge, Write("suid", 0, "r").Want("ok"), Stat("suid"), Chown("sgid-x", 7, -1).Want("ok"), Stat("sgid-x")),

		// ext4 refuses to drop the extents flag (EPERM), after the
		// kernel's overlay has recorded append-only in protattr.
		on("special/inode-flags", edge, Getflags("up/f"), Getflags("src"), Setflags("src", fsExtents|fsNodump).Want("ok"), Getflags("src"),
			Setflags("up/f", fsAppend).Want("EPERM"), Getflags("up/f"), Setflags("up/f", fsExtents|fsAppend).Want("ok"), Getflags("up/f"),
			Write("up/f", 0, "x").Want("EPERM"), Append("up/f", "+a").Want("ok"), Unlink("up/f").Want("EPERM"),
			Rename("up/f", "up/g").Want("EPERM"), Chmod("up/f", 0o600).Want("EPERM"), Setxattr("up/f", "user.x", "1", 0).Want("EPERM"),
			Setflags("up/f", fsExtents).Want("ok"), Getflags("up/f"), Unlink("up/f").Want("ok"),
			Setflags("dir", fsExtents|fsImmutable).Want("ok"), Create("dir/new", 0o644, "x").Want("EPERM"), Unlink("dir/f").Want("EPERM"),
			Getflags("dir"), Setflags("dir", fsExtents).Want("ok"), Unlink("dir/f").Want("ok")),
	}
}

// Inode flags (linux/fs.h).
const (
	fsImmutable = 0x10
	fsAppend    = 0x20
	fsNodump    = 0x40
	fsExtents   = 0x80000
)

// aclValue encodes an ACL in short text form ("u::rw-,u:1000:---,g::r--,
// m::r--,o::r--") as the system.posix_acl_* xattr value.
func aclValue(text string) string {
	tags := map[string][2]uint16{"u": {0x01, 0x02}, "g": {0x04, 0x08}, "m": {0x10, 0x10}, "o": {0x20, 0x20}}
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range strings.Split(text, ",") {
		f := strings.Split(e, ":")
		tag := tags[f[0]][0]
		id := uint32(0xffffffff)
		if f[1] != "" {
			tag = tags[f[0]][1]
			n, _ := strconv.ParseUint(f[1], 10, 32)
			id = uint32(n)
		}
		perm := uint16(0)
		for i, c := range "rwx" {
			if f[2][i] == byte(c) {
				perm |= 4 >> i
			}
		}
		b = binary.LittleEndian.AppendUint16(b, tag)
		b = binary.LittleEndian.AppendUint16(b, perm)
		b = binary.LittleEndian.AppendUint32(b, id)
	}
	return string(b)
}
