package fsverity

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

const metacopyXattr = "trusted.overlay.metacopy"

func seq(n int, from byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = from + byte(i)
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// metacopyCases are values overlayfs may meet, with what DecodeMetacopy
// makes of them: the metacopy and no error, or the errno and whether
// lookup already refuses the value. written marks those overlayfs writes.
var metacopyCases = []struct {
	name     string
	value    []byte
	want     Metacopy
	errno    syscall.Errno
	atLookup bool
	written  bool
}{
	{name: "empty", value: []byte{}, written: true},
	{name: "1 byte", value: []byte{0}, errno: syscall.EIO, atLookup: true},
	{name: "3 bytes", value: []byte{0, 3, 0}, errno: syscall.EIO, atLookup: true},
	{name: "header", value: []byte{0, 4, 0, 0}},
	{name: "header of 0xff", value: []byte{0xff, 0xff, 0xff, 0xff}},
	{name: "header naming sha256", value: []byte{0, 4, 0, 1}},
	{name: "5 bytes without algorithm", value: []byte{0, 5, 0, 0, 0xaa}, want: Metacopy{Digest: []byte{0xaa}}},
	{name: "sha256", value: cat([]byte{0, 36, 0, 1}, seq(32, 1)), want: Metacopy{Alg: SHA256, Digest: seq(32, 1)}, written: true},
	{name: "sha512", value: cat([]byte{0, 68, 0, 2}, seq(64, 1)), want: Metacopy{Alg: SHA512, Digest: seq(64, 1)}, written: true},
	{name: "sha256 with flags", value: cat([]byte{0, 36, 0x81, 1}, seq(32, 1)), want: Metacopy{Flags: 0x81, Alg: SHA256, Digest: seq(32, 1)}, written: true},
	{name: "sha256 with 64 digest bytes", value: cat([]byte{0, 68, 0, 1}, seq(64, 1)), want: Metacopy{Alg: SHA256, Digest: seq(64, 1)}},
	{name: "version 1", value: cat([]byte{1, 36, 0, 1}, seq(32, 1)), errno: syscall.EIO},
	{name: "len too small", value: cat([]byte{0, 35, 0, 1}, seq(32, 1)), errno: syscall.EIO},
	{name: "len too large", value: cat([]byte{0, 68, 0, 1}, seq(32, 1)), errno: syscall.EIO},
	{name: "69 bytes", value: cat([]byte{0, 69, 0, 2}, seq(65, 1)), errno: syscall.ERANGE},
	{name: "200 bytes", value: seq(200, 0), errno: syscall.ERANGE},
}

func TestDecodeMetacopy(t *testing.T) {
	for _, c := range metacopyCases {
		m, err := DecodeMetacopy(c.value)
		if c.errno == 0 {
			if err != nil || m.Flags != c.want.Flags || m.Alg != c.want.Alg || !bytes.Equal(m.Digest, c.want.Digest) {
				t.Errorf("%s: DecodeMetacopy = %+v, %v; want %+v", c.name, m, err, c.want)
			}
			continue
		}
		var me *MetacopyError
		if !errors.As(err, &me) || me.Errno != c.errno || me.AtLookup != c.atLookup || !errors.Is(err, c.errno) {
			t.Errorf("%s: DecodeMetacopy error %v (%#v); want %v, at lookup %v", c.name, err, me, c.errno, c.atLookup)
		}
	}
}

func TestEncodeMetacopy(t *testing.T) {
	for _, c := range []struct {
		name string
		m    Metacopy
		want []byte
	}{
		{"no digest", Metacopy{}, []byte{}},
		{"flags only", Metacopy{Flags: 2}, []byte{0, 4, 2, 0}},
		{"sha256", Metacopy{Alg: SHA256, Digest: seq(32, 9)}, cat([]byte{0, 36, 0, 1}, seq(32, 9))},
		{"sha512", Metacopy{Alg: SHA512, Digest: seq(64, 9)}, cat([]byte{0, 68, 0, 2}, seq(64, 9))},
	} {
		got, err := c.m.Encode()
		if err != nil || got == nil || !bytes.Equal(got, c.want) {
			t.Errorf("%s: Encode = %x, %v; want %x", c.name, got, err, c.want)
		}
	}
	for _, m := range []Metacopy{
		{Digest: seq(32, 0)},
		{Alg: SHA256, Digest: seq(64, 0)},
		{Alg: SHA512, Digest: seq(32, 0)},
		{Alg: 3, Digest: seq(32, 0)},
		{Alg: SHA256},
	} {
		if v, err := m.Encode(); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Encode(%+v) = %x, %v; want EINVAL", m, v, err)
		}
	}
	// The values overlayfs writes survive decoding and encoding byte for
	// byte.
	for _, c := range metacopyCases {
		if !c.written {
			continue
		}
		m, err := DecodeMetacopy(c.value)
		if err != nil {
			t.Fatal(err)
		}
		if v, err := m.Encode(); err != nil || !bytes.Equal(v, c.value) {
			t.Errorf("%s: decoded and encoded: %x, %v; want %x", c.name, v, err, c.value)
		}
	}
}

// mountOverlay mounts a kernel overlay on mnt and returns a function that
// unmounts it.
func mountOverlay(t *testing.T, dir, opts string) (mnt string, unmount func()) {
	t.Helper()
	mnt = filepath.Join(dir, "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	opts = fmt.Sprintf("lowerdir=%s/lower,upperdir=%s/upper,workdir=%s/work,%s", dir, dir, dir, opts)
	if err := unix.Mount("overlay", mnt, "overlay", 0, opts); err != nil {
		require(t, err != unix.ENODEV, "no overlay filesystem in this kernel")
		t.Fatalf("mount -t overlay -o %s: %v", opts, err)
	}
	mounted := true
	unmount = func() {
		if mounted {
			mounted = false
			if err := unix.Unmount(mnt, 0); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(unmount)
	return mnt, unmount
}

func overlayDirs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"lower", "upper", "work"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func getMetacopy(t *testing.T, path string) []byte {
	t.Helper()
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(path, metacopyXattr, buf)
	if err != nil {
		t.Fatalf("getxattr %s %s: %v", path, metacopyXattr, err)
	}
	return buf[:n]
}

// The value the kernel writes on a metadata-only copy-up (a chown with
// metacopy=on) decodes, and encoding it gives the same bytes; with
// verity=on too, where the lower file has no fs-verity to record.
func TestMetacopyKernelWrites(t *testing.T) {
	requireRoot(t)
	for _, verity := range []string{"off", "on"} {
		t.Run(verity, func(t *testing.T) {
			dir := overlayDirs(t)
			if err := os.WriteFile(filepath.Join(dir, "lower", "f"), []byte("lower data"), 0o644); err != nil {
				t.Fatal(err)
			}
			mnt, unmount := mountOverlay(t, dir, "metacopy=on,verity="+verity)
			if err := os.Chown(filepath.Join(mnt, "f"), 1, 1); err != nil {
				t.Fatal(err)
			}
			unmount()
			value := getMetacopy(t, filepath.Join(dir, "upper", "f"))
			m, err := DecodeMetacopy(value)
			if err != nil || m.HasDigest() {
				t.Fatalf("DecodeMetacopy(%x) = %+v, %v", value, m, err)
			}
			if v, err := m.Encode(); err != nil || !bytes.Equal(v, value) {
				t.Fatalf("kernel wrote %x, Encode gives %x, %v", value, v, err)
			}
		})
	}
}

// The kernel is the oracle of DecodeMetacopy's verdicts: an upper file
// holding each value over a lower file is looked up and read through
// kernel overlays with every verity mode. The lower files have no
// fs-verity, so that a value with a digest fails to open (EIO) where the
// kernel checks it.
func TestMetacopyKernelReads(t *testing.T) {
	requireRoot(t)
	dir := overlayDirs(t)
	for i, c := range metacopyCases {
		name := fmt.Sprintf("f%02d", i)
		if err := os.WriteFile(filepath.Join(dir, "lower", name), []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
		upper := filepath.Join(dir, "upper", name)
		if err := os.WriteFile(upper, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(upper, 4); err != nil {
			t.Fatal(err)
		}
		if err := unix.Lsetxattr(upper, metacopyXattr, c.value, 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, verity := range []string{"off", "on", "require"} {
		mnt, unmount := mountOverlay(t, dir, "metacopy=on,verity="+verity)
		for i, c := range metacopyCases {
			m, err := DecodeMetacopy(c.value)
			var me *MetacopyError
			errors.As(err, &me)
			var wantStat, wantRead error
			switch {
			case me != nil && me.AtLookup:
				wantStat, wantRead = me.Errno, me.Errno
			case verity == "off":
			case me != nil:
				wantRead = me.Errno
			case m.HasDigest(), verity == "require":
				wantRead = syscall.EIO
			}
			path := filepath.Join(mnt, fmt.Sprintf("f%02d", i))
			var st unix.Stat_t
			if err := unix.Stat(path, &st); !errors.Is(err, wantStat) {
				t.Errorf("verity=%s, %s: stat: %v, want %v", verity, c.name, err, wantStat)
			}
			data, err := os.ReadFile(path)
			if wantRead == nil && (err != nil || string(data) != "data") {
				t.Errorf("verity=%s, %s: read %q, %v; want the lower data", verity, c.name, data, err)
			}
			if wantRead != nil && !errors.Is(err, wantRead) {
				t.Errorf("verity=%s, %s: read: %v, want %v", verity, c.name, err, wantRead)
			}
		}
		unmount()
	}
}
