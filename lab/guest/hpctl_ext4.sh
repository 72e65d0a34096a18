# The README's session: hpctl on Debian's ext4, mounted on a ram disk.
# Its output is printed as `HPSHOW` lines, pasted into README.md.
. /scripts/lib.sh
mark hpctl_ext4
HPCTL=/modules/hpctl
for m in $(cat /modules/crc32c_generic.order /modules/ext4.order /modules/brd.order); do
	grep -q "^$(echo $m | tr - _) " /proc/modules || insmod /modules/$m.ko || fail hpctl_ext4.load_$m "insmod $m"
done
dd if=/ext4.img of=/dev/ram0 bs=1M 2>/dev/null
check hpctl_ext4.mount mount -t ext4 /dev/ram0 /mnt
grep -q '^hp_patcher ' /proc/modules && rmmod hp_patcher

show() { echo "HPSHOW # $*"; "$@" 2>&1 | sed 's/^/HPSHOW /'; }
work() {
	i=0
	while [ $i -lt 20 ]; do
		i=$((i + 1)); echo "file $i" > /mnt/g$i
	done
	sync; rm /mnt/g*; sync
}

show $HPCTL plan ext4 --fn kfree,$KMALLOC,$KMALLOC_CACHE > /tmp/plan.out
head -n 6 /tmp/plan.out; tail -n 2 /tmp/plan.out
grep -q 'HPSHOW # ' /tmp/plan.out && [ "$(grep -c planned /tmp/plan.out)" -gt 0 ] && pass hpctl_ext4.plan || fail hpctl_ext4.plan "$(tail -2 /tmp/plan.out)"
show $HPCTL attach ext4 > /tmp/attach.out
cat /tmp/attach.out
grep -q 'attached to ext4' /tmp/attach.out && pass hpctl_ext4.attach || fail hpctl_ext4.attach "$(cat /tmp/attach.out)"
show $HPCTL status
( sleep 2; work ) &
show $HPCTL trace ext4 --duration 6 > /tmp/trace.out
head -n 8 /tmp/trace.out; grep 'events received' /tmp/trace.out
[ "$(grep -c '\[ext4\]' /tmp/trace.out)" -gt 0 ] && pass hpctl_ext4.trace || fail hpctl_ext4.trace "no ext4 call traced"
show $HPCTL stats > /tmp/stats.out
head -n 8 /tmp/stats.out
show $HPCTL detach ext4 > /tmp/detach.out
cat /tmp/detach.out
expect_log hpctl_ext4.text_identical 'hp_patcher: ext4 text identical to before attach'
check hpctl_ext4.umount umount /mnt
check hpctl_ext4.unload rmmod hp_patcher
expect_no_probes hpctl_ext4.no_probes
