package mountinfo

import "testing"

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
