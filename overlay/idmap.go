package overlay

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Owners shown and stored can differ, as with fuse-overlayfs's
// uidmapping/gidmapping and squash_to_* options: a mount shares layers
// among user namespaces without chowning them. Stat shows an owner mapped
// from the layer; new objects and chown store the caller's ids mapped
// back. The kernel has no equivalent; fuse-overlayfs is the reference.

// IDRange maps Count ids from Stored (in the layers) to Shown (in the
// mount), as one DISK:SHOWN:COUNT triple of fuse-overlayfs's uidmapping.
type IDRange struct {
	Stored, Shown, Count uint32
}

// IDMap is the mapping of one kind of id (user or group).
type IDMap struct {
	// Ranges map stored ids to shown ones; none means identity. An id
	// outside every range shows as, and is stored as, Overflow.
	Ranges []IDRange
	// Overflow is the id of an id without a mapping (the kernel's
	// overflowuid/overflowgid, 65534 by default).
	Overflow uint32
	// Squash, when set, is the id every object shows (squash_to_uid,
	// squash_to_gid, squash_to_root); stored ids stay mapped by Ranges.
	Squash *uint32
}

// ParseIDRanges parses fuse-overlayfs's mapping syntax: triples
// STORED:SHOWN:COUNT, themselves joined with ':', as in
// "0:1000:1:1:100000:65536".
func ParseIDRanges(s string) ([]IDRange, error) {
	// containers-storage writes a ':' before every triple, the first
	// included; fuse-overlayfs skips empty fields.
	f := strings.FieldsFunc(s, func(r rune) bool { return r == ':' })
	if len(f) == 0 || len(f)%3 != 0 {
		return nil, fmt.Errorf("%q: want STORED:SHOWN:COUNT triples separated by ':'", s)
	}
	var out []IDRange
	for i := 0; i < len(f); i += 3 {
		var n [3]uint32
		for j := range n {
			v, err := strconv.ParseUint(f[i+j], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("%q: %q is not an id", s, f[i+j])
			}
			n[j] = uint32(v)
		}
		if n[2] == 0 || uint64(n[0])+uint64(n[2]) > 1<<32 || uint64(n[1])+uint64(n[2]) > 1<<32 {
			return nil, fmt.Errorf("%q: range %d:%d:%d is empty or past the last id", s, n[0], n[1], n[2])
		}
		out = append(out, IDRange{Stored: n[0], Shown: n[1], Count: n[2]})
	}
	return out, nil
}

// Overflow reads the kernel's overflow id for a kind ("uid" or "gid"),
// 65534 if it cannot.
func Overflow(kind string) uint32 {
	b, err := os.ReadFile("/proc/sys/kernel/overflow" + kind)
	if err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32); err == nil {
			return uint32(v)
		}
	}
	return 65534
}

// shown returns the id stat shows for stored id.
func (m *IDMap) shown(id uint32) uint32 {
	if m.Squash != nil {
		return *m.Squash
	}
	return m.mapID(id, false)
}

// stored returns the id stored for a shown (caller's or chown's) id.
func (m *IDMap) stored(id uint32) uint32 { return m.mapID(id, true) }

// mapID maps id through the ranges: from shown to stored when back is
// set. The first range that holds it wins, as in fuse-overlayfs.
func (m *IDMap) mapID(id uint32, back bool) uint32 {
	if len(m.Ranges) == 0 {
		return id
	}
	for _, r := range m.Ranges {
		from, to := r.Stored, r.Shown
		if back {
			from, to = to, from
		}
		if id >= from && uint64(id) < uint64(from)+uint64(r.Count) {
			return to + (id - from)
		}
	}
	return m.Overflow
}
