package main

import (
	"archive/tar"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// sizes are the amounts the workloads and fixtures use; -quick shrinks
// them for a smoke run.
type sizes struct {
	big   int64 // bytes of the big lower file and of the sequential write
	wide  int   // entries of the merged wide directory
	files int   // files in the tarball and in the create workload
	huge  int   // entries of the huge directory
}

var (
	full  = sizes{big: 1 << 30, wide: 10000, files: 10000, huge: 200000}
	quick = sizes{big: 64 << 20, wide: 1000, files: 1000, huge: 20000}
)

// fixtureVersion names the fixture layout; a cached fixture directory
// with another version is rebuilt.
const fixtureVersion = "2"

// Paths inside the merged tree that the fixtures shape and the workloads
// use. The bottom layer is a copy of a Go distribution under go/.
const (
	srcDir     = "go"              // the source tree
	replaced   = "go/src/net/http" // its files replaced in the middle layer
	whitedDir  = "go/src/archive"  // whited out whole in the middle layer
	whitedFile = "go/test"         // its files starting with 'a' whited out
	opaqueDir  = "go/misc"         // opaque in the middle layer
	rmDir      = "go/src/internal" // the lower subtree rm -rf removes
	wideDir    = "wide"            // spread over all three layers
	hugeDir    = "huge"            // empty files, in the bottom layer
	bigFile    = "big"             // in the top layer
	linkDir    = "links"           // symlinks, in the top layer
	goroot     = "/usr/local/go"   // where the source tree is copied from
	tarName    = "files.tar"       // next to the layers
	doneName   = "fixture-version" // written last: the fixtures are complete
)

// fixtures builds the layers under dir unless a complete set of this
// version is there, and returns the lowerdir option value.
func fixtures(dir string, sz sizes) (string, error) {
	lower := filepath.Join(dir, "top") + ":" + filepath.Join(dir, "middle") + ":" + filepath.Join(dir, "bottom")
	done := filepath.Join(dir, doneName)
	if b, err := os.ReadFile(done); err == nil && strings.TrimSpace(string(b)) == fixtureVersion {
		return lower, nil
	}
	fmt.Fprintf(os.Stderr, "building fixtures in %s\n", dir)
	for _, l := range []string{"top", "middle", "bottom", tarName} {
		if err := os.RemoveAll(filepath.Join(dir, l)); err != nil {
			return "", err
		}
	}
	steps := []func(string, sizes) error{bottom, middle, top, tarball}
	for _, step := range steps {
		if err := step(dir, sz); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(done, []byte(fixtureVersion+"\n"), 0o644); err != nil {
		return "", err
	}
	return lower, nil
}

// bottom copies the Go distribution and the first third of the wide
// directory.
func bottom(dir string, sz sizes) error {
	b := filepath.Join(dir, "bottom")
	if err := os.MkdirAll(b, 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("cp", "-a", goroot, filepath.Join(b, srcDir)).CombinedOutput(); err != nil {
		return fmt.Errorf("cp %s: %v: %s", goroot, err, out)
	}
	if err := hugeFiles(b, sz.huge); err != nil {
		return err
	}
	return wideFiles(b, 0, sz.wide/3, "bottom")
}

// hugeFiles makes the huge directory in layer root: n empty files.
func hugeFiles(root string, n int) error {
	d := filepath.Join(root, hugeDir)
	if err := os.Mkdir(d, 0o755); err != nil {
		return err
	}
	fd, err := unix.Open(d, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for i := range n {
		if err := unix.Mknodat(fd, fmt.Sprintf("h%06d", i), unix.S_IFREG|0o644, 0); err != nil {
			return err
		}
	}
	return nil
}

// middle replaces files, whites out a directory and some files, makes a
// directory opaque, and holds the second third of the wide directory.
func middle(dir string, sz sizes) error {
	b, m := filepath.Join(dir, "bottom"), filepath.Join(dir, "middle")
	for _, d := range []string{replaced, whitedFile, opaqueDir} {
		if err := os.MkdirAll(filepath.Join(m, d), 0o755); err != nil {
			return err
		}
	}
	ents, err := os.ReadDir(filepath.Join(b, replaced))
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		old, err := os.ReadFile(filepath.Join(b, replaced, e.Name()))
		if err != nil {
			return err
		}
		data := append([]byte("// replaced in the middle layer\n"), old...)
		if err := os.WriteFile(filepath.Join(m, replaced, e.Name()), data, 0o644); err != nil {
			return err
		}
	}
	if err := whiteout(filepath.Join(m, whitedDir)); err != nil {
		return err
	}
	ents, err = os.ReadDir(filepath.Join(b, whitedFile))
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "a") {
			if err := whiteout(filepath.Join(m, whitedFile, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := unix.Setxattr(filepath.Join(m, opaqueDir), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		return fmt.Errorf("opaque %s: %v", opaqueDir, err)
	}
	for i := range 20 {
		name := filepath.Join(m, opaqueDir, fmt.Sprintf("new%02d.txt", i))
		if err := os.WriteFile(name, []byte(fmt.Sprintf("middle %d\n", i)), 0o644); err != nil {
			return err
		}
	}
	return wideFiles(m, sz.wide/3, 2*sz.wide/3, "middle")
}

// top holds the last third of the wide directory, symlinks and the big
// file.
func top(dir string, sz sizes) error {
	t := filepath.Join(dir, "top")
	if err := os.MkdirAll(filepath.Join(t, linkDir), 0o755); err != nil {
		return err
	}
	for i, target := range []string{"../go/VERSION", "../go/src", "../wide/w00000", "missing", "/usr/local/go"} {
		if err := os.Symlink(target, filepath.Join(t, linkDir, fmt.Sprintf("l%d", i))); err != nil {
			return err
		}
	}
	if err := wideFiles(t, 2*sz.wide/3, sz.wide, "top"); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(t, bigFile))
	if err != nil {
		return err
	}
	// Random data, so that no layer can store it as holes or compress it.
	buf := make([]byte, 1<<20)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(buf)
	for n := int64(0); n < sz.big; n += int64(len(buf)) {
		buf[0]++
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// wideFiles writes entries [from, to) of the wide directory into layer
// root: small files and every hundredth a directory.
func wideFiles(root string, from, to int, layer string) error {
	d := filepath.Join(root, wideDir)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	for i := from; i < to; i++ {
		name := filepath.Join(d, fmt.Sprintf("w%05d", i))
		if i%100 == 0 {
			if err := os.Mkdir(name, 0o755); err != nil {
				return err
			}
			continue
		}
		if err := os.WriteFile(name, []byte(fmt.Sprintf("%s %d\n", layer, i)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// whiteout makes name a kernel overlayfs whiteout: a 0/0 character device.
func whiteout(name string) error {
	if err := unix.Mknod(name, unix.S_IFCHR|0o644, 0); err != nil {
		return fmt.Errorf("whiteout %s: %v", name, err)
	}
	return nil
}

// tarball writes the archive the untar workload extracts: sz.files small
// files in directories of 100.
func tarball(dir string, sz sizes) error {
	f, err := os.Create(filepath.Join(dir, tarName))
	if err != nil {
		return err
	}
	defer f.Close()
	w := tar.NewWriter(f)
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 8192)
	for i := range sz.files {
		if i%100 == 0 {
			if err := w.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("d%03d/", i/100), Mode: 0o755}); err != nil {
				return err
			}
		}
		n := r.IntN(len(data))
		h := &tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("d%03d/f%05d", i/100, i), Mode: 0o644, Size: int64(n)}
		if err := w.WriteHeader(h); err != nil {
			return err
		}
		if _, err := w.Write(data[:n]); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	return f.Close()
}
