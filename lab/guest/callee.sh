# Calls cr_target makes into cr_callee, intercepted as any callee:
#  - every result stays right while intercepted, even with no SPEC at all:
#    seven arguments (one on the stack), a 24-byte struct passed in memory
#    and a variadic call of 16 arguments reach the callee, because a call
#    with no SPEC is jumped into with its own return address;
#  - a wrong SPEC's `s` reads no memory outside the direct map and modules;
#  - exact accounting of those calls in a quiesced window;
#  - cr_mixed's six arguments and cr_match's two strings, in every log line
#    of a window, against the result each call really returned;
#  - a detach while a caller sleeps inside an intercepted call waits for it,
#    and the call returns its right result.
. /scripts/lib.sh
mark callee
grep -q '^cr_target ' /proc/modules || insmod /modules/cr_target.ko
grep -q '^hp_patcher ' /proc/modules || insmod $HP
crc=$(cat $CR/text_crc)
typed() { awk -v f="$1" -v c="$2" '$1 == f { print $c }' $CR/typed; }
hits() { hpcmd stats | field hits "$1"; }
CALLEES="cr_mixed cr_match cr_seven cr_by_value cr_sum"

# Module BTF, which hpctl types cr_callee's arguments from (on 6.1 its base
# is cut out of the image by xtask).
if have_btf; then
	check callee.module_btf test -s /sys/kernel/btf/cr_callee
else
	skip callee.module_btf "no BTF in $(uname -r), so none for modules"
fi
expect_eq callee.calls_before "$([ "$(typed cr_mixed 2)" -gt 0 ] && echo yes)" yes

# Raw attach (no SPEC: six registers recorded, the call jumped into with its
# own return address): results stay right for any arity, variadic cr_sum's
# 16 arguments included, and calls are counted exactly.
echo 1 > $CR/pause
expect_eq callee.raw_attach "$(hpcmd "attach cr_target fn=cr_mixed,cr_match,cr_seven,cr_by_value,cr_sum sink=none" | field state cr_target)" attached
for f in $CALLEES; do eval "c0_$f=$(typed $f 2)"; done
echo 0 > $CR/pause
sleep 1
echo 1 > $CR/pause
hpcmd stats > /tmp/stats
for f in $CALLEES; do
	eval "c0=\$c0_$f"
	expect_eq callee.raw.$f.hits "$(field hits $f < /tmp/stats)" $(($(typed $f 2) - c0))
	expect_eq callee.raw.$f.right "$(typed $f 3)" 0
done
hpcmd "detach cr_target" > /dev/null
echo 0 > $CR/pause

# What a SPEC from BTF would say of the prototypes that must be refused.
expect_refused callee.seven_args "Invalid argument" "attach cr_target fn=cr_seven:xxxxxxx"
expect_log callee.seven_args_reason "'cr_seven' refused: 7 arguments: only 6 travel in registers"
expect_refused callee.by_value "Invalid argument" "attach cr_target fn=cr_by_value:S"
expect_log callee.by_value_reason "'cr_by_value' refused: a struct or union passed by value"

# A typed window: every cr_mixed and cr_match call in the log, each checked.
echo 1 > $CR/pause
expect_eq callee.typed_attach "$(hpcmd "attach cr_target fn=cr_mixed:xxxsxx,cr_match:ssx sink=printk burst=0" | field state cr_target)" attached
m0=$(typed cr_mixed 2)
t0=$(typed cr_match 2)
echo 0 > $CR/pause
sleep 0.3
echo 1 > $CR/pause
m1=$(typed cr_mixed 2)
t1=$(typed cr_match 2)
dmesg > /tmp/window.txt
hpcmd "detach cr_target" > /dev/null
echo 0 > $CR/pause
mark callee_after
sed -n 's/.*hp_patcher: cr_mixed(\(.*\)) = \([0-9a-fx]*\).*/\1, \2/p' /tmp/window.txt > /tmp/mixed.txt
sed -n 's/.*hp_patcher: cr_match(\(.*\)) = \([0-9a-fx]*\).*/\1, \2/p' /tmp/window.txt > /tmp/match.txt
expect_eq callee.every_mixed "$(wc -l < /tmp/mixed.txt)" $((m1 - m0))
expect_eq callee.every_match "$(wc -l < /tmp/match.txt)" $((t1 - t0))
head -n 5 /tmp/mixed.txt | sed 's/^/HPINFO callee: cr_mixed(/'
# level, len, cookie, label, mode, urgent, result: the result cr_mixed
# returned is what cr_callee.h computes from the arguments the log shows.
# Only an argument's own width is defined in its register: int and enum
# are 32 bits, bool 8.
wrong=$(while IFS=, read -r level len cookie label mode urgent ret; do
	level=$((level & 0xffffffff)); [ $level -ge 2147483648 ] && level=$((level - 4294967296))
	mode=$((mode & 0xffffffff)); urgent=$((urgent & 0xff)); label=${label# }
	case "$label" in
	0x0) n=-1 ;;
	'"a label longer than thirty-two b"...') n=36 ;;
	*) n=$((${#label} - 2)) ;;
	esac
	want=$((level * 3 + len + n * 1000 + mode * 100000 + urgent * 10000000))
	[ $want -eq $((ret)) ] && [ $mode -eq 1 -o $mode -eq 2 -o $mode -eq 4 ] && [ $urgent -le 1 ] ||
		echo "$level $len $label $mode $urgent $ret"
done < /tmp/mixed.txt | head -n 3)
expect_eq callee.mixed_fields "$wrong" ""
labels=$(cut -d, -f4 /tmp/mixed.txt | sort -u | tr '\n' '|')
expect_eq callee.mixed_labels "$labels" ' ""| "a label longer than thirty-two b"...| "read"| "write-back"| 0x0|'
# A bool result is al alone: the rest of rax is whatever the callee left,
# and the log hashes it like %p when it looks like a kernel address.
while IFS=, read -r name pattern n ret; do
	case "$ret" in *0x*) ret=$((ret & 0xff)) ;; *) ret=hashed ;; esac
	echo "$name,$pattern,$n, $ret"
done < /tmp/match.txt > /tmp/match_bool.txt
wrong=$(grep -v '^\("[a-z -]*"\(\.\.\.\)\{0,1\}\|0x0\), "write", 0x[56], \([01]\|hashed\)$' /tmp/match_bool.txt | head -n 3)
expect_eq callee.match_fields "$wrong" ""
wrong=$(grep -c '^"write-back", "write", 0x5, 1$' /tmp/match_bool.txt)
[ "$wrong" -gt 0 ] && pass callee.match_true || fail callee.match_true "no cr_match call returned true"
for f in $CALLEES; do expect_eq callee.typed.$f.right "$(typed $f 3)" 0; done

# A wrong SPEC reads no harmful memory: an `s` on an integer (level) reads
# nothing, and one on a cookie in the vmalloc range (text on a kthread's
# stack, where ioremap's device registers also live) reads nothing either.
expect_eq callee.wrong_s_attach "$(hpcmd "attach cr_target fn=cr_mixed:sxsxxx sink=printk burst=0" | field state cr_target)" attached
mark callee_wrong_s
sleep 1
hpcmd "detach cr_target" > /dev/null
expect_eq callee.wrong_s_calls "$([ "$(log_since | grep -c 'hp_patcher: cr_mixed(')" -gt 8 ] && echo yes)" yes
expect_eq callee.wrong_s_no_stack_text "$(log_since | grep -c 'stack cookie')" 0
expect_eq callee.wrong_s_level_unread "$(log_since | grep -c 'hp_patcher: cr_mixed("')" 0
expect_eq callee.wrong_s_right "$(typed cr_mixed 3)" 0

# A caller asleep inside an intercepted call while detach runs.
expect_eq callee.gate_idle "$(cut -d' ' -f1 $CR/gate)" idle
park_caller callee.gate 21
/modules/hpctl detach cr_target > /tmp/gate_detach.txt 2>&1 &
detach=$!
sleep 2
# The detach waits for the sleeping caller: it has not returned.
expect_eq callee.detach_waits "$(kill -0 $detach 2>/dev/null && echo waiting)" waiting
expect_eq callee.still_asleep "$(cat $CR/gate)" "waiting 21"
echo 1 > /sys/kernel/debug/cr_callee/gate
wait $detach
expect_eq callee.detach_done "$?" 0
sed "s/^/HPINFO callee: /" /tmp/gate_detach.txt
expect_eq callee.gate_result "$(cat $CR/gate)" "returned 21 43"
expect_log callee.gate_logged 'hp_patcher: cr_gate_wait\(0x15\) = 0x2b'
expect_eq callee.gate_detached "$(hpcmd targets | grep -c 'name=cr_target ')" 0

expect_eq callee.crc "$(cat $CR/text_crc)" "$crc"
expect_eq callee.differs "$(log_since | grep -c 'text differs')" 0
check callee.unload rmmod hp_patcher
expect_no_probes callee.no_probes
