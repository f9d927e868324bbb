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
