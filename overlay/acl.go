package overlay

import (
	"encoding/binary"
	"errors"

	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// POSIX ACLs. The kernel enforces them (FUSE_POSIX_ACL with
// default_permissions), reading system.posix_acl_access and _default
// through getxattr; the host filesystem of each layer stores them, and a
// chmod or a set of an access ACL on the host keeps mode and ACL in step.
// What the engine does itself is inheritance: a new object in a directory
// with a default ACL gets an access ACL from it, and ignores the caller's
// umask. Where the object is made in its directory the host does that;
// an object built in the workdir and renamed into place gets it here, as
// the kernel's overlay sets it on such objects (ovl_create_over_whiteout).

// The ACL xattr names.
const (
	aclAccess  = "system.posix_acl_access"
	aclDefault = "system.posix_acl_default"
)

// ACL entry tags and the xattr format's version (linux/posix_acl_xattr.h).
const (
	aclVersion  = 2
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
)

type aclEntry struct {
	tag, perm uint16
	id        uint32
}

var errBadACL = errors.New("malformed ACL")

// parseACL decodes an ACL xattr value.
func parseACL(b []byte) ([]aclEntry, error) {
	if len(b) < 4 || (len(b)-4)%8 != 0 || binary.LittleEndian.Uint32(b) != aclVersion {
		return nil, errBadACL
	}
	var out []aclEntry
	for b = b[4:]; len(b) > 0; b = b[8:] {
		out = append(out, aclEntry{
			tag:  binary.LittleEndian.Uint16(b[0:2]),
			perm: binary.LittleEndian.Uint16(b[2:4]),
			id:   binary.LittleEndian.Uint32(b[4:8]),
		})
	}
	return out, nil
}

// formatACL encodes ACL entries as an xattr value.
func formatACL(ents []aclEntry) []byte {
	b := make([]byte, 4, 4+8*len(ents))
	binary.LittleEndian.PutUint32(b, aclVersion)
	for _, e := range ents {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return b
}

// inheritACL is the kernel's posix_acl_create for an object of mode (type
// and permission bits) made in a directory whose default ACL is def: it
// returns the mode the object gets and its access ACL, nil when the ACL
// says no more than the mode.
func inheritACL(def []byte, mode uint32) (uint32, []byte, error) {
	ents, err := parseACL(def)
	if err != nil {
		return mode, nil, err
	}
	m := mode & 0o777
	equiv := true
	var groupObj, mask *aclEntry
	for i := range ents {
		e := &ents[i]
		switch e.tag {
		case aclUserObj:
			e.perm &= uint16(m>>6) & 7
			m &= uint32(e.perm)<<6 | ^uint32(0o700)
		case aclUser, aclGroup:
			equiv = false
		case aclGroupObj:
			groupObj = e
		case aclOther:
			e.perm &= uint16(m) & 7
			m &= uint32(e.perm) | ^uint32(0o007)
		case aclMask:
			mask = e
			equiv = false
		default:
			return mode, nil, errBadACL
		}
	}
	switch {
	case mask != nil:
		mask.perm &= uint16(m>>3) & 7
		m &= uint32(mask.perm)<<3 | ^uint32(0o070)
	case groupObj != nil:
		groupObj.perm &= uint16(m>>3) & 7
		m &= uint32(groupObj.perm)<<3 | ^uint32(0o070)
	default:
		return mode, nil, errBadACL
	}
	mode = mode&^0o777 | m
	if equiv {
		return mode, nil, nil
	}
	return mode, formatACL(ents), nil
}

// defaultACL returns the default ACL of p's upper directory, nil if it has
// none (or the filesystem keeps no ACLs, or the mount says noacl).
// Preconditions: renameMu held; p copied up.
func (fs *FS) defaultACL(p *node) []byte {
	if !fs.opts.ACL {
		return nil
	}
	v, err := fs.getxattr(p, fs.upper, aclDefault)
	if err != nil || len(v) == 0 {
		return nil
	}
	return v
}

// setACLs gives an object built in the workdir (tmp in directory wfd) the
// ACLs a new object of mode in a directory with default ACL def gets: the
// access ACL inherited, and for a directory the default ACL itself.
func setACLs(wfd int, tmp string, mode uint32, def []byte, access []byte) error {
	if access != nil {
		if err := layers.SetxattrAt(wfd, tmp, aclAccess, access); err != nil {
			return err
		}
	}
	if mode&unix.S_IFMT == unix.S_IFDIR {
		return layers.SetxattrAt(wfd, tmp, aclDefault, def)
	}
	return nil
}
