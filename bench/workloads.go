package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// workload is one timed operation on a fresh mount. setup runs first,
// untimed; then, unless warm, the caches are dropped; then run is timed.
type workload struct {
	name string
	what string // for the report
	warm bool
	// setup and run get the mount and the fixture directory.
	setup func(b *bench, mnt string) error
	run   func(b *bench, mnt string) error
	// fuseOpts are options a FUSE implementation is mounted with for
	// this workload.
	fuseOpts string
}

// requests is how many requests the round-trip workloads make.
const requests = 50000

// relists is how many listings readdir-warm times.
const relists = 10

// parallelProcs is how many processes the parallel workload starts.
const parallelProcs = 4

// parallelReads are the subtrees the parallel workload's processes read,
// one each.
var parallelReads = [parallelProcs]string{"go/src/cmd", "go/src/runtime", "go/src/crypto", "go/test"}

func workloads() []workload {
	return []workload{
		// One request each, answered from the daemon's memory: what a
		// request costs through each FUSE implementation (the kernel's
		// overlay makes none).
		{name: "rt-getattr", what: fmt.Sprintf("%d fstat of an open file, attributes not cached (timeout=0): one GETATTR each", requests),
			warm: true, fuseOpts: "timeout=0",
			run: func(b *bench, mnt string) error {
				return b.self("roundtrips", "getattr", filepath.Join(mnt, bigFile), strconv.Itoa(requests))
			}},
		{name: "rt-getxattr", what: fmt.Sprintf("%d getxattr of an absent xattr: one GETXATTR each", requests), warm: true,
			run: func(b *bench, mnt string) error {
				return b.self("roundtrips", "getxattr", filepath.Join(mnt, bigFile), strconv.Itoa(requests))
			}},
		{name: "stat-cold", what: "lstat every entry of the merged tree, caches dropped",
			run: func(b *bench, mnt string) error { return b.self("stat", mnt) }},
		{name: "stat-warm", what: "the same walk again right after one", warm: true,
			setup: func(b *bench, mnt string) error { return b.self("stat", mnt) },
			run:   func(b *bench, mnt string) error { return b.self("stat", mnt) }},
		{name: "stat-huge", what: "lstat every entry of the huge directory (ls -l), caches dropped",
			run: func(b *bench, mnt string) error { return b.self("stat", filepath.Join(mnt, hugeDir)) }},
		{name: "readdir", what: "list the names of the merged wide directory",
			run: func(b *bench, mnt string) error { return b.self("readdir", filepath.Join(mnt, wideDir)) }},
		// One warm listing takes less time than starting the process
		// that makes it: ten show the file system's part.
		{name: "readdir-warm", what: fmt.Sprintf("%d listings of it in one process right after one", relists), warm: true,
			setup: func(b *bench, mnt string) error { return b.self("readdir", filepath.Join(mnt, wideDir)) },
			run: func(b *bench, mnt string) error {
				return b.self("relist", filepath.Join(mnt, wideDir), strconv.Itoa(relists))
			}},
		{name: "read-all", what: "read every file of the source tree",
			run: func(b *bench, mnt string) error { return b.self("read", filepath.Join(mnt, srcDir)) }},
		{name: "seq-read", what: "dd the big lower file to /dev/null, 1 MiB blocks",
			run: func(b *bench, mnt string) error {
				return b.cmd("dd", "if="+filepath.Join(mnt, bigFile), "of=/dev/null", "bs=1M")
			}},
		{name: "seq-write", what: "dd a new file as big as the big one from /dev/zero, 1 MiB blocks",
			run: func(b *bench, mnt string) error {
				return b.cmd("dd", "if=/dev/zero", "of="+filepath.Join(mnt, "written"), "bs=1M",
					"count="+strconv.FormatInt(b.sizes.big>>20, 10))
			}},
		{name: "copy-up", what: "open the big lower file for writing and change one byte",
			run: func(b *bench, mnt string) error { return b.self("copyup", filepath.Join(mnt, bigFile)) }},
		{name: "copy-up+sync", what: "the same, then sync",
			run: func(b *bench, mnt string) error {
				if err := b.self("copyup", filepath.Join(mnt, bigFile)); err != nil {
					return err
				}
				return b.cmd("sync")
			}},
		{name: "untar", what: "tar -xf of the small-file archive into a new directory",
			setup: func(b *bench, mnt string) error { return os.Mkdir(filepath.Join(mnt, "untar"), 0o755) },
			run: func(b *bench, mnt string) error {
				return b.cmd("tar", "-xf", filepath.Join(b.dir, tarName), "-C", filepath.Join(mnt, "untar"))
			}},
		{name: "create", what: "create small files of 100 bytes in directories of 100",
			setup: func(b *bench, mnt string) error { return os.Mkdir(filepath.Join(mnt, "created"), 0o755) },
			run: func(b *bench, mnt string) error {
				return b.self("create", filepath.Join(mnt, "created"), strconv.Itoa(b.sizes.files))
			}},
		{name: "rm-rf", what: "rm -rf of a lower subtree",
			run: func(b *bench, mnt string) error { return b.cmd("rm", "-rf", filepath.Join(mnt, rmDir)) }},
		{name: "parallel", what: fmt.Sprintf("%d processes at once, each: stat walk of the source tree, read a subtree, create a quarter of the small files", parallelProcs),
			run: func(b *bench, mnt string) error {
				errs := make([]error, parallelProcs)
				var wg sync.WaitGroup
				for i := range parallelProcs {
					wg.Go(func() {
						errs[i] = b.self("mixed", filepath.Join(mnt, srcDir), filepath.Join(mnt, parallelReads[i]),
							filepath.Join(mnt, fmt.Sprintf("par%d", i)), strconv.Itoa(b.sizes.files/parallelProcs))
					})
				}
				wg.Wait()
				for _, err := range errs {
					if err != nil {
						return err
					}
				}
				return nil
			}},
	}
}

// cmd runs a program and returns an error with its output if it fails.
func (b *bench) cmd(name string, args ...string) error {
	c := exec.Command(name, args...)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

// self runs this program as a worker (see worker.go).
func (b *bench) self(args ...string) error {
	return b.cmd(b.exe, append([]string{"worker"}, args...)...)
}
