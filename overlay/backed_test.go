package overlay

import (
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/copyup"
	"github.com/ovlmount/ovlmount/inodes"
	"github.com/ovlmount/ovlmount/internal/testenv"
	"github.com/ovlmount/ovlmount/layers"
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
	testenv.Must(t, unix.Lstat(filepath.Join(upper, rel), &st))
	v, _ := testenv.Xattr(filepath.Join(upper, rel), OverrideUser)
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
	testenv.Must(t, err)
	shows(t, "mine", e.Attr, unix.S_IFLNK|0o777, 0, 0)
	if d := upperObject(t, upper, "mine"); d.typ != unix.S_IFLNK {
		t.Errorf("the daemon's symlink is stored as type %o", d.typ)
	}

	e, err = fs.Symlink(inodes.RootID, "theirs", "../some/target", other)
	testenv.Must(t, err)
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
	testenv.Must(t, err)
	shows(t, "fifo", e.Attr, unix.S_IFIFO|0o640, 5, 6)
	want = onDisk{typ: unix.S_IFREG, perm: 0o600, override: "5:6:0640:pipe"}
	if d := upperObject(t, upper, "fifo"); d != want {
		t.Errorf("fifo stored as %+v, want %+v", d, want)
	}
	e, err = fs.Mknod(inodes.RootID, "tty", unix.S_IFCHR|0o620, unix.Mkdev(136, 3), Cred{Uid: 0, Gid: 5})
	testenv.Must(t, err)
	shows(t, "tty", e.Attr, unix.S_IFCHR|0o620, 0, 5)
	if e.Attr.Rdev != unix.Mkdev(136, 3) || e.Attr.Size != 0 {
		t.Errorf("tty shows rdev %x size %d", e.Attr.Rdev, e.Attr.Size)
	}
	if d := upperObject(t, upper, "tty"); d.override != "0:5:0620:char-136-3" || d.typ != unix.S_IFREG {
		t.Errorf("tty stored as %+v", d)
	}
	// A sticky bit the real object would keep: file-backed too.
	e, err = fs.Mknod(inodes.RootID, "sock", unix.S_IFSOCK|0o1755, 0, own)
	testenv.Must(t, err)
	shows(t, "sock", e.Attr, unix.S_IFSOCK|0o1755, 0, 0)
	if d := upperObject(t, upper, "sock"); d.override != "0:0:0141755:socket" {
		t.Errorf("sock stored as %+v", d)
	}
	e, err = fs.Mknod(inodes.RootID, "ownfifo", unix.S_IFIFO|0o644, 0, own)
	testenv.Must(t, err)
	shows(t, "ownfifo", e.Attr, unix.S_IFIFO|0o644, 0, 0)
	if d := upperObject(t, upper, "ownfifo"); d != (onDisk{typ: unix.S_IFIFO, perm: 0o644}) {
		t.Errorf("the daemon's fifo stored as %+v", d)
	}

	// Lookups and listings show the same.
	types := map[string]uint8{}
	ents, err := fs.ReadDir(inodes.RootID, 0, 1<<20)
	testenv.Must(t, err)
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

// reopen mounts upper (with its work directory in base) over lower again,
// as a later mount does.
func reopen(t *testing.T, lower, base string, opts Options) *FS {
	t.Helper()
	u, err := layers.Open(filepath.Join(base, "upper"), 0, true)
	testenv.Must(t, err)
	l, err := layers.Open(lower, 1, false)
	testenv.Must(t, err)
	w, err := copyup.Open(filepath.Join(base, "work"))
	testenv.Must(t, err)
	t.Cleanup(func() { u.Close(); l.Close(); w.Close() })
	opts.Work, opts.Timeout = w, time.Second
	fs, err := New([]*layers.Layer{u, l}, opts)
	testenv.Must(t, err)
	return fs
}

// A chown or chmod of a symlink, fifo or device that is itself, lower or
// upper, makes it file-backed (a lower one is copied up so), keeps its
// node, and leaves the lower layer and the object's times as they were;
// the file then links, renames and unlinks as any file, and a later mount
// without the option shows the same.
func TestFileBackedChange(t *testing.T) {
	_, dirs := stack(t, []string{"l ln ../target", "f target t"})
	lower := dirs[0]
	testenv.Must(t, unix.Mknod(filepath.Join(lower, "fifo"), unix.S_IFIFO|0o644, 0))
	testenv.Must(t, unix.Mknod(filepath.Join(lower, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	testenv.Must(t, os.Chmod(filepath.Join(lower, "null"), 0o666)) // past the umask
	ts := []unix.Timespec{{Sec: 1000}, {Sec: 2000}}
	testenv.Must(t, unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(lower, "ln"), ts, unix.AT_SYMLINK_NOFOLLOW))
	fs, upper, base := openRW(t, lower, Options{XattrPermissions: 2, Timeout: time.Second})
	u5, g6, m600 := uint32(5), uint32(6), uint32(0o600)

	ln, err := walk(fs, "ln")
	testenv.Must(t, err)
	a, err := fs.SetAttr(ln.ID, SetAttrs{Uid: &u5, Gid: &g6})
	testenv.Must(t, err)
	shows(t, "ln after chown", a, unix.S_IFLNK|0o777, 5, 6)
	if a.Mtime.Unix() != 2000 || a.Size != uint64(len("../target")) {
		t.Errorf("ln after chown: mtime %v size %d", a.Mtime, a.Size)
	}
	want := onDisk{typ: unix.S_IFREG, perm: 0o600, override: "5:6:0120777:symlink"}
	if d := upperObject(t, upper, "ln"); d != want {
		t.Errorf("ln stored as %+v, want %+v", d, want)
	}
	if d := upperObject(t, lower, "ln"); d.typ != unix.S_IFLNK {
		t.Errorf("the lower ln changed: %+v", d)
	}
	again, err := walk(fs, "ln")
	testenv.Must(t, err)
	if again.ID != ln.ID || again.Attr != a {
		t.Errorf("ln looked up again: node %d %+v, was %d %+v", again.ID, again.Attr, ln.ID, a)
	}
	if target, err := fs.Readlink(ln.ID); err != nil || target != "../target" {
		t.Errorf("readlink ln: %q, %v", target, err)
	}
	if _, err := fs.SetAttr(ln.ID, SetAttrs{Mode: &m600}); err != syscall.EOPNOTSUPP {
		t.Errorf("chmod of a file-backed symlink: %v, want EOPNOTSUPP", err)
	}

	fifo, err := walk(fs, "fifo")
	testenv.Must(t, err)
	a, err = fs.SetAttr(fifo.ID, SetAttrs{Mode: &m600})
	testenv.Must(t, err)
	shows(t, "fifo after chmod", a, unix.S_IFIFO|0o600, 0, 0)
	if d := upperObject(t, upper, "fifo"); d.override != "0:0:0600:pipe" || d.typ != unix.S_IFREG {
		t.Errorf("fifo stored as %+v", d)
	}
	null, err := walk(fs, "null")
	testenv.Must(t, err)
	a, err = fs.SetAttr(null.ID, SetAttrs{Gid: &g6})
	testenv.Must(t, err)
	shows(t, "null after chgrp", a, unix.S_IFCHR|0o666, 0, 6)
	if a.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("null shows rdev %x", a.Rdev)
	}

	// An upper symlink: replaced in place. A chown to the owner it has
	// leaves it itself; a chmod of it is refused as on any symlink.
	up, err := fs.Symlink(inodes.RootID, "up", "target", Cred{})
	testenv.Must(t, err)
	u0 := uint32(0)
	if _, err := fs.SetAttr(up.ID, SetAttrs{Uid: &u0}); err != nil {
		t.Fatal(err)
	}
	if d := upperObject(t, upper, "up"); d.typ != unix.S_IFLNK {
		t.Errorf("chown to its own owner made up %+v", d)
	}
	if _, err := fs.SetAttr(up.ID, SetAttrs{Mode: &m600}); err != syscall.EOPNOTSUPP {
		t.Errorf("chmod of a symlink: %v, want EOPNOTSUPP", err)
	}
	mtime := time.Unix(3000, 0)
	a, err = fs.SetAttr(up.ID, SetAttrs{Uid: &u5, Mtime: &mtime})
	testenv.Must(t, err)
	shows(t, "up after chown", a, unix.S_IFLNK|0o777, 5, 0)
	if a.Mtime.Unix() != 3000 {
		t.Errorf("up: mtime %v, want the one set with the chown", a.Mtime)
	}
	if d := upperObject(t, upper, "up"); d.override != "5:0:0120777:symlink" || d.typ != unix.S_IFREG {
		t.Errorf("up stored as %+v", d)
	}

	// A hard-linked upper symlink is changed for real: replacing one of
	// its names would break the link.
	hard, err := fs.Symlink(inodes.RootID, "hard", "target", Cred{})
	testenv.Must(t, err)
	_, err = fs.Link(hard.ID, inodes.RootID, "hard2")
	testenv.Must(t, err)
	a, err = fs.SetAttr(hard.ID, SetAttrs{Uid: &u5})
	testenv.Must(t, err)
	shows(t, "hard after chown", a, unix.S_IFLNK|0o777, 5, 0)
	for _, name := range []string{"hard", "hard2"} {
		if d := upperObject(t, upper, name); d != (onDisk{typ: unix.S_IFLNK, perm: 0o777, uid: 5}) {
			t.Errorf("%s stored as %+v", name, d)
		}
	}
	testenv.Must(t, fs.Unlink(inodes.RootID, "hard"))
	testenv.Must(t, fs.Unlink(inodes.RootID, "hard2"))

	// Links, renames and removals of file-backed objects.
	l2, err := fs.Link(up.ID, inodes.RootID, "up2")
	testenv.Must(t, err)
	shows(t, "up2", l2.Attr, unix.S_IFLNK|0o777, 5, 0)
	if l2.Attr.Nlink != 2 {
		t.Errorf("up2: nlink %d", l2.Attr.Nlink)
	}
	testenv.Must(t, fs.Rename(inodes.RootID, "up2", inodes.RootID, "up3", 0))
	testenv.Must(t, fs.Unlink(inodes.RootID, "ln"))
	testenv.Must(t, fs.Rename(inodes.RootID, "fifo", inodes.RootID, "fifo2", 0))
	if got := names(t, fs, ""); !slices.Equal(got, []string{"fifo2", "null", "target", "up", "up3"}) {
		t.Errorf("after the changes: %q", got)
	}

	// A later mount, without the option, reads the upper layer the same way.
	later := reopen(t, lower, base, Options{})
	for name, w := range map[string]struct{ mode, uid, gid uint32 }{
		"fifo2": {unix.S_IFIFO | 0o600, 0, 0}, "null": {unix.S_IFCHR | 0o666, 0, 6},
		"up": {unix.S_IFLNK | 0o777, 5, 0}, "up3": {unix.S_IFLNK | 0o777, 5, 0},
	} {
		shows(t, name+" after a remount", attrOf(t, later, name), w.mode, w.uid, w.gid)
	}
	e, err := walk(later, "up3")
	testenv.Must(t, err)
	if target, err := later.Readlink(e.ID); err != nil || target != "target" {
		t.Errorf("readlink up3 after a remount: %q, %v", target, err)
	}
}
