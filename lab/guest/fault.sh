# Every allocation of a load, attach and unload fails in turn
# (fail_alloc_nth=N): each failure is a clean -ENOMEM or a lost log line,
# never a crash, and leaves nothing loaded, armed or allocated.
. /scripts/lib.sh
mark fault
insmod /modules/cr_target.ko
crc=$(cat $CR/text_crc)
echo 1 > $CR/pause
insmod $HP target_name=cr_target log_burst=1 && rmmod hp_patcher	# warm-up, as in leak
sleep 1
slab0=$(meminfo SUnreclaim); vmalloc0=$(meminfo VmallocUsed)
n=0; enomem=0; survived=0; bad=0; covered=no
while [ $n -lt 300 ]; do
	n=$((n + 1))
	out=$(insmod $HP target_name=cr_target log_burst=1 fail_alloc_nth=$n 2>&1)
	if [ $? -eq 0 ]; then
		rmmod hp_patcher
		# Past the last allocation: every one has been failed once.
		log_since | grep -q "fail_alloc_nth=$n: failing" || { covered=yes; break; }
		survived=$((survived + 1))
	else
		case "$out" in
		*"$ENOMEM_TEXT"*) enomem=$((enomem + 1)) ;;
		*) bad=$((bad + 1)); fail fault.errno.$n "insmod said: $out" ;;
		esac
	fi
	if grep -q '^hp_patcher ' /proc/modules; then bad=$((bad + 1)); fail fault.loaded.$n "still loaded"; rmmod hp_patcher; fi
	if grep -q 'cr_target' /sys/kernel/debug/kprobes/list; then bad=$((bad + 1)); fail fault.probes.$n "probes left"; fi
	[ "$(cat $CR/text_crc)" = "$crc" ] || { bad=$((bad + 1)); fail fault.text.$n "text differs"; }
done
sleep 2
slab1=$(meminfo SUnreclaim); vmalloc1=$(meminfo VmallocUsed)
echo "HPINFO fault: $((n - 1)) allocations failed in turn: $enomem loads refused with ENOMEM, $survived loads lost only a log line"
echo "HPINFO fault: SUnreclaim $slab0 -> $slab1 kB, VmallocUsed $vmalloc0 -> $vmalloc1 kB"
expect_eq fault.every_allocation_failed_once "$covered" yes
if [ $enomem -gt 0 ]; then pass fault.refused_with_enomem; else fail fault.refused_with_enomem "no load failed"; fi
expect_eq fault.all_clean "$bad" 0
expect_log fault.decoder_tables 'hp_patcher: out of memory for the decoder tables'
expect_log fault.planning 'hp_patcher: out of memory while planning'
if [ ! -e /sys/kernel/debug/kmemleak ]; then	# as in leak.sh
	expect_growth_below fault.slab "$slab0" "$slab1" "$n" 8
	expect_growth_below fault.vmalloc "$vmalloc0" "$vmalloc1" "$n" 8
fi
echo 0 > $CR/pause
sleep 1
check fault.attach_after insmod $HP target_name=cr_target log_burst=1
check fault.detach_after rmmod hp_patcher
check fault.target_unload rmmod cr_target
