package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// eioMarker starts every line of the file whose blocks TestLowerIOError
// damages, so that each 4 KiB block of it holds one.
const eioMarker = "OVLMOUNT-EIO-MARKER-"

// TestLowerIOError serves a lower layer on a btrfs filesystem, on a loop
// device, in which one file's data blocks were damaged: btrfs finds their
// checksums wrong and fails reads of them with EIO, as a failing disk
// would. Through ovlmount, reading that file, and every copy-up of it,
// fail with EIO, as on a kernel overlay mount of the same layer, and a
// failed copy-up leaves nothing in the upper layer or workdir/work; its
// attributes still show and it can still be removed; every other file
// reads and copies up as before.
func TestLowerIOError(t *testing.T) {
	testenv.RequireMount(t)
	testenv.RequireProgram(t, "mkfs.btrfs", "btrfs-progs")
	d := t.TempDir()
	lower := d + "/lower"
	testenv.Must(t, os.Mkdir(lower, 0o755))
	good := map[string][]byte{
		"good1": bytes.Repeat([]byte("A"), 64<<10),
		"good2": bytes.Repeat([]byte("B"), 64<<10),
		"dir/f": []byte("f"),
	}
	var bad bytes.Buffer
	for i := 0; bad.Len() < 64<<10; i++ {
		fmt.Fprintf(&bad, "%s%06d\n", eioMarker, i)
	}
	damagedBtrfs(t, d+"/btrfs.img", lower, good, bad.Bytes())
	if _, err := os.ReadFile(lower + "/bad"); !errors.Is(err, unix.EIO) {
		t.Fatalf("the damaged file reads with %v on btrfs itself, want EIO", err)
	}

	for _, impl := range []string{"ovlmount", "kernel"} {
		t.Run(impl, func(t *testing.T) {
			upper, work, mnt := mountOverlay(t, impl, lower)
			if _, err := os.ReadFile(mnt + "/bad"); !errors.Is(err, unix.EIO) {
				t.Errorf("read of the damaged file: %v, want EIO", err)
			}
			if fi, err := os.Stat(mnt + "/bad"); err != nil || fi.Size() != int64(bad.Len()) {
				t.Errorf("stat of the damaged file: %v, %v; want its size %d", fi, err, bad.Len())
			}
			for what, op := range map[string]func() error{
				"open for writing": func() error {
					f, err := os.OpenFile(mnt+"/bad", os.O_WRONLY|os.O_APPEND, 0)
					if err == nil {
						f.Close()
					}
					return err
				},
				"chmod":  func() error { return os.Chmod(mnt+"/bad", 0o600) },
				"rename": func() error { return os.Rename(mnt+"/bad", mnt+"/bad2") },
			} {
				if err := op(); !errors.Is(err, unix.EIO) {
					t.Errorf("%s of the damaged file (a copy-up): %v, want EIO", what, err)
				}
				if names := testenv.DirNames(t, upper); len(names) != 0 {
					t.Errorf("%s of the damaged file left %v in the upper layer", what, names)
				}
				if names := testenv.DirNames(t, work+"/work"); len(names) != 0 {
					t.Errorf("%s of the damaged file left %v in workdir/work", what, names)
				}
			}
			for name, want := range good {
				if got, err := os.ReadFile(mnt + "/" + name); err != nil || !bytes.Equal(got, want) {
					t.Errorf("read %s: %d bytes, %v; want its %d bytes", name, len(got), err, len(want))
				}
			}
			f, err := os.OpenFile(mnt+"/good1", os.O_WRONLY|os.O_APPEND, 0)
			testenv.Must(t, err)
			_, err = f.Write([]byte("+"))
			testenv.Must(t, err)
			testenv.Must(t, f.Close())
			if got, err := os.ReadFile(mnt + "/good1"); err != nil || !bytes.Equal(got, append(good["good1"], '+')) {
				t.Errorf("good1 after its copy-up: %d bytes, %v", len(got), err)
			}
			testenv.Must(t, os.Remove(mnt+"/bad"))
			if names := testenv.DirNames(t, mnt); strings.Join(names, " ") != "dir good1 good2" {
				t.Errorf("after removing the damaged file the mount lists %q", names)
			}
		})
	}
}

// damagedBtrfs makes a btrfs filesystem in image file img holding the
// files good and, in file bad, data whose lines start with eioMarker;
// overwrites one byte of each 4 KiB block of bad in the image; and mounts
// the filesystem read-only on dir until the end of the test.
func damagedBtrfs(t *testing.T, img, dir string, good map[string][]byte, bad []byte) {
	t.Helper()
	f, err := os.Create(img)
	testenv.Must(t, err)
	testenv.Must(t, f.Truncate(64<<20))
	testenv.Must(t, f.Close())
	// Mixed block groups fit a small image; single profiles keep one
	// copy of everything, so that no good copy repairs the damage.
	if out, err := exec.Command("mkfs.btrfs", "-q", "--mixed", "-m", "single", "-d", "single", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.btrfs: %v\n%s", err, out)
	}
	mount := func(opts string) {
		t.Helper()
		// mount -o loop attaches the device with autoclear: it goes with
		// the filesystem's last unmount.
		if out, err := exec.Command("mount", "-o", opts, img, dir).CombinedOutput(); err != nil {
			t.Fatalf("mount -o %s: %v\n%s", opts, err, out)
		}
	}
	mount("loop")
	for name, data := range good {
		testenv.Must(t, os.MkdirAll(dir+"/"+name[:max(strings.LastIndexByte(name, '/'), 0)], 0o755))
		testenv.Must(t, os.WriteFile(dir+"/"+name, data, 0o644))
	}
	testenv.Must(t, os.WriteFile(dir+"/bad", bad, 0o644))
	// Not lazily: btrfs must have written everything to the image.
	testenv.Must(t, unix.Unmount(dir, 0))

	data, err := os.ReadFile(img)
	testenv.Must(t, err)
	damaged := 0
	for i := 0; ; {
		j := bytes.Index(data[i:], []byte(eioMarker))
		if j < 0 {
			break
		}
		i += j
		data[i] = 'X'
		damaged++
		i += 4096 - i%4096
	}
	if want := len(bad) / 4096; damaged < want {
		t.Fatalf("found %d blocks of the file to damage in the image, want %d", damaged, want)
	}
	testenv.Must(t, os.WriteFile(img, data, 0o644))
	mount("loop,ro")
	t.Cleanup(func() { testenv.Unmount(t, dir) })
}
