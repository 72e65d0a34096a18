# The callees verb through /dev/hp_patcher: a function cr_target calls in
# cr_callee, built with ftrace like any driver, is interceptable, not
# refused as having no fentry site (on i386 ftrace's NOP differs from
# x86_64's, and every callee outside the catalogue looked untraceable).
. /scripts/lib.sh
mark callee_verb
grep -q '^cr_target ' /proc/modules || insmod /modules/cr_target.ko
grep -q '^hp_patcher ' /proc/modules || insmod $HP
hpcmd 'callees cr_target' > /tmp/callees
for f in cr_mixed cr_match cr_gate_wait cr_wide; do
	expect_eq callee_verb.$f "$(awk -v n="name=$f" '$2 == n { for (i = 3; i <= NF; i++) if ($i ~ /^state=/) print $i }' /tmp/callees)" state=interceptable
done
echo "HPINFO callee_verb: $(grep -c 'state=interceptable' /tmp/callees) interceptable, $(grep -c 'reason=no_ftrace' /tmp/callees) refused as no_ftrace"
# Attached with a SPEC (cr_wide's u64 takes two stack words on i386) and
# without (variadic cr_sum): every result stays right, every call counted.
typed() { awk -v f="$1" -v c="$2" '$1 == f { print $c }' $CR/typed; }
echo 1 > $CR/pause
expect_eq callee_verb.attach "$(hpcmd "attach cr_target fn=cr_wide:xxx,cr_sum,cr_mixed:xxxxxx sink=printk burst=30" | field state cr_target)" attached
w0=$(typed cr_wide 2); s0=$(typed cr_sum 2)
echo 0 > $CR/pause
sleep 1
echo 1 > $CR/pause
hpcmd stats > /tmp/stats
expect_eq callee_verb.wide.hits "$(field hits cr_wide < /tmp/stats)" $(($(typed cr_wide 2) - w0))
expect_eq callee_verb.sum.hits "$(field hits cr_sum < /tmp/stats)" $(($(typed cr_sum 2) - s0))
expect_eq callee_verb.wide.right "$(typed cr_wide 3)" 0
expect_eq callee_verb.sum.right "$(typed cr_sum 3)" 0
expect_log callee_verb.wide.logged "hp_patcher: cr_wide\\([^)]*\\) from cr_callee_calls_round"
# cr_mixed's cookie is a module address (its third register under i386's
# regparm): hashed like %p, never printed as it is.
expect_log callee_verb.mixed.logged "hp_patcher: cr_mixed\\([^)]*\\) from cr_callee_calls_round"
expect_eq callee_verb.no_raw_kernel_address "$(log_since | grep 'hp_patcher: cr_' | grep -cE '0x[4-9a-f][0-9a-f]{7}[,)]')" 0
hpcmd "detach cr_target" > /dev/null
echo 0 > $CR/pause
check callee_verb.unload rmmod hp_patcher
