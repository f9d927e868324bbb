package main

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// hashLimit is the largest file whose content the tree check hashes;
// larger ones are compared by size.
const hashLimit = 1 << 20

// tree describes every entry under dir, one line per path: type, mode,
// owner, size, link target and, for small files, a content hash.
func tree(dir string) (map[string]string, error) {
	t := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("mode %o uid %d gid %d", st.Mode, st.Uid, st.Gid)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			desc += fmt.Sprintf(" size %d", st.Size)
			if st.Size <= hashLimit {
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				desc += fmt.Sprintf(" sha256 %x", sha256.Sum256(b))
			}
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		case unix.S_IFCHR, unix.S_IFBLK:
			desc += fmt.Sprintf(" rdev %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		rel, _ := filepath.Rel(dir, p)
		t[rel] = desc
		return nil
	})
	return t, err
}

// diffTrees lists up to max differences between two tree descriptions.
func diffTrees(a, b map[string]string, nameA, nameB string, max int) []string {
	var paths []string
	for p := range a {
		paths = append(paths, p)
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	var diffs []string
	for _, p := range paths {
		da, okA := a[p]
		db, okB := b[p]
		switch {
		case !okA:
			diffs = append(diffs, fmt.Sprintf("%s: only on %s (%s)", p, nameB, db))
		case !okB:
			diffs = append(diffs, fmt.Sprintf("%s: only on %s (%s)", p, nameA, da))
		case da != db:
			diffs = append(diffs, fmt.Sprintf("%s: %s: %s; %s: %s", p, nameA, da, nameB, db))
		}
		if len(diffs) == max {
			diffs = append(diffs, "...")
			break
		}
	}
	return diffs
}

// verify mounts every implementation on fresh layers and checks they
// show the same tree; it returns the tree's entry count.
func (b *bench) verify() (int, error) {
	var ref map[string]string
	var refName string
	for _, im := range b.impls {
		m, err := mountFresh(im, b.lower, b.runDir(im), "")
		if err != nil {
			return 0, err
		}
		t, err := tree(m.mnt)
		if uerr := m.unmount(); err == nil {
			err = uerr
		}
		if err != nil {
			return 0, fmt.Errorf("%s: %v", im.name, err)
		}
		delete(t, ".")
		if ref == nil {
			ref, refName = t, im.name
			continue
		}
		if d := diffTrees(ref, t, refName, im.name, 20); len(d) > 0 {
			return 0, fmt.Errorf("%s and %s show different trees:\n  %s", refName, im.name, strings.Join(d, "\n  "))
		}
	}
	return len(ref), nil
}
