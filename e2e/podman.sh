#!/usr/bin/env bash
# podman.sh MOUNT_PROGRAM|kernel WORKDIR
#
# Runs podman end to end with MOUNT_PROGRAM as containers-storage's
# mount_program (or, given "kernel", with the kernel's overlay: the
# oracle), keeping every piece of state (storage, run files, configs,
# temp files) under WORKDIR, which must be empty or missing: the host's
# default storage and configuration are never read or written.
#
# It imports a busybox image made here (no network), runs a container that
# changes files in lower and new directories, checks `podman diff`, commits
# the container, runs the new image, runs several containers at once,
# mounts an image read-only, and removes everything again.
#
# Container and podman output goes to stdout. WORKDIR/result gets the
# normalised observations (no ids, times or paths), for comparing runs with
# different mount programs; WORKDIR/argv.log gets every argv podman passed
# to the mount program, and WORKDIR/fstype the file system type of / seen
# inside the containers. Exit status 0 means every check here passed.
#
# Needs root, podman, runc and busybox-static; the flags these machines
# need (runc, cgroupfs, explicit ulimits, no network) are set in the
# private containers.conf.
set -euo pipefail

if [ $# -ne 2 ]; then
	echo "usage: $0 MOUNT_PROGRAM|kernel WORKDIR" >&2
	exit 2
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
mkdir -p "$w/bin" "$w/tmp" "$w/net" "$w/rootfs"
: >"$w/result"
: >"$w/argv.log"

fail() {
	echo "FAIL: $*" >&2
	exit 1
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
# runs the real program with it.
cat >"$w/bin/mount-program" <<EOF
#!/bin/sh
printf '%s\n' "\$*" >>'$w/argv.log'
exec '$prog' "\$@"
EOF
chmod 755 "$w/bin/mount-program"

cat >"$w/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$w/root"
runroot = "$w/run"
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

export CONTAINERS_STORAGE_CONF="$w/storage.conf"
export CONTAINERS_CONF="$w/containers.conf"
export TMPDIR="$w/tmp"
cd "$w"

say "podman info"
podman --version
graph=$(podman info --format '{{.Store.GraphDriverName}} {{.Store.GraphRoot}}')
opts=$(podman info --format '{{json .Store.GraphOptions}}')
echo "$graph $opts"
[ "$graph" = "overlay $w/root" ] || fail "podman uses \"$graph\", not overlay in $w/root"
case "$prog:$opts" in
kernel:*mount_program*) fail "podman info shows a mount_program: $opts" ;;
kernel:*) ;;
*"\"Executable\":\"$w/bin/mount-program\""*) ;;
*) fail "podman info shows no mount_program $w/bin/mount-program: $opts" ;;
esac

# The image: busybox-static with its applets as symlinks, a lower tree to
# change, and two scripts the containers run.
say "image"
r="$w/rootfs"
mkdir -p "$r/bin" "$r/etc" "$r/tmp" "$r/lower/sub" "$r/lower/keep" "$r/lower/deldir/x" "$r/lower/opq/old"
cp /bin/busybox "$r/bin/busybox"
for a in $("$r/bin/busybox" --list); do
	[ -e "$r/bin/$a" ] || ln -s busybox "$r/bin/$a"
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
tar --numeric-owner --owner=0 --group=0 -C "$r" -cf "$w/rootfs.tar" .
podman import "$w/rootfs.tar" localhost/e2e:base

say "container c1: changes"
podman run --name c1 localhost/e2e:base sh -c 'awk '\''$2 == "/" {print $3}'\'' /proc/mounts >/tmp/fstype && e2e-change && e2e-list' | tee "$w/c1.list"
podman cp c1:/tmp/fstype "$w/fstype"
echo "fs type of / in c1: $(cat "$w/fstype")"
case "$prog:$(cat "$w/fstype")" in
kernel:overlay | /*:fuse.*) ;;
*) fail "/ in the container is $(cat "$w/fstype"), not a FUSE mount: the mount program was not used" ;;
esac
res "c1 listing" <"$w/c1.list" >/dev/null

say "podman diff c1"
podman diff c1 | sort | res "podman diff c1"

say "podman commit c1"
podman commit c1 localhost/e2e:changed

say "new image: listing"
podman run --rm localhost/e2e:changed e2e-list | tee "$w/changed.list" | res "committed image listing" >/dev/null
if ! diff -u "$w/c1.list" "$w/changed.list"; then
	echo "(the committed image differs from the container: see above)"
fi
podman run --rm localhost/e2e:changed sh -c 'cat /lower/a /lower/keep/k /lower/keep/k2 /new/f1; ls /lower/opq; test ! -e /lower/del && test ! -e /lower/deldir && test ! -e /lower/ren && echo gone: del deldir ren' | res "committed image contents"

say "several containers at once"
for i in 1 2 3; do
	podman run -d --name "p$i" localhost/e2e:changed sleep 600
done
for i in 1 2 3; do
	podman exec "p$i" sh -c "echo container $i >/new/p && echo container $i >>/lower/a && touch /lower/only$i"
done
podman ps --format '{{.Names}} {{.Status}}'
n=$(grep -c " $w/root/overlay/[^ ]*/merged .* - $(cat "$w/fstype") " /proc/self/mountinfo || true)
echo "$(cat "$w/fstype") mounts under $w/root: $n"
[ "$n" -eq 3 ] || fail "expected 3 $(cat "$w/fstype") mounts for 3 running containers, found $n"
for i in 1 2 3; do
	podman exec "p$i" sh -c 'cat /new/p; tail -n 2 /lower/a; ls /lower | grep only'
done | res "several containers at once"
podman rm -f -t 0 p1 p2 p3

say "image mounted read-only"
m=$(podman image mount localhost/e2e:changed)
(cd "$m" && cat lower/a new/f1 && ls lower && { touch lower/x 2>&1 || true; } | sed 's/^.*: //') | res "image mount"
podman image unmount localhost/e2e:changed

say "remove all"
podman rm -a -f
podman rmi -a -f
podman ps -a
if grep " $w/" /proc/self/mountinfo; then
	fail "mounts left under $w"
fi

say "argv passed to the mount program"
cat "$w/argv.log"
echo "OK"
