# hpctl end to end: it loads hp_patcher.ko from beside itself, attaches,
# and streams hp_call events in binary form from a tracefs instance. Exact
# accounting over a quiesced window: per function, cr_target's own count of
# its calls equals the events hpctl received plus the drops it reported;
# again with a tiny ring buffer, which must drop.
. /scripts/lib.sh
mark events
HPCTL=/modules/hpctl
grep -q '^hp_patcher ' /proc/modules && rmmod hp_patcher
grep -q '^cr_target ' /proc/modules || insmod /modules/cr_target.ko

out=$($HPCTL attach cr_target 2>&1)
echo "$out" | sed 's/^/HPINFO events: attach: /'
grep -q '^hp_patcher ' /proc/modules && pass events.hpctl_loads_module || fail events.hpctl_loads_module "$out"
expect_eq events.attached "$(target_field cr_target state)" attached
$HPCTL status | sed 's/^/HPINFO events: status: /'

now() { cut -d' ' -f1 /proc/uptime; }
# A summary field of one function: summary_of FILE FUNCTION KEY, where FILE
# holds the summary line alone (the stream is too long to scan per field).
summary_of() {
	tr '{' '\n' < "$1" | grep "\"function\":\"$2\"" |
		awk -v k="\"$3\":" '{ i = index($0, k); if (i) { v = substr($0, i + length(k)); sub(/[,}].*/, "", v); print v } }'
}

# window NAME BUFFER_KB: one quiesced tracing window, checked.
window() {
	name=events.$1
	echo 1 > $CR/pause
	for f in $(cr_functions); do eval "before_$f=$(cr_count $f)"; done
	$HPCTL trace cr_target --json --buffer-kb $2 > /tmp/$1.jsonl 2> /tmp/$1.err &
	pid=$!
	t0=$(now)
	n=0
	until grep -q '^hpctl: tracing' /tmp/$1.err; do
		n=$((n + 1)); [ $n -gt 300 ] && break; sleep 0.1
	done
	t1=$(now)
	echo 0 > $CR/pause
	sleep 3
	echo 1 > $CR/pause
	t2=$(now)
	kill -TERM $pid
	wait $pid
	expect_eq $name.exit "$?" 0
	echo "HPINFO $name: hpctl ready after $t0..$t1 s, stopped at $t2, done at $(now)"
	tail -n 1 /tmp/$1.err | sed "s/^/HPINFO $name: /"
	bad=0 calls=0
	grep '"type":"summary"' /tmp/$1.jsonl > /tmp/$1.summary
	for f in $(cr_functions); do
		eval "delta=\$(( $(cr_count $f) - before_$f ))"
		got=0
		for k in received ring_dropped module_dropped; do
			v=$(summary_of /tmp/$1.summary $f $k)
			got=$((got + ${v:-0}))
		done
		calls=$((calls + delta))
		if [ "$delta" != "$got" ]; then
			bad=1; fail $name.$f "cr_target made $delta calls, hpctl accounts for $got"
		fi
	done
	if [ $bad = 0 ]; then
		pass $name.every_call_accounted
	else
		# Which site fell short, and what kprobes holds there.
		$HPCTL sites cr_target | sed "s/^/HPINFO $name: sites: /"
		sed "s/^/HPINFO $name: kprobes: /" /sys/kernel/debug/kprobes/list
		sed "s/^/HPINFO $name: summary: /" /tmp/$1.summary
	fi
	[ $calls -gt 0 ] && pass $name.calls || fail $name.calls "no call in the window"
	summary=$(cat /tmp/$1.summary)
	received=$(echo "$summary" | sed 's/.*"totals":{"received":\([0-9]*\).*/\1/')
	expect_eq $name.call_lines "$(grep -c '"type":"call"' /tmp/$1.jsonl)" "$received"
	# hp_patcher's events minus what was read equals the ring buffer's own count.
	ring=$(echo "$summary" | sed 's/^{[^{]*"ring_dropped":\([0-9]*\).*/\1/')
	attributed=$(echo "$summary" | sed 's/.*"totals":{[^}]*"ring_dropped":\(-*[0-9]*\).*/\1/')
	expect_eq $name.ring_count "$attributed" "$ring"
	echo "HPINFO $name: $calls calls in 3 s ($((calls / 3))/s), $received events received, $ring dropped by the ring buffer"
	RING_DROPPED=$ring
}

window default 1024
# How hpctl fares in between, for the record: the equations must hold.
window small 64
window tiny 4
[ "$RING_DROPPED" -gt 0 ] && pass events.tiny.drops || fail events.tiny.drops "a 4 kB buffer dropped nothing"

# The call rate at which hpctl's reader falls behind its default buffer
# (1 MB per CPU): cr_target's pause between rounds shrinks to none. The rate
# is measured, not asserted; the accounting must hold at every rate.
P=/sys/module/cr_target/parameters/round_sleep_us
for us in 1200 800 500 0; do
	echo $us > $P
	window rate_$us 1024
done
echo 2000 > $P
echo 0 > $CR/pause

# The human stream, and the listings.
$HPCTL trace cr_target --duration 1 > /tmp/human.txt 2>/dev/null
grep -qE "cr_round\+0x[0-9a-f]+ \[cr_target\]" /tmp/human.txt && pass events.human_sites || fail events.human_sites "$(head -2 /tmp/human.txt)"
grep -qE "flags=GFP_KERNEL" /tmp/human.txt && pass events.human_gfp || fail events.human_gfp "$(head -2 /tmp/human.txt)"
head -n 3 /tmp/human.txt | sed 's/^/HPINFO events: trace: /'
$HPCTL stats | head -n 5 | sed 's/^/HPINFO events: stats: /'
$HPCTL plan cr_twin > /tmp/plan.txt 2>&1 || true
out=$($HPCTL detach cr_target 2>&1) && pass events.detach || fail events.detach "$out"
out=$($HPCTL attach no_such_module 2>&1)
[ $? -ne 0 ] && echo "$out" | grep -q 'not loaded' && pass events.error_not_loaded || fail events.error_not_loaded "$out"
out=$(as_user "$HPCTL status")
[ $? -ne 0 ] && pass events.error_not_root || fail events.error_not_root "$out"
echo "HPINFO events: as a user: $out"
check events.unload rmmod hp_patcher
expect_no_probes events.no_probes
