# Debian's in-tree ext4 on a brd ram disk: attach while mounted, write,
# unmount and mount again, detach; then ext4 unloads normally.
. /scripts/lib.sh
mark ext4
mount_ext4_ramdisk ext4
t0=$(uptime_ms)
check ext4.attach insmod $HP target_name=ext4 log_burst=50
t1=$(uptime_ms)
echo "HPINFO ext4: attach took $((t1 - t0)) ms (guest time, TCG)"
log_since | grep -E 'hp_patcher: ext4: (decoded|[0-9]+ sites)' | sed 's/^.*hp_patcher: /HPINFO /'
i=0
while [ $i -lt 30 ]; do
	i=$((i + 1))
	echo "file $i $(cat /proc/uptime)" > /mnt/f$i
done
mkdir -p /mnt/dir/sub && cp /mnt/f1 /mnt/dir/sub/copy && rm /mnt/f2 /mnt/f3
sync
check ext4.umount umount /mnt
check ext4.remount mount -t ext4 /dev/ram0 /mnt
expect_eq ext4.data_survived "$(cut -d' ' -f1-2 /mnt/f7)" "file 7"
check ext4.umount_again umount /mnt
check ext4.detach rmmod hp_patcher
calls=$(hp_total)
echo "HPINFO ext4: $calls calls intercepted"
if [ "${calls:-0}" -gt 0 ]; then pass ext4.intercepted; else fail ext4.intercepted "no call seen"; fi
expect_log ext4.text_identical 'hp_patcher: ext4 text identical to before attach'
expect_log ext4.line 'hp_patcher: [a-z_]+\(.*\) from [a-z0-9_.]+\+0x[0-9a-f]+/0x[0-9a-f]+ \[ext4\] cpu=[0-9]+'
check ext4.rmmod_ext4 rmmod ext4
