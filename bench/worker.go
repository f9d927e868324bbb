package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// The workloads that no standard tool does are done by this program
// itself, started as a separate process ("ovlbench worker KIND ARGS"),
// so a daemon is timed as a user's program sees it.
var workers = map[string]func(args []string) error{
	"stat":    func(a []string) error { return statWalk(a[0]) },
	"readdir": func(a []string) error { return readdir(a[0]) },
	"relist":  func(a []string) error { return relist(a[0], a[1]) },
	"read":    func(a []string) error { return readAll(a[0]) },
	"copyup":  func(a []string) error { return copyUp(a[0]) },
	"create":  func(a []string) error { return create(a[0], a[1]) },
	"mixed":   func(a []string) error { return mixed(a[0], a[1], a[2], a[3]) },
	"roundtrips": func(a []string) error {
		n, err := strconv.Atoi(a[2])
		if err != nil {
			return err
		}
		return roundTrips(a[0], a[1], n)
	},
}

// roundTrips makes n requests of one kind about file: fstat of an open
// file ("getattr") or getxattr of an xattr it lacks ("getxattr").
func roundTrips(kind, file string, n int) error {
	fd, err := unix.Open(file, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	buf := make([]byte, 64)
	for range n {
		switch kind {
		case "getattr":
			err = unix.Fstat(fd, &st)
		case "getxattr":
			if _, err = unix.Fgetxattr(fd, "user.absent", buf); err == unix.ENODATA {
				err = nil
			}
		default:
			return fmt.Errorf("unknown kind %q", kind)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func worker(args []string) int {
	if len(args) < 2 || workers[args[0]] == nil {
		fmt.Fprintf(os.Stderr, "ovlbench worker: bad arguments %q\n", args)
		return 2
	}
	if err := workers[args[0]](args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "ovlbench worker %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// statWalk lstats every entry under dir, as find or du do.
func statWalk(dir string) error {
	skip := filepath.Join(dir, hugeDir)
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == skip {
			// Walked alone, by stat-huge.
			return fs.SkipDir
		}
		var st unix.Stat_t
		return unix.Lstat(p, &st)
	})
}

// readdir reads the names of dir's entries, as ls -f does.
func readdir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err == nil && len(names) == 0 {
		err = fmt.Errorf("%s is empty", dir)
	}
	return err
}

// relist lists dir n times, as readdir does.
func relist(dir, n string) error {
	count, err := strconv.Atoi(n)
	if err != nil {
		return err
	}
	for range count {
		if err := readdir(dir); err != nil {
			return err
		}
	}
	return nil
}

// readAll reads every regular file under dir.
func readAll(dir string) error {
	buf := make([]byte, 128<<10)
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for {
			n, err := unix.Read(fd, buf)
			if err != nil {
				return fmt.Errorf("read %s: %v", p, err)
			}
			if n == 0 {
				return nil
			}
		}
	})
}

// copyUp opens name for writing and changes its first byte, which copies
// a lower file up whole.
func copyUp(name string) error {
	fd, err := unix.Open(name, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if _, err := unix.Pwrite(fd, []byte{'x'}, 0); err != nil {
		unix.Close(fd)
		return err
	}
	return unix.Close(fd)
}

// create makes n small files under dir, in directories of 100.
func create(dir, n string) error {
	count, err := strconv.Atoi(n)
	if err != nil {
		return err
	}
	data := make([]byte, 100)
	for i := range count {
		sub := filepath.Join(dir, fmt.Sprintf("c%03d", i/100))
		if i%100 == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				return err
			}
		}
		fd, err := unix.Open(filepath.Join(sub, fmt.Sprintf("f%05d", i)), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return err
		}
		if _, err := unix.Write(fd, data); err != nil {
			unix.Close(fd)
			return err
		}
		if err := unix.Close(fd); err != nil {
			return err
		}
	}
	return nil
}

// mixed is one process of the parallel workload: a stat walk of walk,
// reading every file under read, and creating n files under dir.
func mixed(walk, read, dir, n string) error {
	if err := statWalk(walk); err != nil {
		return err
	}
	if err := readAll(read); err != nil {
		return err
	}
	return create(dir, n)
}
