# hpctl types any callee from BTF (vmlinux, and cr_callee's module BTF):
#  - `hpctl catalogue`: the catalogue's argument names are the kernel's BTF's;
#  - `hpctl callees` joins the module's verdicts with BTF's, on real calls
#    cr_target makes (seven arguments, a struct by value, variadic _printk);
#  - attach --fn refuses what BTF refuses, --raw never lets a variadic in;
#  - in a quiesced window, every cr_mixed, cr_match and ns_to_timespec64
#    call is in hpctl's trace, each argument printed by its type, and each
#    result equal to what the callee computes from those arguments.
. /scripts/lib.sh
mark typed
HPCTL=/modules/hpctl
grep -q '^cr_target ' /proc/modules || insmod /modules/cr_target.ko
crc=$(cat $CR/text_crc)
typed() { awk -v f="$1" -v c="$2" '$1 == f { print $c }' $CR/typed; }

if ! have_btf; then
	skip typed "no /sys/kernel/btf/vmlinux in $(uname -r): nothing to type callees from"
	# Without BTF hpctl still answers, says why it cannot type, and attaches nothing.
	$HPCTL callees cr_target > /tmp/callees.txt 2>&1
	expect_eq typed.no_btf.callees_exit "$?" 0
	grep -q 'no BTF, so no prototypes' /tmp/callees.txt && pass typed.no_btf.said ||
		fail typed.no_btf.said "$(head -n 1 /tmp/callees.txt)"
	out=$($HPCTL attach cr_target --fn cr_mixed 2>&1)
	case "$? $out" in
	"0 "*) fail typed.no_btf.refused "accepted: $out" ;;
	*"no BTF to type it"*) pass typed.no_btf.refused ;;
	*) fail typed.no_btf.refused "said: $out" ;;
	esac
	expect_eq typed.no_btf.unchanged "$(hpcmd targets | grep -c 'name=cr_target ')" 0
	expect_eq typed.crc "$(cat $CR/text_crc)" "$crc"
	check typed.unload rmmod hp_patcher
	expect_no_probes typed.no_probes
	exit 0
fi

# The joined list.
$HPCTL callees cr_target > /tmp/callees.txt 2>&1
expect_eq typed.callees_exit "$?" 0
tail -n 1 /tmp/callees.txt | sed 's/^/HPINFO typed: /'

# The catalogue's argument names are the running kernel's own (BTF);
# `callees` above loaded hp_patcher.
$HPCTL catalogue > /tmp/catalogue.txt 2>&1
expect_eq typed.catalogue_btf "$?" 0
grep -v '  ok$' /tmp/catalogue.txt | sed 's/^/HPINFO typed: /'
matched=$(grep -c '  ok$' /tmp/catalogue.txt)
[ "$matched" -ge 10 ] && pass typed.catalogue_count || fail typed.catalogue_count "$matched functions checked"

$HPCTL callees cr_target --json > /tmp/callees.jsonl
# callee_json NAME KEY: one key of one callee's record.
callee_json() {
	grep "\"name\":\"$1\"" /tmp/callees.jsonl |
		sed -n "s/.*\"$2\":\(\"[^\"]*\"\|null\|[0-9]*\).*/\1/p" | tr -d '"'
}
expect_eq typed.mixed "$(callee_json cr_mixed state) $(callee_json cr_mixed spec)" "interceptable xxxsxx"
expect_eq typed.mixed_btf "$(callee_json cr_mixed prototype_btf)" cr_callee
expect_eq typed.match "$(callee_json cr_match spec)" ssx
expect_eq typed.seven "$(callee_json cr_seven state) $(callee_json cr_seven reason)" "refused too_many_args"
expect_eq typed.by_value "$(callee_json cr_by_value state) $(callee_json cr_by_value reason)" "refused struct_by_value"
expect_eq typed.printk "$(callee_json _printk reason) $(callee_json _printk refused_by)" "variadic btf"
expect_eq typed.noreturn "$(callee_json __stack_chk_fail reason)" noreturn
expect_eq typed.copy_from_user "$(callee_json _copy_from_user reason)" no_ftrace
expect_eq typed.timespec "$(callee_json ns_to_timespec64 state)" interceptable

# Refusals on attach: one clear line, non-zero exit, nothing attached.
refused() {
	out=$($HPCTL attach cr_target $2 2>&1)
	rc=$?
	echo "HPINFO typed: attach $2: $out"
	case "$rc $out" in
	"0 "*) fail "$1" "accepted: $out" ;;
	*"$3"*) pass "$1" ;;
	*) fail "$1" "said: $out" ;;
	esac
	expect_eq "$1.unchanged" "$(hpcmd targets | grep -c 'name=cr_target ')" 0
}
refused typed.refuse_seven "--fn cr_seven" too_many_args
refused typed.refuse_by_value "--fn cr_by_value" struct_by_value
refused typed.refuse_printk_raw "--fn _printk --raw" variadic
refused typed.refuse_no_ftrace "--fn kstrtoint" "ftrace cannot trace it"

# A quiesced window, traced by hpctl.
echo 1 > $CR/pause
out=$($HPCTL attach cr_target --fn cr_mixed,cr_match,ns_to_timespec64 2>&1)
expect_eq typed.attach "$?" 0
echo "HPINFO typed: $out"
m0=$(typed cr_mixed 2)
t0=$(typed cr_match 2)
r0=$(cr_count rounds)
$HPCTL trace cr_target > /tmp/typed.txt 2> /tmp/typed.err &
pid=$!
n=0
until grep -q '^hpctl: tracing' /tmp/typed.err; do n=$((n + 1)); [ $n -gt 300 ] && break; sleep 0.1; done
echo 0 > $CR/pause
sleep 0.5
echo 1 > $CR/pause
sleep 0.5
kill -TERM $pid
wait $pid
expect_eq typed.trace_exit "$?" 0
tail -n 1 /tmp/typed.err | sed 's/^/HPINFO typed: /'
grep ' cr_mixed(' /tmp/typed.txt > /tmp/mixed.txt
grep ' cr_match(' /tmp/typed.txt > /tmp/match.txt
grep ' ns_to_timespec64(' /tmp/typed.txt > /tmp/timespec.txt
expect_eq typed.every_mixed "$(wc -l < /tmp/mixed.txt)" $(($(typed cr_mixed 2) - m0))
expect_eq typed.every_match "$(wc -l < /tmp/match.txt)" $(($(typed cr_match 2) - t0))
expect_eq typed.every_timespec "$(wc -l < /tmp/timespec.txt)" $(($(cr_count rounds) - r0))
head -n 3 /tmp/mixed.txt /tmp/match.txt /tmp/timespec.txt | grep cr_ | sed 's/^/HPINFO typed: /'

# cr_mixed(level=I, len=N, cookie=0xP, label=S, mode=E, urgent=B) = R: each
# argument in its type's form, and R what cr_callee.h computes from them.
sed -n 's/.* cr_mixed(level=\(-\{0,1\}[0-9]*\), len=\([0-9]*\), cookie=0x[0-9a-f]*, label=\(.*\), mode=CR_MODE_\([A-Z]*\), urgent=\(true\|false\)) = \(-\{0,1\}[0-9]*\) (.*/\1|\2|\3|\4|\5|\6/p' \
	/tmp/mixed.txt > /tmp/mixed.fields
expect_eq typed.mixed_typed "$(wc -l < /tmp/mixed.fields)" "$(wc -l < /tmp/mixed.txt)"
wrong=$(while IFS='|' read -r level len label mode urgent ret; do
	case "$label" in
	NULL) n=-1 ;;
	'"a label longer than thirty-two b"...') n=36 ;;
	*) n=$((${#label} - 2)) ;;
	esac
	case $mode in READ) m=1 ;; WRITE) m=2 ;; SYNC) m=4 ;; *) m=x ;; esac
	[ $urgent = true ] && u=1 || u=0
	[ "$m" != x ] && [ $((level * 3 + len + n * 1000 + m * 100000 + u * 10000000)) -eq $ret ] ||
		echo "$level $len $label $mode $urgent $ret"
done < /tmp/mixed.fields | head -n 3)
expect_eq typed.mixed_results "$wrong" ""
expect_eq typed.mixed_labels "$(cut -d'|' -f3 /tmp/mixed.fields | sort -u | tr '\n' ' ')" \
	'"" "a label longer than thirty-two b"... "read" "write-back" NULL '
# cr_match(name=S, pattern="write", n=5|6) = bool, true exactly for "write-back" with n=5.
wrong=$(grep -v ' cr_match(name=\("[a-z -]*"\(\.\.\.\)\{0,1\}\|NULL\), pattern="write", n=[56]) = \(true\|false\) (' /tmp/match.txt | head -n 3)
expect_eq typed.match_typed "$wrong" ""
expect_eq typed.match_true "$(grep -c 'true (' /tmp/match.txt)" "$(grep -c 'name="write-back", pattern="write", n=5)' /tmp/match.txt)"
# ns_to_timespec64(nsec=N) = {tv_sec=S, tv_nsec=NS}: the full two-register result.
wrong=$(sed -n 's/.* ns_to_timespec64(nsec=\([0-9]*\)) = {tv_sec=\([0-9]*\), tv_nsec=\([0-9]*\)} (.*/\1 \2 \3/p' /tmp/timespec.txt |
	while read ns sec nsec; do [ $((sec * 1000000000 + nsec)) -eq $ns ] || echo "$ns $sec $nsec"; done | head -n 3)
expect_eq typed.timespec_result "$wrong" ""
expect_eq typed.timespec_typed "$(grep -c 'ns_to_timespec64(nsec=[0-9]*) = {tv_sec=' /tmp/timespec.txt)" "$(wc -l < /tmp/timespec.txt)"
for f in cr_mixed cr_match; do expect_eq typed.$f.right "$(typed $f 3)" 0; done

out=$($HPCTL detach cr_target 2>&1)
expect_eq typed.detach "$?" 0
echo 0 > $CR/pause
echo "HPINFO typed: $out"
expect_eq typed.crc "$(cat $CR/text_crc)" "$crc"
expect_eq typed.differs "$(log_since | grep -c 'text differs')" 0
check typed.unload rmmod hp_patcher
expect_no_probes typed.no_probes
