# Fault rules (`fail <module> <rule>`): the calls a rule selects return
# NULL instead of running, in each context cr_target calls from (a thread,
# TIMER_SOFTIRQ, a hard-IRQ hrtimer), exactly `times` of them; cr_target's
# own counters see exactly those NULLs and no other; every failure is one
# hp_patcher:hp_fault event and one count on its site; `clear` stops them;
# a rule the module cannot honour is refused with its reason; and after
# detach the target's text is what it was.
. /scripts/lib.sh
mark inject
insmod /modules/cr_target.ko
insmod $HP || fail inject.load "insmod hp_patcher failed"
crc=$(cat $CR/text_crc)
TR=/sys/kernel/tracing
echo > $TR/trace
echo 1 > $TR/events/hp_patcher/hp_fault/enable

# Filter bits from the module's own table of this kernel's gfp flags:
# GFP_KERNEL has __GFP_DIRECT_RECLAIM and not __GFP_HIGH, GFP_ATOMIC the
# other way round.
gfp_bit() { hpcmd info | awk -v n="name=$1" '$1 == "gfp" && $3 == n { sub("mask=", "", $2); print $2 }'; }
reclaim=$(gfp_bit __GFP_DIRECT_RECLAIM)
high=$(gfp_bit __GFP_HIGH)
kstrdup=$(sym kstrdup); kmemdup=$(sym kmemdup); kzalloc_node=$(sym kzalloc_node)

expect_eq inject.attach "$(hpcmd "attach cr_target fn=$kstrdup,$kmemdup,$kzalloc_node,kfree sink=none" | field state cr_target)" attached

# Refusals: each says why and adds nothing.
expect_refused inject.refuse_free "Invalid argument" "fail cr_target fn=kfree"
expect_log inject.refuse_free.why "cannot fail kfree: it frees memory"
expect_refused inject.refuse_void "Invalid argument" "fail cr_target fn=cr_gate_wait"
expect_log inject.refuse_void.why "cannot fail cr_gate_wait: its prototype is unknown"
expect_refused inject.refuse_not_called "Invalid argument" "fail cr_target fn=$(sym vmalloc)"
expect_log inject.refuse_not_called.why "has no intercepted call to it"
expect_refused inject.refuse_never "Invalid argument" "fail cr_target fn=$kstrdup every=0"
expect_refused inject.refuse_err_ptr "Invalid argument" "fail cr_target fn=$kstrdup err_ptr"
expect_refused inject.refuse_no_target "Invalid argument" "fail cr_twin fn=$kstrdup"
expect_eq inject.refusals_add_nothing "$(hpcmd 'faults cr_target')" ""

# One rule per context, told apart by the gfp flags each context passes.
hpcmd "fail cr_target fn=$kstrdup every=2 times=3 gfp=$reclaim" >/dev/null || fail inject.rule_task "refused"
hpcmd "fail cr_target fn=$kmemdup every=3 times=5 gfp=$high" >/dev/null || fail inject.rule_softirq "refused"
hpcmd "fail cr_target fn=$kzalloc_node after=10 times=4" >/dev/null || fail inject.rule_hardirq "refused"

rule_field() { hpcmd 'faults cr_target' | awk -v r="rule=$1" -v k="$2=" '$1 == "fault" && $3 == r { for (i = 4; i <= NF; i++) if (index($i, k) == 1) print substr($i, length(k) + 1) }'; }
failed_total() { hpcmd 'faults cr_target' | awk '$1 == "fault" { for (i = 2; i <= NF; i++) if (index($i, "failed=") == 1) n += substr($i, 8) } END { print n + 0 }'; }
n=0
while [ "$(failed_total)" != 12 ] && [ $n -lt 300 ]; do sleep 0.2; n=$((n + 1)); done
expect_eq inject.rule_task.failed "$(rule_field 0 failed)" 3
expect_eq inject.rule_softirq.failed "$(rule_field 1 failed)" 5
expect_eq inject.rule_hardirq.failed "$(rule_field 2 failed)" 4
expect_eq inject.value_null "$(rule_field 0 value)" 0
m=$(rule_field 1 matched)
[ "$m" -ge 15 ] && pass inject.every_counts_matches || fail inject.every_counts_matches "matched=$m, want >= 15 for 5 failures of every=3"

# The target's view: exactly these NULLs, each in its own context.
nulls() { awk '$1 == "null" { print $2, $3, $4 }' $CR/counters | sort | tr '\n' ';'; }
want=$(printf '%s\n' "hardirq $kzalloc_node 4" "softirq $kmemdup 5" "task $kstrdup 3" | sort | tr '\n' ';')
expect_eq inject.target_sees_nulls "$(nulls)" "$want"

# One hp_fault event per failure, and the sites' counts add up.
expect_eq inject.events "$(grep -c 'hp_fault:' $TR/trace)" 12
expect_eq inject.event_names "$(grep 'hp_fault:' $TR/trace | grep -c "cr_target .* $kmemdup rule=1 returned=0")" 5
site_sum=$(hpcmd 'faults cr_target' | awk '$1 == "fault-site" { for (i = 2; i <= NF; i++) if (index($i, "failed=") == 1) n += substr($i, 8) } END { print n + 0 }')
expect_eq inject.site_counts "$site_sum" 12

# At most 8 rules; clear removes them, and calls run again.
for i in 4 5 6 7 8; do hpcmd "fail cr_target fn=$kstrdup times=1 pid=99999$i" >/dev/null; done
expect_refused inject.ninth_rule "No space left on device" "fail cr_target fn=$kstrdup"
expect_eq inject.clear "$(hpcmd 'fail cr_target clear')" "cleared module=cr_target rules=8"
expect_eq inject.cleared "$(hpcmd 'faults cr_target' | grep -c '^fault ')" 0
hpcmd "fail cr_target fn=$kstrdup" >/dev/null	# every call, then cleared at once
hpcmd 'fail cr_target clear' >/dev/null
before=$(nulls)
rounds=$(cr_count rounds)
n=0
while [ "$(cr_count rounds)" -lt $((rounds + 20)) ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
after=$(nulls)
expect_eq inject.no_failure_after_clear "$after" "$before"

check inject.detach hpcmd 'detach cr_target'
expect_log inject.text_identical "cr_target text identical to before attach"
echo 0 > $TR/events/hp_patcher/hp_fault/enable
check inject.unload rmmod hp_patcher
expect_no_probes inject.no_probes
expect_eq inject.target_crc "$(cat $CR/text_crc)" "$crc"
rmmod cr_target
