package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
)

// TestMountpointInsideLayer mounts on a directory inside a lower layer.
// The kernel's overlay shows the directory under the mountpoint there,
// never crossing a mount below a layer. So does ovlmount, reaching the
// lower layer through a clone of its mount: the mount can be unmounted
// and its daemon ends. A process that cannot clone (no CAP_SYS_ADMIN,
// here an unprivileged user) would reach its own mount through the layer
// and serve itself, never to end: it is refused, naming lowerdir, before
// anything is made. (A mountpoint inside upperdir, always reached
// directly, is refused for everyone: badInput.)
func TestMountpointInsideLayer(t *testing.T) {
	testenv.RequireMount(t)
	d := makeStack(t)
	mnt := d + "/l1/d"
	mountDaemon(t, mnt, "-o", "lowerdir="+d+"/l1:"+d+"/l2,upperdir="+d+"/upper,workdir="+d+"/work", mnt)
	pid := daemonFor(t, d+"/")
	if names := testenv.DirNames(t, mnt+"/d"); !slices.Equal(names, []string{"f"}) {
		t.Errorf("the mountpoint's own directory in the view lists %q, want the lower layer's [f]", names)
	}
	umount(t, mnt)
	checkDaemonEnds(t, pid, d+"/", mnt)

	testenv.RequireProgram(t, "setpriv", "util-linux")
	// The unprivileged user must reach the layers.
	testenv.Must(t, os.Chmod(filepath.Dir(d), 0o755))
	testenv.Must(t, os.Chmod(d, 0o755))
	before := snapshot(t, d)
	r := execute(t, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
		testenv.Binary(t), "-o", "lowerdir="+d+"/l1:"+d+"/l2", mnt)
	if r.code == 0 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "lowerdir") {
		t.Errorf("as an unprivileged user: exit %d, stderr %q; want a one-line refusal naming lowerdir", r.code, r.stderr)
	}
	if typ := testenv.MountType(mnt); typ != "" {
		testenv.Unmount(t, mnt)
		t.Errorf("%s mounted (%s) by a refused command", mnt, typ)
	}
	if after := snapshot(t, d); after != before {
		t.Errorf("files changed by a refused command:\nbefore:\n%safter:\n%s", before, after)
	}
}
