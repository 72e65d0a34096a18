# Kernel allocations made on our behalf (kprobes, the loader) fail too: with
# the kernel's failslab (debug kernel only), limited to the insmod task and
# to call chains through module code, 40 attaches run with 20% of those
# allocations failing. Each must end cleanly, like fault.sh's.
. /scripts/lib.sh
mark failslab
F=/sys/kernel/debug/failslab
if [ ! -d $F ]; then echo "HPINFO failslab: not in this kernel (the debug kernel has it)"; exit 0; fi
insmod /modules/cr_target.ko
crc=$(cat $CR/text_crc)
echo N > $F/ignore-gfp-wait
echo Y > $F/task-filter
echo 20 > $F/probability
echo 1 > $F/interval
echo -1 > $F/times
echo 0 > $F/space
echo 0 > $F/verbose
# Module space on x86_64: only allocations with hp_patcher (or another
# module) on the stack; the task filter leaves only the insmod's.
echo 0xffffffffc0000000 > $F/require-start
echo 0xffffffffff000000 > $F/require-end
echo 32 > $F/stacktrace-depth
n=0; refused=0; bad=0
while [ $n -lt 40 ]; do
	n=$((n + 1))
	if sh -c "echo 1 > /proc/self/make-it-fail; exec insmod $HP target_name=cr_target log_burst=1" 2>/dev/null; then
		rmmod hp_patcher
	else
		refused=$((refused + 1))
	fi
	if grep -q '^hp_patcher ' /proc/modules; then bad=$((bad + 1)); rmmod hp_patcher; fi
	if grep -q 'cr_target' /sys/kernel/debug/kprobes/list; then bad=$((bad + 1)); fail failslab.probes.$n "probes left"; fi
	[ "$(cat $CR/text_crc)" = "$crc" ] || { bad=$((bad + 1)); fail failslab.text.$n "text differs"; }
done
echo 0 > $F/probability
echo "HPINFO failslab: 40 attaches with failing kernel allocations: $refused refused"
expect_eq failslab.all_clean "$bad" 0
check failslab.attach_after insmod $HP target_name=cr_target log_burst=1
check failslab.detach_after rmmod hp_patcher
check failslab.target_unload rmmod cr_target
