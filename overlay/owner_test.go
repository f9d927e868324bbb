package overlay

import (
	"os"
	"path/filepath"
	"reflect"
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

func TestParseIDRanges(t *testing.T) {
	got, err := ParseIDRanges("0:1000:1:1:100000:65536")
	want := []IDRange{{0, 1000, 1}, {1, 100000, 65536}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, %v; want %v", got, err, want)
	}
	// As containers-storage passes it.
	got, err = ParseIDRanges(":0:1000:1:1:100000:65536")
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("leading colon: got %v, %v; want %v", got, err, want)
	}
	for _, bad := range []string{"", ":", "0:1", "0:1:2:3", "0:1:0", "a:1:1", "-1:0:1", "4294967295:0:2", "0:4294967295:2"} {
		if r, err := ParseIDRanges(bad); err == nil {
			t.Errorf("%q: parsed as %v, want an error", bad, r)
		}
	}
}

// The mapping is fuse-overlayfs's: stored ids in a range show shifted,
// others show as the overflow id, and shown ids map back the same way.
func TestIDMap(t *testing.T) {
	m := IDMap{Ranges: []IDRange{{0, 1000, 1}, {1, 100000, 65536}}, Overflow: 65534}
	for stored, shown := range map[uint32]uint32{0: 1000, 1: 100000, 5000: 104999, 65536: 165535, 65537: 65534, 100005: 65534} {
		if got := m.shown(stored); got != shown {
			t.Errorf("stored %d shows as %d, want %d", stored, got, shown)
		}
	}
	for shown, stored := range map[uint32]uint32{1000: 0, 100000: 1, 165535: 65536, 0: 65534, 165536: 65534} {
		if got := m.stored(shown); got != stored {
			t.Errorf("shown %d stored as %d, want %d", shown, got, stored)
		}
	}
	var id IDMap
	if id.shown(42) != 42 || id.stored(42) != 42 {
		t.Errorf("no ranges is not the identity")
	}
	seven := uint32(7)
	sq := IDMap{Ranges: m.Ranges, Overflow: 65534, Squash: &seven}
	if sq.shown(1) != 7 || sq.stored(1000) != 0 {
		t.Errorf("squash: shown %d stored %d, want 7 and 0", sq.shown(1), sq.stored(1000))
	}
}

func TestParseOverride(t *testing.T) {
	for v, want := range map[string]override{
		"5:6:0700":            {uid: 5, gid: 6, perm: 0o700},
		"5:6:100644":          {uid: 5, gid: 6, perm: 0o644, typ: unix.S_IFREG}, // fuse-overlayfs's form
		"5:6:120777":          {uid: 5, gid: 6, perm: 0o777, typ: unix.S_IFLNK},
		"5:6:110644":          {uid: 5, gid: 6, perm: 0o644}, // no type: fifo|file bits
		"0:0:04755:file":      {perm: 0o4755, typ: unix.S_IFREG},
		"1:2:0777:symlink":    {uid: 1, gid: 2, perm: 0o777, typ: unix.S_IFLNK},
		"0:0:0600:pipe":       {perm: 0o600, typ: unix.S_IFIFO},
		"0:0:0600:socket":     {perm: 0o600, typ: unix.S_IFSOCK},
		"0:0:01777:dir":       {perm: 0o1777, typ: unix.S_IFDIR},
		"0:5:0620:char-136-3": {gid: 5, perm: 0o620, typ: unix.S_IFCHR, rdev: unix.Mkdev(136, 3)},
		"0:6:0660:block-8-1":  {gid: 6, perm: 0o660, typ: unix.S_IFBLK, rdev: unix.Mkdev(8, 1)},
	} {
		got, ok := parseOverride(v)
		if !ok || got != want {
			t.Errorf("%q: got %+v %v, want %+v", v, got, ok, want)
		}
		if back, ok := parseOverride(got.String()); !ok || back != got {
			t.Errorf("%q: formatted as %q, which reads back as %+v", v, got.String(), back)
		}
	}
	for _, bad := range []string{"", "1:2", "1:2:3:4:5", "a:0:0644", "0:0:0999", "0:0:0644:fifo", "0:0:0644:char-1", "0:0:0644:char-x-1"} {
		if o, ok := parseOverride(bad); ok {
			t.Errorf("%q: parsed as %+v", bad, o)
		}
	}
	// containers-storage's form, with the type bits for the types
	// fuse-overlayfs 1.10 can show from them.
	for o, want := range map[override]string{
		{uid: 1, gid: 2, perm: 0o755}:                              "1:2:0755",
		{uid: 1, gid: 2, perm: 0o777, typ: unix.S_IFLNK}:           "1:2:0120777:symlink",
		{perm: 0o755, typ: unix.S_IFSOCK}:                          "0:0:0140755:socket",
		{perm: 0o644, typ: unix.S_IFIFO}:                           "0:0:0644:pipe",
		{perm: 0o620, typ: unix.S_IFCHR, rdev: unix.Mkdev(136, 3)}: "0:0:0620:char-136-3",
	} {
		if s := o.String(); s != want {
			t.Errorf("%+v formatted %q, want %q", o, s, want)
		}
	}
}

// rwStack makes a lower layer from spec (as stack does) plus empty upper
// and work directories, and opens them with opts.
func rwStack(t *testing.T, opts Options, spec ...string) (fs *FS, lower, upper string) {
	t.Helper()
	_, dirs := stack(t, spec)
	opts.Timeout = time.Second
	fs, upper, _ = openRW(t, dirs[0], opts)
	return fs, dirs[0], upper
}

// openRW opens lower (one layer) under new, empty upper and work
// directories, with opts (its Work set here), and returns the FS, the
// upper directory and the directory holding both.
func openRW(t *testing.T, lower string, opts Options) (fs *FS, upper, base string) {
	t.Helper()
	base = t.TempDir()
	upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
	testenv.Must(t, os.Mkdir(upper, 0o755))
	testenv.Must(t, os.Mkdir(work, 0o755))
	u, err := layers.Open(upper, 0, true)
	testenv.Must(t, err)
	l, err := layers.Open(lower, 1, false)
	testenv.Must(t, err)
	w, err := copyup.Open(work)
	testenv.Must(t, err)
	t.Cleanup(func() { u.Close(); l.Close(); w.Close() })
	opts.Work = w
	fs, err = New([]*layers.Layer{u, l}, opts)
	testenv.Must(t, err)
	return fs, upper, base
}

func lchown(t *testing.T, p string, uid, gid int) {
	t.Helper()
	testenv.Must(t, os.Lchown(p, uid, gid))
}

func owner(t *testing.T, p string) [2]uint32 {
	t.Helper()
	var st unix.Stat_t
	testenv.Must(t, unix.Lstat(p, &st))
	return [2]uint32{st.Uid, st.Gid}
}

func attrOf(t *testing.T, fs *FS, path string) Attr {
	t.Helper()
	e, err := walk(fs, path)
	testenv.Must(t, err)
	a, err := fs.GetAttr(e.ID)
	testenv.Must(t, err)
	if a != e.Attr {
		t.Errorf("%s: lookup shows %+v, getattr %+v", path, e.Attr, a)
	}
	return a
}

func TestOwnerMapping(t *testing.T) {
	m := []IDRange{{0, 1000, 1}, {1, 100000, 65536}}
	fs, lower, upper := rwStack(t, Options{
		UIDs: IDMap{Ranges: m, Overflow: 65534},
		GIDs: IDMap{Ranges: m, Overflow: 65534},
	}, "f a x", "f b x", "f c x", "d d")
	lchown(t, filepath.Join(lower, "b"), 1, 2)
	lchown(t, filepath.Join(lower, "c"), 100005, 0)
	lchown(t, filepath.Join(lower, "d"), 5000, 5000)
	for path, want := range map[string][2]uint32{"a": {1000, 1000}, "b": {100000, 100001}, "c": {65534, 1000}, "d": {104999, 104999}} {
		if a := attrOf(t, fs, path); a.Uid != want[0] || a.Gid != want[1] {
			t.Errorf("%s shows %d:%d, want %d:%d", path, a.Uid, a.Gid, want[0], want[1])
		}
	}
	// The caller's ids are stored mapped back.
	e, _, err := fs.Create(inodes.RootID, "new", 0o644, unix.O_RDWR, Cred{Uid: 100000, Gid: 1000})
	testenv.Must(t, err)
	if got := owner(t, filepath.Join(upper, "new")); got != [2]uint32{1, 0} {
		t.Errorf("new file stored as %v, want 1:0", got)
	}
	if e.Attr.Uid != 100000 || e.Attr.Gid != 1000 {
		t.Errorf("new file shows %d:%d, want 100000:1000", e.Attr.Uid, e.Attr.Gid)
	}
	// chown maps back; an id without a mapping is stored as the overflow
	// id, as fuse-overlayfs does, not refused.
	for shown, stored := range map[uint32]uint32{100009: 10, 5: 65534} {
		a, err := fs.SetAttr(e.ID, SetAttrs{Uid: &shown})
		testenv.Must(t, err)
		if got := owner(t, filepath.Join(upper, "new")); got[0] != stored {
			t.Errorf("chown %d stored %d, want %d", shown, got[0], stored)
		}
		if a.Uid != fs.opts.UIDs.shown(stored) {
			t.Errorf("chown %d shows %d", shown, a.Uid)
		}
	}
}

func TestSquash(t *testing.T) {
	seven, eight := uint32(7), uint32(8)
	fs, lower, upper := rwStack(t, Options{UIDs: IDMap{Squash: &seven}, GIDs: IDMap{Squash: &eight}}, "f a x")
	lchown(t, filepath.Join(lower, "a"), 3, 3)
	if a := attrOf(t, fs, "a"); a.Uid != 7 || a.Gid != 8 {
		t.Errorf("a shows %d:%d, want 7:8", a.Uid, a.Gid)
	}
	e, err := walk(fs, "a")
	testenv.Must(t, err)
	nine := uint32(9)
	a, err := fs.SetAttr(e.ID, SetAttrs{Uid: &nine, Gid: &nine})
	testenv.Must(t, err)
	if a.Uid != 7 || a.Gid != 8 || owner(t, filepath.Join(upper, "a")) != [2]uint32{9, 9} {
		t.Errorf("after chown shows %d:%d, stored %v; want 7:8 and 9:9", a.Uid, a.Gid, owner(t, filepath.Join(upper, "a")))
	}
}

func TestOverrideRead(t *testing.T) {
	fs, _ := stack(t, []string{
		"x . " + OverrideContainers + "=0:0:0755",
		"f f x", "x f " + OverrideContainers + "=5:6:0700", "x f user.foo=bar",
		"d d", "x d " + OverrideContainers + "=7:8:01777",
		"f tty x", "x tty " + OverrideContainers + "=0:5:0620:char-136-3",
		"f ln target", "x ln " + OverrideContainers + "=1:2:0777:symlink",
		"f bad x", "x bad " + OverrideContainers + "=garbage",
		"f fakedir x", "x fakedir " + OverrideContainers + "=0:0:0755:dir",
	})
	for path, want := range map[string]Attr{
		"f":       {Mode: unix.S_IFREG | 0o700, Uid: 5, Gid: 6, Size: 1},
		"d":       {Mode: unix.S_IFDIR | 0o1777, Uid: 7, Gid: 8},
		"tty":     {Mode: unix.S_IFCHR | 0o620, Gid: 5, Rdev: unix.Mkdev(136, 3)},
		"ln":      {Mode: unix.S_IFLNK | 0o777, Uid: 1, Gid: 2, Size: 6},
		"bad":     {Mode: unix.S_IFREG | 0o644, Size: 1},
		"fakedir": {Mode: unix.S_IFREG | 0o755, Size: 1},
	} {
		a := attrOf(t, fs, path)
		got := Attr{Mode: a.Mode, Uid: a.Uid, Gid: a.Gid, Rdev: a.Rdev}
		if a.Mode&unix.S_IFMT != unix.S_IFDIR {
			got.Size = a.Size
		}
		if got != want {
			t.Errorf("%s: shows %+v, want %+v", path, got, want)
		}
	}
	// A listing shows the types stat shows.
	ents, err := fs.ReadDir(inodes.RootID, 0, 1<<20)
	testenv.Must(t, err)
	types := map[string]uint8{}
	for _, e := range ents {
		types[e.Name] = e.Type
	}
	for name, want := range map[string]uint8{"f": unix.DT_REG, "d": unix.DT_DIR, "tty": unix.DT_CHR, "ln": unix.DT_LNK, "bad": unix.DT_REG, "fakedir": unix.DT_REG} {
		if types[name] != want {
			t.Errorf("%s listed with type %d, want %d", name, types[name], want)
		}
	}
	e, err := walk(fs, "ln")
	testenv.Must(t, err)
	if target, err := fs.Readlink(e.ID); err != nil || target != "target" {
		t.Errorf("readlink of a file standing for a symlink: %q, %v", target, err)
	}
	e, err = walk(fs, "f")
	testenv.Must(t, err)
	if _, err := fs.Getxattr(e.ID, OverrideContainers); err != syscall.ENODATA {
		t.Errorf("getxattr of the override: %v, want ENODATA", err)
	}
	if names, _ := fs.Listxattr(e.ID, true); !slices.Equal(names, []string{"user.foo"}) {
		t.Errorf("listxattr %q, want only user.foo", names)
	}
	if v, err := fs.Getxattr(e.ID, "user.foo"); err != nil || string(v) != "bar" {
		t.Errorf("user.foo: %q, %v", v, err)
	}
}

// Without a marker on the layer root, the xattr is an ordinary one.
func TestOverrideNeedsRootMarker(t *testing.T) {
	fs, _ := stack(t, []string{"f f x", "x f " + OverrideContainers + "=5:6:0700"})
	a := attrOf(t, fs, "f")
	if a.Uid != 0 || a.Mode != unix.S_IFREG|0o644 {
		t.Errorf("shows %d %o, want the file's own 0 and 0644", a.Uid, a.Mode)
	}
	e, _ := walk(fs, "f")
	if v, err := fs.Getxattr(e.ID, OverrideContainers); err != nil || string(v) != "5:6:0700" {
		t.Errorf("getxattr %q, %v", v, err)
	}
}

func TestOverrideWrite(t *testing.T) {
	m := []IDRange{{0, 1000, 65536}}
	fs, _, upper := rwStack(t, Options{XattrPermissions: 2, UIDs: IDMap{Ranges: m, Overflow: 65534}, GIDs: IDMap{Ranges: m, Overflow: 65534}},
		"x . "+OverrideContainers+"=0:0:0755",
		"f f x", "x f "+OverrideContainers+"=5:6:0700",
		"d d", "x d "+OverrideContainers+"=7:8:02775")
	get := func(rel string) string {
		v, err := testenv.Xattr(filepath.Join(upper, rel), OverrideUser)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
		}
		return v
	}
	if v := get("."); v != "0:0:0755" {
		t.Errorf("upper root marked %q, want 0:0:0755", v)
	}
	// chmod copies up with the lower override and changes only the mode.
	e, err := walk(fs, "f")
	testenv.Must(t, err)
	mode := uint32(0o640)
	a, err := fs.SetAttr(e.ID, SetAttrs{Mode: &mode})
	testenv.Must(t, err)
	if a.Mode != unix.S_IFREG|0o640 || a.Uid != 1005 || a.Gid != 1006 {
		t.Errorf("after chmod shows %o %d:%d, want 100640 1005:1006", a.Mode, a.Uid, a.Gid)
	}
	if v := get("f"); v != "5:6:0640" {
		t.Errorf("override %q, want 5:6:0640", v)
	}
	uid := uint32(1011)
	if _, err := fs.SetAttr(e.ID, SetAttrs{Uid: &uid}); err != nil {
		t.Fatal(err)
	}
	if v := get("f"); v != "11:6:0640" {
		t.Errorf("after chown override %q, want 11:6:0640", v)
	}
	var st unix.Stat_t
	testenv.Must(t, unix.Lstat(filepath.Join(upper, "f"), &st))
	if st.Uid != 0 || st.Mode&0o7777 != 0o644 {
		t.Errorf("the file itself changed to %d %o", st.Uid, st.Mode)
	}
	// New objects: owner and mode in the override, the group of a
	// setgid parent as the override shows it.
	d, err := walk(fs, "d")
	testenv.Must(t, err)
	sub, err := fs.Mkdir(d.ID, "sub", 0o555, Cred{Uid: 1003, Gid: 1004})
	testenv.Must(t, err)
	if v := get("d/sub"); v != "3:8:02555" {
		t.Errorf("new directory override %q, want 3:8:02555", v)
	}
	if sub.Attr.Mode != unix.S_IFDIR|0o2555 || sub.Attr.Uid != 1003 || sub.Attr.Gid != 1008 {
		t.Errorf("new directory shows %o %d:%d", sub.Attr.Mode, sub.Attr.Uid, sub.Attr.Gid)
	}
	testenv.Must(t, unix.Lstat(filepath.Join(upper, "d/sub"), &st))
	if st.Mode&0o7777 != 0o755 {
		t.Errorf("new directory itself has mode %o, want 0755 (usable by the mount)", st.Mode&0o7777)
	}
	// The override cannot be set through the mount.
	if err := fs.Setxattr(e.ID, OverrideUser, []byte("0:0:04755"), 0, false); err != syscall.EPERM {
		t.Errorf("setxattr %s: %v, want EPERM", OverrideUser, err)
	}
	if err := fs.Setxattr(e.ID, OverrideContainers, []byte("0:0:04755"), 0, false); err != syscall.EPERM {
		t.Errorf("setxattr %s: %v, want EPERM", OverrideContainers, err)
	}
}
