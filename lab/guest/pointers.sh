# Call lines hash pointers as %p does, so that the log does not give away
# where the kernel lives; the hash is stable within a boot, so an allocation
# still matches its free. raw_pointers=1 logs them as they are.
. /scripts/lib.sh
mark pointers
insmod /modules/cr_target.ko
sleep 1
# Paused while we attach, so that the log window starts with every site armed.
echo 1 > $CR/pause
check pointers.attach insmod $HP target_name=cr_target log_burst=100
echo 0 > $CR/pause
sleep 1
check pointers.detach rmmod hp_patcher
log_since | grep 'hp_patcher: .* from .* cpu=' > /tmp/lines
echo "HPINFO pointers: $(wc -l < /tmp/lines) call lines"
if grep -qE 'ff[0-9a-f]{14}' /tmp/lines; then
	fail pointers.no_raw_address "$(grep -E 'ff[0-9a-f]{14}' /tmp/lines | head -n 1)"
else
	pass pointers.no_raw_address
fi
expect_log pointers.hashed "hp_patcher: kfree\(object=00000000[0-9a-f]{8}\) from"
matched=""
for hash in $(grep -o "$KMALLOC(.*) = 00000000[0-9a-f]*" /tmp/lines | sed 's/.* = //'); do
	grep -q "kfree(object=$hash)" /tmp/lines && { matched=$hash; break; }
done
if [ -n "$matched" ]; then pass pointers.alloc_matches_free
else
	fail pointers.alloc_matches_free "no $KMALLOC result is freed"
	sed 's/^/HPINFO pointers: /' /tmp/lines | head -n 60
fi
mark pointers_raw
# Paused here too: while sites are armed one by one, a tail call's kfree
# (armed before any allocation in cr_target's layout) can fill the burst.
echo 1 > $CR/pause
check pointers.raw_attach insmod $HP target_name=cr_target log_burst=20 raw_pointers=1
echo 0 > $CR/pause
sleep 1
check pointers.raw_detach rmmod hp_patcher
# Any allocation's result: which functions the first log_burst lines show
# depends on which context ran first.
expect_log pointers.raw "hp_patcher: [a-z_]+\(.*\) = ff[0-9a-f]{14} from"
check pointers.target_unload rmmod cr_target
