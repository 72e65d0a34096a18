# For `cargo xtask bench` (not part of `test`): what hp_patcher adds per
# call. The guest runs under QEMU's -icount shift=0, where a nanosecond is
# one guest instruction. cr_target, paused, calls kstrdup(NULL) (an
# allocator that returns at once) and kfree(NULL) N times from one site
# each; every configuration runs ROUNDS times, one line per round:
#   HPBENCH <configuration> <function>[@bystander] <total ns> <calls>
. /scripts/lib.sh
mark bench
N=20000
ROUNDS=5
insmod /modules/cr_target.ko start_paused=1
# The bystander: the same code under another name, never attached; what it
# pays for each configuration is what the rest of the kernel pays.
insmod /modules/cr_twin.ko start_paused=1
TWIN=/sys/kernel/debug/cr_twin
insmod $HP || echo "HPBENCH-ERROR insmod hp_patcher failed"
kmalloc=$(sym kmalloc)

# `cargo xtask bench --only a,b` puts hp_bench_only=a,b on the command
# line: only those configurations (and the floors) are measured.
# A profile (hp_bench_profile, with hp_bench_fn=<function>) takes ten
# times the calls, of one function, so that they outweigh the boot's.
ONLY=$(sed -n 's/.*hp_bench_only=\([^ ]*\).*/\1/p' /proc/cmdline)
FN=$(sed -n 's/.*hp_bench_fn=\([^ ]*\).*/\1/p' /proc/cmdline)
! grep -q hp_bench_profile /proc/cmdline || N=200000
measure() {
	case ",$ONLY,kprobe_redirect," in *",$1,"*) ;; ,,*) ;; *) return ;; esac
	for f in $2; do
		[ -z "$FN" ] || [ "$f" = "$FN" ] || continue
		r=0
		while [ $r -lt $ROUNDS ]; do
			r=$((r + 1))
			echo "$f $N" > $CR/bench
			echo "HPBENCH $1 $f $(cat $CR/bench) $N"
			echo "$f $N" > $TWIN/bench
			echo "HPBENCH $1 $f@bystander $(cat $TWIN/bench) $N"
		done
	done
}
command() { hpcmd "$1" > /dev/null || echo "HPBENCH-ERROR refused: $1"; }

measure nothing "kstrdup kfree"

# The floors, at the same call sites: a kprobe whose pre-handler does
# nothing (kprobes emulates the call), and one that only redirects it.
T=/sys/kernel/tracing
site_of() { hpcmd "plan cr_target fn=$1" | awk -v c="caller=$2+" '{ for (i = 1; i <= NF; i++) if (index($i, c) == 1) { s = substr($i, 8); sub(/\/.*/, "", s); print s; exit } }'; }
for f in kstrdup kfree; do
	site=$(site_of $f cr_bench_$f)
	[ -n "$site" ] || { echo "HPBENCH-ERROR no site of $f in cr_bench_$f"; continue; }
	echo "HPINFO bench: the $f site is $site"
	for mode in bare redirect; do
		# Qualified: cr_twin has the same symbols.
		if insmod /modules/kp_floor.ko sym=cr_target:${site%+*} off=$((${site#*+})) mode=$mode; then
			measure kprobe_$mode $f
			rmmod kp_floor
		else
			echo "HPBENCH-ERROR kp_floor mode=$mode at $site refused"
		fi
	done
	# The kernel's own tracers, each with its event on and nobody reading
	# (the ring buffer overwrites): a kprobe event at the call site, which
	# records the argument register only; kprobe events on the callee's
	# entry and return, and fprobe's; the function tracer filtered to it.
	tracer() {
		echo "$2" > $T/dynamic_events || { echo "HPINFO bench: $1 not available: '$2' refused"; return; }
		[ -z "$3" ] || echo "$3" >> $T/dynamic_events
		echo 1 > $T/events/hp_bench/enable
		measure $1 $f
		echo 0 > $T/events/hp_bench/enable
		echo > $T/dynamic_events
	}
	tracer kprobe_event_site "p:hp_bench/site cr_target:$site arg1=%di"
	tracer kprobe_events_callee "p:hp_bench/entry $f" "r:hp_bench/exit $f ret=\$retval"
	tracer fprobe_callee "f:hp_bench/fentry $f" "f:hp_bench/fexit $f%return ret=\$retval"
	echo $f > $T/set_ftrace_filter
	echo function > $T/current_tracer
	measure function_tracer $f
	echo nop > $T/current_tracer
	echo > $T/set_ftrace_filter
	echo > $T/trace
done

command "attach cr_target fn=kstrdup,kfree,$kmalloc sink=none"
measure sink_none "kstrdup kfree"
# A rule on another function: the kstrdup site's mask stays 0.
command "fail cr_target fn=$kmalloc every=1000000000"
measure rule_elsewhere kstrdup
command "fail cr_target clear"
# Rules that select the kstrdup site and never fire.
command "fail cr_target fn=kstrdup every=1000000000"
measure rule_every_unfired kstrdup
command "fail cr_target clear"
command "fail cr_target fn=kstrdup pid=1"
measure rule_pid_unfired kstrdup
hpcmd "faults cr_target" | grep '^fault ' | sed 's/^/HPINFO bench: /'
command "fail cr_target clear"
command "detach cr_target"
# The other sinks: trace with hp_call on in the top instance and nobody
# reading; printk, rate-limited (most calls become suppressed).
command "attach cr_target fn=kstrdup,kfree sink=trace"
# First with hp_call off: the trampoline and hooks without the event.
measure sink_trace_off "kstrdup kfree"
echo 1 > $T/events/hp_patcher/hp_call/enable
measure sink_trace "kstrdup kfree"
echo 0 > $T/events/hp_patcher/hp_call/enable
echo > $T/trace
command "detach cr_target"
# How fast `hpctl trace` takes events: cr_target, on CPU 0, calls kfree
# in bursts a millisecond apart (BURST calls a burst: a steady rate), and
# at last at full speed, while hpctl reads on CPU 1 with a 64 kB buffer
# per CPU. Under -icount the guest's clock counts instructions, so the
# rates are the same on any host: HPRATE <burst|max> <calls> <their guest
# ns> <received> <ring-buffer drops> <hpctl's user and system ticks>.
rate_step() {
	# Gone first: the wait below must not find the last step's line.
	rm -f /tmp/rate.err
	taskset 2 /modules/hpctl trace cr_target --buffer-kb 64 > /dev/null 2> /tmp/rate.err &
	pid=$!
	n=0
	until grep -q '^hpctl: tracing' /tmp/rate.err; do
		n=$((n + 1)); [ $n -gt 600 ] && break; sleep 0.1
	done
	taskset 1 sh -c "echo 'kfree $2 $3' > $CR/bench"
	sleep 1
	# hpctl's CPU time (user, system; in ticks of 1/100 s): how busy the reader was.
	cpu_ticks=$(awk '{ print $14, $15 }' /proc/$pid/stat)
	kill -TERM $pid
	wait $pid
	summary=$(grep 'events received' /tmp/rate.err | tail -n 1)
	echo "HPINFO trace_rate $1: $(grep -v '^hpctl: tracing' /tmp/rate.err | tr '\n' ' ')"
	received=$(echo "$summary" | sed -n 's/^hpctl: \([0-9]*\) events received.*/\1/p')
	drops=$(echo "$summary" | sed -n 's/.*, \([0-9]*\) ring-buffer drops.*/\1/p')
	echo "HPRATE $1 $2 $(cat $CR/bench) ${received:-0} ${drops:-0} $cpu_ticks"
	[ -n "$received" ] || echo "HPBENCH-ERROR hpctl trace gave no summary: $(tail -n 3 /tmp/rate.err)"
}
# In the -icount boot only.
if ! grep -q hp_bench_attach /proc/cmdline && case ",$ONLY," in ,,|*,trace_rate,*) true ;; *) false ;; esac; then
	command "attach cr_target fn=kfree sink=trace"
	for burst in 5 10 20 50 100 200; do
		rate_step $burst $((burst * 300)) $burst
	done
	rate_step max 2000000
	command "detach cr_target"
fi
command "attach cr_target fn=kstrdup,kfree sink=printk"
measure sink_printk "kstrdup kfree"
command "detach cr_target"
# The rest runs in the plain-TCG boot only (hp_bench_attach on the command
# line): btrfs's 971 sites take minutes an attach under -icount, and
# memory and attach times need no instruction counts.
if ! grep -q hp_bench_attach /proc/cmdline; then
	# For a profile of the guest's instructions by address (bench --only
	# --profile, xtask/src/profile.rs): where the kernel and the modules are.
	grep -q hp_bench_profile /proc/cmdline && awk '$2 ~ /^[tT]$/ { print "HPSYM", $0 }' /proc/kallsyms
	rmmod hp_patcher
	echo "HPBENCH-END"
	exit 0
fi

# Kernel memory one attach takes (every catalogue function, sink none),
# once a round, for a small target and a large one, before, while attached
# and after the detach: HPMEM <module> <sites armed> <slab vmalloc percpu
# free, kB> before, attached, detached. Slab is what the objects in use
# take (/proc/slabinfo: active objects times their size), not meminfo's
# slab pages, which keep what planning freed. Free memory, after dropping
# the caches, also sees what kmalloc takes straight from the page
# allocator (the copy of the target's text, the sites' arrays): MemFree
# plus the free pages parked in per-CPU lists (/proc/zoneinfo's pageset
# counts), which MemFree leaves out: a detach's frees land there, 4 MB of
# them for btrfs. stat_refresh folds every CPU's pending counts into what
# meminfo shows.
meminfo_now() {
	sync
	echo 3 > /proc/sys/vm/drop_caches
	echo 1 > /proc/sys/vm/stat_refresh
	s=$(awk 'NR > 2 { b += $2 * $4 } END { printf "%d", b / 1024 }' /proc/slabinfo)
	c=$(awk '$1 == "count:" { n += $2 } END { print n * 4 }' /proc/zoneinfo)
	awk -v s=$s -v c=$c '$1 == "VmallocUsed:" { v = $2 } $1 == "Percpu:" { p = $2 } $1 == "MemFree:" { f = $2 } END { print s, v, p, f + c }' /proc/meminfo
}
memory() {
	r=0
	while [ $r -lt 3 ]; do
		r=$((r + 1))
		before=$(meminfo_now)
		command "attach $1 sink=none"
		attached=$(meminfo_now)
		sites=$(target_field $1 armed)
		command "detach $1"
		echo "HPMEM $1 $sites $before $attached $(meminfo_now)"
	done
}
for m in $(cat /modules/btrfs.order); do
	insmod /modules/$m.ko 2>/dev/null || grep -q "^$m " /proc/modules || echo "HPBENCH-ERROR insmod $m"
done
memory cr_target
memory btrfs

# Attach and detach time, against kprobes' own floor: the same addresses
# registered with one register_kprobes() and removed with one
# unregister_kprobes() by kp_batch. Ours is the control command's time
# from a shell (planning, arming, the detach's waits), read from
# kp_batch's clock: HPATTACH <sites> <ours|bare> <attach ns> <detach ns>.
# Selections of btrfs's callees near 1, 10 and 100 sites, and all of them.
rmmod hp_patcher
insmod $HP raw_pointers=1 || echo "HPBENCH-ERROR insmod hp_patcher raw_pointers=1 failed"
insmod /modules/kp_batch.ko || echo "HPBENCH-ERROR insmod kp_batch failed"
KB=/sys/kernel/debug/kp_batch
hpcmd "plan btrfs" | awk '$1 == "site" && / state=planned/ { for (i = 1; i <= NF; i++) if ($i ~ /^callee=/) n[substr($i, 8)]++ }
	END { for (f in n) print n[f], f }' > /tmp/btrfs_callees
nearest() { awk -v want=$1 '{ d = $1 - want; if (d < 0) d = -d; if (best == "" || d < bd) { best = $2; bd = d } } END { print best }' /tmp/btrfs_callees; }
ATTACH_ROUNDS=3
for selection in "fn=$(nearest 1)" "fn=$(nearest 10)" "fn=$(nearest 100)" ""; do
	r=0
	while [ $r -lt $ATTACH_ROUNDS ]; do
		r=$((r + 1))
		t0=$(cat $KB/now)
		command "attach btrfs $selection sink=none"
		t1=$(cat $KB/now)
		sites=$(target_field btrfs armed)
		hpcmd "sites btrfs" | awk '/ state=armed / { for (i = 1; i <= NF; i++) if ($i ~ /^addr=/) print substr($i, 6) }' > /tmp/addrs
		t2=$(cat $KB/now)
		command "detach btrfs"
		t3=$(cat $KB/now)
		echo "HPATTACH $sites ours $((t1 - t0)) $((t3 - t2))"
		echo clear > $KB/ctl
		dd if=/tmp/addrs of=$KB/addrs bs=128k 2>/dev/null || echo "HPBENCH-ERROR kp_batch took no addresses"
		t0=$(cat $KB/now)
		echo arm > $KB/ctl || echo "HPBENCH-ERROR kp_batch arm failed"
		t1=$(cat $KB/now)
		echo disarm > $KB/ctl
		t2=$(cat $KB/now)
		echo "HPATTACH $(wc -l < /tmp/addrs) bare $((t1 - t0)) $((t2 - t1))"
	done
done
rmmod kp_batch
rmmod hp_patcher
echo "HPBENCH-END"
