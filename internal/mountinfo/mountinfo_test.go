package mountinfo

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/a/b`:                 "/a/b",
		`/a\040b`:              "/a b",
		`/a\011b\012c`:         "/a\tb\nc",
		`/a\134b`:              `/a\b`,
		`/a\04`:                `/a\04`,
		`/tail\`:               `/tail\`,
		`/not\999octal`:        `/not\999octal`,
		`/too\400big`:          `/too\400big`,
		`\040\040`:             "  ",
		`/x\0401\040`:          "/x 1 ",
		`/dir\040with\\x`:      `/dir with\\x`,
		`/tab\011and\134slash`: "/tab\tand\\slash",
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParse(t *testing.T) {
	text := `22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
95 29 0:52 / /tmp/a\040b rw,nosuid,nodev,noatime - fuse.ovlmount ovl\040src rw,user_id=0,group_id=0,default_permissions,allow_other
bad line
96 29 0:53 / /tmp/c rw - fuse x rw,user_id=0,group_id=0
`
	ms := Parse(text)
	if len(ms) != 3 {
		t.Fatalf("Parse: %d mounts, want 3: %+v", len(ms), ms)
	}
	m := ms[1]
	if m.Dev != "0:52" || m.Point != "/tmp/a b" || m.Type != "fuse.ovlmount" || m.Source != "ovl src" {
		t.Errorf("Parse: %+v", m)
	}
	if !m.Has("default_permissions") || !m.Has("noatime") || m.Has("ro") {
		t.Errorf("Has: options %q, super %q", m.Options, m.SuperOpts)
	}
	if ms[2].Has("default_permissions") {
		t.Errorf("Has: %+v has no default_permissions", ms[2])
	}
}

// stacked is a mount table with mounts on top of and below each other,
// not all in the order they were made (a namespace's root can be listed
// after the mounts on it).
var stacked = Parse(`2 1 0:21 / /proc rw - proc proc rw
1 0 8:1 / / rw - ext4 /dev/sda1 rw
3 1 0:30 / /srv rw - tmpfs tmpfs rw
4 3 0:31 / /srv/a rw - tmpfs tmpfs rw
5 3 0:32 / /srv/ab rw - tmpfs tmpfs rw
6 3 0:33 / /srv rw - overlay overlay rw
7 6 0:34 / /srv/a/b rw - fuse.ovlmount src rw
`)

func TestAt(t *testing.T) {
	for dir, want := range map[string]string{"/": "8:1", "/srv": "0:33", "/srv/a": "0:31", "/srv/a/b": "0:34", "/srv/c": ""} {
		m, ok := at(stacked, dir)
		if ok != (want != "") || m.Dev != want {
			t.Errorf("at(%q) = %q, %v; want %q", dir, m.Dev, ok, want)
		}
	}
}

func TestUnder(t *testing.T) {
	for dir, want := range map[string][]string{
		"/srv/a":   {"0:31", "0:34"},
		"/srv/a/":  {"0:31", "0:34"},
		"/srv/a/b": {"0:34"},
		"/srv/b":   nil,
		"/":        {"0:21", "8:1", "0:30", "0:31", "0:32", "0:33", "0:34"},
	} {
		var got []string
		for _, m := range under(stacked, dir) {
			got = append(got, m.Dev)
		}
		if !slices.Equal(got, want) {
			t.Errorf("under(%q) = %q, want %q", dir, got, want)
		}
	}
}

func TestContaining(t *testing.T) {
	for path, want := range map[string]string{
		"/etc/passwd":  "8:1",
		"/":            "8:1",
		"/proc/self":   "0:21",
		"/srv":         "0:33",
		"/srv/x":       "0:33",
		"/srv/a/x":     "0:31",
		"/srv/a/b":     "0:34",
		"/srv/a/b/c/d": "0:34",
		"/srv/abc":     "0:33",
	} {
		if m, ok := containing(stacked, path); !ok || m.Dev != want {
			t.Errorf("containing(%q) = %q, %v; want %q", path, m.Dev, ok, want)
		}
	}
	if m, ok := Containing("/proc/self"); !ok || m.Type != "proc" {
		t.Errorf(`Containing("/proc/self") = %+v, %v; want the proc mount`, m, ok)
	}
}

func TestPath(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(dir, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	// The last name stays as given, a symlink or a name that is not there
	// too: only the parent is resolved.
	for in, want := range map[string]string{
		dir + "/link/mnt":       real + "/mnt",
		dir + "/link":           dir + "/link",
		dir + "/real/../link/x": real + "/x",
		"/":                     "/",
	} {
		if got, err := Path(in); err != nil || got != want {
			t.Errorf("Path(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if got, err := Path(dir + "/missing/mnt"); err == nil {
		t.Errorf("Path below a missing directory = %q, want an error", got)
	}
}
