package fsverity

import (
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// require skips the test when what it needs is missing, or fails it with
// CI=true, so that CI never passes by skipping.
func require(t testing.TB, ok bool, msg string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: failing instead of skipping)")
	}
	t.Skip(msg)
}

// toolDigest is what `fsverity digest` prints for path.
func toolDigest(t testing.TB, path string, alg Alg) string {
	t.Helper()
	out, err := exec.Command("fsverity", "digest", "--hash-alg="+alg.String(),
		"--block-size=4096", "--compact", path).Output()
	if err != nil {
		t.Fatalf("fsverity digest %s: %v", path, err)
	}
	return strings.TrimSpace(string(out))
}

// writeRandom writes size bytes drawn from rng to path, a MiB at a time.
func writeRandom(t testing.TB, path string, size int64, rng *rand.ChaCha8) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(int64(len(buf)), left)
		rng.Read(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			t.Fatal(err)
		}
		left -= n
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func openRead(t testing.TB, path string) int {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func digestHex(t testing.TB, path string, alg Alg) string {
	t.Helper()
	sum, err := Digest(openRead(t, path), alg)
	if err != nil {
		t.Fatalf("Digest(%s, %v): %v", path, alg, err)
	}
	if len(sum) != alg.Size() {
		t.Fatalf("Digest(%s, %v) is %d bytes", path, alg, len(sum))
	}
	return hex.EncodeToString(sum)
}

// The sizes are those where the tree changes shape with SHA-256's 128
// hashes per block: no block, one partial and one full block, a second
// block, one full level-0 block, a second level-0 block, and three levels
// with a partial last block. SHA-512 (64 a block) gets more levels from
// the same sizes.
func TestDigestMatchesFsverity(t *testing.T) {
	testenv.RequireProgram(t, "fsverity", "fsverity")
	seed := uint64(time.Now().UnixNano())
	t.Logf("random sizes and data from seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	sizes := []int64{0, 1, 4095, 4096, 4097, 4096 * 128, 4096*128 + 1, 4096*129*128 + 7}
	for range 4 {
		sizes = append(sizes, rng.Int64N(4096*300))
	}
	var key [32]byte
	for i := range key {
		key[i] = byte(rng.Uint32())
	}
	data := rand.NewChaCha8(key)
	dir := t.TempDir()
	for i, size := range sizes {
		path := filepath.Join(dir, "f"+string(rune('a'+i)))
		writeRandom(t, path, size, data)
		for _, alg := range []Alg{SHA256, SHA512} {
			if got, want := digestHex(t, path, alg), toolDigest(t, path, alg); got != want {
				t.Errorf("size %d %v: Digest %s, fsverity digest %s", size, alg, got, want)
			}
		}
	}
}

// Holes read as zeros, and zero blocks hash like any other.
func TestDigestSparse(t *testing.T) {
	testenv.RequireProgram(t, "fsverity", "fsverity")
	path := filepath.Join(t.TempDir(), "sparse")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("data in the middle"), 3<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(9<<20 + 5); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, alg := range []Alg{SHA256, SHA512} {
		if got, want := digestHex(t, path, alg), toolDigest(t, path, alg); got != want {
			t.Errorf("%v: Digest %s, fsverity digest %s", alg, got, want)
		}
	}
}

func TestDigestKeepsOffset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	writeRandom(t, path, 3*BlockSize+10, rand.NewChaCha8([32]byte{1}))
	fd := openRead(t, path)
	if _, err := unix.Seek(fd, 1234, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := Digest(fd, SHA256); err != nil {
		t.Fatal(err)
	}
	if off, err := unix.Seek(fd, 0, 1); err != nil || off != 1234 {
		t.Fatalf("offset after Digest: %d, %v; want 1234", off, err)
	}
}

// The errors are those FS_IOC_ENABLE_VERITY gives for the same file.
func TestDigestRefuses(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	fifoFd, err := unix.Open(fifo, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fifoFd)
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		fd   int
		alg  Alg
		want syscall.Errno
	}{
		{"directory", openRead(t, dir), SHA256, syscall.EISDIR},
		{"fifo", fifoFd, SHA256, syscall.EINVAL},
		{"unknown algorithm", openRead(t, file), 3, syscall.EINVAL},
		{"no algorithm", openRead(t, file), 0, syscall.EINVAL},
		{"closed fd", -1, SHA256, syscall.EBADF},
	} {
		if sum, err := Digest(c.fd, c.alg); !errors.Is(err, c.want) {
			t.Errorf("%s: Digest = %x, %v; want %v", c.name, sum, err, c.want)
		}
	}
}

// A 1 GiB file (sparse, so that the test writes nothing) is hashed with
// the memory of one read.
func TestDigestMemoryBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 1<<30); err != nil {
		t.Fatal(err)
	}
	fd := openRead(t, path)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := Digest(fd, SHA256); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 2*readSize {
		t.Errorf("Digest of a 1 GiB file allocated %d bytes", alloc)
	}
}

func BenchmarkDigest(b *testing.B) {
	const size = 64 << 20
	path := filepath.Join(b.TempDir(), "f")
	writeRandom(b, path, size, rand.NewChaCha8([32]byte{2}))
	fd := openRead(b, path)
	for _, alg := range []Alg{SHA256, SHA512} {
		b.Run(alg.String(), func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				if _, err := Digest(fd, alg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
