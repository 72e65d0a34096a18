# Issue 7: ext4's live callee list (`callees ext4` on /dev/hp_patcher)
# agrees with the host's ground truth from ext4.ko's relocations (packed by
# xtask as /modules/ext4.callees, see xtask/src/callees_truth.rs): every
# callee, and the call and tail-jump sites of each, compared by address
# after what the kernel rewrites at load (callees_lib.sh says how).
. /scripts/lib.sh
. /scripts/callees_lib.sh
mark callees_ext4
for m in $(cat /modules/ext4.order); do
	grep -q "^$(echo $m | tr - _) " /proc/modules || insmod /modules/$m.ko || fail callees_ext4.load_$m "insmod $m"
done
grep -q '^hp_patcher ' /proc/modules || insmod $HP

hpcmd "callees ext4" > /tmp/callees_ext4.live 2> /tmp/callees_ext4.err
rc=$?
live=$(grep -c '^callee ' /tmp/callees_ext4.live)
echo "HPINFO callees_ext4: $live live callees, reply $(wc -c < /tmp/callees_ext4.live) bytes"
echo "HPINFO callees_ext4: $(grep -c 'state=interceptable' /tmp/callees_ext4.live) interceptable;" \
	$(grep -o 'reason=[a-z_]*' /tmp/callees_ext4.live | sort | uniq -c | awk '{ print $2 "=" $1 }')
expect_eq callees_ext4.reply "$rc $(cat /tmp/callees_ext4.err)" "0 "
expect_eq callees_ext4.records "$(grep -vc '^callee name=[^ ]* sites=[0-9]* tails=[0-9]* static_call_sites=[0-9]* state=' /tmp/callees_ext4.live)" 0

# What decides the kernel's rewrites here: the preempt mode (static calls)
# and the CPU (return thunks, retpolines, alternatives).
mode=$(sed -n 's/.*(\([a-z]*\)).*/\1/p' /sys/kernel/debug/sched/preempt 2>/dev/null)
echo "HPINFO callees_ext4: preempt mode ${mode:-unknown}; $(grep -m1 '^bugs' /proc/cpuinfo | tr -s '\t ' ' ')"
for v in spectre_v2 retbleed spec_rstack_overflow indirect_target_selection; do
	[ -r /sys/devices/system/cpu/vulnerabilities/$v ] && echo "HPINFO callees_ext4: $v: $(cat /sys/devices/system/cpu/vulnerabilities/$v)"
done

# Addresses: root sees them unless kptr_restrict or lockdown hides them.
kfree=$(awk '$3 == "kfree" { print $1; exit }' /proc/kallsyms)
case "$kfree" in
0000000000000000 | "") fail callees_ext4.kallsyms "/proc/kallsyms shows no addresses (kfree at '$kfree')" ;;
*) pass callees_ext4.kallsyms ;;
esac
callees_compare /modules/ext4.callees /tmp/callees_ext4.live "$mode" ext4 > /tmp/callees_ext4.cmp
sed -n 's/^HPINFO callees: /HPINFO callees_ext4: /p' /tmp/callees_ext4.cmp
# Each difference with both sides' lines (the first 40).
grep -E '^(MISSING|EXTRA|UNRESOLVED)' /tmp/callees_ext4.cmp | head -n 40 | sed 's/ | live: /\nlive: /' | sed 's/^/HPINFO callees_ext4: /'
missing=$(grep -cE '^(MISSING|UNRESOLVED truth)' /tmp/callees_ext4.cmp)
extra=$(grep -cE '^(EXTRA|UNRESOLVED live)' /tmp/callees_ext4.cmp)
truth=$(grep -vc '^#' /modules/ext4.callees)
[ "$truth" -gt 400 ] && pass callees_ext4.truth_loaded || fail callees_ext4.truth_loaded "only $truth truth lines"
[ "$missing" -eq 0 ] && pass callees_ext4.truth_in_live || fail callees_ext4.truth_in_live "$missing truth callees missing or different live (HPINFO lines above)"
[ "$extra" -eq 0 ] && pass callees_ext4.live_in_truth || fail callees_ext4.live_in_truth "$extra live callees not in the truth (HPINFO lines above)"

# hpctl callees ext4: the same callees with the same counts, joined with
# BTF's verdicts.
/modules/hpctl callees ext4 > /tmp/callees_ext4.table 2>&1
expect_eq callees_ext4.hpctl_exit "$?" 0
tail -n 1 /tmp/callees_ext4.table | sed 's/^/HPINFO callees_ext4: hpctl: /'
/modules/hpctl callees ext4 --json |
	sed -n 's/.*"name":"\([^"]*\)","sites":\([0-9]*\),"tails":\([0-9]*\).*/\1 \2 \3/p' | sort > /tmp/callees_ext4.hpctl
sed -n 's/^callee name=\([^ /]*\)[^ ]* sites=\([0-9]*\) tails=\([0-9]*\).*/\1 \2 \3/p' /tmp/callees_ext4.live | sort > /tmp/callees_ext4.verb
expect_eq callees_ext4.hpctl_same "$(diff /tmp/callees_ext4.verb /tmp/callees_ext4.hpctl | head -n 6)" ""

check callees_ext4.unload rmmod hp_patcher
expect_no_probes callees_ext4.no_probes
