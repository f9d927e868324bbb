package main

// ovlmount check: an offline check of a layer stack that no overlay
// mounts, with fsck's exit codes. The checking is package check's; this
// file reads the command line, refuses a stack in use, and prints.

import (
	"fmt"
	"slices"
	"strings"

	"github.com/ovlmount/ovlmount/check"
	"github.com/ovlmount/ovlmount/internal/mountinfo"
)

// fsck's exit codes, which may be or-ed (fsck(8)).
const (
	fsckCorrected   = 1
	fsckUncorrected = 4
	fsckOperational = 8
	fsckUsage       = 16
)

const checkUsage = `usage: ovlmount check [--repair] -o lowerdir=L1[:L2...][::DATA...][,upperdir=U,workdir=W]

Checks a layer stack that no overlay mounts, as a kernel overlay mount of
it would read it, and prints a line per problem: the path, and what is
wrong. With --repair it also fixes what is safe to fix (leftovers in the
work directory, index entries the kernel would remove at mount, whiteouts
of the wrong form in the upper layer) and says what it did. Other mount
options, ovlmount's or the kernel's, are accepted and change nothing.

Exit status, as fsck's: 0 no problem, 1 problems all repaired, 4 problems
left, 8 operational error (a stack in use by a live mount, a directory
that cannot be read), 16 usage error.`

// kernelOptions are the kernel overlay's mount options (fs/overlayfs
// params.c) that ovlmount's table lacks: a check takes a kernel mount's
// options as they are.
var kernelOptions = []string{"lowerdir+", "datadir+", "redirect_dir", "index", "uuid", "nfs_export", "userxattr", "metacopy", "verity"}

// isCheckCommand reports whether args are the check command's: "check"
// and no positional argument after it. mount.fuse3 runs a mount as
// ovlmount SOURCE MOUNTPOINT -o OPTS, so one whose source is called check
// has a mountpoint, and is a mount.
func isCheckCommand(args []string) bool {
	if len(args) == 0 || args[0] != "check" {
		return false
	}
	for i := 1; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-o":
			i++
		case !strings.HasPrefix(a, "-") || a == "-":
			return false
		}
	}
	return true
}

// checkCommand runs ovlmount check ARGS and returns its exit status.
func checkCommand(args []string) int {
	usageError := func(format string, a ...any) int {
		logError("check: "+format+"\n%s", append(a, checkUsage)...)
		return fsckUsage
	}
	repair := false
	var opts []string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "--repair":
			repair = true
		case a == "-h" || a == "--help":
			fmt.Println(checkUsage)
			return 0
		case a == "-o":
			if i+1 == len(args) {
				return usageError("-o needs an argument")
			}
			i++
			opts = append(opts, splitOptions(args[i])...)
		case strings.HasPrefix(a, "-o"):
			opts = append(opts, splitOptions(a[2:])...)
		default:
			return usageError("unknown flag %q", a)
		}
	}
	s, err := checkStack(opts)
	if err != nil {
		return usageError("%v", err)
	}
	if err := resolveStack(&s); err != nil {
		logError("check: %v", err)
		return fsckOperational
	}
	if what, busy := check.InUse(s); busy {
		logError("check: %s; unmount it first: a live mount changes its layers behind a check's back", what)
		return fsckOperational
	}
	res, err := check.Run(s, check.Options{Repair: repair, Digests: true}, func(f check.Finding) {
		fmt.Println(f)
	})
	for _, sk := range res.Skipped {
		logWarning("check: not checked: %s", sk)
	}
	code := 0
	if res.Repaired > 0 {
		code |= fsckCorrected
	}
	if res.Found > res.Repaired {
		code |= fsckUncorrected
	}
	switch {
	case err != nil:
		logError("check: %v", err)
		code |= fsckOperational
	case res.Found == 0:
		fmt.Println("ovlmount check: no problem found")
	default:
		fmt.Printf("ovlmount check: %d problems, %d repaired, %d left\n", res.Found, res.Repaired, res.Found-res.Repaired)
	}
	return code
}

// checkStack reads the stack from the -o options: lowerdir (data-only
// layers after "::", as the kernel takes them), upperdir, workdir. Other
// options are ovlmount's or the kernel's, and are ignored; an unknown one
// is ignored with a warning, unless it is a typo of a known one.
func checkStack(opts []string) (check.Stack, error) {
	var s check.Stack
	lower := ""
	for _, o := range opts {
		name, value, _ := strings.Cut(o, "=")
		switch {
		case name == "lowerdir":
			lower = value
		case name == "upperdir":
			s.Upper = value
		case name == "workdir":
			s.Work = value
		case lookupOption(name) != nil || slices.Contains(kernelOptions, name):
		case suggestOption(name) != "":
			return s, fmt.Errorf("unknown option %q: did you mean %s?", o, suggestOption(name))
		default:
			logWarning("check: unknown option %q ignored", o)
		}
	}
	var err error
	if s.Lower, s.Data, err = mountinfo.SplitLower(lower); err != nil {
		return s, fmt.Errorf("option lowerdir: %v", err)
	}
	switch {
	case len(s.Lower) == 0:
		return s, fmt.Errorf("missing option lowerdir=")
	case s.Upper != "" && s.Work == "":
		return s, fmt.Errorf("option upperdir needs workdir")
	case s.Work != "" && s.Upper == "":
		return s, fmt.Errorf("option workdir needs upperdir")
	}
	return s, nil
}

// resolveStack makes every directory of s absolute and symlink-free, and
// checks that it is one.
func resolveStack(s *check.Stack) error {
	var err error
	for i := range s.Lower {
		if s.Lower[i], err = dirPath("lowerdir", s.Lower[i]); err != nil {
			return err
		}
	}
	for i := range s.Data {
		if s.Data[i], err = dirPath("lowerdir", s.Data[i]); err != nil {
			return err
		}
	}
	if s.Upper != "" {
		if s.Upper, err = dirPath("upperdir", s.Upper); err != nil {
			return err
		}
		if s.Work, err = dirPath("workdir", s.Work); err != nil {
			return err
		}
	}
	return nil
}
