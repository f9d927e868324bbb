package conformance

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// OpKind names a filesystem operation. The names are those of the system
// calls the operation makes, so a report reads like a strace.
type OpKind string

// Operations on paths (relative to the mount root).
const (
	OpOpen        OpKind = "open"            // openat(Path, Flags, Mode); kept as handle FD if set, else closed
	OpWrite       OpKind = "write"           // open(Path, O_WRONLY|Flags), pwrite(Data, Off), close
	OpAppend      OpKind = "append"          // open(Path, O_WRONLY|O_APPEND), write(Data), close
	OpMmapWrite   OpKind = "mmap-write"      // open(Path, O_RDWR), mmap(MAP_SHARED), copy Data to Off, msync, munmap, close
	OpRead        OpKind = "read"            // open(Path, O_RDONLY), read everything, close
	OpTruncate    OpKind = "truncate"        // truncate(Path, Off)
	OpMkdir       OpKind = "mkdir"           // mkdirat(Path, Mode)
	OpMknod       OpKind = "mknod"           // mknodat(Path, Mode, Major:Minor); Mode holds the type
	OpSocket      OpKind = "bind"            // socket(AF_UNIX), bind(Path), close
	OpSymlink     OpKind = "symlink"         // symlinkat(Target, Path)
	OpLink        OpKind = "link"            // linkat(Path, Target, 0)
	OpUnlink      OpKind = "unlink"          // unlinkat(Path, 0)
	OpRmdir       OpKind = "rmdir"           // unlinkat(Path, AT_REMOVEDIR)
	OpRename      OpKind = "rename"          // renameat2(Path, Target, Flags); Flags 0 is renameat
	OpChmod       OpKind = "chmod"           // fchmodat(Path, Mode)
	OpChown       OpKind = "chown"           // fchownat(Path, UID, GID, AT_SYMLINK_NOFOLLOW); -1 keeps
	OpUtimens     OpKind = "utimensat"       // utimensat(Path, {Atime, Mtime}, AT_SYMLINK_NOFOLLOW)
	OpSetxattr    OpKind = "setxattr"        // lsetxattr(Path, Name, Data, Flags)
	OpRemovexattr OpKind = "removexattr"     // lremovexattr(Path, Name)
	OpGetxattr    OpKind = "getxattr"        // lgetxattr(Path, Name)
	OpListxattr   OpKind = "listxattr"       // llistxattr(Path), names sorted
	OpStat        OpKind = "lstat"           // fstatat(Path, AT_SYMLINK_NOFOLLOW)
	OpReadlink    OpKind = "readlink"        // readlinkat(Path)
	OpStatx       OpKind = "statx"           // statx(Path, AT_SYMLINK_NOFOLLOW, Mask)
	OpReaddir     OpKind = "getdents64"      // open(Path, O_DIRECTORY), getdents64 in 512-byte calls to the end, close
	OpInoMark     OpKind = "ino"             // fstatat(Path): remember st_ino as Name, or compare it with Name's
	OpXattrTree   OpKind = "xattr-tree"      // llistxattr + lgetxattr of every path below Path, one line each
	OpBlocks      OpKind = "blocks"          // fstatat(Path): st_blocks and st_blksize, what du(1) reads
	OpGetflags    OpKind = "getflags"        // open(Path, O_RDONLY|O_NONBLOCK|O_NOFOLLOW), ioctl(FS_IOC_GETFLAGS), close
	OpSetflags    OpKind = "setflags"        // open(Path, O_RDONLY|O_NONBLOCK|O_NOFOLLOW), ioctl(FS_IOC_SETFLAGS, Flags), close
	OpCopyRange   OpKind = "copy_file_range" // open(Path, O_RDONLY), open(Target, O_WRONLY|O_CREAT, 0644), copy_file_range(Len), close both
)

// Operations on a handle kept by an earlier OpOpen with the same FD.
const (
	OpPwrite    OpKind = "pwrite"    // pwrite(FD, Data, Off)
	OpPread     OpKind = "pread"     // pread(FD, Len bytes at Off)
	OpFstat     OpKind = "fstat"     // fstat(FD)
	OpFchmod    OpKind = "fchmod"    // fchmod(FD, Mode)
	OpFtruncate OpKind = "ftruncate" // ftruncate(FD, Off)
	OpFallocate OpKind = "fallocate" // fallocate(FD, Flags, Off, Len)
	OpFsync     OpKind = "fsync"     // fsync(FD)
	OpClose     OpKind = "close"     // close(FD)
	OpGetdents  OpKind = "getdents"  // getdents64(FD) up to Len entries from the position, then lseek to the last one's d_off
	OpLseek     OpKind = "lseek"     // lseek(FD, Off, Flags as whence)
	OpLinkFd    OpKind = "linkat-fd" // linkat(FD, "", Target, AT_EMPTY_PATH): names an O_TMPFILE
)

// Special values of Op.Atime and Op.Mtime.
const (
	UtimeNow  int64 = math.MinInt64     // UTIME_NOW
	UtimeOmit int64 = math.MinInt64 + 1 // UTIME_OMIT
)

// Cred is the identity a helper process takes to perform an operation.
type Cred struct {
	UID, GID uint32
}

// Op is one operation of a scenario, as a plain value so that a helper
// process running as another user can receive it as JSON. Which fields an
// operation reads is listed with its OpKind; the constructors below fill
// them in.
type Op struct {
	Kind   OpKind
	Path   string // relative to the mount root
	Target string // rename and link destination, symlink content
	FD     string // name of a kept handle
	Flags  int    // open, rename, setxattr, fallocate flags
	Mode   uint32
	Major  uint32
	Minor  uint32
	Off    int64  // offset; the size for truncate and ftruncate
	Len    int64  // pread and fallocate length
	Data   string // bytes written; xattr value
	Name   string // xattr name
	UID    int
	GID    int
	Atime  int64 // nanoseconds since the epoch, UtimeNow or UtimeOmit
	Mtime  int64
	As     *Cred // perform as this user (in a helper process); nil is root
	// Expect, if set, is the errno name (or "ok") the scenario's author
	// expects of the kernel; a kernel result other than that means the
	// scenario does not test what it says. Not compared with other sides.
	Expect string
}

// Constructors, one per OpKind, in the order of the kinds above.

func Open(path string, flags int, mode uint32) Op {
	return Op{Kind: OpOpen, Path: path, Flags: flags, Mode: mode}
}
func Create(path string, mode uint32, data string) Op {
	return Op{Kind: OpWrite, Path: path, Flags: unix.O_CREAT | unix.O_EXCL, Mode: mode, Data: data}
}
func Write(path string, off int64, data string) Op {
	return Op{Kind: OpWrite, Path: path, Off: off, Data: data}
}
func Append(path, data string) Op { return Op{Kind: OpAppend, Path: path, Data: data} }
func MmapWrite(path string, off int64, data string) Op {
	return Op{Kind: OpMmapWrite, Path: path, Off: off, Data: data}
}
func Read(path string) Op                 { return Op{Kind: OpRead, Path: path} }
func Truncate(path string, size int64) Op { return Op{Kind: OpTruncate, Path: path, Off: size} }
func Mkdir(path string, mode uint32) Op   { return Op{Kind: OpMkdir, Path: path, Mode: mode} }
func Mknod(path string, mode, major, minor uint32) Op {
	return Op{Kind: OpMknod, Path: path, Mode: mode, Major: major, Minor: minor}
}
func Mkfifo(path string, mode uint32) Op { return Mknod(path, unix.S_IFIFO|mode, 0, 0) }
func MkSocket(path string) Op            { return Op{Kind: OpSocket, Path: path} }
func MkSymlink(target, path string) Op   { return Op{Kind: OpSymlink, Path: path, Target: target} }
func Link(oldpath, newpath string) Op    { return Op{Kind: OpLink, Path: oldpath, Target: newpath} }
func Unlink(path string) Op              { return Op{Kind: OpUnlink, Path: path} }
func Rmdir(path string) Op               { return Op{Kind: OpRmdir, Path: path} }
func Rename(oldpath, newpath string) Op  { return Op{Kind: OpRename, Path: oldpath, Target: newpath} }
func Chmod(path string, mode uint32) Op  { return Op{Kind: OpChmod, Path: path, Mode: mode} }
func Chown(path string, uid, gid int) Op { return Op{Kind: OpChown, Path: path, UID: uid, GID: gid} }
func Removexattr(path, name string) Op   { return Op{Kind: OpRemovexattr, Path: path, Name: name} }
func Getxattr(path, name string) Op      { return Op{Kind: OpGetxattr, Path: path, Name: name} }
func Listxattr(path string) Op           { return Op{Kind: OpListxattr, Path: path} }
func Stat(path string) Op                { return Op{Kind: OpStat, Path: path} }
func Readlink(path string) Op            { return Op{Kind: OpReadlink, Path: path} }
func Statx(path string, mask int) Op     { return Op{Kind: OpStatx, Path: path, Flags: mask} }
func Readdir(path string) Op             { return Op{Kind: OpReaddir, Path: path} }
func Blocks(path string) Op              { return Op{Kind: OpBlocks, Path: path} }
func Getflags(path string) Op            { return Op{Kind: OpGetflags, Path: path} }
func Setflags(path string, flags int) Op { return Op{Kind: OpSetflags, Path: path, Flags: flags} }

// CopyRange copies n bytes from the start of src to the start of dst
// (created if missing) with copy_file_range.
func CopyRange(src, dst string, n int64) Op {
	return Op{Kind: OpCopyRange, Path: src, Target: dst, Len: n}
}

// LinkFd gives the file of handle fd (an O_TMPFILE) the name newpath.
func LinkFd(fd, newpath string) Op { return Op{Kind: OpLinkFd, FD: fd, Target: newpath} }

// InoMark records the st_ino of path as name the first time name is used;
// later uses compare the st_ino of path with it. The result says "same" or
// "other", so inode identities are compared, not numbers.
func InoMark(path, name string) Op { return Op{Kind: OpInoMark, Path: path, Name: name} }

// XattrTree lists the xattrs of every path below path, as whoever runs it
// can see them: run AsUser, it shows what an unprivileged user gets.
func XattrTree(path string) Op { return Op{Kind: OpXattrTree, Path: path} }
func Pwrite(fd string, off int64, data string) Op {
	return Op{Kind: OpPwrite, FD: fd, Off: off, Data: data}
}
func Pread(fd string, off, n int64) Op   { return Op{Kind: OpPread, FD: fd, Off: off, Len: n} }
func Fstat(fd string) Op                 { return Op{Kind: OpFstat, FD: fd} }
func Fchmod(fd string, mode uint32) Op   { return Op{Kind: OpFchmod, FD: fd, Mode: mode} }
func Ftruncate(fd string, size int64) Op { return Op{Kind: OpFtruncate, FD: fd, Off: size} }
func Fallocate(fd string, mode int, off, n int64) Op {
	return Op{Kind: OpFallocate, FD: fd, Flags: mode, Off: off, Len: n}
}
func Fsync(fd string) Op { return Op{Kind: OpFsync, FD: fd} }
func Close(fd string) Op { return Op{Kind: OpClose, FD: fd} }

// Getdents reads up to n entries of a directory handle from its position
// and leaves the position just after the last one read (through its d_off),
// so a later Getdents continues there, as readdir(3) with telldir does.
// The order of a listing is unspecified, so which entries one call returns
// is not compared: a call that reaches the end reports every name read
// through the handle since it was opened or rewound (lseek to 0), with
// duplicates marked; one that does not reports how many it read.
func Getdents(fd string, n int64) Op { return Op{Kind: OpGetdents, FD: fd, Len: n} }

// GetdentsExcept is Getdents leaving name out of the report: POSIX leaves
// unspecified whether a name created or removed after the directory was
// opened is listed.
func GetdentsExcept(fd string, n int64, name string) Op {
	return Op{Kind: OpGetdents, FD: fd, Len: n, Name: name}
}

// Lseek is lseek(fd, off, whence); the result is the new offset.
func Lseek(fd string, off int64, whence int) Op {
	return Op{Kind: OpLseek, FD: fd, Off: off, Flags: whence}
}

// Rename2 is renameat2 with flags (RENAME_NOREPLACE, RENAME_EXCHANGE,
// RENAME_WHITEOUT).
func Rename2(oldpath, newpath string, flags int) Op {
	return Op{Kind: OpRename, Path: oldpath, Target: newpath, Flags: flags}
}

// Setxattr sets name to value with flags (0, XATTR_CREATE, XATTR_REPLACE).
func Setxattr(path, name, value string, flags int) Op {
	return Op{Kind: OpSetxattr, Path: path, Name: name, Data: value, Flags: flags}
}

// Utimens sets both times; UtimeNow and UtimeOmit are also accepted as
// nanosecond values through UtimensNs.
func Utimens(path string, atime, mtime time.Time) Op {
	return UtimensNs(path, atime.UnixNano(), mtime.UnixNano())
}
func UtimensNs(path string, atime, mtime int64) Op {
	return Op{Kind: OpUtimens, Path: path, Atime: atime, Mtime: mtime}
}

// Keep makes an OpOpen keep its descriptor as handle fd for later
// operations instead of closing it. Handles left open at the end of a run
// are closed then.
func (o Op) Keep(fd string) Op { o.FD = fd; return o }

// AsUser makes the operation run in a helper process with uid and gid and
// no supplementary groups. Consecutive operations with the same identity
// share one helper, and with it their handles.
func (o Op) AsUser(uid, gid uint32) Op { o.As = &Cred{UID: uid, GID: gid}; return o }

// Want sets the errno name (or "ok") the kernel must return for o.
func (o Op) Want(errno string) Op { o.Expect = errno; return o }

func (o Op) String() string {
	var args []string
	add := func(s ...string) { args = append(args, s...) }
	q := func(s string) string {
		if len(s) > 24 {
			return fmt.Sprintf("<%d bytes>", len(s))
		}
		return strconv.Quote(s)
	}
	if o.Path != "" {
		add(o.Path)
	}
	if o.FD != "" && o.Kind != OpOpen {
		add("fd " + o.FD)
	}
	switch o.Kind {
	case OpOpen:
		add(openFlagString(o.Flags))
		if o.Flags&unix.O_CREAT != 0 {
			add(fmt.Sprintf("%#o", o.Mode))
		}
		if o.FD != "" {
			add("keep " + o.FD)
		}
	case OpWrite:
		if o.Flags != 0 {
			add(openFlagString(o.Flags | unix.O_WRONLY))
		}
		if o.Flags&unix.O_CREAT != 0 {
			add(fmt.Sprintf("%#o", o.Mode))
		}
		add(q(o.Data), "@"+strconv.FormatInt(o.Off, 10))
	case OpPwrite, OpMmapWrite:
		add(q(o.Data), "@"+strconv.FormatInt(o.Off, 10))
	case OpAppend:
		add(q(o.Data))
	case OpTruncate, OpFtruncate:
		add(strconv.FormatInt(o.Off, 10))
	case OpPread:
		add(fmt.Sprintf("%d@%d", o.Len, o.Off))
	case OpFallocate:
		add(fmt.Sprintf("mode %#x", o.Flags), fmt.Sprintf("%d@%d", o.Len, o.Off))
	case OpMkdir, OpChmod, OpFchmod:
		add(fmt.Sprintf("%#o", o.Mode))
	case OpMknod:
		add(fmt.Sprintf("%#o", o.Mode), fmt.Sprintf("%d:%d", o.Major, o.Minor))
	case OpSymlink:
		args = []string{q(o.Target), o.Path}
	case OpLink:
		add(o.Target)
	case OpRename:
		add(o.Target)
		if o.Flags != 0 {
			add(renameFlagString(o.Flags))
		}
	case OpChown:
		add(fmt.Sprintf("%d:%d", o.UID, o.GID))
	case OpUtimens:
		add(utimeString(o.Atime), utimeString(o.Mtime))
	case OpSetxattr:
		add(o.Name, q(o.Data))
		switch o.Flags {
		case unix.XATTR_CREATE:
			add("CREATE")
		case unix.XATTR_REPLACE:
			add("REPLACE")
		}
	case OpRemovexattr, OpGetxattr, OpInoMark:
		add(o.Name)
	case OpStatx:
		add(fmt.Sprintf("mask %#x", o.Flags))
	case OpSetflags:
		add(fmt.Sprintf("%#x", o.Flags))
	case OpCopyRange:
		add(o.Target, strconv.FormatInt(o.Len, 10))
	case OpLinkFd:
		add(o.Target)
	case OpGetdents:
		add(strconv.FormatInt(o.Len, 10))
		if o.Name != "" {
			add("except " + o.Name)
		}
	case OpLseek:
		add(strconv.FormatInt(o.Off, 10), [...]string{"SEEK_SET", "SEEK_CUR", "SEEK_END", "SEEK_DATA", "SEEK_HOLE"}[o.Flags%5])
	}
	s := string(o.Kind) + "(" + strings.Join(args, ", ") + ")"
	if o.As != nil {
		s += fmt.Sprintf(" as %d:%d", o.As.UID, o.As.GID)
	}
	return s
}

func openFlagString(flags int) string {
	var parts []string
	switch flags & unix.O_ACCMODE {
	case unix.O_RDONLY:
		parts = append(parts, "O_RDONLY")
	case unix.O_WRONLY:
		parts = append(parts, "O_WRONLY")
	case unix.O_RDWR:
		parts = append(parts, "O_RDWR")
	}
	rest := flags &^ unix.O_ACCMODE
	if rest&unix.O_TMPFILE == unix.O_TMPFILE {
		parts = append(parts, "O_TMPFILE")
		rest &^= unix.O_TMPFILE
	}
	return bitNames(parts, rest, []flagName{
		{unix.O_CREAT, "O_CREAT"}, {unix.O_EXCL, "O_EXCL"}, {unix.O_TRUNC, "O_TRUNC"},
		{unix.O_APPEND, "O_APPEND"}, {unix.O_DIRECTORY, "O_DIRECTORY"}, {unix.O_NOFOLLOW, "O_NOFOLLOW"},
		{unix.O_NONBLOCK, "O_NONBLOCK"}, {unix.O_PATH, "O_PATH"},
	})
}

func renameFlagString(flags int) string {
	return bitNames(nil, flags, []flagName{{unix.RENAME_NOREPLACE, "NOREPLACE"}, {unix.RENAME_EXCHANGE, "EXCHANGE"}, {unix.RENAME_WHITEOUT, "WHITEOUT"}})
}

// flagName names one bit of a flags argument.
type flagName struct {
	bit  int
	name string
}

// bitNames adds to parts the names of the bits of flags, then any bits
// left unnamed in hex, and joins them with |.
func bitNames(parts []string, flags int, names []flagName) string {
	for _, f := range names {
		if flags&f.bit != 0 {
			parts = append(parts, f.name)
			flags &^= f.bit
		}
	}
	if flags != 0 {
		parts = append(parts, fmt.Sprintf("%#x", flags))
	}
	return strings.Join(parts, "|")
}

func utimeString(ns int64) string {
	switch ns {
	case UtimeNow:
		return "NOW"
	case UtimeOmit:
		return "OMIT"
	}
	return timeString(ns)
}

// Result is what one operation returned. Two implementations agree on an
// operation when their Results are equal.
type Result struct {
	Err string // "" on success, else the errno's name (ENOENT)
	N   int64  // bytes transferred, for the operations that count them
	Out string // what the operation observed: content, xattr value, stat fields
	// After is lstat of the paths the operation named, taken right after
	// it: statString or the errno name for each, "; "-separated.
	After string
}

func (r Result) String() string {
	s := "ok"
	if r.Err != "" {
		s = r.Err
	}
	if r.N != 0 {
		s += " " + strconv.FormatInt(r.N, 10)
	}
	if r.Out != "" {
		s += " " + r.Out
	}
	if r.After != "" {
		s += " {" + r.After + "}"
	}
	return s
}

func errResult(err error) Result {
	if err == nil {
		return Result{}
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		if name := unix.ErrnoName(errno); name != "" {
			return Result{Err: name}
		}
	}
	return Result{Err: err.Error()}
}

// summarize renders observed bytes: short printable content verbatim,
// anything else as its length and a digest prefix.
func summarize(b []byte) string {
	if len(b) <= 48 && strconv.CanBackquote(string(b)) {
		return strconv.Quote(string(b))
	}
	sum := sha256.Sum256(b)
	return fmt.Sprintf("<%d bytes sha256:%s>", len(b), hex.EncodeToString(sum[:6]))
}

// statString renders the fields of a stat an operation reports. Times and
// numbers are left to the walks, which compare them with their rules.
func statString(st *unix.Stat_t) string {
	s := fmt.Sprintf("mode=%#o uid=%d gid=%d nlink=%d", st.Mode, st.Uid, st.Gid, st.Nlink)
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		s += fmt.Sprintf(" size=%d", st.Size)
	}
	return s
}

// opRunner performs operations relative to a directory descriptor.
type opRunner struct {
	root    int
	handles map[string]int
	inos    map[string]uint64   // InoMark names
	listed  map[string][]string // names Getdents read through a handle since its open or rewind
}

func newOpRunner(root int) *opRunner {
	return &opRunner{root: root, handles: map[string]int{}, inos: map[string]uint64{}, listed: map[string][]string{}}
}

// do performs o and observes the paths it named.
func (r *opRunner) do(o Op) Result {
	res := r.run(o)
	paths := []string{o.Path}
	switch o.Kind {
	case OpLink, OpRename, OpLinkFd, OpCopyRange:
		paths = append(paths, o.Target)
	}
	var after []string
	for _, p := range paths {
		if p == "" {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(r.root, p, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			after = append(after, p+": "+errResult(err).Err)
			continue
		}
		after = append(after, p+": "+statString(&st))
	}
	res.After = strings.Join(after, "; ")
	return res
}

// proc names path for the system calls that have no *at form.
func (r *opRunner) proc(path string) string {
	return fmt.Sprintf("/proc/self/fd/%d/%s", r.root, path)
}

func (r *opRunner) closeAll() {
	for name, fd := range r.handles {
		unix.Close(fd)
		delete(r.handles, name)
	}
}

func (r *opRunner) run(o Op) Result {
	switch o.Kind {
	case OpOpen:
		fd, err := unix.Openat(r.root, o.Path, o.Flags|unix.O_CLOEXEC, o.Mode)
		if err != nil {
			return errResult(err)
		}
		if o.FD == "" {
			return errResult(unix.Close(fd))
		}
		if old, ok := r.handles[o.FD]; ok {
			unix.Close(old)
		}
		r.handles[o.FD] = fd
		delete(r.listed, o.FD)
		return Result{}
	case OpWrite, OpAppend:
		flags := unix.O_WRONLY | o.Flags
		if o.Kind == OpAppend {
			flags |= unix.O_APPEND
		}
		return r.withFile(o.Path, flags, o.Mode, func(fd int) Result {
			var n int
			var err error
			if o.Kind == OpAppend {
				n, err = unix.Write(fd, []byte(o.Data))
			} else {
				n, err = unix.Pwrite(fd, []byte(o.Data), o.Off)
			}
			res := errResult(err)
			res.N = int64(n)
			return res
		})
	case OpMmapWrite:
		return r.withFile(o.Path, unix.O_RDWR, 0, func(fd int) Result { return mmapWrite(fd, o.Off, o.Data) })
	case OpRead:
		return r.withFile(o.Path, unix.O_RDONLY, 0, func(fd int) Result {
			var all []byte
			buf := make([]byte, 64<<10)
			for {
				n, err := unix.Read(fd, buf)
				if err != nil {
					return errResult(err)
				}
				if n == 0 {
					return Result{Out: summarize(all)}
				}
				all = append(all, buf[:n]...)
			}
		})
	case OpTruncate:
		return errResult(unix.Truncate(r.proc(o.Path), o.Off))
	case OpMkdir:
		return errResult(unix.Mkdirat(r.root, o.Path, o.Mode))
	case OpMknod:
		return errResult(unix.Mknodat(r.root, o.Path, o.Mode, int(unix.Mkdev(o.Major, o.Minor))))
	case OpSocket:
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return errResult(err)
		}
		defer unix.Close(fd)
		return errResult(unix.Bind(fd, &unix.SockaddrUnix{Name: r.proc(o.Path)}))
	case OpSymlink:
		return errResult(unix.Symlinkat(o.Target, r.root, o.Path))
	case OpLink:
		return errResult(unix.Linkat(r.root, o.Path, r.root, o.Target, 0))
	case OpUnlink:
		return errResult(unix.Unlinkat(r.root, o.Path, 0))
	case OpRmdir:
		return errResult(unix.Unlinkat(r.root, o.Path, unix.AT_REMOVEDIR))
	case OpRename:
		if o.Flags == 0 {
			return errResult(unix.Renameat(r.root, o.Path, r.root, o.Target))
		}
		return errResult(unix.Renameat2(r.root, o.Path, r.root, o.Target, uint(o.Flags)))
	case OpChmod:
		return errResult(unix.Fchmodat(r.root, o.Path, o.Mode, 0))
	case OpChown:
		return errResult(unix.Fchownat(r.root, o.Path, o.UID, o.GID, unix.AT_SYMLINK_NOFOLLOW))
	case OpUtimens:
		ts := []unix.Timespec{utimeSpec(o.Atime), utimeSpec(o.Mtime)}
		return errResult(unix.UtimesNanoAt(r.root, o.Path, ts, unix.AT_SYMLINK_NOFOLLOW))
	case OpSetxattr:
		return errResult(unix.Lsetxattr(r.proc(o.Path), o.Name, []byte(o.Data), o.Flags))
	case OpRemovexattr:
		return errResult(unix.Lremovexattr(r.proc(o.Path), o.Name))
	case OpGetxattr:
		p := r.proc(o.Path)
		v, err := xattrCall(func(b []byte) (int, error) { return unix.Lgetxattr(p, o.Name, b) })
		if err != nil {
			return errResult(err)
		}
		return Result{Out: summarize(v)}
	case OpListxattr:
		xs, err := listXattrs(r.proc(o.Path))
		if err != nil {
			return errResult(err)
		}
		names := make([]string, len(xs))
		for i, x := range xs {
			names[i] = x.Name
		}
		return Result{Out: "[" + strings.Join(names, " ") + "]"}
	case OpStat:
		var st unix.Stat_t
		if err := unix.Fstatat(r.root, o.Path, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return errResult(err)
		}
		return Result{Out: statString(&st)}
	case OpReadlink:
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(r.root, o.Path, buf)
		if err != nil {
			return errResult(err)
		}
		return Result{Out: strconv.Quote(string(buf[:n]))}
	case OpStatx:
		var st unix.Statx_t
		if err := unix.Statx(r.root, o.Path, unix.AT_SYMLINK_NOFOLLOW, o.Flags, &st); err != nil {
			return errResult(err)
		}
		return Result{Out: statxString(&st, o.Flags)}
	case OpReaddir:
		fd, err := unix.Openat(r.root, o.Path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return errResult(err)
		}
		defer unix.Close(fd)
		ents, err := getdents(fd, -1, 512)
		if err != nil {
			return errResult(err)
		}
		return Result{N: int64(len(ents)), Out: direntString(ents)}
	case OpXattrTree:
		var lines []string
		r.xattrTree(o.Path, &lines)
		return Result{Out: strings.Join(lines, "\n")}
	case OpBlocks:
		var st unix.Stat_t
		if err := unix.Fstatat(r.root, o.Path, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return errResult(err)
		}
		return Result{Out: fmt.Sprintf("blocks=%d blksize=%d", st.Blocks, st.Blksize)}
	case OpGetflags, OpSetflags:
		return r.withFile(o.Path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW, 0, func(fd int) Result {
			if o.Kind == OpSetflags {
				return errResult(unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, o.Flags))
			}
			flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
			if err != nil {
				return errResult(err)
			}
			return Result{Out: fmt.Sprintf("flags=%#x", flags)}
		})
	case OpCopyRange:
		return r.withFile(o.Path, unix.O_RDONLY, 0, func(in int) Result {
			out, err := unix.Openat(r.root, o.Target, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
			if err != nil {
				return errResult(err)
			}
			defer unix.Close(out)
			n, err := unix.CopyFileRange(in, nil, out, nil, int(o.Len), 0)
			res := errResult(err)
			res.N = int64(n)
			return res
		})
	case OpInoMark:
		var st unix.Stat_t
		if err := unix.Fstatat(r.root, o.Path, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return errResult(err)
		}
		ino, ok := r.inos[o.Name]
		switch {
		case !ok:
			r.inos[o.Name] = st.Ino
			return Result{Out: "marked"}
		case ino == st.Ino:
			return Result{Out: "same"}
		}
		return Result{Out: "other"}
	}
	fd, ok := r.handles[o.FD]
	if !ok {
		return Result{Err: fmt.Sprintf("harness: no handle %q for %s", o.FD, o.Kind)}
	}
	switch o.Kind {
	case OpPwrite:
		n, err := unix.Pwrite(fd, []byte(o.Data), o.Off)
		res := errResult(err)
		res.N = int64(n)
		return res
	case OpPread:
		buf := make([]byte, o.Len)
		n, err := unix.Pread(fd, buf, o.Off)
		if err != nil {
			return errResult(err)
		}
		return Result{Out: summarize(buf[:n])}
	case OpFstat:
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return errResult(err)
		}
		return Result{Out: statString(&st)}
	case OpFchmod:
		return errResult(unix.Fchmod(fd, o.Mode))
	case OpFtruncate:
		return errResult(unix.Ftruncate(fd, o.Off))
	case OpFallocate:
		return errResult(unix.Fallocate(fd, uint32(o.Flags), o.Off, o.Len))
	case OpFsync:
		return errResult(unix.Fsync(fd))
	case OpClose:
		delete(r.handles, o.FD)
		return errResult(unix.Close(fd))
	case OpGetdents:
		ents, err := getdents(fd, int(o.Len), 4096)
		if err != nil {
			return errResult(err)
		}
		if len(ents) > 0 {
			if _, err := unix.Seek(fd, ents[len(ents)-1].off, unix.SEEK_SET); err != nil {
				return errResult(err)
			}
		}
		for _, e := range ents {
			r.listed[o.FD] = append(r.listed[o.FD], e.name+":"+dtypeName(e.typ))
		}
		if int64(len(ents)) == o.Len {
			return Result{N: int64(len(ents))}
		}
		return Result{Out: listedString(r.listed[o.FD], o.Name)}
	case OpLseek:
		off, err := unix.Seek(fd, o.Off, o.Flags)
		if err != nil {
			return errResult(err)
		}
		if off == 0 {
			delete(r.listed, o.FD)
		}
		return Result{Out: "offset " + strconv.FormatInt(off, 10)}
	case OpLinkFd:
		return errResult(unix.Linkat(fd, "", r.root, o.Target, unix.AT_EMPTY_PATH))
	}
	return Result{Err: fmt.Sprintf("harness: unknown operation %q", o.Kind)}
}

// xattrTree appends "path: xattrs" for path and, if it is a directory,
// everything below it, in name order; errors are recorded in the line.
func (r *opRunner) xattrTree(path string, lines *[]string) {
	line := path + ": "
	xs, err := listXattrs(r.proc(path))
	if err != nil {
		line += errResult(errors.Unwrap(err)).Err
	} else {
		line += xattrString(xs)
	}
	*lines = append(*lines, line)
	fd, err := unix.Openat(r.root, path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
		return
	}
	if err != nil {
		*lines = append(*lines, path+"/: "+errResult(err).Err)
		return
	}
	ents, err := getdents(fd, -1, 4096)
	unix.Close(fd)
	if err != nil {
		*lines = append(*lines, path+"/: "+errResult(err).Err)
		return
	}
	var names []string
	for _, e := range ents {
		if e.name != "." && e.name != ".." {
			names = append(names, e.name)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		r.xattrTree(path+"/"+n, lines)
	}
}

// withFile opens path, runs f on the descriptor and closes it. A failing
// open is the operation's result; so is a failing close after a
// successful f, because FUSE reports write-back errors there.
func (r *opRunner) withFile(path string, flags int, mode uint32, f func(fd int) Result) Result {
	fd, err := unix.Openat(r.root, path, flags|unix.O_CLOEXEC, mode)
	if err != nil {
		return errResult(err)
	}
	res := f(fd)
	if err := unix.Close(fd); err != nil && res.Err == "" {
		res.Err = errResult(err).Err
	}
	return res
}

func utimeSpec(ns int64) unix.Timespec {
	switch ns {
	case UtimeNow:
		return unix.Timespec{Nsec: unix.UTIME_NOW}
	case UtimeOmit:
		return unix.Timespec{Nsec: unix.UTIME_OMIT}
	}
	return unix.NsecToTimespec(ns)
}

// mmapWrite stores data at off through a shared writable mapping of the
// whole file and msyncs it. A store beyond the end of the file would raise
// SIGBUS, so that is refused up front (and a fault still becomes a result,
// not a crash).
func mmapWrite(fd int, off int64, data string) (res Result) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return errResult(err)
	}
	if off+int64(len(data)) > st.Size || len(data) == 0 {
		return Result{Err: fmt.Sprintf("harness: mmap store %d@%d outside the file's %d bytes", len(data), off, st.Size)}
	}
	m, err := unix.Mmap(fd, 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return errResult(err)
	}
	defer unix.Munmap(m)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			res = Result{Err: fmt.Sprintf("fault: %v", p)}
		}
	}()
	copy(m[off:], data)
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		return errResult(err)
	}
	return Result{N: int64(len(data))}
}

// RunOps performs ops in order relative to the directory root and returns
// one Result per operation, counting finished operations in done (if not
// nil). Operations with an As identity run in a helper process (the test
// binary, re-executed): set*id in Go changes every thread of the process,
// so the test process itself must stay root. Handles are per process: a
// handle kept by a root operation cannot be used by an operation as
// another user, or the other way round.
func RunOps(root string, ops []Op, done *atomic.Int64) ([]Result, error) {
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(rootFD)
	r := newOpRunner(rootFD)
	defer r.closeAll()
	results := make([]Result, 0, len(ops))
	for i := 0; i < len(ops); {
		if ops[i].As == nil {
			results = append(results, r.do(ops[i]))
			i++
			if done != nil {
				done.Add(1)
			}
			continue
		}
		j := i + 1
		for j < len(ops) && ops[j].As != nil && *ops[j].As == *ops[i].As {
			j++
		}
		res, err := runAsHelper(rootFD, *ops[i].As, ops[i:j])
		if err != nil {
			return nil, err
		}
		results = append(results, res...)
		if done != nil {
			done.Add(int64(j - i))
		}
		i = j
	}
	return results, nil
}

// envOpsHelper makes the test binary act as an operations helper: it reads
// JSON []Op on stdin, performs them relative to descriptor 3 and writes
// JSON []Result on stdout. Every program running scenarios calls
// ServeHelper first thing.
const envOpsHelper = "OVL_CONFORMANCE_OPS_HELPER"

func runAsHelper(rootFD int, c Cred, ops []Op) ([]Result, error) {
	in, err := json.Marshal(ops)
	if err != nil {
		return nil, err
	}
	// /proc/self/exe rather than the binary's path: the helper execs after
	// taking the new identity, and the test binary usually sits in a
	// directory only root may enter; the magic link skips that walk.
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(raceEnv(), envOpsHelper+"=1")
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// A duplicate, because the *os.File owns its descriptor and closes it.
	dup, err := unix.FcntlInt(uintptr(rootFD), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	root := os.NewFile(uintptr(dup), "mount root")
	defer root.Close()
	cmd.ExtraFiles = []*os.File{root}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: c.UID, Gid: c.GID, Groups: []uint32{}}}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("ops helper as %d:%d: %w: %s", c.UID, c.GID, err, stderr.Bytes())
	}
	var out []Result
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil || len(out) != len(ops) {
		return nil, fmt.Errorf("ops helper as %d:%d: bad answer (%v): %q %s", c.UID, c.GID, err, stdout.Bytes(), stderr.Bytes())
	}
	return out, nil
}

// ServeHelper makes the process an operations helper and exits, if it was
// started as one; otherwise it returns at once. A program that runs
// scenarios with AsUser operations must call it first thing in main (or
// TestMain), because helpers are the program itself, re-executed.
func ServeHelper() {
	if os.Getenv(envOpsHelper) != "" {
		os.Exit(opsHelperMain())
	}
}

// opsHelperMain is the helper process's main function; it returns the exit
// status.
func opsHelperMain() int {
	var ops []Op
	if err := json.NewDecoder(os.Stdin).Decode(&ops); err != nil {
		fmt.Fprintln(os.Stderr, "ops helper:", err)
		return 2
	}
	r := newOpRunner(3)
	results := make([]Result, len(ops))
	for i, o := range ops {
		results[i] = r.do(o)
	}
	r.closeAll()
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, "ops helper:", err)
		return 2
	}
	return 0
}

// statxString renders what statx returned for the fields in mask: the
// basic ones as statString does, and whether a birth time came back, which
// only some filesystems (and not FUSE) provide.
func statxString(st *unix.Statx_t, mask int) string {
	s := fmt.Sprintf("mode=%#o uid=%d gid=%d nlink=%d", st.Mode, st.Uid, st.Gid, st.Nlink)
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		s += fmt.Sprintf(" size=%d", st.Size)
	}
	if mask&unix.STATX_BTIME != 0 {
		s += fmt.Sprintf(" btime=%v", st.Mask&unix.STATX_BTIME != 0)
	}
	return s
}

// dirEntry is one record of getdents64, with the cookie that seeks past it.
type dirEntry struct {
	dirent
	off int64
}

// getdents reads up to max entries (all if max < 0) from fd's position
// with getdents64 calls of bufSize bytes. "." and ".." are kept: whether
// they are listed is part of readdir's behaviour.
func getdents(fd, max, bufSize int) ([]dirEntry, error) {
	buf := make([]byte, bufSize)
	var out []dirEntry
	for max < 0 || len(out) < max {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
		for b := buf[:n]; len(b) > 0 && (max < 0 || len(out) < max); {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 20 || reclen > len(b) {
				return nil, fmt.Errorf("malformed dirent record (reclen %d)", reclen)
			}
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			out = append(out, dirEntry{
				dirent: dirent{name: string(name), ino: binary.NativeEndian.Uint64(b[0:8]), typ: b[18]},
				off:    int64(binary.NativeEndian.Uint64(b[8:16])),
			})
			b = b[reclen:]
		}
	}
	return out, nil
}

// listedString renders "name:type" entries read through a handle, sorted,
// with a count for names read more than once, leaving out the name except.
func listedString(names []string, except string) string {
	count := map[string]int{}
	for _, n := range names {
		if name, _, _ := strings.Cut(n, ":"); name != except {
			count[n]++
		}
	}
	out := slices.Sorted(maps.Keys(count))
	for i, n := range out {
		if count[n] > 1 {
			out[i] = fmt.Sprintf("%s(x%d)", n, count[n])
		}
	}
	return "[" + strings.Join(out, " ") + "]"
}

// direntString renders entries as sorted name:type pairs. The order of a
// directory listing is unspecified (the kernel's own differs between
// filesystems), and offsets and inode numbers are left to the walks; the
// set of names, each with its type, and duplicates are what must agree.
func direntString(ents []dirEntry) string {
	parts := make([]string, len(ents))
	for i, e := range ents {
		parts[i] = e.name + ":" + dtypeName(e.typ)
	}
	slices.Sort(parts)
	return "[" + strings.Join(parts, " ") + "]"
}
