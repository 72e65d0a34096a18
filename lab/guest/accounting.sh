# Exact accounting: with the target paused while we attach and detach,
# every call it counts itself must be one hit of ours, function by function.
# Also: the text is patched while attached and byte-identical after.
. /scripts/lib.sh
mark accounting
insmod /modules/cr_target.ko
sleep 1
crc_before=$(cat $CR/text_crc)
echo 1 > $CR/pause
cp $CR/counters /tmp/before
check accounting.attach insmod $HP target_name=cr_target
crc_attached=$(cat $CR/text_crc)
if [ "$crc_attached" != "$crc_before" ]; then pass accounting.text_patched_while_attached
else fail accounting.text_patched_while_attached "text CRC unchanged while attached"; fi
echo 0 > $CR/pause
sleep 4
echo 1 > $CR/pause
cp $CR/counters /tmp/after
probes_attached=$(grep -c 'cr_target' /sys/kernel/debug/kprobes/list)
check accounting.detach rmmod hp_patcher
expect_eq accounting.probes_while_attached "$probes_attached" 16
expect_eq accounting.probes_after_detach "$(grep -c 'cr_target' /sys/kernel/debug/kprobes/list)" 0
expect_eq accounting.text_crc_restored "$(cat $CR/text_crc)" "$crc_before"
expect_log accounting.text_identical 'hp_patcher: cr_target text identical to before attach'

total=0
for f in $(awk '$1 != "rounds" { print $1 }' /tmp/after); do
	case $f in *@*) continue ;; esac	# not a symbol: checked below
	want=$(( $(awk -v f=$f '$1 == f { print $2 }' /tmp/after) - $(awk -v f=$f '$1 == f { print $2 }' /tmp/before) ))
	total=$((total + want))
	expect_eq "accounting.hits.$f" "$(hp_hits $f)" "$want"
done
echo "HPINFO accounting: $total calls made while attached"
if [ "$total" -gt 0 ]; then pass accounting.target_made_calls; else fail accounting.target_made_calls "no call"; fi
expect_eq accounting.total "$(hp_total)" "$total"
logged=$(hp_summary logged); suppressed=$(hp_summary suppressed)
expect_eq accounting.logged_plus_suppressed "$((logged + suppressed))" "$total"
expect_eq accounting.missed_by_kprobes "$(hp_summary missed)" 0
expect_eq accounting.log_lines "$(log_since | grep -c 'hp_patcher: .*) .*from .* cpu=')" "$logged"

# The kfree in .kprobes.text is refused by kprobes and reported as such.
expect_log accounting.refused_site 'hp_patcher: site cr_unprobeable_free\+0x[0-9a-f]+/0x[0-9a-f]+ \[cr_target\] refused by kprobes \(-22\): not intercepted'
expect_log accounting.redirected 'hp_patcher: attached to cr_target: 16 of 17 sites redirected'
if [ "$(cr_count 'kfree@kprobes.text')" -gt 0 ]; then pass accounting.unprobeable_called; else fail accounting.unprobeable_called "never called"; fi

# What a call line says.
expect_log accounting.line.kmalloc 'hp_patcher: __kmalloc_noprof\(size=[0-9]+, flags=GFP_KERNEL\) = [0-9a-f]{16} from cr_round\+0x[0-9a-f]+/0x[0-9a-f]+ \[cr_target\] cpu=[0-9]+ pid=[0-9]+ comm=cr_worker/[0-9]+'
expect_log accounting.line.kzalloc '__kmalloc_cache_noprof\(s=[0-9a-f]{16}, flags=GFP_KERNEL\|__GFP_ZERO, size=64\) = [0-9a-f]{16} '
expect_log accounting.line.node '__kmalloc_node_noprof\(size=[0-9]+, b=0000000000000000, flags=GFP_KERNEL, node=-1\)'
expect_log accounting.line.kfree 'kfree\(objp=[0-9a-f]{16}\) from cr_'
expect_log accounting.line.tail_kfree 'kfree\(objp=[0-9a-f]{16}\) from cr_release\+'
expect_log accounting.line.vmalloc 'vmalloc_noprof\(size=8192\) = [0-9a-f]{16} '
expect_log accounting.cpu0 ' cpu=0 pid='
expect_log accounting.cpu1 ' cpu=1 pid='
expect_log accounting.sites 'hp_patcher: cr_target: [0-9]+ sites:.* kfree=[0-9]+ \(1 tail\)'
expect_log accounting.decoded 'hp_patcher: cr_target: decoded [0-9]+ functions, [0-9]+ of [0-9]+ text bytes'
expect_log accounting.site_hits 'hp_patcher: site hits kfree [0-9]+ at cr_release\+0x[0-9a-f]+/0x[0-9a-f]+ \[cr_target\]'
echo 0 > $CR/pause
check accounting.target_unload rmmod cr_target
log_since | grep 'hp_patcher:' | grep -v ' from ' | sed 's/^/HPLOG /'
