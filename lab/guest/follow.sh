# Follow mode: attach to cr_target before it is loaded; its init's calls
# are caught (attached at COMING), the init probes are gone once it is live,
# and it is followed across 10 unload/load cycles.
. /scripts/lib.sh
mark follow
grep -q '^cr_target ' /proc/modules && rmmod cr_target
insmod $HP
# A hist trigger on our event counts the calls per site (and enables it).
EV=/sys/kernel/tracing/events/hp_patcher/hp_call
echo 'hist:keys=site.sym-offset' > $EV/trigger
# cr_target loads paused: its init's calls are then all the calls there are
# until it is resumed. (The hist cannot name init sites once init text is
# freed, so they are counted, not named.)
calls_in_hist() { grep 'hitcount:' $EV/hist | sed 's/.*hitcount: *//' | awk '{ n += $1 } END { print n + 0 }'; }
load_paused() { insmod /modules/cr_target.ko start_paused=1; }
resume() { echo 0 > /sys/kernel/debug/cr_target/pause; }

expect_eq follow.awaited "$(hpcmd 'attach cr_target follow' | field state cr_target)" awaited
expect_refused follow.busy "Device or resource busy" "attach cr_target follow"
load_paused
expect_eq follow.attached "$(target_field cr_target state)" attached
# cr_init_calls makes 4 kmalloc and 4 kfree, in init text.
expect_eq follow.init_calls "$(calls_in_hist)" 8
expect_eq follow.init_sites "$(grep -c 'hitcount: *4$' $EV/hist)" 2
wait_log 'detached from cr_target \(init done\): 8 calls'
init_line=$(log_since | grep 'detached from cr_target (init done): 8 calls')
case "$init_line" in *" $(sym kmalloc)=4"*" kfree=4"*|*" kfree=4"*" $(sym kmalloc)=4"*) pass follow.init_counted ;; *) fail follow.init_counted "line: $init_line" ;; esac
resume
sleep 1
grep 'hitcount:' $EV/hist | sed 's/^/HPINFO follow: hist: /' | head -5
[ "$(grep -c 'cr_round+0x' $EV/hist)" -gt 0 ] && pass follow.core_calls || fail follow.core_calls "no cr_round site in the hist"
if grep -q 'cr_init_calls\|cr_target_init' /sys/kernel/debug/kprobes/list; then
	fail follow.init_probes_gone "$(grep cr_target /sys/kernel/debug/kprobes/list | head -3)"
else
	pass follow.init_probes_gone
fi
crc=$(cat /sys/kernel/debug/cr_target/text_crc)

i=0
while [ $i -lt 10 ]; do
	i=$((i + 1))
	rmmod cr_target
	[ "$(target_field cr_target state)" = awaited ] || fail follow.cycle$i.awaited "$(hpcmd targets)"
	echo 'hist:keys=site.sym-offset:clear' >> $EV/trigger
	load_paused
	[ "$(target_field cr_target state)" = attached ] || fail follow.cycle$i.attached "$(hpcmd targets)"
	n=$(calls_in_hist)
	[ "$n" = 8 ] || fail follow.cycle$i.init_calls "$n init calls"
	resume
	sleep 1
done
pass follow.cycles
expect_eq follow.loads_attached "$(log_since | grep -c 'cr_target is loading: attaching before its init')" 11
# 11 loads: each init text at LIVE (11), each core text at its unload (10).
expect_eq follow.identical "$(log_since | grep -c 'cr_target text identical to before attach')" 21
expect_eq follow.differs "$(log_since | grep -c 'text differs')" 0
echo '!hist:keys=site.sym-offset' >> $EV/trigger
hpcmd 'detach cr_target' > /dev/null
expect_eq follow.detached "$(hpcmd targets)" ""
check follow.unload rmmod hp_patcher
expect_no_probes follow.no_probes
rmmod cr_target

# While the target is in its init, stats lists the functions that only its
# init calls (before: only functions with sites in core text were listed).
insmod $HP
expect_eq follow.init_only.awaited "$(hpcmd 'attach cr_target follow fn=get_random_u32 sink=none' | field state cr_target)" awaited
mark follow_init_only
insmod /modules/cr_target.ko init_gate=1 &
loading=$!
wait_gate init
expect_eq follow.init_only.attached "$(target_field cr_target state)" attached
expect_eq follow.init_only.stats "$(hpcmd 'stats cr_target' | field hits get_random_u32)" 1
echo 0 > /sys/module/cr_target/parameters/init_gate
wait $loading
hpcmd 'detach cr_target' > /dev/null

# A site in the last function of the init text (hrtimer_init's, or
# hrtimer_setup's since 6.13, in cr_target_init): x86 kprobes decodes that function up to the end of the
# text and may read past it. Where the text ends within 15 bytes of its
# page's end that read faulted in the kernel; hp_patcher then leaves the
# site alone and says so. Either way the load goes on, and nothing oopses.
rmmod cr_target
mark follow_last_function
hrtimer=hrtimer_init
grep -q ' hrtimer_setup$' /proc/kallsyms && hrtimer=hrtimer_setup
expect_eq follow.last_function.awaited "$(hpcmd "attach cr_target follow fn=$hrtimer sink=none" | field state cr_target)" awaited
check follow.last_function.load insmod /modules/cr_target.ko
state=$(target_field cr_target state)
if log_since | grep -q 'not probed: kprobes would decode past the end of cr_target'; then
	expect_eq follow.last_function.refused "$state" refused
else
	expect_eq follow.last_function.attached "$state" attached
fi
echo "HPINFO follow: a site in the init text's last function: $state"
expect_eq follow.last_function.no_oops "$(dmesg | grep -c 'Oops\|BUG:')" 0
hpcmd 'detach cr_target' > /dev/null
check follow.init_only.unload rmmod hp_patcher
rmmod cr_target
