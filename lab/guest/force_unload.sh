# `rmmod -f` of the target while insmod hp_patcher is between finding it and
# attaching to it (attach_gate holds it there until the unload has begun). The forced unload ignores
# our reference and runs the target's exit; its GOING notifier must wait for
# the attach to finish before the module is freed, and the attach must see
# that the target is going and refuse, without touching freed memory.
. /scripts/lib.sh
mark force_unload
i=0; clean=0
while [ $i -lt 6 ]; do
	i=$((i + 1))
	insmod /modules/cr_target.ko
	insmod $HP target_name=cr_target log_burst=1 attach_gate=1 2>/dev/null &
	n=0
	while ! log_since | grep -q "attach_gate: holding" && [ $n -lt 600 ]; do usleep 200000; n=$((n + 1)); done
	mark force_unload_$i
	# From the other CPU, until it is gone: the first forced unload makes
	# it GOING, and its notifier then waits for the held attach.
	taskset 0x2 sh -c 'n=0; while grep -q "^cr_target " /proc/modules && [ $n -lt 200 ]; do rmmod -f cr_target 2>/dev/null; usleep 20000; n=$((n + 1)); done' &
	n=0
	while ! grep -q "^cr_target .* Unloading" /proc/modules && [ $n -lt 600 ]; do usleep 200000; n=$((n + 1)); done
	usleep $((i * 40000))
	echo 0 > /sys/module/hp_patcher/parameters/attach_gate
	wait
	expect_log force_unload.refused.$i 'hp_patcher: module cr_target began unloading: not attaching'
	if unload_all; then clean=$((clean + 1)); else fail force_unload.unload.$i "left loaded: $(cat /proc/modules)"; fi
done
expect_eq force_unload.all_unloaded "$clean" 6
expect_no_probes force_unload.no_probes_left
# The kernel is still well: a fresh target can be attached to.
insmod /modules/cr_target.ko
check force_unload.attach_after insmod $HP target_name=cr_target log_burst=1
check force_unload.detach_after rmmod hp_patcher
check force_unload.target_unload rmmod cr_target
