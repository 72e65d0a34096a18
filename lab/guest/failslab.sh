# Kernel allocations made on our behalf (kprobes' among them) fail too, each
# in turn: the kernel's failslab (debug kernel only), limited to the insmod
# task and to call chains through module code, fails the 1st, 2nd, ... such
# slab allocation of successive attaches. Each must end cleanly. The attach
# is to cr_callee (a dozen functions, loaded at boot), kfree's sites only:
# every kind of allocation an attach makes, planning's per-function ones
# for a dozen functions rather than cr_target's hundred (each turn is a
# whole load, about 10 s under KASAN and TCG; attached to cr_target the walk
# passed 300 turns without reaching the end).
. /scripts/lib.sh
mark failslab
F=/sys/kernel/debug/failslab
if [ ! -d $F ]; then echo "HPINFO failslab: not in this kernel (the debug kernel has it)"; exit 0; fi
grep -q '^cr_callee ' /proc/modules || insmod /modules/cr_callee.ko
echo N > $F/ignore-gfp-wait
echo Y > $F/task-filter
echo 100 > $F/probability
echo 0 > $F/space
echo 0 > $F/verbose
# Module space on x86_64: only allocations with module code on the stack
# (hp_patcher's init, and what it calls); the task filter leaves the insmod's.
echo 0xffffffffc0000000 > $F/require-start
echo 0xffffffffff000000 > $F/require-end
echo 32 > $F/stacktrace-depth
# failslab counts the calls that pass its filters, for good (and not at all
# with an interval of 1): to fail the k-th call of the k-th attach, the
# interval is where the count will be then.
count=0; k=0; reported=0; bad=0; covered=no
while [ $k -lt 400 ]; do
	k=$((k + 1))
	mark failslab_$k
	echo $((count + k)) > $F/interval
	echo 1 > $F/times
	# busybox insmod tries init_module again when finit_module fails: a
	# refused first load is then followed by a good one.
	sh -c "echo 1 > /proc/self/make-it-fail; exec insmod $HP target_name=cr_callee functions=kfree log_burst=1" 2>/dev/null
	grep -q '^hp_patcher ' /proc/modules && rmmod hp_patcher
	# No failure: fewer than k such allocations in a whole attach.
	[ "$(cat $F/times)" = 1 ] && { covered=yes; break; }
	[ $k -gt 1 ] && count=$((count + k))
	# What hp_patcher itself noticed (the rest the kernel absorbed, such as
	# kprobes giving up an optional optimization).
	log_since | grep -qE 'hp_patcher: (out of memory|a log line was lost|site .* refused by kprobes \(-12\))' && reported=$((reported + 1))
	if grep -q '^hp_patcher ' /proc/modules; then bad=$((bad + 1)); fail failslab.loaded.$k "still loaded"; rmmod hp_patcher; fi
	if grep -q 'cr_callee' /sys/kernel/debug/kprobes/list; then bad=$((bad + 1)); fail failslab.probes.$k "probes left"; fi
	log_since | grep -q 'text differs' && { bad=$((bad + 1)); fail failslab.text.$k "$(log_since | grep -m 1 'text differs')"; }
done
echo 0 > $F/times
echo "HPINFO failslab: $((k - 1)) slab allocations with module code on the stack failed in turn; hp_patcher reported $reported of them"
expect_eq failslab.every_allocation_failed_once "$covered" yes
expect_eq failslab.all_clean "$bad" 0
check failslab.attach_after insmod $HP target_name=cr_callee functions=kfree log_burst=1
expect_log failslab.attached_after 'hp_patcher: attached to cr_callee'
check failslab.detach_after rmmod hp_patcher
expect_log failslab.text_identical 'hp_patcher: cr_callee text identical to before attach'
