# Nothing of ours outlives an unload: with the target paused (so that it
# allocates nothing itself), 20 loads and unloads may not grow unreclaimable
# slab or vmalloc by 8 kB per cycle. (Before the decoder tables got their
# own arena, every load leaked about 370 kB of iced-x86 tables.)
. /scripts/lib.sh
mark leak
insmod /modules/cr_target.ko
echo 1 > $CR/pause
cycle() { insmod $HP target_name=cr_target log_burst=1 && rmmod hp_patcher; }
# The kernel's own first-use allocations (kprobe instruction pages, ...).
cycle; cycle
sleep 1
slab0=$(meminfo SUnreclaim); vmalloc0=$(meminfo VmallocUsed)
i=0; ok=0
while [ $i -lt 20 ]; do
	i=$((i + 1))
	cycle && ok=$((ok + 1))
done
sleep 2
slab1=$(meminfo SUnreclaim); vmalloc1=$(meminfo VmallocUsed)
echo "HPINFO leak: over 20 cycles SUnreclaim $slab0 -> $slab1 kB, VmallocUsed $vmalloc0 -> $vmalloc1 kB"
expect_eq leak.cycles "$ok" 20
if [ -e /sys/kernel/debug/kmemleak ]; then
	# The debug kernel: KASAN's quarantine keeps freed slab objects for a
	# while, so the totals say little; kmemleak.sh checks leaks there.
	echo "HPINFO leak: KASAN's quarantine holds freed slab here; kmemleak.sh checks instead"
else
	expect_growth_below leak.slab "$slab0" "$slab1" 20 8
	expect_growth_below leak.vmalloc "$vmalloc0" "$vmalloc1" 20 8
fi
echo 0 > $CR/pause
check leak.target_unload rmmod cr_target
