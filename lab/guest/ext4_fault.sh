# Debian's ext4 on a brd ram disk, with its own allocations failing at
# random (5% of the calls of every allocator it calls) while files are
# written: ext4 reports errors or retries, the kernel log shows no Oops,
# BUG or WARNING (the host scans it), and after `fail ext4 clear` and a
# remount the files written before are intact.
. /scripts/lib.sh
mark ext4_fault
mount_ext4_ramdisk ext4_fault
i=0
while [ $i -lt 10 ]; do
	i=$((i + 1))
	head -c $((i * 3000)) /dev/urandom > /mnt/before$i
done
sync
md5sum /mnt/before* > /tmp/before.md5

insmod $HP || fail ext4_fault.load "insmod hp_patcher failed"
expect_eq ext4_fault.attach "$(hpcmd 'attach ext4 sink=none' | field state ext4)" attached
# Every allocator ext4 has a site of (the module refuses the frees).
allocators=$(hpcmd 'sites ext4' | tr ' ' '\n' | sed -n 's/^callee=//p' | sort -u | grep -v free | head -n 8)
echo "HPINFO ext4_fault: failing 5% of: $(echo $allocators)"
for f in $allocators; do
	hpcmd "fail ext4 fn=$f percent=5" >/dev/null || fail ext4_fault.rule_$f "refused: $(hpcmd "fail ext4 fn=$f percent=5" 2>&1)"
done

# Work that allocates: new files, directories, renames, removals.
errors=0
i=0
while [ $i -lt 60 ]; do
	i=$((i + 1))
	mkdir -p /mnt/d$((i % 7))/e$((i % 3)) 2>/dev/null || errors=$((errors + 1))
	head -c $((i * 700)) /dev/urandom > /mnt/d$((i % 7))/f$i 2>/dev/null || errors=$((errors + 1))
	mv /mnt/d$((i % 7))/f$i /mnt/d$((i % 7))/e$((i % 3))/g$i 2>/dev/null || errors=$((errors + 1))
	[ $((i % 4)) = 0 ] && { rm -f /mnt/d$((i % 7))/e$((i % 3))/g$((i - 2)) 2>/dev/null || errors=$((errors + 1)); }
done
sync 2>/dev/null
failed=$(hpcmd 'faults ext4' | awk '$1 == "fault" { for (i = 2; i <= NF; i++) if (index($i, "failed=") == 1) n += substr($i, 8) } END { print n + 0 }')
matched=$(hpcmd 'faults ext4' | awk '$1 == "fault" { for (i = 2; i <= NF; i++) if (index($i, "matched=") == 1) n += substr($i, 9) } END { print n + 0 }')
echo "HPINFO ext4_fault: $failed of $matched allocations failed; $errors commands failed"
hpcmd 'faults ext4' | grep '^fault-site' | sed 's/^/HPINFO ext4_fault: /' | head -n 20
echo "HPINFO ext4_fault: $(log_since | grep -c 'EXT4-fs') ext4 log lines, e.g.: $(log_since | grep 'EXT4-fs' | head -n 1)"
[ "$failed" -gt 0 ] && pass ext4_fault.failed_some || fail ext4_fault.failed_some "no allocation failed ($matched matched)"

expect_eq ext4_fault.clear "$(hpcmd 'fail ext4 clear' | sed 's/rules=.*//')" "cleared module=ext4 "
umount /mnt 2>/dev/null || { sleep 1; umount /mnt; } || fail ext4_fault.umount "umount failed"
check ext4_fault.remount mount -t ext4 /dev/ram0 /mnt
md5sum /mnt/before* > /tmp/after.md5
expect_eq ext4_fault.data_intact "$(cat /tmp/after.md5)" "$(cat /tmp/before.md5)"
check ext4_fault.umount_again umount /mnt
check ext4_fault.detach hpcmd 'detach ext4'
expect_log ext4_fault.text_identical 'hp_patcher: ext4 text identical to before attach'
check ext4_fault.unload rmmod hp_patcher
check ext4_fault.rmmod_ext4 rmmod ext4
