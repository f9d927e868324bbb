package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ovlmount/ovlmount/internal/mountinfo"
	"github.com/ovlmount/ovlmount/layers"
	"github.com/ovlmount/ovlmount/overlay"
	"golang.org/x/sys/unix"
)

// status says what ovlmount does with an option it accepts.
type status int

const (
	// done: implemented.
	done status = iota
	// ignored: accepted, has no effect, said in --help and the docs.
	ignored
	// later: not implemented yet; refused because ignoring it would
	// silently change what users see (owners, modes, xattrs).
	later
)

// option describes one -o option. values, when set, lists the accepted
// values; a value of "" means the option takes none.
type option struct {
	name   string
	status status
	values []string
	help   string
}

// options is every option fuse-overlayfs and the FUSE mount helper pass,
// plus ovlmount's own. docs/options.md is written from the same table.
var options = []option{
	{"lowerdir", done, nil, "lower layers, top first, separated by ':' ('\\:' for a colon in a path); layers after '::' are data-only, each after its own '::' (lowerdir=a:b::c::d): never merged, only reached through the absolute redirects of metacopy files"},
	{"upperdir", done, nil, "the writable layer (needs workdir)"},
	{"workdir", done, nil, "empty directory on the upper layer's filesystem, outside it"},
	{"timeout", done, nil, "seconds the kernel may cache entries and attributes (default 1000000000)"},
	{"xino", done, []string{"on", "auto", "off"}, "inode numbers over several filesystems: on/auto put the filesystem index in the high bits (default auto); off shows real numbers"},
	{"static_nlink", done, []string{""}, "every directory reports nlink 1"},
	{"debug", done, []string{""}, "log a line per request (operation, node and path, name, result, time) to stderr and stay in the foreground"},
	{"ro", done, []string{""}, "mount read-only"},
	{"rw", done, []string{""}, "read-write when there is an upper layer (default)"},
	{"allow_other", done, []string{""}, "let other users use the mount (default when run as root)"},
	{"allow_root", done, []string{""}, "treated as allow_other"},
	{"default_permissions", done, []string{""}, "the kernel checks permissions against the attributes shown (always on; required of a /dev/fd/N connection)"},
	{"suid", done, []string{""}, "mount flag"},
	{"nosuid", done, []string{""}, "mount flag"},
	{"dev", done, []string{""}, "mount flag"},
	{"nodev", done, []string{""}, "mount flag"},
	{"exec", done, []string{""}, "mount flag"},
	{"noexec", done, []string{""}, "mount flag"},
	{"atime", done, []string{""}, "mount flag"},
	{"noatime", done, []string{""}, "mount flag (default)"},
	{"max_write", done, nil, "largest write request in bytes"},
	{"passthrough", done, []string{"1", "0"}, "1 (default): as root outside a user namespace, the kernel reads and writes upper files itself (FUSE passthrough); 0: the daemon serves all file data"},
	{"diratime", ignored, []string{""}, "FUSE mounts take no directory-atime flag"},
	{"nodiratime", ignored, []string{""}, "FUSE mounts take no directory-atime flag"},
	{"relatime", ignored, []string{""}, "FUSE mounts take no relatime flag; lower layers never get atime updates"},
	{"kernel_cache", ignored, []string{""}, "lower file pages are always kept in the page cache"},
	{"threaded", ignored, []string{"0", "1"}, "operations are always served in parallel"},
	{"fast_ino", ignored, []string{"0", "1"}, "inode numbers always follow the kernel's samefs/xino rule"},
	{"context", ignored, nil, "SELinux labels are not applied"},
	{"noacl", done, []string{""}, "the kernel enforces no POSIX ACLs (mode bits only), and objects built in the workdir inherit no default ACL"},
	{"writeback", ignored, []string{"0", "1"}, "the kernel's writeback cache stays off: with it the kernel keeps mtimes of its own, and they would change across a remount"},
	{"fsync", done, []string{"0", "1"}, "0: skip the fsyncs of copy-up and syncfs, as volatile"},
	{"volatile", done, []string{""}, "skip the fsyncs of copy-up and syncfs: faster, not crash-safe for durability (still atomic)"},
	{"redirect_dir", done, []string{"on", "follow", "nofollow", "off"}, "on: rename a lower or merged directory by recording where its lower part lives (overlay.redirect) instead of EXDEV; follow: follow such redirects, make none; nofollow: refuse to follow them (EPERM); off (default): make none and follow them, as the kernel with redirect_always_follow"},
	{"verity", done, []string{"off", "on", "require"}, "on: a metacopy file's data must have the fs-verity digest its overlay.metacopy records, checked on open and copy-up against the data file's own fs-verity (EIO otherwise, and for a data file without fs-verity, as the kernel). require: as on, and a metacopy file without a digest is refused (EIO), and copy-up copies the data of a file without fs-verity. off (default): digests are not checked"},
	{"uuid", done, []string{"auto", "on", "null", "off"}, "auto (default): a new upper layer gets a persistent overlay uuid (overlay.uuid on its root), an old one keeps none; on: always, and the mount fails without one; null: none; off: none, and origins are written with a null uuid and only such are followed (for a copy of a layer's filesystem with another uuid)"},
	{"metacopy", done, []string{"on", "off"}, "on: chown, chmod, utimes, setxattr and renames copy a lower file up without its data, which stays below until the file is written (overlay.metacopy); implies redirect_dir=on. off (default): copy-up copies data, and a metacopy file with data below is refused (EPERM), as is any lower one but for one with an absolute redirect in the lowest layer above data-only layers"},
	{"index", done, []string{"on", "off"}, "on: the inodes index, as the kernel's: a lower hard link copied up goes through workdir/index, so that its names stay one file (one inode number, the overlay's link count in overlay.nlink) and every name shows the copy; the upper layer's root then records its lowerdir, and a mount over another lowerdir fails (ESTALE), and so does one over an upperdir or workdir another ovlmount mount, or a kernel overlay mount this namespace lists, uses (EBUSY; index=off mounts it). Where a layer's filesystem gives no file handles, or two lower filesystems share a uuid, it falls back to off with a warning; without upperdir it does nothing. off (default): copying up one name of a lower hard link breaks the link"},
	{"userxattr", done, []string{""}, "the overlay's markers are user.overlay.* xattrs, written and read, as the kernel's userxattr (the form of unprivileged mounts); trusted.overlay.* and user.fuseoverlayfs.* ones are then plain xattrs; redirects are not followed (redirect_dir=nofollow), and another redirect_dir= or metacopy=on is refused, as by the kernel"},
	{"noxattrs", ignored, []string{"0"}, "xattrs are always served"},
	{"xattr_permissions", done, []string{"0", "1", "2"}, "keep owner and mode changes in an xattr instead of changing them: 1 security.fuseoverlayfs.override_stat, 2 user.fuseoverlayfs.override_stat (default 0: change them)"},
	{"uidmapping", done, nil, "STORED:SHOWN:COUNT[:STORED:SHOWN:COUNT...]: owners in the layers shown as other ids; unmapped ids show as 65534 (overflowuid)"},
	{"gidmapping", done, nil, "as uidmapping, for groups"},
	{"squash_to_root", done, []string{""}, "every object shows as owned by 0:0"},
	{"squash_to_uid", done, nil, "every object shows as owned by this uid (over squash_to_root)"},
	{"squash_to_gid", done, nil, "every object shows as owned by this gid (over squash_to_root)"},
	{"ino32_t", done, []string{""}, "inode numbers below 2^32, for 32-bit programs: the xino layout over 32 bits; a number that does not fit gets one from a reserved range"},
	{"plugins", later, nil, "not implemented yet"},
}

func lookupOption(name string) *option {
	for i := range options {
		if options[i].name == name {
			return &options[i]
		}
	}
	return nil
}

// config is a parsed and validated command line.
type config struct {
	lower      []string // absolute, top first
	upper      string
	work       string
	mountpoint string
	source     string
	foreground bool
	debug      bool
	help       bool
	version    bool

	timeout     time.Duration
	xinoOff     bool
	xinoOn      bool
	ino32       bool
	staticNlink bool
	noACL       bool
	userXattr   bool
	noPassthru  bool
	noFsync     bool
	readOnly    bool
	allowOther  bool
	maxWrite    uint32
	uids, gids  []overlay.IDRange
	squashRoot  bool
	squashUID   *uint32
	squashGID   *uint32
	xattrPerm   int
	// data are the data-only lower layers (after '::' in lowerdir).
	data []string
	// redirect and metacopy are redirect_dir= and metacopy= as given
	// ("" when not).
	redirect, metacopy string
	// index says index=on, and that the layers allow it (validate).
	index  bool
	uuid   overlay.UUIDMode
	verity overlay.VerityMode
	// defaultPerms is set when the options name default_permissions:
	// for a connection mounted by someone else (/dev/fd/N), the only
	// word on whether the kernel checks permissions.
	defaultPerms bool
	mountFlags   []string // mount(2) flags for the FUSE library
	warnings     []string // one line each, printed before mounting
	given        []string // the -o options as given, for -d
}

// parseArgs parses a fuse-overlayfs command line:
//
//	ovlmount [-f] [-d] [-o OPT[,OPT...]] [SOURCE] MOUNTPOINT
//
// Options and positionals may come in any order; every positional
// overwrites the mountpoint, so the last one wins and the one before it,
// if any, is the source (mount(8) passes SOURCE MOUNTPOINT). The config
// is returned with an error too: its warnings name the unknown options,
// which are to be reported before the error.
func parseArgs(args []string) (*config, error) {
	c := &config{timeout: 1000000000 * time.Second}
	var opts []string
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-f":
			c.foreground = true
		case a == "-d":
			c.debug, c.foreground = true, true
		case a == "-h" || a == "--help":
			c.help = true
		case a == "-V" || a == "--version":
			c.version = true
		case a == "-o":
			if i+1 == len(args) {
				return c, fmt.Errorf("-o needs an argument")
			}
			i++
			opts = append(opts, splitOptions(args[i])...)
		case strings.HasPrefix(a, "-o"):
			opts = append(opts, splitOptions(a[2:])...)
		case strings.HasPrefix(a, "-") && a != "-":
			return c, fmt.Errorf("unknown flag %q (see --help)", a)
		default:
			pos = append(pos, a)
		}
	}
	if c.help || c.version {
		return c, nil
	}
	c.given = opts
	if err := c.unknown(opts); err != nil {
		return c, err
	}
	for _, o := range opts {
		if err := c.apply(o); err != nil {
			return c, err
		}
	}
	if len(pos) == 0 {
		return c, fmt.Errorf("no mountpoint given (see --help)")
	}
	c.mountpoint = pos[len(pos)-1]
	if len(pos) > 1 {
		c.source = pos[len(pos)-2]
	}
	return c, nil
}

// unknown records a warning for each unknown option, as fuse-overlayfs
// ignores them, and refuses the first that looks like a typo of a known
// one: ignoring "uperdir" would mount without the upper layer meant.
func (c *config) unknown(opts []string) error {
	var typo error
	for _, o := range opts {
		name, _, _ := strings.Cut(o, "=")
		if lookupOption(name) != nil {
			continue
		}
		if s := suggestOption(name); s != "" {
			if typo == nil {
				typo = fmt.Errorf("unknown option %q: did you mean %s?", o, s)
			}
			continue
		}
		c.warnings = append(c.warnings, fmt.Sprintf("unknown option %q ignored", o))
	}
	return typo
}

// apply records one option; unknown ones are left to c.unknown.
func (c *config) apply(o string) error {
	name, value, hasValue := strings.Cut(o, "=")
	opt := lookupOption(name)
	if opt == nil {
		return nil
	}
	if opt.values != nil {
		ok := false
		for _, v := range opt.values {
			if v == value && (v != "" || !hasValue) {
				ok = true
			}
		}
		if !ok {
			if len(opt.values) == 1 && opt.values[0] == "" {
				return fmt.Errorf("option %s takes no value", name)
			}
			return fmt.Errorf("option %s: invalid value %q (accepted: %s)", name, value, strings.Join(opt.values, ", "))
		}
	} else if !hasValue {
		return fmt.Errorf("option %s needs a value", name)
	}
	switch opt.status {
	case later:
		return fmt.Errorf("option %s is not implemented yet", name)
	case ignored:
		c.warnings = append(c.warnings, fmt.Sprintf("option %s ignored: %s", name, opt.help))
		return nil
	}
	switch name {
	case "lowerdir":
		var err error
		if c.lower, c.data, err = mountinfo.SplitLower(value); err != nil {
			return fmt.Errorf("option lowerdir: %v", err)
		}
	case "upperdir":
		c.upper = value
	case "workdir":
		c.work = value
	case "timeout":
		s, err := strconv.ParseFloat(value, 64)
		if err != nil || s < 0 {
			return fmt.Errorf("option timeout: invalid value %q (seconds)", value)
		}
		c.timeout = time.Duration(s * float64(time.Second))
	case "xino":
		c.xinoOff, c.xinoOn = value == "off", value == "on"
	case "static_nlink":
		c.staticNlink = true
	case "noacl":
		c.noACL = true
	case "userxattr":
		c.userXattr = true
	case "passthrough":
		c.noPassthru = value == "0"
	case "ino32_t":
		c.ino32 = true
	case "volatile":
		c.noFsync = true
	case "fsync":
		c.noFsync = value == "0"
	case "debug":
		c.debug, c.foreground = true, true
	case "ro":
		c.readOnly = true
	case "rw":
		c.readOnly = false
	case "allow_other", "allow_root":
		c.allowOther = true
	case "max_write":
		n, err := strconv.ParseUint(value, 10, 32)
		if err != nil || n == 0 {
			return fmt.Errorf("option max_write: invalid value %q (bytes)", value)
		}
		c.maxWrite = uint32(n)
	case "uidmapping", "gidmapping":
		r, err := overlay.ParseIDRanges(value)
		if err != nil {
			return fmt.Errorf("option %s: %v", name, err)
		}
		if name == "uidmapping" {
			c.uids = r
		} else {
			c.gids = r
		}
	case "squash_to_root":
		c.squashRoot = true
	case "squash_to_uid", "squash_to_gid":
		n, err := strconv.ParseUint(value, 10, 32)
		if err != nil {
			return fmt.Errorf("option %s: invalid value %q (an id)", name, value)
		}
		id := uint32(n)
		if name == "squash_to_uid" {
			c.squashUID = &id
		} else {
			c.squashGID = &id
		}
	case "xattr_permissions":
		c.xattrPerm = int(value[0] - '0')
	case "redirect_dir":
		c.redirect = value
	case "metacopy":
		c.metacopy = value
	case "index":
		c.index = value == "on"
	case "verity":
		c.verity = map[string]overlay.VerityMode{"off": overlay.VerityOff, "on": overlay.VerityOn, "require": overlay.VerityRequire}[value]
	case "uuid":
		c.uuid = map[string]overlay.UUIDMode{"auto": overlay.UUIDAuto, "on": overlay.UUIDOn, "null": overlay.UUIDNull, "off": overlay.UUIDOff}[value]
	case "default_permissions":
		c.defaultPerms = true
	default:
		// Of two flags that cancel each other the last one wins, as with
		// mount(8); the FUSE library would pick one at random.
		flags := c.mountFlags[:0]
		for _, f := range c.mountFlags {
			if f != name && f != oppositeFlag[name] {
				flags = append(flags, f)
			}
		}
		c.mountFlags = append(flags, name)
	}
	return nil
}

// redirects returns what redirect_dir= and metacopy= make of redirects:
// metacopy=on implies redirect_dir=on, and userxattr nofollow, as in the
// kernel.
func (c *config) redirects() overlay.Redirects {
	mode := c.redirect
	switch {
	case mode == "" && c.metacopy == "on":
		mode = "on"
	case c.userXattr:
		mode = "nofollow"
	}
	return overlay.Redirects{Follow: mode != "nofollow", Create: mode == "on"}
}

// idMaps returns the owner mappings of the options, as fuse-overlayfs
// combines them: squash_to_uid and squash_to_gid win over squash_to_root.
func (c *config) idMaps() (uids, gids overlay.IDMap) {
	uids = overlay.IDMap{Ranges: c.uids, Overflow: overlay.Overflow("uid"), Squash: c.squashUID}
	gids = overlay.IDMap{Ranges: c.gids, Overflow: overlay.Overflow("gid"), Squash: c.squashGID}
	root := uint32(0)
	if c.squashRoot && uids.Squash == nil {
		uids.Squash = &root
	}
	if c.squashRoot && gids.Squash == nil {
		gids.Squash = &root
	}
	return uids, gids
}

// oppositeFlag pairs the mount flags that cancel each other.
var oppositeFlag = map[string]string{
	"suid": "nosuid", "nosuid": "suid",
	"dev": "nodev", "nodev": "dev",
	"exec": "noexec", "noexec": "exec",
	"atime": "noatime", "noatime": "atime",
}

// splitOptions splits an -o argument at commas. A backslash escapes the
// next character ("\," is a comma inside a value; "\:" is kept for
// lowerdir), and a double-quoted part may hold commas (podman quotes
// context= values).
func splitOptions(s string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '\\' && i+1 < len(s):
			i++
			if s[i] != ',' {
				cur.WriteByte('\\')
			}
			cur.WriteByte(s[i])
		case ch == '"':
			quoted = !quoted
			cur.WriteByte(ch)
		case ch == ',' && !quoted:
			if cur.Len() > 0 {
				out = append(out, cur.String())
			}
			cur.Reset()
		default:
			cur.WriteByte(ch)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// validate checks the layers on disk and makes every path absolute. It
// creates nothing.
func (c *config) validate() error {
	if len(c.lower) == 0 {
		return fmt.Errorf("missing option lowerdir=")
	}
	if c.upper != "" && c.work == "" {
		return fmt.Errorf("option upperdir needs workdir")
	}
	if c.work != "" && c.upper == "" {
		return fmt.Errorf("option workdir needs upperdir")
	}
	for _, list := range [][]string{c.lower, c.data} {
		for i, l := range list {
			p, err := dirPath("lowerdir", l)
			if err != nil {
				return err
			}
			list[i] = p
		}
	}
	if c.uuid == overlay.UUIDOn && c.upper == "" {
		return fmt.Errorf("option uuid=on needs an upper layer to keep the uuid in")
	}
	if c.metacopy == "on" && c.redirect != "" && c.redirect != "on" {
		return fmt.Errorf("option metacopy=on conflicts with redirect_dir=%s (metacopy needs redirects)", c.redirect)
	}
	// The kernel follows no redirect and copies up no metadata alone
	// with userxattr, and refuses options asking for it: markers in
	// user.* can be set by anyone.
	if c.userXattr && c.redirect != "" && c.redirect != "nofollow" {
		return fmt.Errorf("option userxattr conflicts with redirect_dir=%s (only nofollow goes with it)", c.redirect)
	}
	if c.userXattr && c.metacopy == "on" {
		return fmt.Errorf("option userxattr conflicts with metacopy=on")
	}
	var err error
	if c.upper != "" {
		if c.upper, err = dirPath("upperdir", c.upper); err != nil {
			return err
		}
		if c.work, err = dirPath("workdir", c.work); err != nil {
			return err
		}
		if devOf(c.upper) != devOf(c.work) {
			return fmt.Errorf("option workdir: %s is not on the same filesystem as upperdir %s", c.work, c.upper)
		}
		if within(c.work, c.upper) || within(c.upper, c.work) {
			return fmt.Errorf("option workdir: %s and upperdir %s must not be inside each other", c.work, c.upper)
		}
	}
	if c.index {
		c.checkIndex()
	}
	if strings.HasPrefix(c.mountpoint, "/dev/fd/") {
		// mount.fuse3 drop_privileges: an already-open FUSE fd, mounted
		// with the options given here. ovlmount checks no permissions
		// itself, so it serves no mount on which the kernel does not.
		if !c.defaultPerms {
			return fmt.Errorf("mountpoint %s: a FUSE connection mounted without default_permissions is refused, since nothing would check permissions on it; add default_permissions to the mount options", c.mountpoint)
		}
		return nil
	}
	if c.mountpoint, err = dirPath("mountpoint", c.mountpoint); err != nil {
		return err
	}
	// The kernel's overlay never crosses a mount below a layer's root,
	// and shows the directory under a mountpoint there. ovlmount reaches
	// the upper layer, and a lower one it cannot clone, through the
	// mounts below them: a mount inside such a layer would serve itself,
	// showing its own root in its mountpoint's place, and its daemon,
	// holding its own mount, would never end, even after umount -l.
	if c.upper != "" && within(c.mountpoint, c.upper) && c.mountpoint != c.upper {
		return fmt.Errorf("option upperdir: mountpoint %s is inside upperdir %s; the mount would serve itself", c.mountpoint, c.upper)
	}
	for _, l := range append(c.lower, c.data...) {
		if within(c.mountpoint, l) && c.mountpoint != l && !layers.Clones(l) {
			return fmt.Errorf("option lowerdir: mountpoint %s is inside lowerdir %s, which this process cannot clone (no CAP_SYS_ADMIN over its mount namespace); the mount would serve itself", c.mountpoint, l)
		}
	}
	return nil
}

// checkIndex turns index=on off, with a warning, where the kernel does:
// without an upper layer, where a layer's filesystem gives no file
// handles (the index names lower objects by theirs), and where two lower
// filesystems share a uuid (an origin could not tell them apart).
func (c *config) checkIndex() {
	off := func(why string) {
		c.index = false
		c.warnings = append(c.warnings, "option index=on ignored: "+why)
	}
	if c.upper == "" {
		off("a mount without upperdir has no index")
		return
	}
	type fsys struct {
		dev   uint64
		uuid  [16]byte
		lower bool
	}
	filesystems := []fsys{{dev: devOf(c.upper)}}
	for i, l := range append(append([]string{c.upper}, c.lower...), c.data...) {
		fd, err := unix.Open(l, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // said when the layer is opened
		}
		_, _, herr := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH)
		uuid, _ := layers.FSUUID(fd)
		unix.Close(fd)
		if herr == unix.EOPNOTSUPP {
			off(fmt.Sprintf("the filesystem of %s gives no file handles", l))
			return
		}
		switch {
		case i == 0:
			filesystems[0].uuid = uuid
			continue
		case i > len(c.lower):
			continue // data-only layers have no uuid to tell apart
		}
		dev := devOf(l)
		j := slices.IndexFunc(filesystems, func(f fsys) bool { return f.dev == dev })
		if j >= 0 {
			filesystems[j].lower = true
			continue
		}
		if slices.ContainsFunc(filesystems, func(f fsys) bool { return f.lower && f.uuid == uuid }) {
			off(fmt.Sprintf("the filesystem of lowerdir %s has the uuid of another lower one", l))
			return
		}
		filesystems = append(filesystems, fsys{dev: dev, uuid: uuid, lower: true})
	}
}

// dirPath returns the absolute, symlink-free form of a directory path.
func dirPath(what, p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("%s %s: %v", what, p, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("%s %s: no such directory", what, p)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("%s %s: %v", what, p, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%s %s: not a directory", what, p)
	}
	return real, nil
}

// devOf returns the st_dev of an existing path.
func devOf(p string) uint64 {
	var st syscall.Stat_t
	if syscall.Stat(p, &st) != nil {
		return 0
	}
	return st.Dev
}

// within reports whether path a is b or lies below it.
func within(a, b string) bool {
	return a == b || strings.HasPrefix(a, strings.TrimSuffix(b, "/")+"/")
}

// describe says what -d logs at start of the command line: the mount,
// the workdir and the options given.
func (c *config) describe() []string {
	lines := []string{"mountpoint: " + c.mountpoint}
	if c.upper != "" {
		lines = append(lines, "workdir: "+c.work)
	}
	return append(lines, "options: "+strings.Join(c.given, ","))
}
