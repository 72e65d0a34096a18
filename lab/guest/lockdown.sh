# Under kernel lockdown (integrity, what Secure Boot turns on), debugfs
# refuses writes, and the control device still attaches, traces and
# detaches. Lockdown cannot be lifted: this script runs last in its boot.
# The modules are loaded before lockdown is engaged: under it the kernel
# only loads signed modules, and ours are not signed by a key it trusts.
. /scripts/lib.sh
mark lockdown
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
insmod /modules/cr_target.ko
insmod $HP
echo integrity > /sys/kernel/security/lockdown
if grep -q '\[integrity\]' /sys/kernel/security/lockdown; then pass lockdown.engaged; else fail lockdown.engaged "$(cat /sys/kernel/security/lockdown)"; fi
# Why lockdown is engaged here and not at boot: under it the kernel refuses
# an unsigned module, ours included.
out=$(insmod /modules/cr_twin.ko 2>&1)
if [ $? -eq 0 ]; then
	fail lockdown.unsigned_module_refused "cr_twin loaded under lockdown"; rmmod cr_twin
else
	case "$out" in
	*"not permitted"*) pass lockdown.unsigned_module_refused ;;
	*) fail lockdown.unsigned_module_refused "insmod said: $out" ;;
	esac
fi
expect_log lockdown.unsigned_module_reason 'Lockdown: insmod: unsigned module loading is restricted'
if echo 1 > /sys/kernel/debug/cr_target/pause 2>/dev/null; then
	fail lockdown.debugfs_refuses_writes "a debugfs write went through"
else
	pass lockdown.debugfs_refuses_writes
fi

expect_eq lockdown.attach "$(hpcmd 'attach cr_target' | field state cr_target)" attached
I=/sys/kernel/tracing/instances/lockdown
mkdir $I
echo 1 > $I/events/hp_patcher/hp_call/enable
sleep 2
echo 0 > $I/events/hp_patcher/hp_call/enable
n=$(grep -c 'hp_call: cr_target cr_round+0x' $I/trace)
[ "$n" -gt 0 ] && pass lockdown.events || fail lockdown.events "no hp_call event in the instance"
echo "HPINFO lockdown: $n events in 2 s"
rmdir $I
hpcmd 'detach cr_target' | grep -q '^detached name=cr_target' && pass lockdown.detach || fail lockdown.detach "no detached line"
expect_log lockdown.identical "cr_target text identical to before attach"

# Confidentiality (raised from integrity, as root can): what the kernel
# refuses its own tracers, hp_patcher refuses. An attachment made before
# keeps running, as the kernel's own kprobe events do, but reads no string.
expect_eq lockdown.strings_attach "$(hpcmd 'attach cr_target fn=cr_match:ssx sink=printk burst=0' | field state cr_target)" attached
sleep 1
quoted_before=$(dmesg | grep -c 'hp_patcher: cr_match("')
echo confidentiality > /sys/kernel/security/lockdown
if grep -q '\[confidentiality\]' /sys/kernel/security/lockdown; then pass lockdown.confidentiality; else fail lockdown.confidentiality "$(cat /sys/kernel/security/lockdown)"; fi
# Lines logged from here on are all under confidentiality.
mark lockdown_confidentiality
sleep 1
expect_eq lockdown.strings_read_before "$([ "$quoted_before" -gt 0 ] && echo yes)" yes
expect_eq lockdown.no_string_read "$(log_since | grep -c 'hp_patcher: cr_match("')" 0
expect_eq lockdown.calls_go_on "$([ "$(log_since | grep -c 'hp_patcher: cr_match(')" -gt 0 ] && echo yes)" yes
hpcmd 'detach cr_target' > /dev/null
# A fresh mark: the printk flood before the detach can push the last one
# out of the kernel's log buffer (128 kB), and with it the refusal's line.
mark lockdown_refused
expect_refused lockdown.attach_refused "Operation not permitted" "attach cr_target"
expect_log lockdown.attach_refused_why 'lockdown \(confidentiality\) forbids kprobes'
check lockdown.unload rmmod hp_patcher
expect_no_probes lockdown.no_probes
