# /dev/hp_patcher: access rules and malformed input. Every bad command is
# refused with its errno, one log line and an `error` reply, and changes
# nothing: the targets list and the kprobes list stay as they were.
. /scripts/lib.sh
mark control
insmod /modules/cr_target.ko
insmod /modules/cr_twin.ko
insmod $HP || fail control.load "insmod without target_name failed"

mode=$(ls -l $HPDEV | cut -c1-10)
expect_eq control.mode "$mode" "crw-------"

# An attached target, so that "changes nothing" has something to keep.
expect_eq control.attach "$(hpcmd 'attach cr_target sink=none' | field state cr_target)" attached
probes_before=$(grep -c cr_target /sys/kernel/debug/kprobes/list)

expect_refused control.empty "Invalid argument" "
"
# bytes NAME ERRNO-TEXT: like expect_refused, for the bytes on stdin.
bytes() {
	before=$(targets_now)
	out=$(hpwrite 2>&1)
	case "$out" in *"$2"*) case "$out" in *error*) pass "$1" ;; *) fail "$1" "no reply: $out" ;; esac ;; *) fail "$1" "said: $out" ;; esac
	expect_eq "$1.unchanged" "$(targets_now)" "$before"
}
head -c 65536 /dev/zero | tr '\0' a | bytes control.64k "Invalid argument"
printf 'attach cr\000twin' | bytes control.nul "Invalid argument"
printf '\377\376\001attach' | bytes control.binary "Invalid argument"
printf 'attach cr_twin\nattach cr_twin' | bytes control.two_lines "Invalid argument"
expect_refused control.bad_number "Invalid argument" "attach cr_twin burst=12x"
expect_refused control.negative_number "Invalid argument" "attach cr_twin burst=-1"
expect_refused control.huge_number "Invalid argument" "attach cr_twin burst=99999999999999999999"
expect_refused control.unknown_verb "Invalid argument" "frobnicate cr_target"
expect_refused control.detach_unknown "Invalid argument" "detach cr_twin"
expect_refused control.ourselves "Invalid argument" "attach hp_patcher"
expect_refused control.unknown_function "Invalid argument" "attach cr_twin fn=no_such_function"
expect_refused control.extra_word "Invalid argument" "targets please"
expect_refused control.busy "Device or resource busy" "attach cr_target"
expect_refused control.not_loaded "No such file or directory" "attach no_such_module"
expect_log control.log_says_why "hp_patcher: control: unknown command 'frobnicate'"
expect_eq control.probes_unchanged "$(grep -c cr_target /sys/kernel/debug/kprobes/list)" "$probes_before"

# Root is not enough: CAP_SYS_ADMIN in the initial namespace is. A root
# process in a user namespace of its own owns the file, but is refused at
# open, as it would be at every command.
out=$(printf targets | unshare -r dd of=$HPDEV 2>&1)
case "$out" in *"Operation not permitted"*) pass control.no_cap_sys_admin ;; *) fail control.no_cap_sys_admin "said: $out" ;; esac
expect_log control.no_cap.logged "lacks CAP_SYS_ADMIN"
out=$(as_user "printf targets | dd of=$HPDEV")
case "$out" in *"Permission denied"*) pass control.not_root ;; *) fail control.not_root "said: $out" ;; esac

# The listings.
hpcmd "sites cr_target" > /tmp/sites
expect_eq control.sites.format "$(grep -cvE '^site module=cr_target addr=[0-9a-f]{16} caller=[a-z_]+\+0x[0-9a-f]+/0x[0-9a-f]+ callee=[a-z_]+ kind=(call|tail) state=(armed|refused|foreign|jcc|long) hits=[0-9]+$' /tmp/sites)" 0
expect_eq control.sites.count "$(grep -c 'state=armed' /tmp/sites)" "$(target_field cr_target armed)"
hpcmd "stats cr_target" > /tmp/stats
expect_eq control.stats.format "$(grep -cvE '^func module=cr_target name=[a-z_]+ hits=[0-9]+ inflight=[0-9]+ events=0 dropped=0 missed=[0-9]+$' /tmp/stats)" 0
kfree_hits=$(awk '$3 == "name=kfree" { sub("hits=", "", $4); print $4 }' /tmp/stats)
[ "${kfree_hits:-0}" -gt 0 ] && pass control.stats.hits || fail control.stats.hits "kfree hits: '$kfree_hits'"
hpcmd "plan cr_twin fn=kfree" > /tmp/plan
expect_eq control.plan.arms_none "$(grep -cE 'state=(armed|refused)' /tmp/plan)" 0
[ "$(grep -c 'callee=kfree' /tmp/plan)" -gt 0 ] && pass control.plan.sites || fail control.plan.sites "$(cat /tmp/plan)"
expect_eq control.plan.arms_nothing "$(grep -c cr_twin /sys/kernel/debug/kprobes/list)" 0
hpcmd info > /tmp/info
grep -q '^info version=1 ' /tmp/info && grep -q '^gfp mask=0x[0-9a-f]* name=__GFP_' /tmp/info &&
	grep -q "^function index=[0-9]* name=kfree available=1" /tmp/info && pass control.info || fail control.info "$(head -3 /tmp/info)"

hpcmd 'detach cr_target' | grep -qE '^detached name=cr_target calls=[0-9]+$' && pass control.detach || fail control.detach "no detached line"
expect_log control.text_identical "cr_target text identical to before attach"
expect_eq control.detached "$(hpcmd targets)" ""
check control.unload rmmod hp_patcher
expect_no_probes control.no_probes
rmmod cr_target
