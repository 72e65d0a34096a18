# Two targets at once, attached and detached at run time in both orders
# while both keep calling; each one's text is identical to before.
. /scripts/lib.sh
mark targets
insmod /modules/cr_target.ko
insmod /modules/cr_twin.ko
insmod $HP
crc_target=$(cat /sys/kernel/debug/cr_target/text_crc)
crc_twin=$(cat /sys/kernel/debug/cr_twin/text_crc)

hits() { target_field "$1" hits; }
# still_calling NAME TARGET: TARGET's hits grow while we watch.
still_calling() {
	h1=$(hits "$2"); sleep 1; h2=$(hits "$2")
	[ "${h2:-0}" -gt "${h1:-0}" ] && pass "$1" || fail "$1" "$2 hits $h1 -> $h2"
}

for order in "cr_target cr_twin" "cr_twin cr_target"; do
	set -- $order
	first=$1 second=$2
	tag=targets.$first
	expect_eq $tag.attach_first "$(hpcmd "attach $first sink=none" | field state $first)" attached
	expect_eq $tag.attach_second "$(hpcmd "attach $second sink=none" | field state $second)" attached
	expect_eq $tag.two "$(hpcmd targets | grep -c 'state=attached')" 2
	still_calling $tag.first_calls $first
	still_calling $tag.second_calls $second
	hpcmd "detach $first" > /dev/null
	expect_eq $tag.one_left "$(hpcmd targets | grep -c 'state=attached')" 1
	if grep -q $first /sys/kernel/debug/kprobes/list; then fail $tag.first_unprobed "probes left"; else pass $tag.first_unprobed; fi
	still_calling $tag.second_still_calls $second
	hpcmd "detach $second" > /dev/null
	expect_eq $tag.crc_target "$(cat /sys/kernel/debug/cr_target/text_crc)" "$crc_target"
	expect_eq $tag.crc_twin "$(cat /sys/kernel/debug/cr_twin/text_crc)" "$crc_twin"
done
expect_eq targets.identical "$(log_since | grep -cE 'hp_patcher: cr_(target|twin) text identical to before attach')" 4
expect_eq targets.differs "$(log_since | grep -c 'text differs')" 0
check targets.unload rmmod hp_patcher
expect_no_probes targets.no_probes
rmmod cr_twin
rmmod cr_target
