#!/usr/bin/env bash
# Builds the Debian package of ovlmount with dpkg-deb, from files of this
# repository and the Go module cache only (no network):
#
#   packaging/deb.sh VERSION ARCH BINARY MAINTAINER OUT.deb
#
# BINARY is the program, built by make deb. The package holds it as
# /usr/bin/ovlmount, which mount.fuse3 (package fuse3, a dependency) finds
# on the PATH it runs programs with, so mount -t fuse.ovlmount and fstab
# work; the man page; the documentation and the copyright file, with the
# licenses of the Go modules linked into the binary, in
# /usr/share/doc/ovlmount. It has no maintainer scripts and no conffiles:
# apt-get remove takes everything away.
set -euo pipefail

if [ $# -ne 5 ]; then
	echo "usage: $0 VERSION ARCH BINARY MAINTAINER OUT.deb" >&2
	exit 2
fi
version=$1 arch=$2 binary=$3 maintainer=$4 out=$5
cd "$(dirname "$0")/.."
umask 022
# Files dated no later than the commit, for a reproducible package.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

stage=$(mktemp -d "${TMPDIR:-/tmp}/ovlmount-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/root
doc=$root/usr/share/doc/ovlmount

install -D -m 0755 "$binary" "$root/usr/bin/ovlmount"
install -d -m 0755 "$root/usr/share/man/man8" "$doc/docs"
gzip -9n <docs/ovlmount.8 >"$root/usr/share/man/man8/ovlmount.8.gz"

# Documentation: Debian policy wants files over 4 kB compressed. The
# generated reports (conformance, benchmarks) stay in the repository.
install -m 0644 README.md "$doc/"
for f in usage options differences podman format design; do
	install -m 0644 "docs/$f.md" "$doc/docs/"
done
find "$doc" -name '*.md' -size +4k -exec gzip -9n {} +

# copyright: ovlmount's license, then the license of everything the
# static binary holds: the Go standard library and each module that go
# version -m lists (a replacement's license if go.mod replaces one).
{
	echo "ovlmount $version"
	echo
	cat LICENSE
	echo
	echo "The program in /usr/bin/ovlmount also holds the Go standard library and"
	echo "the Go modules below, under these licenses."
	echo
	echo "== Go standard library, $(go env GOVERSION)"
	echo
	cat "$(go env GOROOT)/LICENSE"
	# A "=>" line replaces the module of the "dep" line before it.
	go version -m "$binary" |
		awk '$1 == "dep" { if (m != "") print m; m = $2 " " $3 } $1 == "=>" { m = $2 " " $3 } END { if (m != "") print m }' |
		while read -r path ver; do
			dir=$(GOPROXY=off go list -m -f '{{.Dir}}' "$path@$ver" 2>/dev/null || true)
			if [ -z "$dir" ] && [ -d "$path" ]; then
				dir=$path # a replacement by a directory
			fi
			lic=""
			for name in LICENSE LICENSE.txt LICENSE.md COPYING; do
				if [ -n "$dir" ] && [ -f "$dir/$name" ]; then
					lic=$dir/$name
					break
				fi
			done
			if [ -z "$lic" ]; then
				echo "deb.sh: no license file for module $path $ver (in '$dir')" >&2
				exit 1
			fi
			echo
			echo "== $path $ver"
			echo
			cat "$lic"
			if [ -f "$dir/NOTICE" ]; then
				echo
				cat "$dir/NOTICE"
			fi
		done
} >"$doc/copyright"
chmod 0644 "$doc/copyright"

mkdir -m 0755 "$root/DEBIAN"
(cd "$root" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
cat >"$root/DEBIAN/control" <<CONTROL
Package: ovlmount
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: fuse3
Section: admin
Priority: optional
Description: userspace overlay filesystem that behaves like kernel overlayfs
 ovlmount serves through FUSE the merged view of read-only lower
 directories and a writable upper directory, and reads and writes the
 same on-disk format as the kernel's overlay filesystem (whiteouts,
 opaque directories, copy-up through the work directory), plus the AUFS
 markers of container images. Its command line is fuse-overlayfs's, so
 it can be containers-storage's mount_program; mount -t fuse.ovlmount
 and fstab lines work through mount.fuse3.
CONTROL
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

mkdir -p "$(dirname "$out")"
dpkg-deb --root-owner-group -Zxz --build "$root" "$out"
