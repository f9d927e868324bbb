package layers

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// Dirent is one raw entry of a layer directory.
type Dirent struct {
	Name string
	Ino  uint64
	Type uint8 // DT_* as the host filesystem reported it
}

// ReadDir returns every entry of the directory rel except "." and "..",
// in the host's order.
func (l *Layer) ReadDir(rel string) ([]Dirent, error) {
	fd, err := l.OpenDir(rel)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return ReadDirFd(fd)
}

// ReadDirFd returns the entries of the open directory fd, from its
// current offset on, except "." and "..".
func ReadDirFd(fd int) ([]Dirent, error) {
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
		out = parseDirents(buf[:n], out)
	}
}

// parseDirents decodes struct linux_dirent64 records.
func parseDirents(b []byte, out []Dirent) []Dirent {
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
		b = b[reclen:]
		if s := string(name); s != "." && s != ".." {
			out = append(out, Dirent{Name: s, Ino: ino, Type: typ})
		}
	}
	return out
}
