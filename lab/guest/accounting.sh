# Exact accounting: with the target paused while we attach and detach,
# every call it counts itself must be one hit of ours, function by function
# and context by context (task, irqs off, spinlock, softirq, hardirq).
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
# cr_target has CR_SITES call sites (lib.sh); one is in .kprobes.text.
expect_eq accounting.probes_while_attached "$probes_attached" $((CR_SITES - 1))
expect_eq accounting.probes_after_detach "$(grep -c 'cr_target' /sys/kernel/debug/kprobes/list)" 0
expect_eq accounting.text_crc_restored "$(cat $CR/text_crc)" "$crc_before"
expect_log accounting.text_identical 'hp_patcher: cr_target text identical to before attach'

# Per symbol, all contexts: the "<symbol> <count>" lines.
total=0
for f in $(awk 'NF == 2 && $1 != "rounds" { print $1 }' /tmp/after); do
	case $f in *@*) continue ;; esac	# not a symbol: checked below
	want=$(( $(awk -v f=$f 'NF == 2 && $1 == f { print $2 }' /tmp/after) - $(awk -v f=$f 'NF == 2 && $1 == f { print $2 }' /tmp/before) ))
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

# Per context: our hits at the sites in that context's functions
# (cr_<context>_*, the rest is task context), as "<context> <symbol> <hits>".
log_since | awk '/hp_patcher: site hits / {
	for (i = 1; i <= NF; i++) if ($i == "hits") { s = $(i + 1); n = $(i + 2); fn = $(i + 4) }
	sub(/\+.*/, "", fn)
	c = "task"
	if (fn ~ /^cr_irqoff_/) c = "irqoff"
	else if (fn ~ /^cr_spinlock_/) c = "spinlock"
	else if (fn ~ /^cr_softirq_/) c = "softirq"
	else if (fn ~ /^cr_hardirq_/) c = "hardirq"
	h[c " " s] += n
} END { for (k in h) print k, h[k] }' > /tmp/site_hits
for c in task irqoff spinlock softirq hardirq; do
	# The target's own calls per symbol in this context while attached.
	awk -v c=$c 'FNR == NR { if ($1 == "call" && $2 == c) b[$3] = $4; next }
		$1 == "call" && $2 == c && $3 !~ /@/ { print $3, $4 - b[$3] }' /tmp/before /tmp/after > /tmp/calls.$c
	made=$(awk '{ s += $2 } END { print s + 0 }' /tmp/calls.$c)
	hits=$(awk -v c=$c '$1 == c { s += $3 } END { print s + 0 }' /tmp/site_hits)
	echo "HPINFO accounting: context $c: $made calls made, $hits intercepted"
	if [ "$made" -gt 0 ]; then pass accounting.ctx.$c.called; else fail accounting.ctx.$c.called "no call from $c"; fi
	diff=$(awk -v c=$c 'FNR == NR { if ($1 == c) h[$2] = $3; next }
		{ if (h[$1] + 0 != $2) printf "%s: %d calls, %d hits; ", $1, $2, h[$1]; delete h[$1] }
		END { for (s in h) if (h[s]) printf "%s: 0 calls, %d hits; ", s, h[s] }' /tmp/site_hits /tmp/calls.$c)
	if [ -z "$diff" ]; then pass accounting.ctx.$c.exact; else fail accounting.ctx.$c.exact "$diff"; fi
	# Each run of the context checked where it really ran.
	runs=$(awk -v c=$c '$1 == "run" && $2 == c { print $3 }' /tmp/after)
	wrong=$(awk -v c=$c '$1 == "run" && $2 == c { print $4 }' /tmp/after)
	if [ "${runs:-0}" -gt 0 ] && [ "$wrong" = 0 ]; then pass accounting.ctx.$c.really_$c
	else fail accounting.ctx.$c.really_$c "$runs runs, $wrong of them in another context"; fi
done

# The kfree in .kprobes.text is refused by kprobes and reported as such.
expect_log accounting.refused_site 'hp_patcher: site cr_unprobeable_free\+0x[0-9a-f]+/0x[0-9a-f]+ \[cr_target\] refused by kprobes \(-22\): not intercepted'
expect_log accounting.redirected "hp_patcher: attached to cr_target: $((CR_SITES - 1)) of $CR_SITES sites redirected"
if [ "$(cr_count 'kfree@kprobes.text')" -gt 0 ]; then pass accounting.unprobeable_called; else fail accounting.unprobeable_called "never called"; fi

# What a call line says. Names are this kernel's; the slab buckets argument
# exists with the 6.11+ names only (Debian's 6.12 has CONFIG_SLAB_BUCKETS).
# Pointers are hashed as %p does: 16 hex digits (8 on i386), NULL all zeros.
case $(sym kmalloc_node) in *_noprof) buckets='b=0000000000000000, ' ;; *) buckets= ;; esac
expect_log accounting.line.kmalloc "hp_patcher: $(sym kmalloc)\\(size=[0-9]+, flags=GFP_KERNEL\\) = $PTR from cr_round\\+0x[0-9a-f]+/0x[0-9a-f]+ \\[cr_target\\] cpu=[0-9]+ pid=[0-9]+ comm=cr_worker/[0-9]+"
expect_log accounting.line.kzalloc "$(sym kzalloc)\\(s=$PTR, gfpflags=GFP_KERNEL\\|__GFP_ZERO, size=64\\) = $PTR "
expect_log accounting.line.node "$(sym kmalloc_node)\\(size=[0-9]+, ${buckets}flags=GFP_KERNEL, node=-1\\)"
expect_log accounting.line.kfree "kfree\\(object=$PTR\\) from cr_"
if [ $CR_TAIL_CALLS = 1 ]; then
	expect_log accounting.line.tail_kfree "kfree\\(object=$PTR\\) from cr_release\\+"
	expect_log accounting.sites 'hp_patcher: cr_target: [0-9]+ sites:.* kfree=[0-9]+ \(1 tail\)'
else
	expect_log accounting.sites 'hp_patcher: cr_target: [0-9]+ sites:.* kfree=[0-9]+ '
	echo "HPINFO accounting: no tail call in this build of cr_target"
fi
expect_log accounting.line.vmalloc "$(sym vmalloc)\\(size=8192\\) = $PTR "
expect_log accounting.cpu0 ' cpu=0 pid='
expect_log accounting.cpu1 ' cpu=1 pid='
expect_log accounting.decoded 'hp_patcher: cr_target: decoded [0-9]+ functions, [0-9]+ of [0-9]+ text bytes'
expect_log accounting.site_hits 'hp_patcher: site hits kfree [0-9]+ at cr_release\+0x[0-9a-f]+/0x[0-9a-f]+ \[cr_target\]'

# Call lines from each atomic context. Under the default rate limit the
# task context's calls crowd them out of the log, so attach once per
# context to the one function only that context calls.
echo 0 > $CR/pause
for pair in irqoff:kmalloc_track_caller spinlock:kmalloc_large softirq:kmem_cache_alloc_node hardirq:kzalloc_node; do
	c=${pair%%:*}; f=$(sym ${pair#*:})
	check accounting.line.$c.attach insmod $HP target_name=cr_target functions=$f log_burst=5
	usleep 500000
	check accounting.line.$c.detach rmmod hp_patcher
	line="hp_patcher: $f\\(.*flags=GFP_ATOMIC[|_A-Z]*[,)].* = $PTR from cr_${c}_[a-z_]+\\+0x[0-9a-f]+/0x[0-9a-f]+ \\[cr_target\\] cpu=[0-9]+ pid=[0-9]+ comm="
	case $c in irqoff|spinlock) line="${line}cr_worker/[0-9]+" ;; esac
	expect_log accounting.line.$c "$line"
	echo "HPINFO accounting: $c calls ran in: $(log_since | grep "hp_patcher: $f(" | sed 's/.* comm=//' | sort | uniq -c | tr -s ' \n' ' ')"
done
check accounting.target_unload rmmod cr_target
log_since | grep 'hp_patcher:' | grep -v ' from ' | sed 's/^/HPLOG /'
