package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// viewOf describes everything the mount mnt shows that an operation could
// change: names, types, permissions, owners, sizes and contents, link
// targets, devices, link counts of non-directories, xattrs, and mtimes
// set by the test (before 2010; those set by the clock differ between
// runs).
func viewOf(t *testing.T, mnt string) string {
	t.Helper()
	var b strings.Builder
	testenv.Must(t, filepath.WalkDir(mnt, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(mnt, p)
		fmt.Fprintf(&b, "%s %o %d:%d", rel, st.Mode, st.Uid, st.Gid)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			data, err := readUnpolled(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %d %x", len(data), sha256.Sum256(data))
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " -> %s", target)
		case unix.S_IFCHR, unix.S_IFBLK:
			fmt.Fprintf(&b, " dev %d", st.Rdev)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			fmt.Fprintf(&b, " nlink %d", st.Nlink)
		}
		if mtime := time.Unix(st.Mtim.Unix()); mtime.Year() < 2010 {
			fmt.Fprintf(&b, " mtime %s", mtime.UTC().Format(time.DateOnly))
		}
		buf := make([]byte, 4096)
		n, _ := unix.Llistxattr(p, buf)
		names := strings.Split(strings.TrimSuffix(string(buf[:max(n, 0)]), "\x00"), "\x00")
		slices.Sort(names)
		for _, name := range names {
			if name == "" {
				continue
			}
			v := make([]byte, 4096)
			m, _ := unix.Lgetxattr(p, name, v)
			fmt.Fprintf(&b, " %s=%q", name, v[:max(m, 0)])
		}
		b.WriteByte('\n')
		return nil
	}))
	return b.String()
}

// clientEnv makes the test binary clientMain: one operation, then exit.
const clientEnv = "OVLMOUNT_TEST_CLIENT"

// client runs op with clientMain in directory dir, at most 15 seconds,
// and returns the errno the operation failed with, or another error.
func client(dir string, op []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], op...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), clientEnv+"=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() > 1 && exit.ExitCode() < errnoExit {
		return syscall.Errno(exit.ExitCode())
	}
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// errnoExit bounds the exit statuses clientMain uses for errnos.
const errnoExit = 200

// clientMain makes the one system call args names, in the current
// directory, and returns the exit status: the errno it failed with, or 1
// (EPERM, or another error):
//
//	create NAME MODE, mkdir NAME MODE, mknod NAME c|p MAJOR MINOR,
//	symlink TARGET NAME, link OLD NEW, rename OLD NEW, rmdir NAME,
//	unlink NAME, chmod NAME MODE, chown NAME UID GID, truncate NAME SIZE,
//	utimes NAME SECONDS, setxattr NAME KEY VALUE, removexattr NAME KEY,
//	write NAME DATA (appends), opentrunc NAME, as UID:GID OP...
func clientMain(args []string) int {
	err := clientOp(args)
	if err == nil {
		return 0
	}
	fmt.Fprintf(os.Stderr, "%q: %v\n", args, err)
	if errno, ok := err.(syscall.Errno); ok && errno > 1 && errno < errnoExit {
		return int(errno)
	}
	return 1
}

func clientOp(a []string) error {
	num := func(s string, base int) int {
		n, err := strconv.ParseInt(s, base, 64)
		if err != nil {
			panic(err)
		}
		return int(n)
	}
	switch a[0] {
	case "as":
		uid, gid, _ := strings.Cut(a[1], ":")
		if err := unix.Setresgid(num(gid, 10), num(gid, 10), num(gid, 10)); err != nil {
			return err
		}
		if err := unix.Setresuid(num(uid, 10), num(uid, 10), num(uid, 10)); err != nil {
			return err
		}
		return clientOp(a[2:])
	case "create":
		fd, err := unix.Open(a[1], unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, uint32(num(a[2], 8)))
		if err == nil {
			unix.Close(fd)
		}
		return err
	case "mkdir":
		return unix.Mkdir(a[1], uint32(num(a[2], 8)))
	case "mknod":
		mode := uint32(unix.S_IFIFO | 0o644)
		if a[2] == "c" {
			mode = unix.S_IFCHR | 0o666
		}
		return unix.Mknod(a[1], mode, int(unix.Mkdev(uint32(num(a[3], 10)), uint32(num(a[4], 10)))))
	case "symlink":
		return unix.Symlink(a[1], a[2])
	case "link":
		return unix.Link(a[1], a[2])
	case "rename":
		return unix.Rename(a[1], a[2])
	case "rmdir":
		return unix.Rmdir(a[1])
	case "unlink":
		return unix.Unlink(a[1])
	case "chmod":
		return unix.Chmod(a[1], uint32(num(a[2], 8)))
	case "chown":
		return unix.Lchown(a[1], num(a[2], 10), num(a[3], 10))
	case "truncate":
		return unix.Truncate(a[1], int64(num(a[2], 10)))
	case "utimes":
		ts := unix.NsecToTimespec(int64(num(a[2], 10)) * 1e9)
		return unix.UtimesNanoAt(unix.AT_FDCWD, a[1], []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	case "setxattr":
		return unix.Lsetxattr(a[1], a[2], []byte(a[3]), 0)
	case "removexattr":
		return unix.Lremovexattr(a[1], a[2])
	case "write", "opentrunc", "openwrite":
		flags := unix.O_WRONLY | unix.O_APPEND
		if a[0] == "opentrunc" {
			flags = unix.O_WRONLY | unix.O_TRUNC
		}
		fd, err := unix.Open(a[1], flags|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if a[0] == "write" {
			_, err = unix.Write(fd, []byte(a[2]))
		}
		return err
	}
	return fmt.Errorf("unknown operation %q", a[0])
}

// readUnpolled returns the contents of regular file p, read without the
// os package. os registers every file it opens with epoll, through a
// runtime call that keeps its P; on a FUSE file epoll_ctl waits for the
// daemon's answer to FUSE_POLL. While the daemon is stopped by a tracer
// goroutine of this process (crashops_test.go), a garbage collection
// starting then waits for that P, the tracer for the collection, and
// the test hangs.
func readUnpolled(p string) ([]byte, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	defer unix.Close(fd)
	var data []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: p, Err: err}
		}
		if n == 0 {
			return data, nil
		}
		data = append(data, buf[:n]...)
	}
}
