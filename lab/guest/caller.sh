# The real function sees the target's site as its caller, not our
# trampoline: the kernel's own kmem tracepoints name cr_target's functions
# as call_site for every function where README says so.
. /scripts/lib.sh
mark caller
T=/sys/kernel/tracing
EVENTS="kmalloc kfree kmem_cache_free"
insmod /modules/cr_target.ko
sleep 1
# kmalloc and kmalloc_node through their _track_caller form; the void
# functions by a jump with the original return address in place.
check caller.attach insmod $HP target_name=cr_target functions=$KMALLOC,$KMALLOC_NODE,kfree,kmem_cache_free,kvfree,vfree log_burst=1
echo > $T/trace
for e in $EVENTS; do echo 1 > $T/events/kmem/$e/enable; done
sleep 1
for e in $EVENTS; do echo 0 > $T/events/kmem/$e/enable; done
# Read while we are loaded: after rmmod, %pS can no longer name our code.
grep 'cr_worker' $T/trace > /tmp/caller.trace
check caller.detach rmmod hp_patcher
echo "HPINFO caller: $(wc -l < /tmp/caller.trace) kmem events from cr_worker; $(hp_total) calls intercepted"
for e in $EVENTS; do
	n=$(grep -c " $e: call_site=cr_round+" /tmp/caller.trace)
	if [ "$n" -gt 0 ]; then pass caller.$e.names_target; else fail caller.$e.names_target "no $e event with call_site=cr_round"; fi
done
if grep -q 'call_site=hp_' /tmp/caller.trace; then
	fail caller.never_hp_patcher "$(grep 'call_site=hp_' /tmp/caller.trace | head -n 1)"
else
	pass caller.never_hp_patcher
fi
if [ "$(hp_hits $KMALLOC)" -gt 0 ] && [ "$(hp_hits kfree)" -gt 0 ]; then pass caller.intercepted; else fail caller.intercepted "$(last_summary)"; fi

# What remains (README): a function without a _track_caller form, e.g. the
# kzalloc(64) of cr_round, is called from the trampoline.
insmod $HP target_name=cr_target functions=$KMALLOC_CACHE log_burst=1
echo > $T/trace
echo 1 > $T/events/kmem/kmalloc/enable
sleep 1
echo 0 > $T/events/kmem/kmalloc/enable
echo "HPINFO caller: with $KMALLOC_CACHE intercepted: $(grep 'cr_worker' $T/trace | grep -c 'call_site=hp_trampoline') kmalloc events blame hp_trampoline"
rmmod hp_patcher
echo > $T/trace

# Counting only (sink none, no fault rule, no leak checking): the
# pre-handler sends each call straight to the callee with the target's
# return address, so that same function now sees cr_round as its caller,
# and every call is still counted, exactly (the target paused around the
# attach and the detach). A fault rule on it routes its sites back through
# the trampoline; clearing the rule routes them straight again.
kmalloc_call_sites() {
	echo > $T/trace
	echo 1 > $T/events/kmem/kmalloc/enable
	sleep 1
	echo 0 > $T/events/kmem/kmalloc/enable
	grep 'cr_worker' $T/trace > /tmp/caller.$1
	echo "HPINFO caller: counting only, $1: $(grep -c 'call_site=hp_trampoline' /tmp/caller.$1) of $(wc -l < /tmp/caller.$1) kmalloc events blame hp_trampoline"
}
insmod $HP
echo 1 > $CR/pause
before=$(cr_count $KMALLOC_CACHE)
expect_eq caller.counts_only.attach "$(hpcmd "attach cr_target fn=$KMALLOC_CACHE sink=none" | field state cr_target)" attached
echo 0 > $CR/pause
kmalloc_call_sites straight
expect_eq caller.counts_only.never_hp_patcher "$(grep -c 'call_site=hp_' /tmp/caller.straight)" 0
hpcmd "fail cr_target fn=$KMALLOC_CACHE every=1000000000" > /dev/null || fail caller.counts_only.rule "refused"
kmalloc_call_sites with_rule
if [ "$(grep -c 'call_site=hp_trampoline' /tmp/caller.with_rule)" -gt 0 ]; then pass caller.counts_only.rule_takes_trampoline
else fail caller.counts_only.rule_takes_trampoline "no kmalloc event from the trampoline while a rule selects the site"; fi
hpcmd "fail cr_target clear" > /dev/null
kmalloc_call_sites cleared
expect_eq caller.counts_only.cleared_straight_again "$(grep -c 'call_site=hp_' /tmp/caller.cleared)" 0
expect_eq caller.counts_only.inflight "$(hpcmd stats | field inflight $KMALLOC_CACHE)" 0
# The detach's own reply counts every call, those since the last read too.
echo 1 > $CR/pause
calls=$(hpcmd "detach cr_target" | field calls cr_target)
echo "HPINFO caller: counting only: $calls calls of $KMALLOC_CACHE counted"
expect_eq caller.counts_only.exact "$calls" "$(( $(cr_count $KMALLOC_CACHE) - before ))"
echo 0 > $CR/pause
check caller.counts_only.unload rmmod hp_patcher
echo > $T/trace
check caller.target_unload rmmod cr_target
