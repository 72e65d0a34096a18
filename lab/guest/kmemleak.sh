# After everything before it in the boot (cycles, races, fault injection): kmemleak
# (debug kernel only) may report no object allocated by hp_patcher.
. /scripts/lib.sh
K=/sys/kernel/debug/kmemleak
if [ ! -e $K ]; then echo "HPINFO kmemleak: not in this kernel (the debug kernel has it)"; exit 0; fi
# An object counts as leaked after two scans that found no reference to it.
echo scan > $K; sleep 6; echo scan > $K
cat $K > /tmp/kmemleak
echo "HPINFO kmemleak: $(grep -c '^unreferenced object' /tmp/kmemleak) unreferenced objects in all"
if grep -q 'hp_patcher' /tmp/kmemleak; then
	fail kmemleak.none_from_hp_patcher "$(grep -B12 hp_patcher /tmp/kmemleak | head -n 30 | tr '\n' '|')"
else
	pass kmemleak.none_from_hp_patcher
fi
