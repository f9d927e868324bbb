package overlay

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ovlmount/ovlmount/inodes"
	"golang.org/x/sys/unix"
)

// onDisk is what the upper layer holds for rel: its real type, mode and
// owner, and its override.
type onDisk struct {
	typ, perm, uid, gid uint32
	override            string
}

func upperObject(t *testing.T, upper, rel string) onDisk {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(upper, rel), &st))
	v, _ := layersGetxattr(filepath.Join(upper, rel), OverrideUser)
	return onDisk{typ: st.Mode & unix.S_IFMT, perm: st.Mode & 0o7777, uid: st.Uid, gid: st.Gid, override: v}
}

// shows checks what stat of e shows.
func shows(t *testing.T, what string, a Attr, mode, uid, gid uint32) {
	t.Helper()
	if a.Mode != mode || a.Uid != uid || a.Gid != gid {
		t.Errorf("%s shows %o %d:%d, want %o %d:%d", what, a.Mode, a.Uid, a.Gid, mode, uid, gid)
	}
}

// Under xattr_permissions, a symlink, fifo, socket or device that the
// daemon's own ids own, without special bits, is made itself; any other
// is a regular file of the daemon's, mode 0600, standing for it, whose
// override names the type (and a symlink's target is its content).
func TestFileBackedCreate(t *testing.T) {
	fs, _, upper := rwStack(t, Options{XattrPermissions: 2})
	own := Cred{Uid: 0, Gid: 0}
	other := Cred{Uid: 5, Gid: 6}

	e, err := fs.Symlink(inodes.RootID, "mine", "target", own)
	must(t, err)
	shows(t, "mine", e.Attr, unix.S_IFLNK|0o777, 0, 0)
	if d := upperObject(t, upper, "mine"); d.typ != unix.S_IFLNK {
		t.Errorf("the daemon's symlink is stored as type %o", d.typ)
	}

	e, err = fs.Symlink(inodes.RootID, "theirs", "../some/target", other)
	must(t, err)
	shows(t, "theirs", e.Attr, unix.S_IFLNK|0o777, 5, 6)
	if e.Attr.Size != uint64(len("../some/target")) {
		t.Errorf("theirs has size %d", e.Attr.Size)
	}
	want := onDisk{typ: unix.S_IFREG, perm: 0o600, override: "5:6:0120777:symlink"}
	if d := upperObject(t, upper, "theirs"); d != want {
		t.Errorf("theirs stored as %+v, want %+v", d, want)
	}
	if b, err := os.ReadFile(filepath.Join(upper, "theirs")); err != nil || string(b) != "../some/target" {
		t.Errorf("theirs holds %q, %v", b, err)
	}
	if target, err := fs.Readlink(e.ID); err != nil || target != "../some/target" {
		t.Errorf("readlink theirs: %q, %v", target, err)
	}

	e, err = fs.Mknod(inodes.RootID, "fifo", unix.S_IFIFO|0o640, 0, other)
	must(t, err)
	shows(t, "fifo", e.Attr, unix.S_IFIFO|0o640, 5, 6)
	want = onDisk{typ: unix.S_IFREG, perm: 0o600, override: "5:6:0640:pipe"}
	if d := upperObject(t, upper, "fifo"); d != want {
		t.Errorf("fifo stored as %+v, want %+v", d, want)
	}
	e, err = fs.Mknod(inodes.RootID, "tty", unix.S_IFCHR|0o620, unix.Mkdev(136, 3), Cred{Uid: 0, Gid: 5})
	must(t, err)
	shows(t, "tty", e.Attr, unix.S_IFCHR|0o620, 0, 5)
	if e.Attr.Rdev != unix.Mkdev(136, 3) || e.Attr.Size != 0 {
		t.Errorf("tty shows rdev %x size %d", e.Attr.Rdev, e.Attr.Size)
	}
	if d := upperObject(t, upper, "tty"); d.override != "0:5:0620:char-136-3" || d.typ != unix.S_IFREG {
		t.Errorf("tty stored as %+v", d)
	}
	// A sticky bit the real object would keep: file-backed too.
	e, err = fs.Mknod(inodes.RootID, "sock", unix.S_IFSOCK|0o1755, 0, own)
	must(t, err)
	shows(t, "sock", e.Attr, unix.S_IFSOCK|0o1755, 0, 0)
	if d := upperObject(t, upper, "sock"); d.override != "0:0:0141755:socket" {
		t.Errorf("sock stored as %+v", d)
	}
	e, err = fs.Mknod(inodes.RootID, "ownfifo", unix.S_IFIFO|0o644, 0, own)
	must(t, err)
	shows(t, "ownfifo", e.Attr, unix.S_IFIFO|0o644, 0, 0)
	if d := upperObject(t, upper, "ownfifo"); d != (onDisk{typ: unix.S_IFIFO, perm: 0o644}) {
		t.Errorf("the daemon's fifo stored as %+v", d)
	}

	// Lookups and listings show the same.
	types := map[string]uint8{}
	ents, err := fs.ReadDir(inodes.RootID, 0, 1<<20)
	must(t, err)
	for _, e := range ents {
		types[e.Name] = e.Type
	}
	for name, want := range map[string]uint8{"mine": unix.DT_LNK, "theirs": unix.DT_LNK, "fifo": unix.DT_FIFO, "tty": unix.DT_CHR, "sock": unix.DT_SOCK, "ownfifo": unix.DT_FIFO} {
		if types[name] != want {
			t.Errorf("%s listed as type %d, want %d", name, types[name], want)
		}
		if a := attrOf(t, fs, name); a.Mode>>12 != uint32(want) {
			t.Errorf("%s: stat shows mode %o", name, a.Mode)
		}
	}
}
