package main

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ovlmount/ovlmount/internal/mountinfo"
	"github.com/ovlmount/ovlmount/internal/testenv"
	"github.com/ovlmount/ovlmount/overlay"
	"golang.org/x/sys/unix"
)

func TestParseArgsPositionals(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		mountpoint string
		source     string
		lower      []string
		foreground bool
		debug      bool
	}{
		{"mountpoint only", []string{"-o", "lowerdir=/l", "/m"}, "/m", "", []string{"/l"}, false, false},
		{"mount helper form", []string{"src", "/m", "-o", "lowerdir=/l"}, "/m", "src", []string{"/l"}, false, false},
		{"last positional wins", []string{"a", "b", "c", "/m", "-olowerdir=/l"}, "/m", "c", []string{"/l"}, false, false},
		{"options between positionals", []string{"src", "-o", "lowerdir=/l", "/m", "-f"}, "/m", "src", []string{"/l"}, true, false},
		{"-oOPTS glued", []string{"-olowerdir=/l1:/l2", "/m"}, "/m", "", []string{"/l1", "/l2"}, false, false},
		{"-o given twice, last value wins", []string{"-o", "lowerdir=/a", "/m", "-o", "lowerdir=/b"}, "/m", "", []string{"/b"}, false, false},
		{"-d is debug in the foreground", []string{"-d", "-o", "lowerdir=/l", "/m"}, "/m", "", []string{"/l"}, true, true},
		{"-o debug is debug in the foreground", []string{"-o", "lowerdir=/l,debug", "/m"}, "/m", "", []string{"/l"}, true, true},
		{"a lone dash is a positional", []string{"-o", "lowerdir=/l", "-", "/m"}, "/m", "-", []string{"/l"}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseArgs(tc.args)
			if err != nil {
				t.Fatalf("parseArgs(%q): %v", tc.args, err)
			}
			if c.mountpoint != tc.mountpoint || c.source != tc.source {
				t.Errorf("mountpoint, source = %q, %q; want %q, %q", c.mountpoint, c.source, tc.mountpoint, tc.source)
			}
			if !reflect.DeepEqual(c.lower, tc.lower) {
				t.Errorf("lower = %q, want %q", c.lower, tc.lower)
			}
			if c.foreground != tc.foreground || c.debug != tc.debug {
				t.Errorf("foreground, debug = %v, %v; want %v, %v", c.foreground, c.debug, tc.foreground, tc.debug)
			}
		})
	}
}

func TestParseArgsFlags(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"--help", "-o", "xino=maybe"}} {
		c, err := parseArgs(args)
		if err != nil || !c.help {
			t.Errorf("parseArgs(%q) = help %v, %v; want help", args, c != nil && c.help, err)
		}
	}
	for _, args := range [][]string{{"-V"}, {"--version"}} {
		c, err := parseArgs(args)
		if err != nil || !c.version {
			t.Errorf("parseArgs(%q) = version %v, %v; want version", args, c != nil && c.version, err)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-o", "lowerdir=/l"}, "mountpoint"},
		{[]string{"/m", "-o"}, "-o"},
		{[]string{"-x", "/m"}, `"-x"`},
		{[]string{"--foo", "/m"}, `"--foo"`},
	} {
		_, err := parseArgs(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseArgs(%q) error = %v, want one naming %s", tc.args, err, tc.want)
		}
	}
}

func TestSplitOptions(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"a", []string{"a"}},
		{"a,b,c", []string{"a", "b", "c"}},
		{",a,,b,", []string{"a", "b"}},
		{`lowerdir=/a\,b,ro`, []string{"lowerdir=/a,b", "ro"}},
		{`lowerdir=/a\:b:/c`, []string{`lowerdir=/a\:b:/c`}},
		{`context="system_u:object_r:container_file_t:s0:c1,c2",ro`, []string{`context="system_u:object_r:container_file_t:s0:c1,c2"`, "ro"}},
		{`lowerdir=/l,context="a,b",upperdir=/u`, []string{"lowerdir=/l", `context="a,b"`, "upperdir=/u"}},
		{`a\\,b`, []string{`a\\`, "b"}},
		{`trailing\`, []string{`trailing\`}},
	} {
		if got := splitOptions(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitOptions(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestSplitLower: lowerdir is split as the kernel splits it, data-only
// layers included (lowerdir=L::D0::D1), and what the kernel refuses is
// refused with one line naming the option.
func TestSplitLower(t *testing.T) {
	for _, tc := range []struct {
		in          string
		lower, data []string
	}{
		{"/a", []string{"/a"}, nil},
		{"/a:/b:/c", []string{"/a", "/b", "/c"}, nil},
		{`/a\:b:/c`, []string{"/a:b", "/c"}, nil},
		{`/a\\b`, []string{`/a\b`}, nil},
		{`/a\`, []string{"/a"}, nil},
		{"/a::/b", []string{"/a"}, []string{"/b"}},
		{"/a:/b::/c::/d", []string{"/a", "/b"}, []string{"/c", "/d"}},
		{`/a::/b\:::/c`, []string{"/a"}, []string{"/b:", "/c"}},
		{"", nil, nil},
	} {
		lower, data, err := mountinfo.SplitLower(tc.in)
		if err != nil || !reflect.DeepEqual(lower, tc.lower) || !reflect.DeepEqual(data, tc.data) {
			t.Errorf("SplitLower(%q) = %q, %q, %v; want %q, %q", tc.in, lower, data, err, tc.lower, tc.data)
		}
	}
	// The kernel refuses these (EINVAL).
	for _, in := range []string{"/a::/b:/c", ":/a", "/a:", "/a::", "/a:::/b", "/a::::/b", "/a::/b::/c:/d"} {
		if lower, data, err := mountinfo.SplitLower(in); err == nil {
			t.Errorf("SplitLower(%q) = %q, %q; want an error", in, lower, data)
		}
		_, err := parseArgs([]string{"-o", "lowerdir=" + in, "/m"})
		if err == nil || !strings.HasPrefix(err.Error(), "option lowerdir: ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("lowerdir=%s: %v; want one line about option lowerdir", in, err)
		}
	}
	// Through the whole command line: "\:" survives splitOptions.
	c, err := parseArgs([]string{`-olowerdir=/x\:y:/z\,w`, "/m"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/x:y", "/z,w"}; !reflect.DeepEqual(c.lower, want) {
		t.Errorf("lower = %q, want %q", c.lower, want)
	}
}

// sampleValue is a valid value for each option of the table that takes
// a free-form one.
var sampleValue = map[string]string{
	"lowerdir":      "/l",
	"upperdir":      "/u",
	"workdir":       "/w",
	"timeout":       "2.5",
	"max_write":     "131072",
	"context":       `"system_u:object_r:container_file_t:s0"`,
	"uidmapping":    "0:1000:1",
	"gidmapping":    "0:1000:1",
	"squash_to_uid": "0",
	"squash_to_gid": "0",
	"plugins":       "/p.so",
}

func TestEveryOption(t *testing.T) {
	for _, o := range options {
		values := o.values
		if values == nil {
			v, ok := sampleValue[o.name]
			if !ok {
				t.Errorf("option %s takes a value but the test has no sample of one", o.name)
				continue
			}
			values = []string{v}
		}
		for _, v := range values {
			arg := o.name
			if v != "" {
				arg += "=" + v
			}
			c, err := parseArgs([]string{"-o", "lowerdir=/l," + arg, "/m"})
			switch o.status {
			case done, ignored:
				if err != nil {
					t.Errorf("-o %s: %v", arg, err)
					continue
				}
				warned := false
				for _, w := range c.warnings {
					warned = warned || strings.Contains(w, o.name)
				}
				if o.status == ignored && !warned {
					t.Errorf("-o %s: ignored option gives no warning naming it (warnings %q)", arg, c.warnings)
				}
			case later:
				if err == nil || !strings.Contains(err.Error(), o.name) {
					t.Errorf("-o %s: error %v, want a refusal naming %s", arg, err, o.name)
				}
			}
		}
	}
}

func TestOptionEffects(t *testing.T) {
	c, err := parseArgs([]string{"-o", "lowerdir=/l,timeout=2.5,xino=off,static_nlink,ro,allow_root,max_write=4096,nosuid,noexec", "/m"})
	if err != nil {
		t.Fatal(err)
	}
	if c.timeout.Seconds() != 2.5 || !c.xinoOff || !c.staticNlink || !c.readOnly || !c.allowOther || c.maxWrite != 4096 {
		t.Errorf("config = %+v", c)
	}
	if want := []string{"nosuid", "noexec"}; !reflect.DeepEqual(c.mountFlags, want) {
		t.Errorf("mount flags = %q, want %q", c.mountFlags, want)
	}
	// Overlay options never reach the kernel as mount flags.
	c, err = parseArgs([]string{"-o", "lowerdir=/l,upperdir=/u,workdir=/w,xino=on,timeout=1,debug,default_permissions", "/m"})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.mountFlags) != 0 {
		t.Errorf("mount flags = %q, want none", c.mountFlags)
	}
	// Of two flags that cancel each other, the last one given wins.
	c, err = parseArgs([]string{"-o", "lowerdir=/l,nosuid,dev,suid,noexec,nodev,atime,exec,noatime,nosuid", "/m"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"nodev", "exec", "noatime", "nosuid"}; !reflect.DeepEqual(c.mountFlags, want) {
		t.Errorf("mount flags = %q, want %q", c.mountFlags, want)
	}
	c, err = parseArgs([]string{"-o", "lowerdir=/l,ro,rw", "/m"})
	if err != nil || c.readOnly {
		t.Errorf("ro,rw: readOnly %v, %v; want the last one to win", c != nil && c.readOnly, err)
	}
}

func TestOwnerOptionsParse(t *testing.T) {
	c, err := parseArgs([]string{"-o", "lowerdir=/l,uidmapping=0:1000:1:1:100000:65536,gidmapping=0:2000:1,squash_to_root,squash_to_gid=5,xattr_permissions=2", "/m"})
	if err != nil {
		t.Fatal(err)
	}
	want := []overlay.IDRange{{Stored: 0, Shown: 1000, Count: 1}, {Stored: 1, Shown: 100000, Count: 65536}}
	if !reflect.DeepEqual(c.uids, want) || !reflect.DeepEqual(c.gids, []overlay.IDRange{{Stored: 0, Shown: 2000, Count: 1}}) {
		t.Errorf("mappings %v %v", c.uids, c.gids)
	}
	if c.xattrPerm != 2 {
		t.Errorf("xattr_permissions %d, want 2", c.xattrPerm)
	}
	// squash_to_gid wins over squash_to_root whatever the order.
	uids, gids := c.idMaps()
	if uids.Squash == nil || *uids.Squash != 0 || gids.Squash == nil || *gids.Squash != 5 {
		t.Errorf("squash uid %v gid %v, want 0 and 5", uids.Squash, gids.Squash)
	}
	if uids.Overflow == 0 {
		t.Errorf("overflow uid 0")
	}
}

func TestInvalidValues(t *testing.T) {
	for _, tc := range []struct{ opt, name string }{
		{"xino=maybe", "xino"},
		{"xino", "xino"},
		{"timeout=abc", "timeout"},
		{"timeout=-1", "timeout"},
		{"timeout", "timeout"},
		{"fsync=2", "fsync"},
		{"ro=1", "ro"},
		{"static_nlink=yes", "static_nlink"},
		{"max_write=0", "max_write"},
		{"max_write=big", "max_write"},
		{"lowerdir", "lowerdir"},
		{"threaded=yes", "threaded"},
		{"xattr_permissions=3", "xattr_permissions"},
		{"uidmapping=0:1000", "uidmapping"},
		{"uidmapping=0:1000:0", "uidmapping"},
		{"gidmapping=0:x:1", "gidmapping"},
		{"uidmapping=4294967295:0:2", "uidmapping"},
		{"squash_to_uid=-1", "squash_to_uid"},
		{"squash_to_gid=root", "squash_to_gid"},
		{"redirect_dir=maybe", "redirect_dir"},
		{"metacopy=yes", "metacopy"},
		{"verity=maybe", "verity"},
		{"uuid=maybe", "uuid"},
	} {
		_, err := parseArgs([]string{"-o", "lowerdir=/l," + tc.opt, "/m"})
		if err == nil || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("-o %s: error %v, want one naming %s", tc.opt, err, tc.name)
		}
	}
}

func TestUnknownOptionWarns(t *testing.T) {
	c, err := parseArgs([]string{"-o", "lowerdir=/l,frobnicate,size=10", "/m"})
	if err != nil {
		t.Fatalf("unknown options: %v, want only warnings", err)
	}
	for _, name := range []string{"frobnicate", "size=10"} {
		found := false
		for _, w := range c.warnings {
			found = found || strings.Contains(w, name)
		}
		if !found {
			t.Errorf("no warning names %q: %q", name, c.warnings)
		}
	}
}

func TestTypoRefused(t *testing.T) {
	for _, tc := range []struct{ opt, want string }{
		{"uperdir=/u", "upperdir"},
		{"lowerdirs=/l", "lowerdir"},
		{"upperidr=/u", "upperdir"}, // two letters swapped
		{"wrkdr=/w", "workdir"},     // two letters missing
		{"volatil", "volatile"},
		{"noexc", "noexec"},
		{"r0", "ro"},
		{"Xino=off", "xino"},
	} {
		_, err := parseArgs([]string{"-o", "lowerdir=/l,workdir=/w," + tc.opt, "/m"})
		if want := fmt.Sprintf("unknown option %q: did you mean %s?", tc.opt, tc.want); err == nil || err.Error() != want {
			t.Errorf("-o %s: error %v, want %q", tc.opt, err, want)
		}
	}
	// Options of mount(8), mount.fuse3, libfuse or SELinux close to one of
	// ours, and names far from all of ours, are ignored with a warning.
	for _, opt := range []string{"uid=1000", "gid=1000", "sync", "async", "dirsync", "nofail", "fscontext=x", "defcontext=x", "rootcontext=x", "size=10", "frobnicate", "defaults", "lazytime", "x-systemd.automount"} {
		c, err := parseArgs([]string{"-o", "lowerdir=/l," + opt, "/m"})
		if err != nil {
			t.Errorf("-o %s: %v, want only a warning", opt, err)
			continue
		}
		if len(c.warnings) != 1 || !strings.Contains(c.warnings[0], opt) {
			t.Errorf("-o %s: warnings %q, want one naming it", opt, c.warnings)
		}
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"upperdir", "upperdir", 0},
		{"uperdir", "upperdir", 1},
		{"lowerdirs", "lowerdir", 1},
		{"upperidr", "upperdir", 1},
		{"wrkdr", "workdir", 2},
		{"fd", "ro", 2},
		{"abc", "", 3},
		{"kitten", "sitting", 3},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := editDistance(tc.b, tc.a); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.b, tc.a, got, tc.want)
		}
	}
}

// TestWarningsBeforeError checks that the binary names unknown options
// before the error that ends it, whatever stage finds the error.
func TestWarningsBeforeError(t *testing.T) {
	d := layout(t)
	for _, tc := range []struct{ opts, err string }{
		{"frobnicate,lowerdir=" + d + "/l1,xino=maybe", "xino"},
		{"frobnicate,lowerdir=" + d + "/l1,uperdir=" + d + "/upper", "did you mean upperdir?"},
		{"frobnicate,lowerdir=" + d + "/nope", d + "/nope"},
	} {
		before := snapshot(t, d)
		r := ovlmount(t, "-o", tc.opts, d+"/mnt")
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		if r.code == 0 || len(lines) != 2 ||
			lines[0] != `ovlmount: warning: unknown option "frobnicate" ignored` ||
			!strings.HasPrefix(lines[1], "ovlmount: ") || !strings.Contains(lines[1], tc.err) {
			t.Errorf("-o %s: exit %d, stderr %q; want the warning, then an error naming %s", tc.opts, r.code, r.stderr, tc.err)
		}
		if after := snapshot(t, d); after != before {
			t.Errorf("-o %s changed files:\nbefore:\n%safter:\n%s", tc.opts, before, after)
		}
	}
}

// TestHelpTable checks the --help option table: every option's help
// starts in the same column, no line is longer than helpWidth, and an
// option too long for its column has its help on the next line.
func TestHelpTable(t *testing.T) {
	var b strings.Builder
	usage(&b)
	text := b.String()
	column := 2 + helpName + 2
	for _, o := range options {
		row := helpRow(o)
		if !strings.Contains(text, row+"\n") {
			t.Errorf("--help lacks the row of %s:\n%s", o.name, row)
		}
		lines := strings.Split(row, "\n")
		first := "  " + optionSyntax(o)
		if len(first) > column-2 {
			if lines[0] != first || len(lines) < 2 {
				t.Errorf("%s: row %q, want the name alone on its line", o.name, row)
				continue
			}
			lines = lines[1:]
		} else if !strings.HasPrefix(lines[0], first) || strings.TrimSpace(lines[0][:column]) != optionSyntax(o) {
			t.Errorf("%s: row %q, want its help from column %d", o.name, row, column+1)
			continue
		}
		var help []string
		for _, l := range lines {
			if len(l) > helpWidth {
				t.Errorf("%s: line %q longer than %d", o.name, l, helpWidth)
			}
			if l[column-1] != ' ' || l[column] == ' ' {
				t.Errorf("%s: line %q does not start its help at column %d", o.name, l, column+1)
			}
			help = append(help, l[column:])
		}
		if got := strings.Join(help, " "); got != strings.Join(strings.Fields(o.help), " ") {
			t.Errorf("%s: help %q, want %q", o.name, got, o.help)
		}
	}
}

// layout makes lower, upper, work and mnt directories in a fresh
// temporary directory and returns its path.
func layout(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	testenv.MakeTree(t, d, "d l1", "d l2", "d upper/sub", "d work", "d mnt", "f file")
	return d
}

// badInput lists command lines validate or parseArgs must refuse, with
// a word the one-line error must hold. %D stands for a directory made by
// layout. mount_test.go runs them against the binary too.
var badInput = []struct {
	name string
	opts string
	mnt  string
	want string
}{
	{"missing lowerdir", "upperdir=%D/upper,workdir=%D/work", "%D/mnt", "lowerdir"},
	{"empty lowerdir", "lowerdir=", "%D/mnt", "lowerdir"},
	{"nonexistent lowerdir", "lowerdir=%D/l1:%D/nope", "%D/mnt", "%D/nope"},
	{"lowerdir is a file", "lowerdir=%D/file", "%D/mnt", "%D/file"},
	{"upperdir without workdir", "lowerdir=%D/l1,upperdir=%D/upper", "%D/mnt", "workdir"},
	{"workdir without upperdir", "lowerdir=%D/l1,workdir=%D/work", "%D/mnt", "upperdir"},
	{"nonexistent upperdir", "lowerdir=%D/l1,upperdir=%D/nope,workdir=%D/work", "%D/mnt", "%D/nope"},
	{"nonexistent workdir", "lowerdir=%D/l1,upperdir=%D/upper,workdir=%D/nope", "%D/mnt", "%D/nope"},
	{"workdir inside upperdir", "lowerdir=%D/l1,upperdir=%D/upper,workdir=%D/upper/sub", "%D/mnt", "workdir"},
	{"upperdir inside workdir", "lowerdir=%D/l1,upperdir=%D/upper/sub,workdir=%D/upper", "%D/mnt", "workdir"},
	{"workdir is upperdir", "lowerdir=%D/l1,upperdir=%D/upper,workdir=%D/upper", "%D/mnt", "workdir"},
	{"nonexistent mountpoint", "lowerdir=%D/l1", "%D/nope", "%D/nope"},
	{"mountpoint is a file", "lowerdir=%D/l1", "%D/file", "%D/file"},
	{"invalid xino value", "lowerdir=%D/l1,xino=maybe", "%D/mnt", "xino"},
	{"invalid timeout value", "lowerdir=%D/l1,timeout=abc", "%D/mnt", "timeout"},
	{"invalid fsync value", "lowerdir=%D/l1,fsync=2", "%D/mnt", "fsync"},
	{"value for a flag", "lowerdir=%D/l1,ro=1", "%D/mnt", "ro"},
	{"option not implemented yet", "lowerdir=%D/l1,plugins=/p.so", "%D/mnt", "plugins"},
	{"typo of upperdir", "lowerdir=%D/l1,uperdir=%D/upper,workdir=%D/work", "%D/mnt", "uperdir=%D/upper\": did you mean upperdir?"},
	{"typo of lowerdir", "lowerdirs=%D/l1", "%D/mnt", "lowerdirs=%D/l1\": did you mean lowerdir?"},
	{"mountpoint inside upperdir", "lowerdir=%D/l1,upperdir=%D/upper,workdir=%D/work", "%D/upper/sub", "upperdir"},
	{"userxattr with redirect_dir=on", "lowerdir=%D/l1,userxattr,redirect_dir=on", "%D/mnt", "userxattr conflicts with redirect_dir=on"},
	{"userxattr with redirect_dir=off", "lowerdir=%D/l1,userxattr,redirect_dir=off", "%D/mnt", "userxattr conflicts with redirect_dir=off"},
	{"userxattr with metacopy=on", "lowerdir=%D/l1,userxattr,metacopy=on", "%D/mnt", "userxattr conflicts with metacopy=on"},
}

func fill(s, d string) string { return strings.ReplaceAll(s, "%D", d) }

func TestValidate(t *testing.T) {
	for _, tc := range badInput {
		t.Run(tc.name, func(t *testing.T) {
			d := layout(t)
			c, err := parseArgs([]string{"-o", fill(tc.opts, d), fill(tc.mnt, d)})
			if err == nil {
				err = c.validate()
			}
			if want := fill(tc.want, d); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v, want one naming %s", err, want)
			}
		})
	}
}

func TestValidateGood(t *testing.T) {
	d := layout(t)
	if err := os.Symlink(filepath.Join(d, "l2"), filepath.Join(d, "link")); err != nil {
		t.Fatal(err)
	}
	t.Chdir(d)
	c, err := parseArgs([]string{"-o", "lowerdir=l1:link,upperdir=upper,workdir=work", "mnt"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	real, _ := filepath.EvalSymlinks(d)
	want := []string{real + "/l1", real + "/l2"}
	if !reflect.DeepEqual(c.lower, want) || c.upper != real+"/upper" || c.work != real+"/work" || c.mountpoint != real+"/mnt" {
		t.Errorf("paths not made absolute and symlink-free: lower %q upper %q work %q mnt %q", c.lower, c.upper, c.work, c.mountpoint)
	}
	if entries, _ := os.ReadDir(filepath.Join(d, "work")); len(entries) != 0 {
		t.Errorf("validate created %v in workdir", entries)
	}
	// A lower layer only: no upper needed.
	c, err = parseArgs([]string{"-o", "lowerdir=l1", "mnt"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	// drop_privileges: mount.fuse3 passes an open FUSE fd as /dev/fd/N,
	// mounted with the options given; without default_permissions
	// nothing would check permissions on it.
	c, err = parseArgs([]string{"-o", "lowerdir=l1,default_permissions", "/dev/fd/3"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.validate(); err != nil || c.mountpoint != "/dev/fd/3" {
		t.Errorf("/dev/fd/3: mountpoint %q, %v", c.mountpoint, err)
	}
	c, err = parseArgs([]string{"-o", "lowerdir=l1,allow_other", "/dev/fd/3"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "default_permissions") {
		t.Errorf("/dev/fd/3 without default_permissions: %v, want a refusal naming default_permissions", err)
	}
}

func TestValidateWorkdirOtherFilesystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	d := layout(t)
	tmpfs := filepath.Join(d, "tmpfs")
	if err := os.Mkdir(tmpfs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", tmpfs, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(tmpfs, unix.MNT_DETACH) })
	c, err := parseArgs([]string{"-o", "lowerdir=" + d + "/l1,upperdir=" + d + "/upper,workdir=" + tmpfs, d + "/mnt"})
	if err != nil {
		t.Fatal(err)
	}
	err = c.validate()
	if err == nil || !strings.Contains(err.Error(), "workdir") || !strings.Contains(err.Error(), "filesystem") {
		t.Errorf("error %v, want one saying workdir is on another filesystem", err)
	}
}

// TestUserxattrRedirects: with userxattr redirects are not followed
// (redirect_dir=nofollow), as the kernel's default with it.
func TestUserxattrRedirects(t *testing.T) {
	for _, opts := range []string{"lowerdir=/l,userxattr", "lowerdir=/l,userxattr,redirect_dir=nofollow"} {
		c, err := parseArgs([]string{"-o", opts, "/m"})
		if err != nil {
			t.Fatal(err)
		}
		if r := c.redirects(); r != (overlay.Redirects{}) {
			t.Errorf("%s: redirects %+v, want neither followed nor made", opts, r)
		}
	}
}
