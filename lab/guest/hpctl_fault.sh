# hpctl's side of fault rules and leak checking, on cr_target: `hpctl
# attach --leaks`, `hpctl fail` (a rule, a refusal with its reason, --clear),
# `hpctl faults` and `hpctl leaks` (table and JSON).
. /scripts/lib.sh
mark hpctl_fault
HPCTL=/modules/hpctl
grep -q '^cr_target ' /proc/modules || insmod /modules/cr_target.ko
kstrdup=$(sym kstrdup)
$HPCTL attach cr_target --fn $kstrdup,kfree --sink none --leaks 1024 > /tmp/attach.txt 2>&1
expect_eq hpctl_fault.attach "$?" 0

out=$($HPCTL fail cr_target --fn $kstrdup --every 10 --times 5 2>&1)
expect_eq hpctl_fault.rule "$out" "cr_target: rule 0: fn=$kstrdup every=10 times=5 (a failed call returns NULL)"
failed() { $HPCTL faults cr_target | awk '$1 == "cr_target" && $2 == "0" { print $4 }'; }
n=0
while [ "$(failed)" != 5 ] && [ $n -lt 100 ]; do sleep 0.2; n=$((n + 1)); done
expect_eq hpctl_fault.failed "$(failed)" 5
$HPCTL faults cr_target | sed 's/^/HPINFO hpctl_fault: /'
status_rule=$($HPCTL status | awk '$1 == "cr_target" && $2 == "0" { print $4, $7, $8, $9 }')
expect_eq hpctl_fault.status_shows_rules "$status_rule" "5 fn=$kstrdup every=10 times=5"

out=$($HPCTL fail cr_target --fn kfree 2>&1)
rc=$?
[ $rc -ne 0 ] && pass hpctl_fault.refused_exit || fail hpctl_fault.refused_exit "exit $rc: $out"
case "$out" in *"cannot fail kfree: it frees memory"*) pass hpctl_fault.refused_why ;; *) fail hpctl_fault.refused_why "$out" ;; esac
out=$($HPCTL fail cr_target --fn $kstrdup --systematic --times 2 2>&1)
[ $? -ne 0 ] && pass hpctl_fault.flags_conflict || fail hpctl_fault.flags_conflict "$out"

expect_eq hpctl_fault.clear "$($HPCTL fail cr_target --clear 2>&1)" "cr_target: fault rules cleared"
expect_eq hpctl_fault.no_rules "$($HPCTL faults cr_target 2>&1 | head -n 1)" "no fault rules"

$HPCTL leaks cr_target > /tmp/leaks.txt 2>&1
expect_eq hpctl_fault.leaks_exit "$?" 0
head -n 3 /tmp/leaks.txt | sed 's/^/HPINFO hpctl_fault: /'
case "$(head -n 1 /tmp/leaks.txt)" in "cr_target: "*" objects, "*" bytes, outstanding since the attach") pass hpctl_fault.leaks_table ;; *) fail hpctl_fault.leaks_table "$(head -n 1 /tmp/leaks.txt)" ;; esac
json=$($HPCTL leaks cr_target --json | head -n 1)
case "$json" in '{"schema":1,"type":"leaks","module":"cr_target","mode":"since_attach",'*) pass hpctl_fault.leaks_json ;; *) fail hpctl_fault.leaks_json "$json" ;; esac

check hpctl_fault.detach $HPCTL detach cr_target

# Any callee, typed from BTF: cr_mixed returns long, so a failed call
# returns -errno, and cr_target counts each result that is not what
# cr_mixed would have computed; cr_wide returns a u64, which no errno fits.
if have_btf; then
	wrong() { awk -v f="$1" '$1 == f { print $3 }' $CR/typed; }
	before=$(wrong cr_mixed)
	$HPCTL attach cr_target --fn cr_mixed,cr_wide --sink none > /tmp/attach.txt 2>&1
	expect_eq hpctl_fault.typed_attach "$?" 0
	out=$($HPCTL fail cr_target --fn cr_mixed --times 3 --errno 5 2>&1)
	expect_eq hpctl_fault.typed_rule "$out" "cr_target: rule 0: fn=cr_mixed times=3 errno=5 returns=int (a failed call returns -5)"
	n=0
	while [ "$(failed)" != 3 ] && [ $n -lt 100 ]; do sleep 0.2; n=$((n + 1)); done
	expect_eq hpctl_fault.typed_failed "$(failed)" 3
	expect_eq hpctl_fault.typed_target_saw "$(( $(wrong cr_mixed) - before ))" 3
	out=$($HPCTL fail cr_target --fn cr_wide 2>&1)
	case "$out" in *"cannot fail cr_wide: it returns an unsigned value"*) pass hpctl_fault.typed_unsigned ;; *) fail hpctl_fault.typed_unsigned "$out" ;; esac
	check hpctl_fault.typed_detach $HPCTL detach cr_target
else
	skip hpctl_fault.typed "no BTF in $(uname -r): hpctl types cr_mixed and cr_wide from BTF"
fi

# The module's own allocator and free (--pair): cr_callee's cr_buf_get and
# cr_buf_put, whose second argument is the buffer. `pair 5` gets 5 and
# gives back 4: one leak, at cr_pair_objects, of cr_buf_get's.
if have_btf; then
	$HPCTL attach cr_target --fn kfree --sink none --leaks 1024 --pair cr_buf_get:cr_buf_put@1 > /tmp/attach.txt 2>&1
	expect_eq hpctl_fault.pair_attach "$?" 0
	echo "pair 5" > $CR/leak
	$HPCTL leaks cr_target > /tmp/leaks.txt 2>&1
	grep -A 3 'cr_pair_objects' /tmp/leaks.txt | sed 's/^/HPINFO hpctl_fault: /'
	expect_eq hpctl_fault.pair_leak "$(grep -c '^  cr_pair_objects+0x[0-9a-f]*/0x[0-9a-f]* *cr_buf_get *1 ' /tmp/leaks.txt)" 1
	expect_eq hpctl_fault.pair_frees_seen "$(grep -c 'cr_buf_put' /tmp/leaks.txt)" 0
	check hpctl_fault.pair_detach $HPCTL detach cr_target
	out=$($HPCTL attach cr_target --leaks --pair cr_buf_get:kfree 2>&1)
	case "$?:$out" in 0:*) fail hpctl_fault.pair_catalogue "accepted" ;; *"in the memory catalogue"*) pass hpctl_fault.pair_catalogue ;; *) fail hpctl_fault.pair_catalogue "$out" ;; esac
	out=$($HPCTL attach cr_target --leaks --pair cr_buf_get:cr_buf_put@4 2>&1)
	case "$?:$out" in 0:*) fail hpctl_fault.pair_bad_argument "accepted" ;; *"does not take"*) pass hpctl_fault.pair_bad_argument ;; *) fail hpctl_fault.pair_bad_argument "$out" ;; esac
	expect_eq hpctl_fault.pair_refused_unchanged "$(hpcmd targets | grep -c 'name=cr_target ')" 0
else
	skip hpctl_fault.pair "no BTF in $(uname -r): --pair types its functions from BTF"
fi
