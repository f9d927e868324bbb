#!/usr/bin/env bash
# Builds a three-layer example stack with every marker kind, mounts it with
# ovlmount, shows the merged view and unmounts. Device nodes cannot live in
# git, so the layers are made here, under example/run/.
set -euo pipefail
bin=$(realpath "${1:-bin/ovlmount}")
cd "$(dirname "$0")"
[ "$(id -u)" = 0 ] || { echo "run as root (mknod and trusted.* xattrs)"; exit 1; }
for m in run/merged run/kmerged; do   # left by an interrupted run
	mountpoint -q "$m" 2>/dev/null && umount -l "$m"
done
rm -rf run
mkdir -p run/{lower1,lower2,lower3,upper,work,merged}
cd run

# lower3, the bottom layer
mkdir -p lower3/etc lower3/data/old lower3/opaque-dir lower3/aufs-dir
echo "base config"     > lower3/etc/app.conf
echo "to be deleted"   > lower3/etc/removed.conf
echo "hidden below"    > lower3/opaque-dir/from-lower3
echo "aufs: gone"      > lower3/aufs-dir/gone
echo "aufs: dir gone"  > lower3/aufs-dir/also-gone
echo "old data"        > lower3/data/old/file
ln -s app.conf lower3/etc/link-to-conf
mkfifo lower3/data/fifo

# lower2: replaces, deletes (char 0/0 and AUFS .wh.), opaque dir
mkdir -p lower2/etc
echo "new config"      > lower2/etc/app.conf
mknod lower2/etc/removed.conf c 0 0
mkdir -p lower2/opaque-dir lower2/aufs-dir
setfattr -n trusted.overlay.opaque -v y lower2/opaque-dir
echo "only this shows" > lower2/opaque-dir/from-lower2
touch lower2/aufs-dir/.wh.gone
touch lower2/aufs-dir/.wh..wh..opq
echo "aufs: stays"     > lower2/aufs-dir/kept
mkdir -p lower2/xdir
echo "hidden by lower1" > lower2/xdir/ghost

# lower1: an xwhiteout dir (merged with lower2's, whose ghost it hides:
# the kernel reads xwhiteouts only in a merged directory), devices, xattrs
mkdir -p lower1/data lower1/xdir
setfattr -n trusted.overlay.opaque -v x lower1/xdir
touch lower1/xdir/ghost
setfattr -n trusted.overlay.whiteout -v y lower1/xdir/ghost
echo "visible"         > lower1/xdir/real
mknod lower1/data/null c 1 3
echo "attributes"      > lower1/data/tagged
setfattr -n user.colour -v blue lower1/data/tagged
ln lower1/data/tagged lower1/data/tagged-hardlink

# upper: what a previous read-write session left (kernel format)
mkdir -p upper/data
echo "written later"   > upper/data/new-file
mknod upper/data/old c 0 0

"$bin" -o "lowerdir=$PWD/lower1:$PWD/lower2:$PWD/lower3,upperdir=$PWD/upper,workdir=$PWD/work" merged
trap 'umount merged' EXIT
echo "== mounted: $(grep " $PWD/merged " /proc/mounts)"
echo "== merged tree (inode, mode, links, size, path, symlink target)"
(cd merged && find . -mindepth 1 -printf '%10i %M %2n %5s %p %l\n' | sort -k5)
echo "== etc/app.conf:        $(cat merged/etc/app.conf)"
echo "== opaque-dir:          $(ls merged/opaque-dir)"
echo "== aufs-dir:            $(ls merged/aufs-dir)"
echo "== xdir:                $(ls merged/xdir)"
echo "== user.colour:         $(getfattr --only-values -n user.colour merged/data/tagged)"
echo "== writes: change a lower file, delete one, rename one, make a dir"
echo "edited" >> merged/etc/app.conf
rm merged/data/tagged-hardlink
mv merged/data/fifo merged/data/pipe
mkdir merged/etc/conf.d
echo "== etc/app.conf now:    $(cat merged/etc/app.conf | tr '\n' ' ')"
echo "== the upper layer (kernel format: char 0/0 whiteouts, trusted.overlay.* xattrs)"
(cd upper && find . -mindepth 1 -printf '%M %p\n' | sort -k2)
getfattr -R -d -m trusted.overlay -e hex upper 2>/dev/null | sed -n 's/^# file: /   /p; s/^trusted/     trusted/p'
umount merged
trap - EXIT
echo "== unmounted; a kernel overlay mount of the same layers shows the same tree"
echo "   (the AUFS directory left out: the kernel does not read those markers)"
mkdir -p kwork kmerged
mount -t overlay overlay -o "lowerdir=$PWD/lower1:$PWD/lower2:$PWD/lower3,upperdir=$PWD/upper,workdir=$PWD/kwork" kmerged
trap 'umount kmerged' EXIT
(cd kmerged && find . -mindepth 1 -printf '%M %p\n' 2>/dev/null | grep -v aufs-dir | sort -k2) || true
