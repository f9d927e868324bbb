package overlay

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/copyup"
	"github.com/ovlmount/ovlmount/inodes"
	"github.com/ovlmount/ovlmount/internal/testenv"
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// composefsStack opens an empty upper layer over lower layers made from
// specs (testenv.MakeTree's lines, top first), the last of them
// data-only: composefs's format, with opts.
func composefsStack(t *testing.T, opts Options, specs ...[]string) (fs *FS, upper string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("engine tests need root (trusted.* xattrs)")
	}
	base := t.TempDir()
	upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
	testenv.MakeTree(t, work, "d .")
	specs = append([][]string{{"d ."}}, specs...)
	var stack []*layers.Layer
	for i, spec := range specs {
		dir := filepath.Join(base, fmt.Sprint(i))
		if i == 0 {
			dir = upper
		}
		testenv.MakeTree(t, dir, spec...)
		l, err := layers.Open(dir, i, i == 0)
		testenv.Must(t, err)
		l.DataOnly = i == len(specs)-1
		t.Cleanup(func() { l.Close() })
		stack = append(stack, l)
	}
	w, err := copyup.Open(work)
	testenv.Must(t, err)
	t.Cleanup(func() { w.Close() })
	opts.Work, opts.Timeout = w, time.Second
	fs, err = New(stack, opts)
	testenv.Must(t, err)
	return fs, upper
}

// TestVerityWithoutFsverity: a data file without fs-verity of its own
// (this kernel has none) cannot be checked against the digest a metacopy
// file records, and the kernel refuses it (EIO) on open and on every
// copy-up, of metadata too; with verity=require, so is a metacopy file
// that records none. Nothing is copied up then.
func TestVerityWithoutFsverity(t *testing.T) {
	sum := sha256.Sum256([]byte("hello data\n"))
	digest := "\x00\x24\x00\x01" + string(sum[:])
	spec := []string{"f digest", "f nodigest",
		"x digest trusted.overlay.metacopy=" + digest, "x digest trusted.overlay.redirect=/o/a",
		"x nodigest trusted.overlay.metacopy=", "x nodigest trusted.overlay.redirect=/o/b"}
	data := []string{"f o/a hello data\n", "f o/b plain\n"}
	mode := uint32(0o600)
	for _, tc := range []struct {
		verity VerityMode
		want   map[string]error // by name: of open and of chmod
	}{
		{VerityOn, map[string]error{"digest": syscall.EIO, "nodigest": nil}},
		{VerityRequire, map[string]error{"digest": syscall.EIO, "nodigest": syscall.EIO}},
		{VerityOff, map[string]error{"digest": nil, "nodigest": nil}},
	} {
		fs, upper := composefsStack(t, Options{Verity: tc.verity, Metacopy: true, Redirects: Redirects{Follow: true, Create: true}}, spec, data)
		for name, want := range tc.want {
			e, err := fs.Lookup(inodes.RootID, name)
			testenv.Must(t, err)
			o, err := fs.Open(e.ID, unix.O_RDONLY, nil)
			if err == nil {
				fs.Release(o.Handle)
			}
			if err != want {
				t.Errorf("verity=%d: open %s: %v, want %v", tc.verity, name, err, want)
			}
			_, err = fs.SetAttr(e.ID, SetAttrs{Mode: &mode})
			if err != want {
				t.Errorf("verity=%d: chmod %s: %v, want %v", tc.verity, name, err, want)
			}
			if _, serr := os.Lstat(filepath.Join(upper, name)); (serr == nil) != (want == nil) {
				t.Errorf("verity=%d: after chmod %s (%v) the upper layer has it: %v", tc.verity, name, err, serr == nil)
			}
			if want != nil {
				continue
			}
			// A metacopy file already upper is checked again.
			if _, err := fs.SetAttr(e.ID, SetAttrs{Mode: &mode}); err != nil {
				t.Errorf("verity=%d: chmod %s again: %v", tc.verity, name, err)
			}
		}
	}
}
