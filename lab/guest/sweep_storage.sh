# The sweep, storage half: block devices, file systems on them, and the
# library and crypto modules they pull in. See sweep_lib.sh for a row.
. /scripts/sweep_lib.sh

# Each phase opens a loop minor nobody used yet: the open makes loop create
# the device (loop_probe, with CONFIG_BLOCK_LEGACY_AUTOLOAD). The data goes
# through it to the backing file and is read back after the page cache is
# dropped, so that the reads are loop's too.
loop_minor=20
describe ex_loop "a loop minor nobody used is opened (loop creates it); 1 MiB written through it, read back from it after dropping caches and from its backing file"
ex_loop() {
	local dev=/dev/hploop$loop_minor ok=1
	mknod $dev b 7 $loop_minor || return 1
	loop_minor=$((loop_minor + 1))
	truncate -s 4M /tmp/loop-backing
	losetup $dev /tmp/loop-backing || return 1
	dd if=/tmp/pattern of=$dev bs=64k conv=fsync 2>/dev/null || ok=0
	echo 3 > /proc/sys/vm/drop_caches
	dd if=$dev of=/tmp/loop-read bs=64k count=16 2>/dev/null || ok=0
	cmp /tmp/pattern /tmp/loop-read || ok=0
	dd if=/tmp/loop-backing of=/tmp/loop-read bs=64k count=16 2>/dev/null || ok=0
	cmp /tmp/pattern /tmp/loop-read || ok=0
	losetup -d $dev || ok=0
	[ $ok = 1 ]
}

fs_text='a host-made image on a loop device: mounted, 20 files written, a directory made, a copy and a delete, unmounted, mounted again and checked'
describe ex_xfs "$fs_text"; describe ex_btrfs "$fs_text"; describe ex_vfat "$fs_text"
ex_xfs() { fs_cycle xfs /xfs.img $1; }
ex_btrfs() { fs_cycle btrfs /btrfs.img $1; }
ex_vfat() { fs_cycle vfat /vfat.img $1; }

# Read-only: every file of the ISO must equal its source, also packed here.
describe ex_isofs "a host-made ISO 9660 image (Rock Ridge, Joliet) on a read-only loop device: mounted, every file compared with its source"
ex_isofs() {
	local dev ok=1 f
	dev=$(losetup -f) && losetup -r $dev /iso.img || return 1
	if mount -t iso9660 -o ro $dev /mnt; then
		for f in $(cd /iso-src && find . -type f); do
			cmp /iso-src/$f /mnt/$f || ok=0
		done
		[ "$(cd /mnt && find . -type f | wc -l)" -gt 0 ] || ok=0
		umount /mnt || ok=0
	else
		ok=0
	fi
	losetup -d $dev || ok=0
	[ $ok = 1 ]
}

# A fresh device each phase (hot_add), data through lz4 and zsmalloc and
# back, then reset and hot_remove.
describe ex_zram "hot_add a device, 16 MiB disksize, 1 MiB written (lz4, zsmalloc) and read back after dropping caches, reset, hot_remove"
ex_zram() {
	local id ok=1
	id=$(cat /sys/class/zram-control/hot_add) || return 1
	echo lz4 > /sys/block/zram$id/comp_algorithm || ok=0
	echo 16M > /sys/block/zram$id/disksize || ok=0
	dd if=/tmp/pattern of=/dev/zram$id bs=64k conv=fsync 2>/dev/null || ok=0
	echo 3 > /proc/sys/vm/drop_caches
	dd if=/dev/zram$id of=/tmp/zram-read bs=64k count=16 2>/dev/null || ok=0
	cmp /tmp/pattern /tmp/zram-read || ok=0
	# mm_stat's first field: bytes stored, before compression.
	[ "$(awk '{ print $1 }' /sys/block/zram$id/mm_stat)" -gt 0 ] || ok=0
	echo 1 > /sys/block/zram$id/reset || ok=0
	echo $id > /sys/class/zram-control/hot_remove || ok=0
	[ $ok = 1 ]
}

# 1 MiB that compresses (text) but is not all zeros, which zram keeps apart.
seq 1 200000 | head -c 1048576 > /tmp/pattern

load loop
row loop ex_loop hits

# xfs and btrfs ask the crypto API for crc32c at mount time on 6.x; their
# .order files have it (the soft dependencies), as no modprobe runs here.
load xfs
row xfs ex_xfs hits
row libcrc32c ex_xfs "refused:a wrapper around the crypto API, which allocates for it"
row crc32c_generic ex_xfs "refused:pure computation"
unload xfs

load btrfs
row btrfs ex_btrfs hits
row xor ex_btrfs "refused:pure computation"
row raid6_pq ex_btrfs "refused:pure computation"
unload btrfs xor raid6_pq libcrc32c crc32c_generic

load nls_cp437; load nls_ascii; load nls_utf8
load vfat
row vfat ex_vfat hits
row fat ex_vfat hits
unload vfat fat nls_cp437 nls_ascii nls_utf8

load isofs
row isofs ex_isofs hits
row cdrom ex_isofs "nohits:only called for real CD-ROM drives; the ISO is on a loop device"
unload isofs cdrom

load zram
row zram ex_zram hits
row lz4_compress ex_zram "refused:pure computation"
unload zram lz4hc_compress lz4_compress

unload loop
