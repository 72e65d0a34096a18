# The demo: attach to a running cr_target, show what is intercepted, detach.
. /scripts/lib.sh
mark demo
echo "== insmod cr_target.ko (the running 'driver')"
insmod /modules/cr_target.ko
sleep 1
echo "== insmod hp_patcher.ko target_name=cr_target log_burst=12"
insmod $HP target_name=cr_target log_burst=12
log_since | grep -E 'hp_patcher: (cr_target|attached)'
sleep 2
echo "== intercepted calls (dmesg | grep hp_patcher)"
log_since | grep 'hp_patcher: .* from ' | head -n 12
echo "== rmmod hp_patcher (cr_target keeps running)"
rmmod hp_patcher
log_since | grep -E 'hp_patcher: (detached|cr_target text)'
sleep 1
echo "== cr_target still running: $(cr_count rounds) rounds"
rmmod cr_target
