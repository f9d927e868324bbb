package fsverity

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	require(t, os.Geteuid() == 0, "the test mounts filesystems: it needs root")
}

func mount(t *testing.T, args ...string) {
	t.Helper()
	dir := args[len(args)-1]
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
		t.Fatalf("mount %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
}

func TestMeasureWithoutVerity(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if alg, sum, ok, err := Measure(openRead(t, file)); ok || err != nil {
		t.Errorf("Measure of a file without fs-verity: %v %x %v %v", alg, sum, ok, err)
	}
	if _, _, ok, err := Measure(-1); ok || !errors.Is(err, syscall.EBADF) {
		t.Errorf("Measure(-1): %v %v, want EBADF", ok, err)
	}
}

// tmpfs has no FS_IOC_MEASURE_VERITY (ENOTTY): no digest, no error.
func TestMeasureTmpfs(t *testing.T) {
	requireRoot(t)
	dir := filepath.Join(t.TempDir(), "tmpfs")
	mount(t, "-t", "tmpfs", "tmpfs", dir)
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if alg, sum, ok, err := Measure(openRead(t, file)); ok || err != nil {
		t.Errorf("Measure on tmpfs: %v %x %v %v", alg, sum, ok, err)
	}
}

// On an ext4 filesystem made with the verity feature, Measure of a file
// with fs-verity enabled is what Digest computes. A kernel without
// CONFIG_FS_VERITY refuses to enable it (EOPNOTSUPP), and Measure then
// says there is no digest; the comparison is skipped there, even in CI:
// it depends on the kernel's configuration, not on the test machine's set-up.
func TestMeasureMatchesDigest(t *testing.T) {
	requireRoot(t)
	testenv.RequireProgram(t, "fsverity", "fsverity")
	dir := t.TempDir()
	img := filepath.Join(dir, "ext4.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-O", "verity", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	mount(t, "-o", "loop", img, mnt)
	enabled := map[Alg]string{}
	var unsupported string
	for _, alg := range []Alg{SHA256, SHA512} {
		path := filepath.Join(mnt, alg.String())
		writeRandom(t, path, 100*BlockSize+17, rand.NewChaCha8([32]byte{7, byte(alg)}))
		out, err := exec.Command("fsverity", "enable", "--hash-alg="+alg.String(), path).CombinedOutput()
		switch {
		case err == nil:
			enabled[alg] = path
		case strings.Contains(strings.ToLower(string(out)), syscall.EOPNOTSUPP.Error()):
			unsupported = strings.TrimSpace(string(out))
			if _, sum, ok, err := Measure(openRead(t, path)); ok || err != nil {
				t.Errorf("Measure where fs-verity is not supported: %x %v %v", sum, ok, err)
			}
		default:
			t.Fatalf("fsverity enable: %v\n%s", err, out)
		}
	}
	for alg, path := range enabled {
		got, sum, ok, err := Measure(openRead(t, path))
		if !ok || err != nil || got != alg {
			t.Fatalf("Measure of a %v verity file: %v %x %v %v", alg, got, sum, ok, err)
		}
		want, err := Digest(openRead(t, path), alg)
		if err != nil || !bytes.Equal(sum, want) {
			t.Errorf("%v: Measure %x, Digest %x %v", alg, sum, want, err)
		}
	}
	if unsupported != "" {
		t.Skip("this kernel cannot enable fs-verity (no CONFIG_FS_VERITY): " + unsupported)
	}
}
