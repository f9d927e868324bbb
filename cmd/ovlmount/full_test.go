package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestUpperFull fills the filesystem of the upper layer and workdir, a
// small tmpfs or a small ext4 on a loop device, through the mount: first
// its blocks, then its inodes. Every operation that needs what is missing
// must fail with ENOSPC, never EIO, leave the upper layer as it was and
// workdir/work empty, and lose nothing (the lower files still show, the
// upper data written before is whole); once space is freed through the
// mount, the same operations succeed, and a new mount shows their
// results.
func TestUpperFull(t *testing.T) {
	testenv.RequireMount(t)
	for _, kind := range []string{"tmpfs", "ext4"} {
		t.Run(kind, func(t *testing.T) {
			d := t.TempDir()
			lower := d + "/lower"
			testenv.MakeTree(t, lower, "f small small", "f victim v", "f cu c", "f dir/f f", "f d2/g g")
			big := bytes.Repeat([]byte("big lower data\n"), 64<<10) // ~1 MiB
			testenv.Must(t, os.WriteFile(filepath.Join(lower, "big"), big, 0o644))
			lowerSum := testenv.TreeSum(t, lower)
			fsdir := smallFS(t, kind, d)
			upper, work, mnt := fsdir+"/upper", fsdir+"/work", d+"/mnt"
			for _, p := range []string{upper, work, mnt} {
				testenv.Must(t, os.MkdirAll(p, 0o755))
			}
			opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
			mountDaemon(t, mnt, "-o", opts, mnt)
			m := func(name string) string { return filepath.Join(mnt, name) }
			keep := []byte("written before the filesystem filled up\n")
			testenv.Must(t, os.WriteFile(m("keep"), keep, 0o644))

			// fails runs op, which needs space the upper filesystem
			// lacks, and checks how it failed and what it left.
			fails := func(what string, op func() error) {
				t.Helper()
				before := upperNames(t, upper)
				if err := op(); !errors.Is(err, unix.ENOSPC) {
					t.Errorf("%s on a full upper filesystem: %v, want ENOSPC", what, err)
				}
				if after := upperNames(t, upper); after != before {
					t.Errorf("%s changed the upper layer although it failed:\nbefore:\n%safter:\n%s", what, before, after)
				}
				if names := testenv.DirNames(t, work+"/work"); len(names) != 0 {
					t.Errorf("%s left %v in workdir/work", what, names)
				}
			}
			intact := func() {
				t.Helper()
				for name, want := range map[string][]byte{"big": big, "small": []byte("small"), "victim": []byte("v"), "dir/f": []byte("f"), "keep": keep} {
					if got, err := os.ReadFile(m(name)); err != nil || !bytes.Equal(got, want) {
						t.Errorf("%s reads %d bytes (%v), want its %d bytes", name, len(got), err, len(want))
					}
				}
			}

			// Blocks: a file through the mount until the filesystem is
			// full; the write that finds it full fails with ENOSPC.
			filler, err := os.Create(m("filler"))
			testenv.Must(t, err)
			chunk := make([]byte, 64<<10)
			var werr error
			for written := 0; werr == nil && written < 1<<30; written += len(chunk) {
				_, werr = filler.Write(chunk)
			}
			filler.Close()
			if !errors.Is(werr, unix.ENOSPC) {
				t.Fatalf("filling the upper filesystem: %v, want ENOSPC", werr)
			}
			fails("copy-up for writing", func() error {
				f, err := os.OpenFile(m("big"), os.O_WRONLY|os.O_APPEND, 0)
				if err == nil {
					f.Close()
				}
				return err
			})
			fails("rename of a lower file (copy-up)", func() error { return os.Rename(m("big"), m("big2")) })
			fails("link of a lower file (copy-up)", func() error { return os.Link(m("big"), m("big3")) })
			fails("truncate of a lower file (copy-up)", func() error { return os.Truncate(m("big"), 10) })
			size := func() int64 {
				fi, err := os.Stat(upper + "/keep")
				testenv.Must(t, err)
				return fi.Size()
			}
			// A write: the part of it that fits goes in and is
			// counted, as write(2) on the kernel's overlay returns a
			// short count; the rest fails with ENOSPC (os.File.Write
			// goes on after a short count); the data before it intact.
			sizeBefore := size()
			wf, err := os.OpenFile(m("keep"), os.O_WRONLY|os.O_APPEND, 0)
			testenv.Must(t, err)
			n, err := wf.Write(bytes.Repeat([]byte{'w'}, 1<<20))
			if !errors.Is(err, unix.ENOSPC) {
				t.Errorf("write on a full upper filesystem: %v, want ENOSPC", err)
			}
			wf.Close()
			if got := size(); got != sizeBefore+int64(n) {
				t.Errorf("keep grew from %d to %d bytes in a write that said it wrote %d", sizeBefore, got, n)
			}
			testenv.Must(t, os.Truncate(m("keep"), sizeBefore))
			intact()
			testenv.Must(t, os.Remove(m("filler")))

			// A whiteout for mkdir over, and a copied-up file to rename
			// away, made while inodes are free.
			testenv.Must(t, os.RemoveAll(m("dir")))
			testenv.Must(t, os.Truncate(m("cu"), 1))
			// Inodes: empty files through the mount until there is no
			// inode left; the create that finds none fails with ENOSPC.
			var cerr error
			var made []string
			for i := 0; cerr == nil && i < 1<<16; i++ {
				name := m(fmt.Sprintf("inode%d", i))
				var f *os.File
				if f, cerr = os.Create(name); cerr == nil {
					f.Close()
					made = append(made, name)
				}
			}
			if !errors.Is(cerr, unix.ENOSPC) {
				t.Fatalf("using up the upper filesystem's inodes: %v after %d files, want ENOSPC", cerr, len(made))
			}
			inodeOps := []struct {
				what string
				op   func() error
			}{
				{"create", func() error { return os.WriteFile(m("new"), nil, 0o644) }},
				{"mkdir", func() error { return os.Mkdir(m("newdir"), 0o755) }},
				{"mkdir over a whiteout", func() error { return os.Mkdir(m("dir"), 0o755) }},
				{"symlink", func() error { return os.Symlink("small", m("newlink")) }},
				{"mknod", func() error { return unix.Mkfifo(m("newfifo"), 0o644) }},
				{"copy-up of a small file", func() error { return os.Chmod(m("small"), 0o600) }},
				{"copy-up of a directory", func() error { return os.Chmod(m("d2"), 0o700) }},
				{"rename of a lower file", func() error { return os.Rename(m("small"), m("moved")) }},
				{"unlink of a lower file (whiteout)", func() error { return os.Remove(m("victim")) }},
				{"rename of a copied-up file (whiteout)", func() error { return os.Rename(m("cu"), m("cu2")) }},
			}
			if kind == "tmpfs" {
				// tmpfs charges xattrs to its inode space (what is left of it
				// is less than an inode, 1 KiB).
				inodeOps = append(inodeOps, struct {
					what string
					op   func() error
				}{"setxattr", func() error { return unix.Setxattr(m("keep"), "user.k", bytes.Repeat([]byte{1}, 2000), 0) }})
			}
			for _, o := range inodeOps {
				fails(o.what, o.op)
			}
			for name, want := range map[string][]byte{"big": big, "small": []byte("small"), "victim": []byte("v"), "keep": keep} {
				if got, err := os.ReadFile(m(name)); err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s reads %d bytes (%v), want its %d bytes", name, len(got), err, len(want))
				}
			}
			for _, name := range made {
				testenv.Must(t, os.Remove(name))
			}

			// Space again: the same operations succeed.
			f, err := os.OpenFile(m("big"), os.O_WRONLY|os.O_APPEND, 0)
			testenv.Must(t, err)
			_, err = f.Write([]byte("more\n"))
			testenv.Must(t, err)
			testenv.Must(t, f.Close())
			for _, o := range inodeOps {
				if err := o.op(); err != nil {
					t.Errorf("%s once space is freed: %v", o.what, err)
				}
			}
			testenv.Must(t, os.Rename(m("big"), m("big2")))
			if got, err := os.ReadFile(m("big2")); err != nil || !bytes.Equal(got, append(big, "more\n"...)) {
				t.Errorf("big2 reads %d bytes (%v) after the copy-up and the write", len(got), err)
			}
			want := viewOf(t, mnt)
			umount(t, mnt)
			mountDaemon(t, mnt, "-o", opts, mnt)
			if got := viewOf(t, mnt); got != want {
				t.Errorf("a new mount shows\n%s\nthe mount that wrote it showed\n%s", got, want)
			}
			if names := testenv.DirNames(t, work+"/work"); len(names) != 0 {
				t.Errorf("workdir/work holds %v", names)
			}
			if testenv.TreeSum(t, lower) != lowerSum {
				t.Error("the lower layer changed")
			}
		})
	}
}

// smallFS mounts a small filesystem of kind (tmpfs: 2 MiB, 200 inodes;
// ext4: an 8 MiB image on a loop device, 64 inodes, no journal, no blocks
// reserved for root) on a new directory in d, unmounted at the end of
// the test, and returns the directory.
func smallFS(t *testing.T, kind, d string) string {
	t.Helper()
	dir := d + "/" + kind
	testenv.Must(t, os.Mkdir(dir, 0o755))
	switch kind {
	case "tmpfs":
		testenv.Must(t, unix.Mount("tmpfs", dir, "tmpfs", 0, "size=2m,nr_inodes=200"))
	case "ext4":
		img := d + "/ext4.img"
		testenv.RequireProgram(t, "mkfs.ext4", "e2fsprogs")
		if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-N", "64", "-m", "0", "-O", "^has_journal", img, "8M").CombinedOutput(); err != nil {
			t.Fatalf("mkfs.ext4: %v\n%s", err, out)
		}
		// mount -o loop attaches the device with autoclear: it goes
		// with the filesystem's last unmount.
		if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
			t.Fatalf("mount -o loop: %v\n%s", err, out)
		}
	}
	t.Cleanup(func() { testenv.Unmount(t, dir) })
	return dir
}

// upperNames lists every path in the upper layer with its type and size.
func upperNames(t *testing.T, upper string) string {
	t.Helper()
	var b strings.Builder
	testenv.Must(t, filepath.WalkDir(upper, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		size := fi.Size()
		if fi.IsDir() {
			size = 0
		}
		fmt.Fprintf(&b, "%s %v %d\n", strings.TrimPrefix(p, upper), fi.Mode(), size)
		return nil
	}))
	return b.String()
}
