# A detach that waits for a caller asleep in an intercepted call holds no
# lock that the rest of the kernel needs: while it waits, unrelated module
# loads and unloads complete; the wait is reported at a steady interval and
# shown by `targets`; hpctl can be interrupted (the detach finishes in the
# background); rmmod hp_patcher is refused ("in use") until the callers are
# out. Also the control file's smaller promises: a failed command's reply is
# read whole on a reused descriptor, and the opener's capability counts.
. /scripts/lib.sh
mark detach_wait
grep -q '^cr_target ' /proc/modules || insmod /modules/cr_target.ko
grep -q '^hp_patcher ' /proc/modules || insmod $HP
crc=$(cat $CR/text_crc)

# A caller parks in cr_gate_wait, intercepted.
park_caller detach_wait 21

/modules/hpctl detach cr_target > /tmp/dw_detach.txt 2>&1 &
detach=$!
sleep 2
expect_eq detach_wait.waits "$(kill -0 $detach 2>/dev/null && echo waiting)" waiting

# Unrelated module loads and unloads are not held up by the waiting detach
# (before: the notifier waited on hp_lock until the caller came back).
insmod /modules/cr_twin.ko & loader=$!
i=0
while kill -0 $loader 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
expect_eq detach_wait.insmod_goes_on "$(kill -0 $loader 2>/dev/null && echo blocked || echo done)" done
expect_eq detach_wait.insmod_loaded "$(grep -c '^cr_twin ' /proc/modules)" 1
rmmod cr_twin & unloader=$!
i=0
while kill -0 $unloader 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
expect_eq detach_wait.rmmod_goes_on "$(kill -0 $unloader 2>/dev/null && echo blocked || echo done)" done
expect_eq detach_wait.rmmod_unloaded "$(grep -c '^cr_twin ' /proc/modules)" 0
echo "HPINFO detach_wait: insmod and rmmod of cr_twin took $i tenths of a second or less while the detach waited"

# Another target's commands go on too.
expect_eq detach_wait.other_command "$(hpcmd targets | grep -c '^detaching name=cr_target inside=1 ')" 1

# The wait says what it waits for, every 5 s.
sleep 4
expect_log detach_wait.reported 'detaching cr_target: waiting [0-9]+ s for 1 call still inside cr_gate_wait'

# rmmod hp_patcher is refused while a detach waits: its trampolines are in use.
out=$(rmmod hp_patcher 2>&1)
if [ $? -eq 0 ]; then fail detach_wait.rmmod_refused "rmmod hp_patcher succeeded during the wait"; insmod $HP
else pass detach_wait.rmmod_refused; fi

# hpctl killed (Ctrl-C in a terminal; SIGTERM here, since a script's
# background jobs ignore SIGINT): the wait ends, the detach is done, the
# drain goes on.
kill -TERM $detach
wait $detach
expect_eq detach_wait.interrupted "$(kill -0 $detach 2>/dev/null && echo alive || echo gone)" gone
expect_eq detach_wait.background "$(hpcmd targets | grep -c '^detaching name=cr_target ')" 1
expect_eq detach_wait.still_asleep "$(cat $CR/gate)" "waiting 21"

# The caller returns: the drain ends, the call's result is right.
echo 1 > /sys/kernel/debug/cr_callee/gate
i=0
while [ "$(hpcmd targets | grep -c '^detaching ')" != 0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
expect_eq detach_wait.drained "$(hpcmd targets | grep -c '^detaching ')" 0
expect_eq detach_wait.gate_result "$(cat $CR/gate)" "returned 21 43"
expect_log detach_wait.report 'detached from cr_target \(detach\): 1 calls cr_gate_wait=1'
expect_eq detach_wait.crc "$(cat $CR/text_crc)" "$crc"

# The intercepted callee itself loads a module (request_module, through
# modprobe) after the detach has begun: the load's module notifier needs
# hp_lock, which the waiting detach no longer holds (before: a deadlock).
mkdir -p /lib/modules/$(uname -r)
cp /modules/cr_twin.ko /modules/cr_callee.ko /lib/modules/$(uname -r)/
depmod
echo /bin/modprobe > /proc/sys/kernel/modprobe
park_caller detach_wait.loader 22
hpcmd 'detach cr_target' > /tmp/dw_loader.txt 2>&1 &
detach=$!
sleep 1
echo 'load cr_twin' > /sys/kernel/debug/cr_callee/gate
i=0
while kill -0 $detach 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
expect_eq detach_wait.loader.detach_done "$(kill -0 $detach 2>/dev/null && echo stuck || echo done)" done
expect_eq detach_wait.loader.loaded "$(grep -c '^cr_twin ' /proc/modules)" 1
expect_eq detach_wait.loader.result "$(cat $CR/gate)" "returned 22 45"
rmmod cr_twin

# A failed command's error reply is read whole on a descriptor that has
# read a reply before (the VFS does not store the position of a failed write).
exec 4<>$HPDEV
printf 'info' >&4
expect_eq detach_wait.first_reply_read "$([ "$(cat <&4 | wc -c)" -gt 100 ] && echo long)" long
printf 'detach no_such_target' >&4 2>/dev/null
got=$(cat <&4)
exec 4>&-
expect_eq detach_wait.error_reply_whole "$got" "error no_such_target is not a target: nothing to detach"

# The opener's capability counts, not only the writer's: a descriptor opened
# without CAP_SYS_ADMIN is refused at open even where the mode would let it.
chmod 0666 $HPDEV
out=$(as_user "exec 4<>$HPDEV && echo opened")
chmod 0600 $HPDEV
case "$out" in
*opened*) fail detach_wait.open_needs_cap "an unprivileged open succeeded" ;;
*"Operation not permitted"*) pass detach_wait.open_needs_cap ;;
*) fail detach_wait.open_needs_cap "said: $out" ;;
esac
expect_log detach_wait.open_refused_logged 'lacks CAP_SYS_ADMIN: open refused'

check detach_wait.unload rmmod hp_patcher
expect_no_probes detach_wait.no_probes

# A command that changed something says so even when its reply could not
# grow (reply_limit makes growth fail as an allocation would): attach and
# detach succeed with a `truncated` line; a query answers ENOMEM.
insmod $HP reply_limit=8
out=$(hpcmd 'attach cr_target fn=kfree sink=none'); rc=$?
expect_eq detach_wait.truncated.attach_succeeds "$rc" 0
expect_eq detach_wait.truncated.attach_says "$(echo "$out" | tail -n 1)" "truncated reason=out_of_memory"
expect_log detach_wait.truncated.attached 'attached to cr_target: [0-9]+ of [0-9]+ sites'
hpcmd targets > /dev/null 2>&1
expect_eq detach_wait.truncated.query_enomem "$?" 1
out=$(hpcmd 'detach cr_target'); rc=$?
expect_eq detach_wait.truncated.detach_succeeds "$rc" 0
expect_eq detach_wait.truncated.detach_says "$(echo "$out" | tail -n 1)" "truncated reason=out_of_memory"
check detach_wait.truncated.unload rmmod hp_patcher

# The plan worker still runs our text after it has handed back its result;
# rmmod right after an attach waits for it (before, it freed that text
# under the sleeping worker).
insmod $HP target_name=cr_target plan_epilogue_delay_ms=2000
check detach_wait.epilogue.unload rmmod hp_patcher
sleep 3
expect_eq detach_wait.epilogue.no_oops "$(dmesg | grep -c 'Oops\|BUG:')" 0
expect_no_probes detach_wait.epilogue.no_probes
