# Unloading the target while attached detaches us first, through the module
# notifier; unloading hp_patcher afterwards is clean, and attaching again to
# a fresh copy of the target works.
. /scripts/lib.sh
mark target_unload
insmod /modules/cr_target.ko
check unload.attach insmod $HP target_name=cr_target log_burst=5
sleep 1
check unload.rmmod_target rmmod cr_target
expect_log unload.noticed 'hp_patcher: cr_target is being unloaded: detaching'
expect_log unload.detached 'hp_patcher: detached from cr_target \(target unloaded\): [0-9]+ calls'
expect_log unload.text_identical 'hp_patcher: cr_target text identical to before attach'
check unload.rmmod_patcher rmmod hp_patcher
if grep -qE '^(hp_patcher|cr_target) ' /proc/modules; then fail unload.nothing_left "$(cat /proc/modules)"; else pass unload.nothing_left; fi
insmod /modules/cr_target.ko
check unload.reattach insmod $HP target_name=cr_target log_burst=5
sleep 1
check unload.redetach rmmod hp_patcher
check unload.cleanup rmmod cr_target
