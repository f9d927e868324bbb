package copyup

import (
	"github.com/ovlmount/ovlmount/layers"
	"golang.org/x/sys/unix"
)

// chunk is how much the kernel's copy-up copies between looks for a hole
// (OVL_COPY_UP_CHUNK_SIZE).
const chunk = 1 << 20

// copyData copies the first size bytes of the lower file into the
// temporary as the kernel's ovl_copy_up_file does, so that the copy holds
// the same blocks: a clone of the whole file where the filesystem shares
// extents (FICLONE); else, in chunks of 1 MiB, a hole that starts where a
// chunk would is skipped (SEEK_DATA), and a chunk is copied whole, holes
// inside it written as zeros. The caller sets the size.
func (c *copier) copyData(size int64) error {
	if layers.Clone(c.tfd, c.rfd) == nil {
		c.wrote = true
		return nil
	}
	seek, data := true, int64(-1)
	for off := int64(0); off < size; {
		if seek && data < off {
			d, err := unix.Seek(c.rfd, off, unix.SEEK_DATA)
			switch {
			case err == unix.ENXIO:
				// Nothing but a hole up to the end.
				return nil
			case err != nil:
				// No hole detection here: copy everything.
				seek = false
			case d > off:
				off, data = d, d
				continue
			default:
				data = d
			}
		}
		n, err := c.copyRange(off, min(chunk, size-off))
		if err != nil {
			return err
		}
		if n == 0 {
			// The lower file shrank meanwhile: the rest reads as zeros.
			return nil
		}
		if c.opts.Fsync {
			// The copy is synced before it is placed: start writing each
			// chunk out now, while the next is read, rather than all of
			// it in the fsync. Only a start (the fsync still waits and
			// reports), so its failure is no error.
			layers.StartWriteback(c.tfd, off, n)
		}
		off += n
	}
	return nil
}

// FillData copies the first size bytes of open file src into open file
// dst, in place, as copy-up copies data (copyData): the data copy-up of a
// metacopy file, whose upper file holds its metadata and a hole as big as
// the data. It reports whether it wrote anything (it writes nothing where
// src is all holes), which is whether the kernel's copy changes dst's
// mtime. fsync says that the caller syncs dst afterwards.
func FillData(dst, src int, size int64, fsync bool) (bool, error) {
	c := copier{rfd: src, tfd: dst, opts: Options{Fsync: fsync}}
	err := c.copyData(size)
	return c.wrote, err
}

// copyRange copies n bytes at off, the same offset in both files, and
// returns how many it copied (fewer at the lower file's end).
func (c *copier) copyRange(off, n int64) (int64, error) {
	done := int64(0)
	for c.buf == nil && done < n {
		src, dst := off+done, off+done
		chunk := n - done
		if chunk > 1<<30 {
			chunk = 1 << 30
		}
		k, err := layers.CopyFileRange(c.rfd, &src, c.tfd, &dst, int(chunk), 0)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EXDEV || err == unix.EOPNOTSUPP || err == unix.EINVAL || err == unix.ENOSYS || err == unix.EBADF:
			// Not between these files: read and write from now on.
			c.buf = make([]byte, 1<<20)
		case err != nil:
			return done, err
		case k == 0:
			return done, nil
		default:
			done += int64(k)
			c.wrote = true
		}
	}
	for done < n {
		chunk := c.buf
		if int64(len(chunk)) > n-done {
			chunk = chunk[:n-done]
		}
		k, err := unix.Pread(c.rfd, chunk, off+done)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, err
		}
		if k == 0 {
			return done, nil
		}
		if _, err := layers.Pwrite(c.tfd, chunk[:k], off+done); err != nil {
			return done, err
		}
		c.wrote = true
		done += int64(k)
	}
	return done, nil
}
