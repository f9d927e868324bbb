package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/ovlmount/ovlmount/overlay"
)

// release and commit are set by the Makefile at build time:
//
//	-ldflags "-X main.release=$(cat VERSION) -X main.commit=$(git rev-parse --short=12 HEAD)"
//
// A plain go build leaves them empty, and --version falls back to what
// the Go toolchain recorded in the binary (see versionText).
var release, commit string

// fuseModule is the FUSE library overlay/fuse.go is written against.
const fuseModule = "github.com/hanwen/go-fuse/v2"

// versionText is what --version prints: the release and commit, then the
// toolchain and the versions of the modules that decide how ovlmount
// talks to the kernel.
func versionText() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = &debug.BuildInfo{}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "ovlmount %s\n", releaseOf(bi))
	fmt.Fprintf(&b, "commit: %s\n", commitOf(bi))
	fmt.Fprintf(&b, "Go: %s\n", runtime.Version())
	fuse := "none"
	if v := moduleVersion(bi, fuseModule); v != "" {
		fuse = fuseModule + " " + v
	}
	fmt.Fprintf(&b, "FUSE library: %s\n", fuse)
	// The kernel interface version ovlmount offers; a mount speaks the
	// lower of it and the kernel's, which ovlmount stats shows.
	fmt.Fprintf(&b, "FUSE protocol: %s\n", overlay.ProtocolVersion())
	sys := moduleVersion(bi, "golang.org/x/sys")
	if sys == "" {
		sys = "unknown"
	}
	fmt.Fprintf(&b, "golang.org/x/sys: %s\n", sys)
	return b.String()
}

// releaseOf returns the release set at build time, else the main
// module's version as go build or go install recorded it (a tag, or a
// pseudo-version when the toolchain stamps one), else "devel".
func releaseOf(bi *debug.BuildInfo) string {
	if release != "" {
		return release
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	return "devel"
}

// commitOf returns the commit set at build time, else the revision go
// build recorded from the checkout (-buildvcs), marked -dirty when the
// work tree had changes, else "unknown".
func commitOf(bi *debug.BuildInfo) string {
	if commit != "" {
		return commit
	}
	rev, dirty := "", ""
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision":
			rev = s.Value
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = "-dirty"
		}
	}
	if rev == "" {
		return "unknown"
	}
	return rev[:min(len(rev), 12)] + dirty
}

// moduleVersion returns the version of module path linked into the
// binary, "" if it is not; a replacement go.mod made is shown as go
// version -m shows it.
func moduleVersion(bi *debug.BuildInfo, path string) string {
	for _, d := range bi.Deps {
		if d.Path != path {
			continue
		}
		if r := d.Replace; r != nil {
			return strings.TrimSpace(d.Version + " => " + r.Path + " " + r.Version)
		}
		return d.Version
	}
	return ""
}
