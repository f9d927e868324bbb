package stress

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/ovlmount/ovlmount/conformance"
	"github.com/ovlmount/ovlmount/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// session is a plan's layers mounted by the oracle and by the subject,
// and what comes after the operations: the comparisons of trees, remounts
// and exchanged uppers.
//
// Each side has an ext4 filesystem of its own, in an image file, holding
// its copy of every layer. Which inode numbers objects get, and which
// freed numbers new objects reuse, then depends on that side's operations
// alone: not on the other side's, nor on whatever else the machine
// writes. A single-process replay thus reuses numbers as the run did,
// which makes bugs about reused numbers reproducible. The filesystems have
// one block group, so that allocation is first-fit with no random
// placement: the same layers built the same way get the same numbers on
// both sides, and lower objects' numbers can be compared as they are
// (newSession checks that they match).
type session struct {
	dir       string
	plan      *Plan
	lowerInos map[uint64]bool
	sides     [2]*sessionSide // oracle, subject
	mounts    []*conformance.Mount
	window    conformance.Window
}

type sessionSide struct {
	impl      conformance.Impl
	image     string // the filesystem's image
	dir       string // where it is mounted
	fsMounted bool
	layers    conformance.Layers
	mount     *conformance.Mount
}

var sideNames = [2]string{"oracle", "subject"}

// overlayXattrs is the xattr prefix of both sides' upper layers: neither
// mounts with userxattr.
const overlayXattrs = "trusted.overlay."

// newSession builds plan under dir (which must exist and be empty),
// settles both upper layers and mounts both sides. On error, whatever it
// mounted is unmounted.
func newSession(dir string, plan *Plan, oracle, subject conformance.Impl) (_ *session, err error) {
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	s := &session{dir: dir, plan: plan}
	defer func() {
		if err != nil {
			s.release(true)
		}
	}()
	var lowerInos [2]map[string]uint64
	for i, impl := range []conformance.Impl{oracle, subject} {
		side := &sessionSide{impl: impl, image: filepath.Join(dir, sideNames[i]+".img"), dir: filepath.Join(dir, sideNames[i])}
		s.sides[i] = side
		if err := side.makeFilesystem(); err != nil {
			return nil, err
		}
		lowers, uppers, err := plan.Build(side.dir, side.dir)
		if err != nil {
			return nil, fmt.Errorf("building layers: %w", err)
		}
		side.layers = conformance.Layers{Lowers: lowers, Upper: uppers[0], Work: filepath.Join(side.dir, "work")}
		if lowerInos[i], err = inodesByPath(lowers); err != nil {
			return nil, err
		}
	}
	for p, ino := range lowerInos[0] {
		if lowerInos[1][p] != ino {
			return nil, fmt.Errorf("lower object %s has inode number %d on the oracle's filesystem, %d on the subject's", p, ino, lowerInos[1][p])
		}
	}
	if s.lowerInos, err = conformance.InodeNumbers(s.sides[0].layers.Lowers); err != nil {
		return nil, err
	}
	for _, side := range s.sides {
		// The kernel's first mount records uuid and origins; done ahead on
		// both copies, neither side is charged with the other's
		// bookkeeping (see conformance.Settle).
		if err := conformance.Settle(side.dir, side.layers, conformance.Scenario{}); err != nil {
			return nil, err
		}
		if side.mount, err = s.mount(side.impl, side.layers, filepath.Join(side.dir, "mnt")); err != nil {
			return nil, err
		}
	}
	// The slack covers coarse file timestamps, which may lag the clock.
	s.window.From = time.Now().Add(-time.Second)
	return s, nil
}

// inodesByPath maps every object in dirs, by its path below dirs' parent,
// to its inode number.
func inodesByPath(dirs []string) (map[string]uint64, error) {
	out := map[string]uint64{}
	for _, d := range dirs {
		err := filepath.WalkDir(d, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return &os.PathError{Op: "lstat", Path: p, Err: err}
			}
			rel, _ := filepath.Rel(filepath.Dir(d), p)
			out[rel] = st.Ino
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// mount makes the directories a mount needs and mounts l there with impl.
func (s *session) mount(impl conformance.Impl, l conformance.Layers, mnt string) (*conformance.Mount, error) {
	for _, d := range []string{l.Work, mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	m, err := impl.Mount(l, mnt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", impl.Name(), err)
	}
	s.mounts = append(s.mounts, m)
	return m, nil
}

// fsSize is the size of a side's filesystem: one block group of 4 KiB
// blocks (32768 blocks). Files in the layers stay below 256 KiB and are
// mostly far smaller, so a few hundred of them fit many times over.
const fsSize = 128 << 20

// fsUUID is the uuid of every side's filesystem.
const fsUUID = "5eed5eed-0000-4000-8000-000000000001"

// makeFilesystem creates the side's ext4 image and mounts it at side.dir.
func (side *sessionSide) makeFilesystem() error {
	f, err := os.OpenFile(side.image, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(fsSize)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	// One uuid for both sides' filesystems: the file handles of origin
	// xattrs carry it, and the upper layers are compared by value.
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-g", "32768", "-U", fsUUID, side.image).CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 %s: %v: %s", side.image, err, out)
	}
	if err := os.Mkdir(side.dir, 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("mount", "-o", "loop", side.image, side.dir).CombinedOutput(); err != nil {
		return fmt.Errorf("mount -o loop %s: %v: %s", side.image, err, out)
	}
	side.fsMounted = true
	return nil
}

// close unmounts every overlay still mounted.
func (s *session) close() {
	for _, m := range s.mounts {
		if conformance.IsMounted(m.Dir) {
			m.Unmount()
		}
	}
}

// release closes s and unmounts its filesystems; unless keep, their
// images go too. If an overlay could not be unmounted, everything stays.
func (s *session) release(keep bool) error {
	s.close()
	for _, side := range s.sides {
		if side == nil {
			continue
		}
		if side.fsMounted {
			// The filesystem itself is the first mount under its directory.
			under, err := mountinfo.Under(side.dir)
			if err != nil {
				return err
			}
			if len(under) > 1 {
				return fmt.Errorf("%s is still mounted; keeping %s", under[len(under)-1].Point, side.image)
			}
			// A program that just exited may still be closing its
			// descriptors of the layers for a moment.
			for try := 0; ; try++ {
				out, err := exec.Command("umount", side.dir).CombinedOutput()
				if err == nil {
					break
				}
				if try == 50 {
					return fmt.Errorf("umount %s: %v: %s", side.dir, err, out)
				}
				time.Sleep(100 * time.Millisecond)
			}
			side.fsMounted = false
		}
		if keep {
			continue
		}
		for _, p := range []string{side.image, side.dir} {
			if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
				return err
			}
		}
	}
	return nil
}

// walk walks m, aborting the FUSE connection if the program hangs.
func walk(m *conformance.Mount) (*conformance.Tree, error) {
	var t *conformance.Tree
	err := conformance.Guard(m, nil, func() (err error) {
		t, err = conformance.Walk(m.Dir)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("walking %s: %w", m.Dir, err)
	}
	return t, nil
}

// verify runs every comparison that comes after the operations, both
// sides mounted: the merged trees; then, unmounted, the raw upper
// layers; each side mounted again on its own upper layer; and each upper
// layer mounted by the other side. The two sides' trees are not compared
// in the namespaces of the workers in diverged, which stopped at a
// divergence whose consequences would only be reported again, nor, if any
// did, at the shared directory itself. It returns
// the divergences found and leaves both sides unmounted.
func (s *session) verify(diverged map[int]bool) ([]*Divergence, error) {
	var out []*Divergence
	add := func(stage string, lines []string) {
		if len(lines) > 0 {
			out = append(out, &Divergence{Stage: stage, Worker: -1, Step: -1, Details: lines})
		}
	}
	sides := func(lines []string) []string {
		var kept []string
		for _, l := range lines {
			p, _, _ := strings.Cut(l, ": ")
			// The shared directory's own times and markers follow every
			// worker's changes, the diverged ones' too.
			if diverged[s.plan.owner(p)] || p == sharedDir && len(diverged) > 0 {
				continue
			}
			kept = append(kept, l)
		}
		return kept
	}
	var merged [2]*conformance.Tree
	for i, side := range s.sides {
		t, err := walk(side.mount)
		if err != nil {
			return out, err
		}
		merged[i] = t
	}
	s.window.To = time.Now().Add(time.Second)
	opts := conformance.DiffOptions{LowerInos: s.lowerInos, KernelOps: s.window, OtherOps: s.window}
	add(stageMerged, sides(lines(relax(conformance.Diff(merged[0], merged[1], opts)))))
	add(stageDino, sides(merged[1].OwnDirentInoMismatches(merged[0])))

	var remount [2]*conformance.Tree
	var uppers [2]*conformance.Tree
	for i, side := range s.sides {
		if err := side.mount.Unmount(); err != nil {
			return out, err
		}
		// File handles (origin) are compared by the objects they name.
		t, _, err := conformance.ObserveUpper(side.layers, overlayXattrs)
		if err != nil {
			return out, err
		}
		uppers[i] = t
	}
	add(stageUpper, sides(lines(relax(conformance.DiffUpper(uppers[0], uppers[1], overlayXattrs)))))
	for i, side := range s.sides {
		m, err := s.mount(side.impl, side.layers, side.mount.Dir)
		if err != nil {
			return out, fmt.Errorf("mounting again: %w", err)
		}
		if remount[i], err = walk(m); err != nil {
			return out, err
		}
		if err := m.Unmount(); err != nil {
			return out, err
		}
	}
	oracle, subject := conformance.SameDinoChanges(conformance.Diff(merged[0], remount[0], conformance.DiffOptions{}),
		conformance.Diff(merged[1], remount[1], conformance.DiffOptions{}))
	add(stageOracle, lines(oracle))
	add(stageSubject, lines(subject))

	// Each upper layer under the other implementation, on a work
	// directory of its own: on-disk format both ways. What the other side
	// shows must equal what the writer showed after its own remount.
	for i, side := range s.sides {
		other := s.sides[1-i]
		l := side.layers
		l.Work = filepath.Join(side.dir, "work-"+sideNames[1-i])
		m, err := s.mount(other.impl, l, filepath.Join(side.dir, "mnt-"+sideNames[1-i]))
		if err != nil {
			return out, fmt.Errorf("exchanging upper layers: %w", err)
		}
		t, err := walk(m)
		if err != nil {
			return out, err
		}
		if err := m.Unmount(); err != nil {
			return out, err
		}
		// Differences read "kernel" for the oracle's view of the layer.
		if i == 0 {
			add(stageOnOrac, lines(conformance.Diff(remount[0], t, conformance.DiffOptions{})))
		} else {
			add(stageOnSubj, lines(conformance.Diff(t, remount[1], conformance.DiffOptions{})))
		}
	}
	return out, nil
}

// relax drops the differences that are legitimate here. The size of the
// shared directory: on ext4 it depends on how many names the directory
// held at once, and so on how the workers interleaved on each side. And
// holes an upper file keeps where the kernel's has none: the kernel's
// copy-up skips holes only in whole chunks of a megabyte
// (OVL_COPY_UP_CHUNK_SIZE) and writes zeros into smaller ones, so where
// ovlmount keeps every hole the content is the same and only the
// allocation differs (st_blocks is not compared either).
func relax(diffs []conformance.Difference) []conformance.Difference {
	var out []conformance.Difference
	for _, d := range diffs {
		if d.Path == sharedDir && d.Field == "size" || d.Field == "sparse" && d.Kernel == "" && d.Other == "holes" {
			continue
		}
		out = append(out, d)
	}
	return out
}

func lines(diffs []conformance.Difference) []string {
	out := make([]string, len(diffs))
	for i, d := range diffs {
		out[i] = d.String()
	}
	return out
}

// suspicious is output of an overlay program that fails a round: race
// detector reports, panics, fatal runtime errors, and goroutine dumps
// (after a fatal signal, or the SIGQUIT a hang gets).
var suspicious = regexp.MustCompile(`WARNING: DATA RACE|^panic: |^fatal error: |^SIG[A-Z]+: |^goroutine \d+ `)

// logs checks the output of every program the session mounted with.
func (s *session) logs() []*Divergence {
	var out []*Divergence
	seen := map[string]bool{}
	for _, m := range s.mounts {
		if m.Log == "" || seen[m.Log] {
			continue
		}
		seen[m.Log] = true
		if d := checkOutput(m.Log); d != nil {
			out = append(out, d)
		}
	}
	return out
}

// checkOutput reads a program's output and returns a divergence quoting it
// from the first suspicious line, if there is one.
func checkOutput(file string) *Divergence {
	data, err := os.ReadFile(file)
	if err != nil {
		return &Divergence{Stage: stageError, Worker: -1, Step: -1, Details: []string{err.Error()}}
	}
	all := strings.Split(string(data), "\n")
	for i, l := range all {
		if suspicious.MatchString(l) {
			// Enough for a goroutine dump of a daemon of a few dozen
			// goroutines.
			excerpt := all[i:min(len(all), i+400)]
			return &Divergence{Stage: stageLog, Worker: -1, Step: -1,
				Details: append([]string{fmt.Sprintf("%s, line %d:", file, i+1)}, excerpt...)}
		}
	}
	return nil
}
