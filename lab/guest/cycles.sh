# Twenty attach/detach cycles while the target calls on both CPUs.
. /scripts/lib.sh
mark cycles
insmod /modules/cr_target.ko
sleep 1
crc=$(cat $CR/text_crc)
ok=0
i=0
while [ $i -lt 20 ]; do
	i=$((i + 1))
	insmod $HP target_name=cr_target log_burst=2 || { fail cycles.attach.$i "insmod failed"; continue; }
	usleep 300000
	rmmod hp_patcher || { fail cycles.detach.$i "rmmod failed"; continue; }
	[ "$(cat $CR/text_crc)" = "$crc" ] || { fail cycles.crc.$i "text differs after detach"; continue; }
	ok=$((ok + 1))
done
expect_eq cycles.all_clean "$ok" 20
expect_eq cycles.identical_lines "$(log_since | grep -c 'cr_target text identical to before attach')" 20
calls=$(log_since | grep 'detached from cr_target' | awk '{ for (i = 2; i <= NF; i++) if ($i == "calls") s += $(i - 1) } END { print s + 0 }')
echo "HPINFO cycles: $calls calls intercepted over 20 cycles"
if [ "$calls" -gt 0 ]; then pass cycles.intercepted; else fail cycles.intercepted "no call seen"; fi
check cycles.target_unload rmmod cr_target
