// Command ovlbench times ovlmount against fuse-overlayfs and kernel
// overlayfs on the same layers and writes the results as markdown.
//
//	ovlbench [-rounds 3] [-impl ovlmount,fuse-overlayfs,kernel] [-only RE]
//	         [-taskset CPU] [-quick] [-fixtures DIR] [-bin bin/ovlmount] [-out FILE]
//
// It builds layer fixtures once under -fixtures (a copy of the Go
// distribution as the bottom layer, a middle layer of replacements,
// whiteouts and an opaque directory, a top layer with a big file, and a
// wide directory spread over all three), checks that every
// implementation shows the same tree, then runs each workload on a fresh
// mount of fresh upper and work directories, implementations interleaved
// in an order that rotates every round. It reports medians, ratios and
// the peak resident memory of the serving daemon. It needs root.
//
// It owns only measuring; it must not be run by tests, which assert no
// timings.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type bench struct {
	dir   string // fixtures
	run   string // this run's upper, work and mountpoint directories
	lower string // lowerdir value
	exe   string // this program, for workers
	bin   string // ovlmount
	sizes sizes
	impls []*impl
}

// runDir is where im's upper, work and mountpoint live.
func (b *bench) runDir(im *impl) string { return filepath.Join(b.run, im.name) }

func main() {
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		os.Exit(worker(os.Args[2:]))
	}
	if err := mainErr(); err != nil {
		fmt.Fprintf(os.Stderr, "ovlbench: %v\n", err)
		os.Exit(1)
	}
}

func mainErr() error {
	rounds := flag.Int("rounds", 5, "rounds; each runs every workload once per implementation")
	implList := flag.String("impl", "ovlmount,fuse-overlayfs,kernel", "implementations, comma-separated; fuse-overlayfs is left out when not installed")
	only := flag.String("only", "", "run only workloads whose name matches this regular expression")
	cpu := flag.Int("taskset", -1, "pin this program, the daemons and the workloads to this CPU")
	quickRun := flag.Bool("quick", false, "small sizes, for a smoke run (own fixture directory)")
	dir := flag.String("fixtures", "/var/tmp/ovlmount-bench", "directory for the layer fixtures (kept) and the mounts; use ext4 or xfs, not tmpfs")
	bin := flag.String("bin", "bin/ovlmount", "the ovlmount binary")
	before := flag.String("before", "", "an earlier ovlmount binary, measured as ovlmount-before (add it to -impl)")
	out := flag.String("out", "", "write the markdown report to this file too")
	flag.Parse()
	if flag.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if *cpu >= 0 {
		if err := pin(*cpu); err != nil {
			return err
		}
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (mounts, drop_caches, trusted xattrs)")
	}
	var re *regexp.Regexp
	if *only != "" {
		var err error
		if re, err = regexp.Compile(*only); err != nil {
			return fmt.Errorf("-only: %v", err)
		}
	}
	b := &bench{dir: *dir, sizes: full}
	if *quickRun {
		b.dir, b.sizes = *dir+"-quick", quick
	}
	var err error
	if b.exe, err = os.Executable(); err != nil {
		return err
	}
	absBin, err := filepath.Abs(*bin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(absBin); err != nil {
		return fmt.Errorf("-bin: %v", err)
	}
	b.bin = absBin
	absBefore := ""
	if *before != "" {
		if absBefore, err = filepath.Abs(*before); err != nil {
			return err
		}
		if _, err := os.Stat(absBefore); err != nil {
			return fmt.Errorf("-before: %v", err)
		}
	}
	all := implementations(absBin, absBefore)
	for _, name := range strings.Split(*implList, ",") {
		im := all[name]
		if im == nil {
			return fmt.Errorf("-impl: unknown implementation %q", name)
		}
		if name == "fuse-overlayfs" && !installed("fuse-overlayfs") {
			fmt.Fprintln(os.Stderr, "fuse-overlayfs is not installed: left out")
			continue
		}
		b.impls = append(b.impls, im)
	}
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return err
	}
	if b.dir, err = filepath.EvalSymlinks(b.dir); err != nil {
		return err
	}
	if fs := fsType(b.dir); fs == "tmpfs" {
		return fmt.Errorf("-fixtures %s is on tmpfs, which is not representative; use a disk file system", b.dir)
	}
	if b.lower, err = fixtures(b.dir, b.sizes); err != nil {
		return fmt.Errorf("fixtures: %v", err)
	}
	// Its own directory, so that two runs on one fixture directory do
	// not meet.
	if b.run, err = os.MkdirTemp(b.dir, "run"); err != nil {
		return err
	}
	defer os.RemoveAll(b.run)
	var wls []workload
	for _, w := range workloads() {
		if re == nil || re.MatchString(w.name) {
			wls = append(wls, w)
		}
	}
	if len(wls) == 0 {
		return fmt.Errorf("-only %q matches no workload", *only)
	}

	entries, err := b.verify()
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "every implementation shows the same tree of %d entries\n", entries)

	res := newResults(b.impls, wls)
	for r := range *rounds {
		order := slices.Clone(b.impls)
		// Rotate, so that no implementation always runs first or last
		// after another's writeback.
		k := r % len(order)
		order = append(order[k:], order[:k]...)
		for _, w := range wls {
			for _, im := range order {
				secs, rss, err := b.once(w, im)
				if err != nil {
					return fmt.Errorf("round %d, %s, %s: %v", r+1, w.name, im.name, err)
				}
				res.add(w.name, im.name, secs, rss)
				fmt.Fprintf(os.Stderr, "round %d %-13s %-15s %8.3fs  rss %s\n", r+1, w.name, im.name, secs, mib(rss))
			}
		}
	}
	md := res.markdown(b, wls, entries, *rounds, *cpu, commandLine())
	fmt.Print(md)
	if *out != "" {
		return os.WriteFile(*out, []byte(md), 0o644)
	}
	return nil
}

// once runs w on a fresh mount of im and returns the seconds it took and
// the daemon's peak resident memory.
func (b *bench) once(w workload, im *impl) (float64, int64, error) {
	m, err := mountFresh(im, b.lower, b.runDir(im), w.fuseOpts)
	if err != nil {
		return 0, 0, err
	}
	secs, err := func() (float64, error) {
		if w.setup != nil {
			if err := w.setup(b, m.mnt); err != nil {
				return 0, fmt.Errorf("setup: %v", err)
			}
		}
		if !w.warm {
			if err := dropCaches(); err != nil {
				return 0, err
			}
		}
		start := time.Now()
		err := w.run(b, m.mnt)
		return time.Since(start).Seconds(), err
	}()
	rss := m.peakRSS()
	if uerr := m.unmount(); err == nil {
		err = uerr
	}
	return secs, rss, err
}

// pin makes this program run on cpu only, by running it again under
// taskset(1): every thread, and every process it starts, inherits that.
func pin(cpu int) error {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err == nil && set.Count() == 1 && set.IsSet(cpu) {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		return err
	}
	args := append([]string{"taskset", "-c", strconv.Itoa(cpu), exe}, os.Args[1:]...)
	return syscall.Exec(taskset, args, os.Environ())
}

// commandLine is the command that produced this report, as typed.
func commandLine() string {
	args := append([]string{filepath.Join("bin", filepath.Base(os.Args[0]))}, os.Args[1:]...)
	return strings.Join(args, " ")
}
