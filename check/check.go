// Package check owns the offline check of an overlay layer stack: it reads
// the upper, lower and work directories of a stack that is not mounted and
// reports, one Finding each, what a kernel overlay mount of them would
// refuse, ignore, clean up or show wrongly; with Options.Repair it also
// fixes what is safe to fix: leftovers in the work directory, index entries
// the kernel would remove at mount, whiteouts of the wrong form in the
// upper layer.
//
// The formats and the kernel's reactions to them come from fs/overlayfs:
// lookups as namei.c's ovl_lookup, the xattr formats as util.c reads them,
// the index as ovl_verify_index and ovl_indexdir_cleanup, the work
// directory as ovl_workdir_cleanup.
//
// It must never write to a lower layer, never delete what a mount could
// show, and never follow a symlink stored in a layer: every access is
// relative to a directory fd, one name at a time. Whether a stack is in
// use by a live mount is InUse's to say and the caller's to act on; the
// package knows nothing of FUSE or of mount options.
package check

import (
	"fmt"
	"os"
	"strings"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// Stack names the directories of a layer stack, as a mount's options do.
// Paths are absolute.
type Stack struct {
	Lower []string // lowerdir, top first
	Data  []string // data-only lower layers (after "::"), reached only through metacopy redirects
	Upper string   // upperdir; "" for none
	Work  string   // workdir; set if and only if Upper is
}

// Options says how to check.
type Options struct {
	// Repair fixes what is safe to fix, and says what it did.
	Repair bool
	// Digests checks the fs-verity digests metacopy xattrs record
	// against their data, which reads in full each data file that has no
	// fs-verity of its own.
	Digests bool
}

// Finding is one problem: the host path of the object and what is wrong,
// with the kernel's reaction to it.
type Finding struct {
	Path    string
	Problem string
	// Repair says what was done about it; "" when it was left as it is.
	Repair string
}

// String formats f as the one line ovlmount check prints.
func (f Finding) String() string {
	s := f.Path + ": " + f.Problem
	if f.Repair != "" {
		s += "; " + f.Repair
	}
	return s
}

// Result sums up a check.
type Result struct {
	Found    int // findings reported
	Repaired int // of which repaired
	// Skipped names the checks that could not be made here, and why.
	Skipped []string
}

// layer is one directory of the stack, opened.
type layer struct {
	*layers.Layer
	path string
	role string // "upperdir", "lowerdir" or "datadir", for messages
	data bool
	id   devIno // of its root
	uuid [16]byte
}

// checker holds what one Run shares.
type checker struct {
	opts   Options
	report func(Finding)
	res    Result

	// layers are the upper (if any), the lowers and the data-only
	// layers, in the kernel's order; upper is layers[0] or nil.
	layers []*layer
	upper  *layer
	// workdir is an O_PATH fd of the workdir, -1 without one.
	workdir  int
	workPath string

	// index is workdir/index, nil without one.
	index *indexDir
	// decode is false where file handles cannot be opened (no
	// CAP_DAC_READ_SEARCH): origins are then not resolved.
	decode bool
	ns     namespaces
	temps  int // temporaries made, for unique names
}

// Run checks the stack s and calls report with each finding as it is made,
// repaired already if o.Repair and it is safe. The error is an operational
// one (a layer that cannot be opened or read); what was found before it
// has been reported.
func Run(s Stack, o Options, report func(Finding)) (Result, error) {
	c := &checker{opts: o, report: report, workdir: -1}
	defer c.close()
	if err := c.open(s); err != nil {
		return c.res, err
	}
	if !c.checkLayout(s) {
		// Layers inside each other: walking one would walk the other
		// too, and a repair could write to a lower layer.
		return c.res, nil
	}
	c.probe()
	if err := c.readIndex(); err != nil {
		return c.res, err
	}
	for i, l := range c.layers {
		if l.data {
			// Never merged: nothing in them is a marker.
			continue
		}
		if err := c.walkLayer(i); err != nil {
			return c.res, err
		}
	}
	if err := c.checkIndex(); err != nil {
		return c.res, err
	}
	if err := c.checkWork(); err != nil {
		return c.res, err
	}
	c.checkNamespaces()
	return c.res, nil
}

// open opens every directory of s: the upper layer writable only when
// repairing, lower layers as package layers does (read-only clones).
func (c *checker) open(s Stack) error {
	add := func(path, role string, upper, data bool) error {
		l, err := layers.Open(path, len(c.layers), upper)
		if err != nil {
			return fmt.Errorf("%s %v", role, err)
		}
		cl := &layer{Layer: l, path: path, role: role, data: data}
		c.layers = append(c.layers, cl)
		if cl.id, err = fdID(l.Root()); err != nil {
			return fmt.Errorf("%s %s: %v", role, path, err)
		}
		// A root only searchable (O_PATH) has no uuid to read: only
		// origins with a null one then resolve on it.
		cl.uuid, _ = layers.FSUUID(l.Root())
		if role == "upperdir" {
			c.upper = cl
		}
		return nil
	}
	if s.Upper != "" {
		// Writable only to repair: a check alone reads the upper layer
		// through a read-only clone, as the lower ones.
		if err := add(s.Upper, "upperdir", c.opts.Repair, false); err != nil {
			return err
		}
		fd, err := unix.Open(s.Work, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("workdir %s: %v", s.Work, err)
		}
		c.workdir, c.workPath = fd, s.Work
	}
	for _, p := range s.Lower {
		if err := add(p, "lowerdir", false, false); err != nil {
			return err
		}
	}
	for _, p := range s.Data {
		if err := add(p, "datadir", false, true); err != nil {
			return err
		}
	}
	return nil
}

func (c *checker) close() {
	for _, l := range c.layers {
		l.Close()
	}
	if c.workdir >= 0 {
		unix.Close(c.workdir)
	}
	c.index.close()
}

// find reports a finding that is left as it is.
func (c *checker) find(path, format string, a ...any) {
	c.res.Found++
	c.report(Finding{Path: path, Problem: fmt.Sprintf(format, a...)})
}

// fixed reports a finding and what repair did about it: done is what was
// done, or err why it failed.
func (c *checker) fixed(path, problem, done string, err error) {
	c.res.Found++
	f := Finding{Path: path, Problem: problem}
	if err != nil {
		f.Problem += fmt.Sprintf("; repair failed: %v", err)
	} else {
		f.Repair = done
		c.res.Repaired++
	}
	c.report(f)
}

// skip records a check that cannot be made here.
func (c *checker) skip(format string, a ...any) {
	c.res.Skipped = append(c.res.Skipped, fmt.Sprintf(format, a...))
}

// probe finds what this process may read: trusted.* xattrs need
// CAP_SYS_ADMIN in the initial user namespace, file handles
// CAP_DAC_READ_SEARCH.
func (c *checker) probe() {
	if !initialRoot() {
		c.skip("trusted.overlay.* xattrs (they need CAP_SYS_ADMIN); user.overlay.* ones are checked")
	}
	l := c.layers[0]
	h, _, err := unix.NameToHandleAt(l.Root(), "", unix.AT_EMPTY_PATH)
	if err == nil {
		var fd int
		fd, err = unix.OpenByHandleAt(l.Root(), h, unix.O_PATH|unix.O_CLOEXEC)
		if err == nil {
			unix.Close(fd)
		}
	}
	c.decode = err == nil
	if !c.decode {
		c.skip("origins and index entries: file handles cannot be opened here (%v; they need CAP_DAC_READ_SEARCH)", err)
	}
}

// initialRoot reports whether this process has root's capabilities over
// the host: euid 0 outside any user namespace.
func initialRoot() bool {
	if unix.Geteuid() != 0 {
		return false
	}
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295"
}

// below returns the indexes of the layers the kernel merges below layer
// i: the lower layers after it, data-only layers excluded.
func (c *checker) below(i int) []int {
	var out []int
	for j := i + 1; j < len(c.layers); j++ {
		if !c.layers[j].data {
			out = append(out, j)
		}
	}
	return out
}

// lowerLayers returns the indexes of the lower layers, data-only ones
// included: those an origin may name.
func (c *checker) lowerLayers() []int {
	var out []int
	for j, l := range c.layers {
		if l != c.upper {
			out = append(out, j)
		}
	}
	return out
}
