package main

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/ovlmount/ovlmount/overlay"
)

func TestVersionText(t *testing.T) {
	defer func(r, c string) { release, commit = r, c }(release, commit)
	release, commit = "1.2.3", "0123456789ab"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		t.Fatal("no build info in the test binary")
	}
	fuse := moduleVersion(bi, fuseModule)
	if fuse == "" {
		t.Fatalf("%s is not linked into the test binary", fuseModule)
	}
	want := "ovlmount 1.2.3\n" +
		"commit: 0123456789ab\n" +
		"Go: " + runtime.Version() + "\n" +
		"FUSE library: " + fuseModule + " " + fuse + "\n" +
		"FUSE protocol: " + overlay.ProtocolVersion() + "\n" +
		"golang.org/x/sys: " + moduleVersion(bi, "golang.org/x/sys") + "\n"
	if got := versionText(); got != want {
		t.Errorf("versionText:\n%s\nwant:\n%s", got, want)
	}
}

// TestVersionFallback checks what a binary built without the Makefile's
// -ldflags says: what the Go toolchain recorded.
func TestVersionFallback(t *testing.T) {
	defer func(r, c string) { release, commit = r, c }(release, commit)
	release, commit = "", ""
	for _, tc := range []struct {
		name          string
		bi            debug.BuildInfo
		release, comm string
	}{
		{"nothing recorded", debug.BuildInfo{}, "devel", "unknown"},
		{"go build in a checkout", debug.BuildInfo{
			Main:     debug.Module{Version: "(devel)"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "false"}},
		}, "devel", "0123456789ab"},
		{"changed checkout", debug.BuildInfo{
			Main:     debug.Module{Version: "v0.1.1-0.20261122054117-0123456789ab+dirty"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}},
		}, "v0.1.1-0.20261122054117-0123456789ab+dirty", "0123456789ab-dirty"},
		{"go install of a tag", debug.BuildInfo{Main: debug.Module{Version: "v0.1.0"}}, "v0.1.0", "unknown"},
	} {
		if got := releaseOf(&tc.bi); got != tc.release {
			t.Errorf("%s: release %q, want %q", tc.name, got, tc.release)
		}
		if got := commitOf(&tc.bi); got != tc.comm {
			t.Errorf("%s: commit %q, want %q", tc.name, got, tc.comm)
		}
	}
	bi := &debug.BuildInfo{Deps: []*debug.Module{
		{Path: "golang.org/x/sys", Version: "v0.49.0"},
		{Path: "github.com/hanwen/go-fuse/v2", Version: "v2.12.1", Replace: &debug.Module{Path: "../go-fuse"}},
	}}
	for path, want := range map[string]string{
		"golang.org/x/sys":             "v0.49.0",
		"github.com/hanwen/go-fuse/v2": "v2.12.1 => ../go-fuse",
		"example.com/absent":           "",
	} {
		if got := moduleVersion(bi, path); got != want {
			t.Errorf("moduleVersion(%s) = %q, want %q", path, got, want)
		}
	}
}

// TestVersionLines checks --version of the binary under test: a release,
// a commit, the toolchain, the FUSE library, the FUSE protocol version
// it speaks and x/sys, one line each.
func TestVersionLines(t *testing.T) {
	r := ovlmount(t, "--version")
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if r.code != 0 || r.stderr != "" || len(lines) != 6 {
		t.Fatalf("--version: exit %d, stdout %q, stderr %q; want 6 lines", r.code, r.stdout, r.stderr)
	}
	for i, prefix := range []string{"ovlmount ", "commit: ", "Go: go", "FUSE library: ", "FUSE protocol: 7.", "golang.org/x/sys: v"} {
		if !strings.HasPrefix(lines[i], prefix) || len(lines[i]) == len(prefix) {
			t.Errorf("--version line %d: %q, want %q and a value", i+1, lines[i], prefix)
		}
	}
	if !strings.HasPrefix(lines[3], "FUSE library: "+fuseModule+" v") {
		t.Errorf("--version line 4: %q, want the version of %s", lines[3], fuseModule)
	}
	if want := "FUSE protocol: " + overlay.ProtocolVersion(); lines[4] != want {
		t.Errorf("--version line 5: %q, want %q", lines[4], want)
	}
}
