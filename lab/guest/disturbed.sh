# Someone else's kprobe on a multi-byte instruction before a call (as an
# int3, then optimized into a jmp) must not make sites go missing silently:
# the function is reported by name with the reason, and every site is still
# found. /modules/probe_point lists candidate instructions, best first,
# computed on the host from cr_target.ko.
. /scripts/lib.sh
mark disturbed
T=/sys/kernel/tracing
point=$(head -n 1 /modules/probe_point)
insmod /modules/cr_target.ko
sleep 1
sites() { log_since | grep -o 'cr_target: [0-9]* sites' | tail -n 1 | awk '{ print $2 }'; }
check disturbed.plain_attach insmod $HP target_name=cr_target log_burst=1
check disturbed.plain_detach rmmod hp_patcher
plain=$(sites)

# their_probe: someone's kprobe_event at $point.
their_probe() {
	echo "p:hp_theirs cr_target:$point" >> $T/kprobe_events
	echo 1 > $T/events/kprobes/hp_theirs/enable
}
remove_their_probe() {
	echo 0 > $T/events/kprobes/hp_theirs/enable
	echo "-:hp_theirs" >> $T/kprobe_events
}
# optimized_probe: the first candidate kprobes optimizes into a jmp.
optimized_probe() {
	for point in $(cat /modules/probe_point); do
		their_probe
		# Their int3 is in the text at once; the list may say OPTIMIZED a
		# little before the jmp replaces it, so wait for the text to change.
		armed=$(cat $CR/text_crc)
		optimized() { grep -q " $point .*OPTIMIZED" /sys/kernel/debug/kprobes/list && [ "$(cat $CR/text_crc)" != "$armed" ]; }
		n=0
		while ! optimized && [ $n -lt 30 ]; do usleep 100000; n=$((n + 1)); done
		optimized && return 0
		echo "HPINFO disturbed: kprobes did not optimize $point"
		remove_their_probe
	done
	return 1
}

# probe_with OPTIMIZE NAME: their probe, then our attach beside it.
probe_with() {
	echo $1 > /proc/sys/debug/kprobes-optimization
	if [ $1 = 0 ]; then
		their_probe
	elif optimized_probe; then
		pass disturbed.$2.optimized
	else
		fail disturbed.$2.optimized "no candidate was optimized: $(cat /modules/probe_point)"
		return
	fi
	mark disturbed_$2
	check disturbed.$2.attach insmod $HP target_name=cr_target log_burst=1
	check disturbed.$2.detach rmmod hp_patcher
	remove_their_probe
	expect_eq disturbed.$2.all_sites_found "$(sites)" "$plain"
	expect_log disturbed.$2.text_identical 'hp_patcher: cr_target text identical to before attach'
	hits=$(log_since | grep -c 'hp_patcher: decoding disturbed')
	echo "HPINFO disturbed.$2: $(log_since | grep 'hp_patcher: decoding disturbed' | sed 's/.*hp_patcher: //')"
	expect_eq disturbed.$2.reported_once "$hits" 1
}
# expect_disturbed NAME REASON: reported at the probed instruction, by name.
expect_disturbed() {
	if log_since | grep -F "hp_patcher: decoding disturbed by $2" | grep -qF " at $point/"; then pass "$1"
	else fail "$1" "no report of '$2' at $point"; fi
}
probe_with 0 int3
expect_disturbed disturbed.int3.reason "an int3 the compiler did not put there"
probe_with 1 jmp
expect_disturbed disturbed.jmp.reason "a jump out of the module to no known code"
check disturbed.target_unload rmmod cr_target
