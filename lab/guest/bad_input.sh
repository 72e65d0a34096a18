# Every bad input is refused with a clear message and errno, leaves nothing
# loaded or armed, and the target keeps running.
. /scripts/lib.sh
mark bad_input
insmod /modules/cr_target.ko
rounds=$(cr_count rounds)

# Without target_name= it loads idle, for /dev/hp_patcher (hpctl) to drive.
if insmod $HP; then
	pass bad.no_target.loads_idle
	expect_eq bad.no_target.no_targets "$(printf targets > /dev/hp_patcher 2>&1; cat /dev/hp_patcher)" ""
	rmmod hp_patcher && pass bad.no_target.unloads || fail bad.no_target.unloads "rmmod failed"
else
	fail bad.no_target.loads_idle "insmod without target_name= failed"
fi
expect_no_probes bad.no_target.no_probes
expect_insmod_fails bad.unknown_module "$ENOENT_TEXT" 'module no_such_module is not loaded' target_name=no_such_module
expect_insmod_fails bad.self "$EINVAL_TEXT" 'cannot instrument itself' target_name=hp_patcher
expect_insmod_fails bad.unknown_function "$EINVAL_TEXT" "cr_target never calls 'kmalloc' directly" target_name=cr_target functions=kmalloc
# The catalogue has 6.12's and 6.1's names; the other kernel's is not exported.
if [ "$(sym kmalloc)" = __kmalloc ]; then absent=__kmalloc_noprof; else absent=__kmalloc; fi
expect_insmod_fails bad.not_exported "$EINVAL_TEXT" "function '$absent' is not exported by this kernel" target_name=cr_target functions=kfree,$absent
expect_insmod_fails bad.garbage_function "$EINVAL_TEXT" "is not a function name" 'target_name=cr_target' 'functions=kfree,;;%%'
expect_insmod_fails bad.garbage_burst "$EINVAL_TEXT" "invalid for parameter .log_burst" target_name=cr_target log_burst=lots
long=$(printf 'x%.0s' $(seq 1 300))
expect_insmod_fails bad.long_name "$ENOENT_TEXT" "module $long is not loaded" target_name=$long
expect_insmod_fails bad.no_sites "$ENOENT_TEXT" 'no call or tail call to the selected functions' target_name=cr_target functions=kfree_sensitive

# A module still in its init function.
rmmod cr_target
mark bad_target_loading
insmod /modules/cr_target.ko init_gate=1 &
wait_gate init
expect_insmod_fails bad.target_loading "$EINVAL_TEXT" 'module cr_target is still loading' target_name=cr_target
echo 0 > /sys/module/cr_target/parameters/init_gate
wait

# A module in its exit function.
mark bad_target_unloading
echo 1 > /sys/module/cr_target/parameters/exit_gate
rmmod cr_target &
wait_gate exit
expect_insmod_fails bad.target_unloading "$EINVAL_TEXT" 'module cr_target is (being unloaded|not live)' target_name=cr_target
echo 0 > /sys/module/cr_target/parameters/exit_gate
wait

# The target kept running through all of the above.
insmod /modules/cr_target.ko
sleep 1
if [ "$(cr_count rounds)" -gt 0 ]; then pass bad.target_runs; else fail bad.target_runs "cr_target made no round"; fi

# A site someone else already probes is skipped with a warning.
check foreign.attach insmod $HP target_name=cr_target functions=kfree log_burst=1
sleep 1
check foreign.detach rmmod hp_patcher
site=$(log_since | grep 'hp_patcher: site hits kfree' | grep 'cr_round+' | head -n 1 | sed 's/.* at \(cr_round+0x[0-9a-f]*\)\/.*/\1/')
sites_before=$(log_since | grep -o 'cr_target: [0-9]* sites' | tail -n 1 | awk '{ print $2 }')
echo "p:hp_foreign cr_target:$site" >> /sys/kernel/tracing/kprobe_events
echo 1 > /sys/kernel/tracing/events/kprobes/hp_foreign/enable
check foreign.attach_beside_probe insmod $HP target_name=cr_target functions=kfree log_burst=1
expect_log_text foreign.warned "kfree call already probed by someone else: skipped at $site/"
sites_after=$(log_since | grep -o 'cr_target: [0-9]* sites' | tail -n 1 | awk '{ print $2 }')
expect_eq foreign.one_site_fewer "$sites_after" "$((sites_before - 1))"
sleep 1
check foreign.detach_beside_probe rmmod hp_patcher
hits=$(grep hp_foreign /sys/kernel/tracing/kprobe_profile | awk '{ print $2 }')
if [ "${hits:-0}" -gt 0 ]; then pass foreign.their_probe_still_works; else fail foreign.their_probe_still_works "hits=$hits"; fi
echo 0 > /sys/kernel/tracing/events/kprobes/hp_foreign/enable
echo "-:hp_foreign" >> /sys/kernel/tracing/kprobe_events
check bad.target_unload rmmod cr_target
