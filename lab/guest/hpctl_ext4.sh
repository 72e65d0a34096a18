# The README's session: hpctl on Debian's ext4, mounted on a ram disk.
# Its output is printed as `HPSHOW` lines, pasted into README.md.
. /scripts/lib.sh
mark hpctl_ext4
HPCTL=/modules/hpctl
mount_ext4_ramdisk hpctl_ext4
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
( wait_hpctl_tracing; work ) &
show $HPCTL trace ext4 --duration 6 > /tmp/trace.out
head -n 8 /tmp/trace.out; grep 'events received' /tmp/trace.out
[ "$(grep -c '\[ext4\]' /tmp/trace.out)" -gt 0 ] && pass hpctl_ext4.trace || fail hpctl_ext4.trace "no ext4 call traced"
show $HPCTL stats > /tmp/stats.out
head -n 8 /tmp/stats.out
show $HPCTL detach ext4 > /tmp/detach.out
cat /tmp/detach.out
expect_log hpctl_ext4.text_identical 'hp_patcher: ext4 text identical to before attach'
# `progress` answers while an attach holds the lock (what hpctl attach
# shows on a terminal): polled until the attach ends, it must show it.
# Early in the attach, another command waits for the lock: a signal ends
# that wait (a user's Ctrl-C), and the attach goes on.
hpcmd "attach ext4 sink=none" > /tmp/progress_attach.out &
attacher=$!
seen=""
waited=""
while kill -0 $attacher 2>/dev/null; do
	p=$(hpcmd progress)
	case $p in *"state=arming name=ext4 "*) seen=$p ;; esac
	armed=${p#*armed=}; armed=${armed%% *}; sites=${p#*sites=}
	if [ -z "$waited" ] && [ -n "$seen" ] && [ $((armed * 2)) -lt "$sites" ]; then
		printf targets | dd bs=128k of=$HPDEV 2>/dev/null &
		waiter=$!
		# Until it sleeps (D) on the lock, up to 10 s.
		n=0
		until [ "$(awk '{ print $3 }' /proc/$waiter/stat 2>/dev/null)" = D ] || [ $n -ge 100 ]; do
			usleep 100000; n=$((n + 1))
		done
		kill -KILL $waiter
		wait $waiter
		waited="$(hpcmd progress) (from $p)"
	fi
	usleep 20000
done
wait $attacher
echo "HPINFO hpctl_ext4: progress during the attach: ${seen:-none seen}"
[ -n "$seen" ] && pass hpctl_ext4.progress || fail hpctl_ext4.progress "no progress line while attaching: $(cat /tmp/progress_attach.out)"
case $waited in
"") skip hpctl_ext4.lock_wait_killable "the attach ended before half its sites were armed: no time to test" ;;
"progress state=arming name=ext4 "*) pass hpctl_ext4.lock_wait_killable ;;
*) fail hpctl_ext4.lock_wait_killable "the killed command was reaped only after the attach: $waited" ;;
esac
expect_eq hpctl_ext4.attach_after_kill "$(field state ext4 < /tmp/progress_attach.out)" attached
expect_eq hpctl_ext4.progress_idle "$(hpcmd progress)" "progress state=idle"
hpcmd "detach ext4" > /dev/null
# Any callee, typed from BTF: the journal, the buffer cache, a lock.
case $(uname -r) in 6.1.*) GETBLK=__getblk_gfp ;; *) GETBLK=bdev_getblk ;; esac
show $HPCTL callees ext4 > /tmp/callees.out
head -n 4 /tmp/callees.out; grep -E "^HPSHOW (jbd2_journal_stop|$GETBLK|down_write|_printk|from_kuid|__stack_chk_fail|jbd2__journal_start) " /tmp/callees.out
tail -n 1 /tmp/callees.out
if ! have_btf; then
	grep -q 'no BTF, so no prototypes' /tmp/callees.out && pass hpctl_ext4.callees ||
		fail hpctl_ext4.callees "$(head -n 2 /tmp/callees.out)"
	skip hpctl_ext4.typed "no BTF in $(uname -r): ext4's callees cannot be typed"
else
grep -q ' interceptable ' /tmp/callees.out && pass hpctl_ext4.callees || fail hpctl_ext4.callees "$(tail -n 2 /tmp/callees.out)"
show $HPCTL attach ext4 --fn jbd2_journal_stop,$GETBLK,down_write > /tmp/attach.out
cat /tmp/attach.out
grep -q 'attached to ext4' /tmp/attach.out && pass hpctl_ext4.attach_typed || fail hpctl_ext4.attach_typed "$(cat /tmp/attach.out)"
( wait_hpctl_tracing; work ) &
show $HPCTL trace ext4 --duration 6 > /tmp/trace.out
grep -m 3 ' jbd2_journal_stop(' /tmp/trace.out; grep -m 2 " $GETBLK(" /tmp/trace.out; grep -m 2 ' down_write(' /tmp/trace.out
grep 'events received' /tmp/trace.out
[ "$(grep -c 'jbd2_journal_stop(handle=0x[0-9a-f]*) = 0 (' /tmp/trace.out)" -gt 0 ] && pass hpctl_ext4.trace_typed ||
	fail hpctl_ext4.trace_typed "no typed jbd2_journal_stop call: $(grep -m 1 jbd2_journal_stop /tmp/trace.out)"
show $HPCTL detach ext4 > /tmp/detach.out
cat /tmp/detach.out
fi
check hpctl_ext4.umount umount /mnt
check hpctl_ext4.unload rmmod hp_patcher
expect_no_probes hpctl_ext4.no_probes
