package fsverity

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// measureArg is struct fsverity_digest with room for the largest digest:
// the kernel reads digest_size as the room there is and writes back the
// algorithm and the size it used.
type measureArg struct {
	alg    uint16
	size   uint16
	digest [MaxDigestSize]byte
}

// Measure returns the file digest the kernel enforces for fd
// (FS_IOC_MEASURE_VERITY) when the file has fs-verity enabled: it costs
// no read, and it is the digest overlayfs compares with the metacopy
// xattr, in the algorithm the file was enabled with. ok is false, with no
// error, when the file has no fs-verity (ENODATA), its filesystem does
// not support it (EOPNOTSUPP, as ext4 says without the verity feature or
// CONFIG_FS_VERITY) or has no such ioctl (ENOTTY, as tmpfs says); the
// caller then computes the digest with Digest.
func Measure(fd int) (alg Alg, digest []byte, ok bool, err error) {
	arg := measureArg{size: MaxDigestSize}
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.FS_IOC_MEASURE_VERITY, uintptr(unsafe.Pointer(&arg)))
		switch e {
		case 0:
			// The kernel fails with EOVERFLOW rather than write a
			// size larger than the room it was given.
			return Alg(arg.alg), append([]byte(nil), arg.digest[:arg.size]...), true, nil
		case unix.EINTR:
			continue
		case unix.ENODATA, unix.EOPNOTSUPP, unix.ENOTTY:
			return 0, nil, false, nil
		default:
			return 0, nil, false, e
		}
	}
}
