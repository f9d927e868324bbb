package layers

import (
	"strconv"

	"golang.org/x/sys/unix"
)

// Extended attributes are read through /proc/self/fd/N of an O_PATH fd:
// that reaches the object the fd holds (a symlink included) without a path
// walk in the layer. Values and lists grow until they fit.

func procPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// Getxattr returns the value of attribute name of rel.
func (l *Layer) Getxattr(rel, name string) ([]byte, error) {
	fd, err := l.OpenPath(rel)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return FdGetxattr(fd, name)
}

// Listxattr returns the attribute names of rel.
func (l *Layer) Listxattr(rel string) ([]string, error) {
	fd, err := l.OpenPath(rel)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return FdListxattr(fd)
}

// FdGetxattr returns attribute name of the object held by fd (which may be
// an O_PATH fd).
func FdGetxattr(fd int, name string) ([]byte, error) {
	p := procPath(fd)
	buf := make([]byte, 256)
	for {
		n, err := unix.Getxattr(p, name, buf)
		if err == unix.ERANGE {
			sz, err := unix.Getxattr(p, name, nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, sz+64)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// FdListxattr returns the attribute names of the object held by fd.
func FdListxattr(fd int) ([]string, error) {
	p := procPath(fd)
	buf := make([]byte, 1024)
	for {
		n, err := unix.Listxattr(p, buf)
		if err == unix.ERANGE {
			sz, err := unix.Listxattr(p, nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, sz+256)
			continue
		}
		if err != nil {
			return nil, err
		}
		var names []string
		start := 0
		for i := 0; i < n; i++ {
			if buf[i] == 0 {
				if i > start {
					names = append(names, string(buf[start:i]))
				}
				start = i + 1
			}
		}
		return names, nil
	}
}
