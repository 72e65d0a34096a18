# Any function a live module calls: the callee list with the module's own
# refusals (checked against ftrace's own list), typed attaches through
# fn=name:SPEC, and every call in a quiesced window recorded and checked:
# kstrdup's string argument, and ns_to_timespec64's two-register result
# against its argument.
. /scripts/lib.sh
mark anycallee
grep -q '^cr_target ' /proc/modules || insmod /modules/cr_target.ko
grep -q '^hp_patcher ' /proc/modules || insmod $HP
crc=$(cat $CR/text_crc)

# The callee list.
hpcmd "callees cr_target" > /tmp/callees.txt
echo "HPINFO anycallee: $(wc -l < /tmp/callees.txt) callees of cr_target"
sed 's/^/HPINFO anycallee: /' /tmp/callees.txt
callee_field() { awk -v n="name=$1" -v k="$2=" '$2 == n { for (i = 1; i <= NF; i++) if (index($i, k) == 1) print substr($i, length(k) + 1) }' /tmp/callees.txt; }
expect_eq anycallee.kfree_listed "$(callee_field kfree state)" interceptable
# Real calls cr_target makes that must be refused, each for its reason.
expect_eq anycallee.kstrtoint_no_ftrace "$(callee_field kstrtoint reason)" no_ftrace
expect_eq anycallee.copy_from_user "$(callee_field _copy_from_user reason)" no_ftrace
expect_eq anycallee.stack_chk_fail "$(callee_field __stack_chk_fail reason)" noreturn
expect_eq anycallee.kstrdup_listed "$(callee_field kstrdup state)" interceptable
expect_eq anycallee.timespec_listed "$(callee_field ns_to_timespec64 state)" interceptable
# Every line is a callee line, every refusal has a known reason.
bad=$(grep -v '^callee name=[^ ]* sites=[0-9]* tails=[0-9]* static_call_sites=[0-9]* state=\(interceptable\|refused reason=\(not_function_start\|static_call\|no_ftrace\|noreturn\|static_call_sites\)\)$' /tmp/callees.txt)
[ -z "$bad" ] && pass anycallee.records || fail anycallee.records "$bad"
# A call whose next instruction is ud2 or int3: the stack protector's
# __stack_chk_fail, or a BUG() path, if this build has one.
noret=$(grep -c 'reason=noreturn' /tmp/callees.txt)
# The module's no_ftrace verdict agrees with ftrace's own list.
for f in $(grep 'state=' /tmp/callees.txt | sed 's/^callee name=\([^ ]*\) .*reason=\(no_ftrace\).*/\1/;t;d'); do
	grep -qw "^$f" /sys/kernel/tracing/available_filter_functions && fail anycallee.no_ftrace_$f "ftrace lists $f"
done
for f in $(grep 'state=interceptable' /tmp/callees.txt | sed 's/^callee name=\([^ ]*\) .*/\1/'); do
	grep -qw "^$f" /sys/kernel/tracing/available_filter_functions || fail anycallee.ftrace_$f "ftrace does not list $f"
done
pass anycallee.ftrace_agrees
echo "HPINFO anycallee: $noret callees refused as noreturn, $(grep -c 'reason=no_ftrace' /tmp/callees.txt) as no_ftrace"

# Refusals on attach: the rule SPEC states, and a name the module never calls.
# seq_printf and _printk are variadic calls cr_target really makes; the
# other two SPECs are not true of kstrdup, but the rule is SPEC's alone.
expect_refused anycallee.variadic "Invalid argument" "attach cr_target fn=seq_printf:xs."
expect_refused anycallee.printk "Invalid argument" "attach cr_target fn=_printk:s."
expect_refused anycallee.struct_by_value "Invalid argument" "attach cr_target fn=kstrdup:Sx"
expect_refused anycallee.seven_args "Invalid argument" "attach cr_target fn=kstrdup:xxxxxxx"
expect_refused anycallee.not_called "Invalid argument" "attach cr_target fn=strnlen"
expect_log anycallee.reason_logged "'seq_printf' refused: variadic"
for r in $(grep 'state=refused' /tmp/callees.txt | sed 's/^callee name=\([^ ]*\) .*/\1/' | head -n 3); do
	expect_refused anycallee.refused_$r "Invalid argument" "attach cr_target fn=$r"
done

# A quiesced window: every call recorded, every record right.
echo 1 > $CR/pause
expect_eq anycallee.attach "$(hpcmd "attach cr_target fn=kstrdup:sx,ns_to_timespec64:x sink=printk burst=0" | field state cr_target)" attached
r0=$(cr_count rounds)
k0=$(cr_count kstrdup)
# A short window: every line must fit in the log buffer. (No other attach
# of this boot logs these functions, so the whole log is the window.)
echo 0 > $CR/pause
sleep 0.3
echo 1 > $CR/pause
r1=$(cr_count rounds)
k1=$(cr_count kstrdup)
dmesg > /tmp/window.txt
hpcmd "detach cr_target" > /dev/null
echo 0 > $CR/pause
mark anycallee_after
grep 'hp_patcher: kstrdup(' /tmp/window.txt > /tmp/kstrdup.txt
grep 'hp_patcher: ns_to_timespec64(' /tmp/window.txt > /tmp/timespec.txt
expect_eq anycallee.every_kstrdup "$(wc -l < /tmp/kstrdup.txt)" $((k1 - k0))
expect_eq anycallee.every_timespec "$(wc -l < /tmp/timespec.txt)" $((r1 - r0))
head -n 2 /tmp/kstrdup.txt /tmp/timespec.txt | sed 's/^/HPINFO anycallee: /'
# The string argument, read when the call returned; gfp as a raw value.
expect_eq anycallee.kstrdup_string "$(grep -vc 'kstrdup("cr_\(target\|irqoff\)", 0x[0-9a-f]*) = ' /tmp/kstrdup.txt)" 0
# No raw kernel address in the log: pointers are hashed like %p.
expect_eq anycallee.hashed "$(grep -c '0xff[0-9a-f]\{14\}' /tmp/kstrdup.txt)" 0
# ns_to_timespec64(ns) = sec:nsec with sec * 10^9 + nsec == ns.
wrong=$(sed 's/.*ns_to_timespec64(\(0x[0-9a-f]*\)) = \(0x[0-9a-f]*\)\(:\(0x[0-9a-f]*\)\)\{0,1\}.*/\1 \2 \4/' /tmp/timespec.txt |
	while read ns sec nsec; do [ $((sec * 1000000000 + ${nsec:-0})) -eq $((ns)) ] || echo "$ns $sec $nsec"; done | head -n 3)
expect_eq anycallee.two_register_result "$wrong" ""
expect_eq anycallee.crc "$(cat $CR/text_crc)" "$crc"
expect_eq anycallee.differs "$(log_since | grep -c 'text differs')" 0
check anycallee.unload rmmod hp_patcher
expect_no_probes anycallee.no_probes
