package layers

import (
	"golang.org/x/sys/unix"
)

// RemoveAll removes entry name of directory dfd and, for a directory,
// everything below it; a symlink is removed itself, never followed. It is
// for temporaries in the work directory, which hold no user data. A
// directory of mode 0 (a copy-up's temporary) is made searchable first,
// which needs no CAP_DAC_OVERRIDE of its owner.
func RemoveAll(dfd int, name string) error {
	err := unix.Unlinkat(dfd, name, 0)
	if err != unix.EISDIR {
		if err == unix.ENOENT {
			return nil
		}
		return err
	}
	fd, err := openDirBeneath(dfd, name, unix.O_RDONLY)
	if err == unix.EACCES {
		if pfd, err := openDirBeneath(dfd, name, unix.O_PATH); err == nil {
			unix.Fchmodat(unix.AT_FDCWD, procPath(pfd), 0o700, 0)
			unix.Close(pfd)
		}
		fd, err = openDirBeneath(dfd, name, unix.O_RDONLY)
	}
	if err != nil {
		return err
	}
	err = Empty(fd)
	unix.Close(fd)
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return err
	}
	return nil
}

// Empty removes every entry of directory dir, recursively, as RemoveAll.
func Empty(dir int) error {
	for {
		// A new open file description each round, so that the listing
		// starts at the beginning.
		fd, err := unix.Openat(dir, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ents, err := ReadDirFd(fd)
		unix.Close(fd)
		if err != nil || len(ents) == 0 {
			return err
		}
		for _, e := range ents {
			if err := RemoveAll(dir, e.Name); err != nil {
				return err
			}
		}
	}
}

// openDirBeneath opens directory name of dfd with flags (O_RDONLY or
// O_PATH), never through a symlink.
func openDirBeneath(dfd int, name string, flags int) (int, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC), Resolve: resolveFlags}
	for {
		fd, err := unix.Openat2(dfd, name, &how)
		if err != unix.EINTR && err != unix.EAGAIN {
			return fd, err
		}
	}
}
