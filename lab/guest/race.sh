# The target vanishing mid-attach: rmmod cr_target lands before, during or
# after an attach. Whichever wins, the kernel stays well, the state is one of
# the legal ones, and everything can be unloaded afterwards.
. /scripts/lib.sh
mark race
i=0; clean=0
while [ $i -lt 10 ]; do
	i=$((i + 1))
	insmod /modules/cr_target.ko
	insmod $HP target_name=cr_target log_burst=1 2>/dev/null &
	usleep $((i * 60000))
	rmmod cr_target 2>/dev/null && echo "HPINFO race $i: target unloaded" || echo "HPINFO race $i: target busy, stayed"
	wait
	if unload_all; then clean=$((clean + 1)); else fail race.unload.$i "left loaded: $(cat /proc/modules)"; fi
done
expect_eq race.all_unloaded "$clean" 10
expect_no_probes race.no_probes_left

# Both unloads at once: whichever detaches, it must do so while the target's
# text is still mapped.
i=0; clean=0
while [ $i -lt 6 ]; do
	i=$((i + 1))
	insmod /modules/cr_target.ko
	insmod $HP target_name=cr_target log_burst=1
	usleep $((i * 50000))
	rmmod hp_patcher &
	usleep $((i * 20000))
	rmmod cr_target
	wait
	if unload_all; then clean=$((clean + 1)); else fail race.both.$i "left loaded: $(cat /proc/modules)"; fi
done
expect_eq race.both_unloads "$clean" 6

echo "HPINFO race: $(log_since | grep -c 'is being unloaded: detaching') detaches by notifier, $(log_since | grep -c 'detached from cr_target (hp_patcher unloaded)') by rmmod"
