package layers

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// Dirent is one raw entry of a layer directory.
type Dirent struct {
	Name string
	Ino  uint64
	Type uint8  // DT_* as the host filesystem reported it
	Off  uint64 // the host's offset of the entry after it (d_off)
}

// ReadDir returns every entry of the directory rel except "." and "..",
// in the host's order.
func (l *Layer) ReadDir(rel string) ([]Dirent, error) {
	fd, err := l.OpenDir(rel)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return ReadDirFd(fd, false)
}

// ReadDirFd returns the entries of the open directory fd, from its
// current offset on, "." and ".." only with dots.
func ReadDirFd(fd int, dots bool) ([]Dirent, error) {
	var out []Dirent
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		out = parseDirents(buf[:n], out, dots)
	}
}

// parseDirents decodes struct linux_dirent64 records, "." and ".." only
// with dots.
func parseDirents(b []byte, out []Dirent, dots bool) []Dirent {
	for len(b) >= 19 {
		ino := binary.NativeEndian.Uint64(b[0:8])
		reclen := int(binary.NativeEndian.Uint16(b[16:18]))
		if reclen < 19 || reclen > len(b) {
			break
		}
		typ := b[18]
		name := b[19:reclen]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		off := binary.NativeEndian.Uint64(b[8:16])
		b = b[reclen:]
		if s := string(name); dots || s != "." && s != ".." {
			out = append(out, Dirent{Name: s, Ino: ino, Type: typ, Off: off})
		}
	}
	return out
}

// ReadDirAt returns the entries of the open directory fd from the host
// offset off (0: the start) on, "." and ".." included, as many as one
// getdents64 into buf returns; none at the end.
// Preconditions: the caller has fd's offset to itself.
func ReadDirAt(fd int, off uint64, buf []byte) ([]Dirent, error) {
	if _, err := unix.Seek(fd, int64(off), 0); err != nil {
		return nil, err
	}
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return nil, err
		}
		return parseDirents(buf[:n], nil, true), nil
	}
}

// OpenDirAt is OpenDir for entry name of directory dfd, a directory of
// this layer ("." for dfd itself, which may be an O_PATH fd).
func (l *Layer) OpenDirAt(dfd int, name string) (int, error) {
	return l.openFile(func(flags int) (int, error) {
		return unix.Openat(dfd, name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}, unix.O_RDONLY|unix.O_DIRECTORY)
}
