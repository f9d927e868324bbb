#!/usr/bin/env bash
# podman.sh [-u USER] MOUNT_PROGRAM|kernel WORKDIR
#
# Runs podman end to end with MOUNT_PROGRAM as containers-storage's
# mount_program (or, given "kernel", with the kernel's overlay: the
# oracle), keeping every piece of state (storage, run files, configs,
# temp files) under WORKDIR, which must be empty or missing: the host's
# default storage and configuration are never read or written.
#
# With -u, podman runs rootless as USER (who needs /etc/subuid and
# /etc/subgid ranges, and newuidmap), from a private mount namespace in
# which /dev/fuse is a node USER owns; WORKDIR's parent must be open to
# USER. Its XDG_RUNTIME_DIR is a fresh short directory under /tmp (removed
# at the end): with a long one every attached `podman run` waits 20
# seconds. The podman pause process, which holds the rootless mounts, is
# ended at the end.
#
# It imports a busybox image made here (no network), runs a container that
# changes files in lower and new directories, checks `podman diff`, commits
# the container, runs the new image, runs several containers at once,
# mounts an image read-only, and removes everything again. Then one
# container per case changes owners and modes (e2e-own), and the owners
# and modes seen inside and stored in the upper layer are recorded: as
# root with --uidmap 0:100000:65536 (mount program: uidmapping=), rootless
# with --userns=keep-id, and, with a mount program only, in a storage of
# its own with force_mask = "shared" (xattr_permissions=2; the image
# layer's override xattrs are recorded too, and the container is
# committed and the new image listed).
#
# Container and podman output goes to stdout. WORKDIR/result gets the
# normalised observations (no ids, times or paths), for comparing runs with
# different mount programs; WORKDIR/argv.log gets every argv podman passed
# to the mount program, and WORKDIR/fstype the file system type of / seen
# inside the containers. Exit status 0 means every check here passed.
#
# Needs root, podman, runc, busybox-static and getfattr; the flags these
# machines need (runc, cgroupfs, explicit ulimits, no network) are set in
# the private containers.conf.
set -euo pipefail

user=""
if [ "${1:-}" = -u ] && [ $# -eq 4 ]; then
	user=$2
	shift 2
fi
if [ $# -ne 2 ]; then
	echo "usage: $0 [-u USER] MOUNT_PROGRAM|kernel WORKDIR" >&2
	exit 2
fi
# Rootless: go on in a private mount namespace, so that the /dev/fuse
# made for USER below stays out of the host's view.
if [ -n "$user" ] && [ -z "${E2E_PRIVATE_MOUNTS:-}" ]; then
	E2E_PRIVATE_MOUNTS=1 exec unshare -m --propagation private bash "$0" -u "$user" "$@"
fi
prog=kernel
if [ "$1" != kernel ]; then
	prog=$(realpath -e "$1")
fi
w=$(realpath -m "$2")
mkdir -p "$w"
if [ -n "$(ls -A "$w")" ]; then
	echo "$0: $w is not empty" >&2
	exit 2
fi
mkdir -p "$w/bin" "$w/tmp" "$w/net" "$w/rootfs" "$w/home" "$w/dev"
: >"$w/result"
: >"$w/argv.log"

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# pm runs podman, as USER when rootless.
pm() {
	if [ -n "$user" ]; then
		runuser -u "$user" -- env HOME="$w/home" XDG_RUNTIME_DIR="$xdg" podman "$@"
	else
		podman "$@"
	fi
}

# mountinfo shows the mounts podman's mount namespace holds: rootless,
# that of its pause process.
mountinfo() {
	if [ -n "$user" ]; then
		cat "/proc/$(cat "$w/tmp/pause.pid")/mountinfo"
	else
		cat /proc/self/mountinfo
	fi
}

# endPause ends the rootless pause process, and with it the mount
# namespace of every rootless mount, and removes XDG_RUNTIME_DIR; on a
# failure it first removes the containers. Only for use once the private
# configuration is in place.
endPause() {
	local status=$? pid
	if [ $status -ne 0 ]; then
		pm rm -a -f -t 0 >/dev/null 2>&1 || true
		[ -n "$user" ] || pm image unmount -a -f >/dev/null 2>&1 || true
	fi
	if [ -n "$user" ] && [ -f "$w/tmp/pause.pid" ]; then
		pid=$(cat "$w/tmp/pause.pid")
		kill "$pid" 2>/dev/null || true
		while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	fi
	if [ -n "$user" ]; then
		rm -rf "$xdg"
	fi
	return $status
}
say() {
	printf '\n=== %s (at %ss)\n' "$*" "$SECONDS"
}
# res appends its input to the result file under a heading, and shows it.
res() {
	printf '## %s\n' "$1" >>"$w/result"
	tee -a "$w/result"
}

# The mount program podman runs: a wrapper that records the argv, then
# runs the real program with it. Rootless, a copy of the program: the
# original may sit in a directory only root may enter.
if [ -n "$user" ] && [ "$prog" != kernel ]; then
	cp "$prog" "$w/bin/"
	prog="$w/bin/$(basename "$prog")"
fi
cat >"$w/bin/mount-program" <<EOF
#!/bin/sh
printf '%s\n' "\$*" >>'$w/argv.log'
exec '$prog' "\$@"
EOF
chmod 755 "$w/bin/mount-program"

# ondisk DIR PATH...: one line per object at or below DIR/PATH as stored
# on disk: mode, owner less $SHIFT, and the override xattrs it has, their
# mode as four octal digits (fuse-overlayfs writes the type bits too,
# containers-storage and ovlmount do not).
cat >"$w/bin/ondisk" <<'EOF'
#!/bin/bash
cd "$1" && shift && find "$@" | sort | while read -r f; do
	read -r mode uid gid <<<"$(stat -c '%A %u %g' "$f")"
	line="$f $mode $((uid - ${SHIFT:-0})):$((gid - ${SHIFT:-0}))"
	for x in user.containers.override_stat user.fuseoverlayfs.override_stat; do
		if v=$(getfattr -h --absolute-names --only-values -n "$x" "$f" 2>/dev/null); then
			IFS=: read -r uid gid mode typ <<<"$v"
			line="$line $x=$uid:$gid:$(printf '%04o' $((8#$mode & 07777)))${typ:+:$typ}"
		fi
	done
	echo "$line"
done
EOF
chmod 755 "$w/bin/ondisk"

cat >"$w/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$w/root"
runroot = "$w/run"
rootless_storage_path = "$w/root"
EOF
if [ "$prog" != kernel ]; then
	cat >>"$w/storage.conf" <<EOF

[storage.options.overlay]
mount_program = "$w/bin/mount-program"
EOF
fi

# runc and cgroupfs: crun refuses these machines' hybrid cgroups. Explicit
# lower ulimits: podman's defaults raise RLIMIT_NOFILE and RLIMIT_NPROC,
# which runc may not do here (no CAP_SYS_RESOURCE).
cat >"$w/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
netns = "none"
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "none"
tmp_dir = "$w/tmp"
image_copy_tmp_dir = "$w/tmp"

[network]
network_config_dir = "$w/net"
EOF

# podman 4.3.1, as root on a kernel with idmapped mounts, hands a mount
# program lower layers on idmapped mounts and the mapping too, so that the
# ids are mapped twice (every lower file shows as 65534, and containers
# with --uidmap fail, with fuse-overlayfs as with ovlmount). Later
# containers-storage idmaps lower layers only without a mount program;
# recording the feature as missing gets that behaviour here.
if [ -z "$user" ] && [ "$prog" != kernel ]; then
	mkdir -p "$w/run/overlay"
	echo "idmapped lower layers not used with a mount program" >"$w/run/overlay/idmapped-lower-dir-false"
fi

export CONTAINERS_STORAGE_CONF="$w/storage.conf"
export CONTAINERS_CONF="$w/containers.conf"
export TMPDIR="$w/tmp"
if [ -n "$user" ]; then
	xdg=$(mktemp -d /tmp/e2e-xdg.XXXXXX)
	chown "$user:" "$xdg"
fi
trap endPause EXIT
cd "$w"

if [ -n "$user" ]; then
	mount -t tmpfs -o mode=755 tmpfs "$w/dev"
	mknod -m 600 "$w/dev/fuse" c 10 229
	chown "$user:" "$w/dev/fuse"
	mount --bind "$w/dev/fuse" /dev/fuse
	chown -R "$user:" "$w"
fi

say "podman info"
pm --version
info=$(pm info --format '{{.Store.GraphDriverName}} {{.Store.GraphRoot}} {{json .Store.GraphOptions}}')
echo "$info"
case "$info" in
"overlay $w/root "*) ;;
*) fail "podman does not use overlay in $w/root: $info" ;;
esac
case "$prog:$info" in
kernel:*mount_program*) fail "podman info shows a mount_program: $info" ;;
kernel:*) ;;
*"\"Executable\":\"$w/bin/mount-program\""*) ;;
*) fail "podman info shows no mount_program $w/bin/mount-program: $info" ;;
esac

# The image: busybox-static with applets as symlinks, a lower tree to
# change, and two scripts the containers run.
say "image"
r="$w/rootfs"
mkdir -p "$r/bin" "$r/etc" "$r/tmp" "$r/lower/sub" "$r/lower/keep" "$r/lower/deldir/x" "$r/lower/opq/old"
cp /bin/busybox "$r/bin/busybox"
# Only the applets the containers use: a link per applet costs a fork.
for a in sh awk cat chmod chown cut find grep id ln ls mkdir mkfifo mv readlink \
	rm rmdir sed sha256sum sleep sort stat tail test touch; do
	ln -s busybox "$r/bin/$a"
done
chmod 1777 "$r/tmp"
echo 'root:x:0:0:root:/root:/bin/sh' >"$r/etc/passwd"
echo 'root:x:0:' >"$r/etc/group"
for f in a chm own hl ren del sub/b keep/k deldir/x/y opq/old/o; do
	echo "lower $f" >"$r/lower/$f"
done
ln "$r/lower/keep/k" "$r/lower/keep/k2"

# e2e-list: one line per object under /lower and /new: type and mode,
# owner, and for files size, link count and a content hash; for symlinks
# the target. No inode numbers or times: those differ between runs.
cat >"$r/bin/e2e-list" <<'EOF'
#!/bin/sh
find /lower /new 2>/dev/null | sort | while read -r f; do
	if [ -L "$f" ]; then
		echo "$f $(stat -c '%A %u:%g' "$f") -> $(readlink "$f")"
	elif [ -f "$f" ]; then
		echo "$f $(stat -c '%A %u:%g %s %h' "$f") $(sha256sum <"$f" | cut -c1-16)"
	else
		echo "$f $(stat -c '%A %u:%g' "$f")"
	fi
done
EOF

# e2e-change: every kind of change, in a lower directory and in a new one.
cat >"$r/bin/e2e-change" <<'EOF'
#!/bin/sh
set -ex
cd /lower
echo appended >>a
chmod 600 chm
chown 1000:1000 own
ln hl hl2
mv ren renamed
rm del
rm -r deldir
mv sub sub2
echo new >sub2/c
echo new >keep/new
rm -r opq
mkdir opq
echo new >opq/n
mkdir -p /new/d
cd /new
echo one >f1
echo two >f2
ln f1 f1link
chmod 640 f1
chown 1000:1000 f2
mv f2 d/f2moved
echo gone >gone
rm gone
mkdir gonedir
rmdir gonedir
ln -s ../lower/a sym
mkfifo fifo
EOF
chmod 755 "$r/bin/e2e-list" "$r/bin/e2e-change"
# /own: objects with owners and modes of their own, for the id mapping
# and force_mask cases; stored with their owners, the rest as 0:0.
mkdir -p "$r/own/d"
printf '#!/bin/sh\necho suid\n' >"$r/own/suid"
echo own >"$r/own/f"
echo own >"$r/own/d/g"
chmod 4755 "$r/own/suid"
chmod 640 "$r/own/f"
chmod 750 "$r/own/d"
chmod 600 "$r/own/d/g"
chown 1234:5678 "$r/own/f" "$r/own/d" "$r/own/d/g"

# e2e-own: changes of owner and mode, then e2e-owners.
cat >"$r/bin/e2e-own" <<'EOF'
#!/bin/sh
set -e
echo "id $(id -u):$(id -g)"
cd /lower
echo more >>a
chown 1234:5678 own
chmod 4755 chm
mkdir -p /new/d
echo new >/new/f
chown 1234:5678 /new/f
chmod 2750 /new/f
chown 1000:1000 /new/d
chmod 700 /new/d
chown 0:5678 /own/d/g
exec e2e-owners
EOF
# e2e-owners: the owner and mode of every object under /lower, /new and
# /own.
cat >"$r/bin/e2e-owners" <<'EOF'
#!/bin/sh
find /lower /new /own 2>/dev/null | sort | while read -r f; do
	echo "$f $(stat -c '%A %u:%g' "$f")"
done
EOF
chmod 755 "$r/bin/e2e-own" "$r/bin/e2e-owners"
tar --numeric-owner --owner=0 --group=0 --exclude=./own -C "$r" -cf "$w/rootfs.tar" .
tar --numeric-owner -C "$r" -rf "$w/rootfs.tar" ./own
if [ -n "$user" ]; then
	chown -R "$user:" "$w"
fi
pm import "$w/rootfs.tar" localhost/e2e:base

say "container c1: changes"
pm run --name c1 localhost/e2e:base sh -c 'awk '\''$2 == "/" {print $3}'\'' /proc/mounts >/tmp/fstype && e2e-change && e2e-list' | tee "$w/c1.list"
pm cp c1:/tmp/fstype "$w/fstype"
echo "fs type of / in c1: $(cat "$w/fstype")"
case "$prog:$(cat "$w/fstype")" in
kernel:overlay | /*:fuse.*) ;;
*) fail "/ in the container is $(cat "$w/fstype"), not a FUSE mount: the mount program was not used" ;;
esac
res "c1 listing" <"$w/c1.list" >/dev/null

say "podman diff c1"
pm diff c1 | sort | res "podman diff c1"

say "podman commit c1"
pm commit c1 localhost/e2e:changed

say "new image: listing"
pm run --rm localhost/e2e:changed e2e-list | tee "$w/changed.list" | res "committed image listing" >/dev/null
if ! diff -u "$w/c1.list" "$w/changed.list"; then
	echo "(the committed image differs from the container: see above)"
fi
pm run --rm localhost/e2e:changed sh -c 'cat /lower/a /lower/keep/k /lower/keep/k2 /new/f1; ls /lower/opq; test ! -e /lower/del && test ! -e /lower/deldir && test ! -e /lower/ren && echo gone: del deldir ren' | res "committed image contents"

say "several containers at once"
for i in 1 2 3; do
	pm run -d --name "p$i" localhost/e2e:changed sh -c \
		"echo container $i >/new/p && echo container $i >>/lower/a && touch /lower/only$i && exec sleep 600"
done
pm ps --format '{{.Names}} {{.Status}}'
# Each container has its own mount of the expected type. (Others may be
# there too for a while: a --rm container's clean-up runs in the
# background.)
for i in 1 2 3; do
	merged=$(pm inspect --format '{{.GraphDriver.Data.MergedDir}}' "p$i")
	mountinfo | grep " $merged .* - $(cat "$w/fstype") " ||
		fail "p$i: no $(cat "$w/fstype") mount on $merged"
done
for i in 1 2 3; do
	pm exec "p$i" sh -c 'while ! ls /lower | grep -q only; do sleep 0.1; done; cat /new/p; tail -n 2 /lower/a; ls /lower | grep only'
done | res "several containers at once"
pm rm -f -t 0 p1 p2 p3

say "image mounted read-only"
# Rootless, an image mount is seen only inside podman's namespaces.
look='m=$(podman image mount localhost/e2e:changed) && cd "$m" && cat lower/a new/f1 && ls lower &&
	{ touch lower/x 2>&1 || true; } | sed "s/^.*: //" && cd / && podman image unmount localhost/e2e:changed >/dev/null'
if [ -n "$user" ]; then
	pm unshare sh -c "$look" | res "image mount"
else
	sh -c "$look" | res "image mount"
fi

# ondisk DIR PATH...: see $w/bin/ondisk; rootless, as podman's user
# namespace sees the files.
ondisk() {
	if [ -n "$user" ]; then
		pm unshare "$w/bin/ondisk" "$@"
	else
		"$w/bin/ondisk" "$@"
	fi
}

# rmc NAME UPPER removes container NAME, whose upper layer is UPPER
# (GRAPHROOT/overlay/LAYER/diff). podman 4.3.1 as root keeps the shm mount
# of a container with a user namespace of its own until `podman rm`, which
# then may fail with EBUSY removing the directory, yet leaves neither the
# container, its files nor the mount: that is not a failure here.
rmc() {
	local id
	id=$(pm inspect --format '{{.Id}}' "$1")
	if ! pm rm "$1"; then
		if pm container exists "$1" || [ -e "${2%/overlay/*/diff}/overlay-containers/$id" ] ||
			mountinfo | grep "$id"; then
			fail "podman rm $1 left it"
		fi
		echo "(podman rm $1 failed, yet removed it)"
	fi
}

if [ -z "$user" ]; then
	say "container m1: --uidmap 0:100000:65536 --gidmap 0:100000:65536"
	pm run --name m1 --uidmap 0:100000:65536 --gidmap 0:100000:65536 localhost/e2e:base e2e-own |
		res "uidmap: inside"
	upper=$(pm inspect --format '{{.GraphDriver.Data.UpperDir}}' m1)
	# The kernel's upper layer holds host ids (100000 + the container's),
	# a mount program's the container's own (uidmapping's first field):
	# listed as container ids, to compare.
	shift=0
	[ "$prog" != kernel ] || shift=100000
	SHIFT=$shift ondisk "$upper" . | res "uidmap: upper layer on disk"
	rmc m1 "$upper"
else
	say "container k1: --userns=keep-id"
	pm run --name k1 --userns=keep-id localhost/e2e:base sh -c 'set -e
		echo "id $(id -u):$(id -g)"
		echo new >/tmp/f && chmod 4750 /tmp/f && mkdir /tmp/d
		find /lower/own /own /tmp | sort | while read -r f; do echo "$f $(stat -c "%A %u:%g" "$f")"; done' |
		res "keep-id: inside"
	upper=$(pm inspect --format '{{.GraphDriver.Data.UpperDir}}' k1)
	ondisk "$upper" . | res "keep-id: upper layer on disk"
	rmc k1 "$upper"
fi

# force_mask: a storage of its own, whose layers containers-storage
# unpacks with mode 0755 and the real owner and mode in an xattr.
# Without a mount program containers-storage refuses it.
if [ "$prog" != kernel ]; then
	say "force_mask = shared"
	sed -e "s|$w/root|$w/root-fm|; s|$w/run|$w/run-fm|" "$w/storage.conf" >"$w/storage-fm.conf"
	echo 'force_mask = "shared"' >>"$w/storage-fm.conf"
	[ -z "$user" ] || chown "$user:" "$w/storage-fm.conf"
	export CONTAINERS_STORAGE_CONF="$w/storage-fm.conf"
	pm import "$w/rootfs.tar" localhost/e2e:base
	pm run --name f1 localhost/e2e:base e2e-own | res "force_mask: inside"
	upper=$(pm inspect --format '{{.GraphDriver.Data.UpperDir}}' f1)
	ondisk "$upper" . | res "force_mask: upper layer on disk"
	layer=$(pm image inspect --format '{{.GraphDriver.Data.UpperDir}}' localhost/e2e:base)
	ondisk "$layer" ./own ./lower/own ./lower/chm | res "force_mask: image layer on disk"
	pm commit f1 localhost/e2e:f1
	pm run --rm localhost/e2e:f1 e2e-owners | res "force_mask: committed image"
	rmc f1 "$upper"
	pm rmi -a -f
	export CONTAINERS_STORAGE_CONF="$w/storage.conf"
fi

say "remove all"
pm rm -a -f
pm rmi -a -f
pm ps -a
# (The rootless namespace also holds the /dev/fuse node's tmpfs, $w/dev.)
if mountinfo | grep " $w/" | grep -v " $w/dev "; then
	fail "mounts left under $w"
fi

say "argv passed to the mount program"
cat "$w/argv.log"
echo "OK"
