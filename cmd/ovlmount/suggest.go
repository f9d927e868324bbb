package main

import "slices"

// foreignOptions are options of mount(8), mount.fuse3, libfuse and SELinux
// that ovlmount does not take but that are a letter or two from one it
// does (uid and suid, sync and fsync, fscontext and context...). Callers
// pass them on purpose: they are ignored with a warning like any unknown
// option, never refused as a typo.
var foreignOptions = []string{
	"uid", "gid", "sync", "async", "dirsync", "nofail",
	"fscontext", "defcontext", "rootcontext",
}

// suggestOption returns the known option an unknown name is most likely a
// typo of ("uperdir" for upperdir), or "" if none is close. Close means
// at most two edits (a letter inserted, removed, replaced, or two
// neighbours swapped), and at most one for names of four letters or fewer,
// which are all a couple of edits from ro and rw.
func suggestOption(name string) string {
	if slices.Contains(foreignOptions, name) {
		return ""
	}
	limit := 2
	if len(name) <= 4 {
		limit = 1
	}
	best, bestDist := "", limit+1
	for _, o := range options {
		if d := editDistance(name, o.name); d < bestDist {
			best, bestDist = o.name, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance between a and
// b: the fewest insertions, deletions, substitutions and swaps of
// neighbouring letters that turn a into b.
func editDistance(a, b string) int {
	// d[i][j] is the distance between a[:i] and b[:j].
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
