# The long stress run (cargo xtask stress; not part of the test suite): 200
# attach/detach cycles while the target calls on both CPUs. Every other
# cycle is an exact one (target paused while we attach and detach, so its
# own counters must equal our hits: any difference is a lost call); the
# others race `rmmod cr_target` against the attach.
. /scripts/lib.sh
mark stress
CYCLES=${STRESS_CYCLES:-200}
# Calls the target made that we can intercept (kprobes refuses .kprobes.text).
made() { awk 'NF == 2 && $1 != "rounds" && $1 !~ /@/ { s += $2 } END { print s + 0 }' $CR/counters; }
# Numbers from this cycle's detach summary (marks make the log per cycle).
summary_total() { n=$(hp_total); echo ${n:-0}; }
summary_missed() { n=$(hp_summary missed); echo ${n:-0}; }
i=0; intercepted=0; lost=0; exact=0; raced=0; unclean=0; detached=0; identical=0
while [ $i -lt $CYCLES ]; do
	i=$((i + 1))
	mark stress_$i
	grep -q '^cr_target ' /proc/modules || insmod /modules/cr_target.ko
	if [ $((i % 2)) = 0 ]; then
		echo 1 > $CR/pause
		before=$(made)
		if insmod $HP target_name=cr_target log_burst=1; then
			echo 0 > $CR/pause
			usleep $(( (i * 7919) % 200000 + 20000 ))
			echo 1 > $CR/pause
			rmmod hp_patcher
			calls=$(( $(made) - before ))
			hits=$(summary_total)
			missed=$(summary_missed)
			intercepted=$((intercepted + hits))
			diff=$((calls - hits)); [ $diff -lt 0 ] && diff=$((-diff))
			lost=$((lost + diff + missed))
			exact=$((exact + 1))
		else
			unclean=$((unclean + 1)); echo "HPINFO stress $i: attach failed"
		fi
		echo 0 > $CR/pause
	else
		insmod $HP target_name=cr_target log_burst=1 2>/dev/null &
		usleep $(( (i * 104729) % 300000 ))
		rmmod cr_target 2>/dev/null
		wait
		grep -q '^hp_patcher ' /proc/modules && rmmod hp_patcher
		# By the notifier or by rmmod: one summary if it attached at all.
		intercepted=$((intercepted + $(summary_total)))
		raced=$((raced + 1))
	fi
	grep -q '^hp_patcher ' /proc/modules && { unclean=$((unclean + 1)); rmmod hp_patcher; }
	detached=$((detached + $(log_since | grep -c 'hp_patcher: detached from')))
	identical=$((identical + $(log_since | grep -c 'text identical to before attach')))
done
unload_all || unclean=$((unclean + 1))
echo "HPINFO stress: $CYCLES cycles ($exact exact, $raced racing rmmod of the target): $intercepted calls intercepted, $lost lost"
expect_eq stress.calls_lost "$lost" 0
expect_eq stress.all_clean "$unclean" 0
expect_eq stress.text_identical "$identical" "$detached"
if [ $exact -ge $((CYCLES / 2)) ]; then pass stress.exact_cycles; else fail stress.exact_cycles "only $exact"; fi
expect_no_probes stress.no_probes_left
