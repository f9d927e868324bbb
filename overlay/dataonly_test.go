package overlay

import (
	"syscall"
	"testing"

	"github.com/ovlmount/ovlmount/inodes"
	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestDataOnlyLookupRefusals: what the kernel refuses where it looks up a
// name over data-only layers. Without metacopy=on a lower metacopy file
// is followed only from the lowest layer above the data-only ones, with
// an absolute redirect, into them; any other is refused (EPERM). A
// redirect the kernel does not take is refused (EINVAL) wherever it reads
// it, which over data-only layers is in the lowest layer too.
func TestDataOnlyLookupRefusals(t *testing.T) {
	meta := func(name, redirect string) []string {
		return []string{"f " + name, "x " + name + " trusted.overlay.metacopy=", "x " + name + " trusted.overlay.redirect=" + redirect}
	}
	var top, lowest []string
	top = append(append(top, meta("high", "/o/a")...), "d bad", "x bad trusted.overlay.redirect=a/b")
	lowest = append(append(append(append(lowest, meta("f", "/o/a")...), meta("rel", "a")...), meta("slash", "o/a")...),
		"f plain", "f nomc", "x nomc trusted.overlay.metacopy=", "d dd", "x dd trusted.overlay.redirect=a/b")
	data := []string{"f o/a data", "f a a"}
	for _, tc := range []struct {
		metacopy bool
		want     map[string]error
	}{
		{false, map[string]error{"f": nil, "plain": nil, "high": syscall.EPERM, "rel": syscall.EPERM, "nomc": syscall.EPERM,
			"slash": syscall.EINVAL, "bad": syscall.EINVAL, "dd": syscall.EINVAL}},
		{true, map[string]error{"f": nil, "plain": nil, "high": nil, "rel": syscall.EIO, "nomc": syscall.EIO,
			"slash": syscall.EINVAL, "bad": syscall.EINVAL, "dd": syscall.EINVAL}},
	} {
		fs, _ := composefsStack(t, Options{Metacopy: tc.metacopy, Redirects: Redirects{Follow: true, Create: tc.metacopy}}, top, lowest, data)
		for name, want := range tc.want {
			if _, err := fs.Lookup(inodes.RootID, name); err != want {
				t.Errorf("metacopy=%v: lookup %s: %v, want %v", tc.metacopy, name, err, want)
			}
		}
	}
}

// TestMetacopyDataLongerThanShown: the kernel's overlay reads a metacopy
// file's data to its end, past the smaller size the file shows; the open
// asks for direct I/O then (Opened.Direct), as the FUSE page cache would
// stop at that size, and not otherwise.
func TestMetacopyDataLongerThanShown(t *testing.T) {
	meta := []string{"f short 1234", "x short trusted.overlay.metacopy=", "x short trusted.overlay.redirect=/o/a",
		"f same 0123456789", "x same trusted.overlay.metacopy=", "x same trusted.overlay.redirect=/o/a", "f plain p"}
	fs, _ := composefsStack(t, Options{Redirects: Redirects{Follow: true}}, meta, []string{"f o/a hello data"})
	for name, want := range map[string]bool{"short": true, "same": false, "plain": false} {
		e, err := fs.Lookup(inodes.RootID, name)
		testenv.Must(t, err)
		o, err := fs.Open(e.ID, unix.O_RDONLY, nil)
		testenv.Must(t, err)
		fs.Release(o.Handle)
		if o.Direct != want {
			t.Errorf("open %s: Direct %v, want %v", name, o.Direct, want)
		}
	}
}
