package testenv

import "testing"

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/a/b`:            "/a/b",
		`/a\040b`:         "/a b",
		`/a\011b\012c`:    "/a\tb\nc",
		`/a\134b`:         `/a\b`,
		`/a\04`:           `/a\04`,
		`/tail\`:          `/tail\`,
		`/not\999octal`:   `/not\999octal`,
		`\040\040`:        "  ",
		`/x\0401\040`:     "/x 1 ",
		`/dir\040with\\x`: `/dir with\\x`,
	} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMountType(t *testing.T) {
	if MountType("/") == "" {
		t.Error(`MountType("/") is empty; / is always a mountpoint`)
	}
	if typ := MountType(t.TempDir()); typ != "" {
		t.Errorf("a fresh temporary directory is listed as a %q mount", typ)
	}
	if typ := MountType("/proc"); typ != "proc" {
		t.Errorf(`MountType("/proc") = %q, want "proc"`, typ)
	}
}
