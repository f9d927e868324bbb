package testenv

import (
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TreeSum returns a digest of everything below dir that a write could
// change: names, types, modes, owners, sizes, mtimes (to the nanosecond),
// contents, symlink targets, device numbers and xattrs. Tests take it of
// lower layers before and after writing through a mount. Atimes are left
// out, and files are read with O_NOATIME: the first read of a new file
// updates its atime under relatime (TestLowerAtimesUntouched covers them).
func TreeSum(t testing.TB, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %o %d:%d %d %d %d\n", p, st.Mode, st.Uid, st.Gid, st.Size, st.Mtim.Nano(), st.Rdev)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOATIME, 0)
			if err != nil {
				return err
			}
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			io.WriteString(h, target)
		}
		buf := make([]byte, 64<<10)
		n, _ := unix.Llistxattr(p, buf)
		names := splitNames(buf[:max(n, 0)])
		slices.Sort(names)
		for _, name := range names {
			v := make([]byte, 64<<10)
			m, _ := unix.Lgetxattr(p, name, v)
			fmt.Fprintf(h, "%s=%x\n", name, v[:max(m, 0)])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func splitNames(b []byte) []string {
	var out []string
	for start, i := 0, 0; i < len(b); i++ {
		if b[i] == 0 {
			if i > start {
				out = append(out, string(b[start:i]))
			}
			start = i + 1
		}
	}
	return out
}
