# The leak checker (`attach ... leaks`, `leaks <module>`): cr_target leaks
# exactly 3 objects at one site, and the report shows exactly that site,
# count and bytes, and nothing else; objects it hands to its hard-IRQ timer
# to free leave no false leak, nor do those given up with kfree_rcu; frees
# of objects allocated before the attach are unknown frees at their site;
# and a target followed from its load gets a true leak report in the kernel
# log at its unload.
. /scripts/lib.sh
mark leaks
insmod /modules/cr_target.ko
insmod $HP || fail leaks.load "insmod hp_patcher failed"
kmalloc=$(sym kmalloc)
size=200
echo $size > /sys/module/cr_target/parameters/leak_size

echo "hold 5" > $CR/leak	# before the attach: unseen
# Every memory function cr_target calls but kstrdup: the string it
# allocates in its rounds is freed at a site kprobes refuses
# (cr_unprobeable_free), so it would stay outstanding.
all=$(cr_functions | grep -vx "$(sym kstrdup)" | tr '\n' ',' | sed 's/,$//')
expect_eq leaks.attach "$(hpcmd "attach cr_target fn=$all sink=none leaks=4096" | field state cr_target)" attached
echo "leak 3" > $CR/leak
echo "handoff 16" > $CR/leak
# Given up with kfree_rcu() and kvfree_rcu_mightsleep(): freed by the
# kernel a grace period later, but not leaks of the module's.
echo "rcu 4" > $CR/leak
echo "rcu1 2" > $CR/leak
echo release > $CR/leak
# Quiesce: the rounds stop with all they allocated freed, and the hard-IRQ
# timer has freed what was handed to it.
sleep 1
echo 1 > $CR/pause

report=$(hpcmd 'leaks cr_target')
echo "$report" | sed 's/^/HPINFO leaks: /'
header=$(echo "$report" | grep '^leaks ')
expect_eq leaks.header "$(echo "$header" | sed 's/ overflowed.*//')" "leaks module=cr_target mode=since_attach outstanding=3 bytes=$((3 * size)) slots=4096"
case "$header" in *" overflowed=0 "*) pass leaks.no_overflow ;; *) fail leaks.no_overflow "$header" ;; esac
expect_eq leaks.one_site "$(echo "$report" | grep -c '^leak ')" 1
case "$(echo "$report" | grep '^leak ')" in
"leak module=cr_target caller=cr_leak_objects+0x"*" callee=$kmalloc count=3 bytes=$((3 * size)) "*) pass leaks.site ;;
*) fail leaks.site "$(echo "$report" | grep '^leak ')" ;;
esac
# Grouped by stack: the 3 share one, which starts at the site's own
# function and goes up through the debugfs write that asked for them.
stacks=$(echo "$report" | grep '^leak-stack ')
expect_eq leaks.one_stack "$(echo "$stacks" | grep -c "caller=cr_leak_objects+0x.* count=3 bytes=$((3 * size)) ")" 1
id=$(echo "$stacks" | sed -n 's/.* stack=\([0-9]*\) .*/\1/p' | head -n 1)
frames=$(echo "$report" | grep "^stack module=cr_target id=$id " | sed 's/.* at=//' | tr '\n' ' ')
echo "HPINFO leaks: stack $id: $frames"
case "$frames" in
"cr_leak_objects+0x"*" cr_leak_write+0x"*) pass leaks.stack_frames ;;
*) fail leaks.stack_frames "$frames" ;;
esac
case "$header" in *" stacks_overflowed=0 "*) pass leaks.stacks_no_overflow ;; *) fail leaks.stacks_no_overflow "$header" ;; esac
# hpctl's table of the same (README's leak report); hpctl is x86_64 only.
if [ "$(uname -m)" = x86_64 ]; then
	/modules/hpctl leaks cr_target > /tmp/leaks_table.txt 2>&1
	head -n 14 /tmp/leaks_table.txt | sed 's/^/HPSHOW /'
	grep -A 1 "^    3 objects, $((3 * size)) bytes, allocated from:" /tmp/leaks_table.txt | grep -q '^      cr_leak_objects+0x' &&
		pass leaks.hpctl_stacks || fail leaks.hpctl_stacks "$(head -n 8 /tmp/leaks_table.txt)"
fi
# Who freed what, per allocating site: without kernel_frees, the module
# only; the objects handed to the hard-IRQ timer are freed by the module's
# own code there, so they count as the module's.
expect_eq leaks.freed_by_module "$(echo "$report" | grep '^freed .*caller=cr_handoff_objects+' | sed 's/.* by_module=\([0-9]*\) by_kernel=\([0-9]*\)$/\1 \2/')" "16 0"
# No false leak from the objects freed in hard IRQ, none from the rounds.
echo "$report" | grep -q '^leak.* caller=cr_rcu_free_objects' && fail leaks.kfree_rcu "$(echo "$report" | grep cr_rcu_free)" || pass leaks.kfree_rcu
expect_eq leaks.kfree_rcu.calls "$(cr_count $(sym kfree_rcu))" 6
expect_eq leaks.kfree_rcu.by_module "$(echo "$report" | grep '^freed .*caller=cr_rcu_free_objects+' | sed 's/.* by_module=\([0-9]*\) by_kernel=\([0-9]*\)$/\1 \2/')" "6 0"
echo "$report" | grep -q '^leak.* caller=cr_handoff_objects' && fail leaks.hardirq_frees "$(echo "$report" | grep cr_handoff)" || pass leaks.hardirq_frees
# Objects allocated before the attach, freed after: unknown frees at their
# site (the rounds in flight at the attach may add a few at theirs).
expect_eq leaks.unknown_frees "$(echo "$report" | grep '^unknown-free .*caller=cr_release_held+' | sed 's/caller=[^ ]*/caller=cr_release_held/')" "unknown-free module=cr_target caller=cr_release_held callee=kfree count=5"
expect_refused leaks.unknown_target "Invalid argument" "leaks cr_twin"
check leaks.detach hpcmd 'detach cr_target'

# Without leaks, no report.
hpcmd "attach cr_target fn=$kmalloc sink=none" >/dev/null
expect_refused leaks.not_asked "Invalid argument" "leaks cr_target"
expect_log leaks.not_asked.why "cr_target was attached without leaks"
hpcmd 'detach cr_target' >/dev/null

# Objects the module hands to the kernel, which frees them (kfree_const):
# outstanding when only the module's sites are watched; with kernel_frees,
# freed by the kernel, at their allocating site, and what the watching
# cost is reported. The rounds are paused: only these calls run.
expect_eq leaks.handed.attach "$(hpcmd "attach cr_target fn=$kmalloc,kfree sink=none leaks=1024" | field state cr_target)" attached
echo "kernel 4" > $CR/leak
report=$(hpcmd 'leaks cr_target')
echo "$report" | grep -E '^(leaks|leak) ' | sed 's/^/HPINFO leaks: handed: /'
# Each is outstanding, or its address came back from kmalloc while still
# recorded (the unseen free shows as `replaced`): 4 in all.
outstanding=$(echo "$report" | grep '^leak .*caller=cr_kernel_frees_objects+' | sed 's/.* count=\([0-9]*\) .*/\1/')
replaced=$(echo "$report" | grep '^leaks ' | sed 's/.* replaced=\([0-9]*\) .*/\1/')
expect_eq leaks.handed.outstanding "$((${outstanding:-0} + ${replaced:-0})) $([ "${outstanding:-0}" -ge 1 ] && echo some)" "4 some"
hpcmd 'detach cr_target' >/dev/null
expect_eq leaks.kernel_frees.attach "$(hpcmd "attach cr_target fn=$kmalloc,kfree sink=none leaks=1024 kernel_frees" | field state cr_target)" attached
echo "kernel 4" > $CR/leak
report=$(hpcmd 'leaks cr_target')
echo "$report" | grep -E '^(leaks|freed|kernel-frees) ' | sed 's/^/HPINFO leaks: /'
expect_eq leaks.kernel_frees.site "$(echo "$report" | grep -cE "^freed module=cr_target caller=cr_kernel_frees_objects\+0x[0-9a-f]+/0x[0-9a-f]+ callee=$kmalloc by_module=0 by_kernel=4\$")" 1
expect_eq leaks.kernel_frees.not_outstanding "$(echo "$report" | grep -c '^leak ')" 0
case "$(echo "$report" | grep '^kernel-frees ')" in
"kernel-frees module=cr_target functions=5 calls="[1-9]*) pass leaks.kernel_frees.cost ;;
*) fail leaks.kernel_frees.cost "$(echo "$report" | grep '^kernel-frees ')" ;;
esac
check leaks.kernel_frees.detach hpcmd 'detach cr_target'
# Nothing of ours is left on the kernel's free functions.
expect_eq leaks.kernel_frees.unprobed "$(grep -cE ' (kfree|kvfree|kfree_sensitive|vfree|kmem_cache_free)\+0x0' /sys/kernel/debug/kprobes/list)" 0
expect_refused leaks.kernel_frees.needs_leaks "Invalid argument" "attach cr_target kernel_frees"
# A pair's allocator must be called through, to see its result: with no
# SPEC (and on i386 with one) it is jumped into, and refused.
expect_refused leaks.pair_raw_alloc "Invalid argument" "attach cr_target fn=cr_buf_get+alloc leaks"
expect_log leaks.pair_raw_alloc.why "'cr_buf_get' refused: \+alloc needs its result"

rmmod cr_target

# Followed from its load to its unload: a true leak report, in the log.
expect_eq leaks.follow "$(hpcmd "attach cr_target fn=$kmalloc,kfree sink=none leaks follow" | field state cr_target)" awaited
insmod /modules/cr_target.ko start_paused=1 leak_size=$size
echo "leak 2" > $CR/leak
rmmod cr_target
expect_log leaks.at_unload "hp_patcher: leaks module=cr_target mode=since_load outstanding=2 bytes=$((2 * size)) "
expect_log leaks.at_unload.site "hp_patcher: leak module=cr_target caller=cr_leak_objects\+0x[0-9a-f]+/0x[0-9a-f]+ callee=$kmalloc count=2 bytes=$((2 * size)) "
check leaks.detach_follow hpcmd 'detach cr_target'
check leaks.unload rmmod hp_patcher
expect_no_probes leaks.no_probes
