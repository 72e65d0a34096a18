# Helpers for the guest scripts. Every check prints one line:
#   HPTEST <check> PASS        or        HPTEST <check> FAIL <why>
# and the host counts them. HPINFO lines carry measurements.

CR=/sys/kernel/debug/cr_target
HP=/modules/hp_patcher.ko
# %p hashes print 8 hex digits on i386, 16 on x86_64.
case $(uname -m) in
i?86) PTR='[0-9a-f]{8}' ;;
*) PTR='[0-9a-f]{16}' ;;
esac
# cr_target's catalogue call sites in its core text, and how many of them
# are tail calls, counted by the host from the built cr_target.ko's
# relocations (they follow the compiler: 34 and 1 with gcc-12 on x86_64,
# 36 with gcc-14; 37 and none on i386, whose frame pointers come with
# -fno-optimize-sibling-calls).
[ -f /modules/cr_target.sites ] && read CR_SITES CR_TAIL_CALLS < /modules/cr_target.sites

pass() { echo "HPTEST $1 PASS"; }
fail() { echo "HPTEST $1 FAIL $2"; }
# skip CHECK WHY: the kernel under test cannot support CHECK (listed at the
# run's end, neither passed nor failed).
skip() { echo "HPSKIP $1 $2"; }
# have_btf: the kernel has BTF (the debug kernel is built without DWARF,
# and so without BTF, to halve its build).
have_btf() { [ -s /sys/kernel/btf/vmlinux ]; }

# check NAME COMMAND...: passes when the command succeeds.
check() {
	name=$1; shift
	if "$@" >/dev/null 2>&1; then pass "$name"; else fail "$name" "command failed: $*"; fi
}

# expect_eq NAME GOT WANT
expect_eq() {
	if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "got '$2', want '$3'"; fi
}

# Marks the kernel log so that `log_since` shows only this script's lines.
mark() { MARK="hp-mark-$1-$$"; echo "$MARK" > /dev/kmsg; }
log_since() { dmesg | sed -n "/$MARK/,\$p"; }

# wait_log PATTERN: waits up to 10 s for a log line since the mark. A
# detach's report comes from a worker once its callers are out (after a
# target's unload, asynchronously); everything else is logged at once.
wait_log() {
	_wait_log_n=0
	while ! log_since | grep -qE "$1" && [ $_wait_log_n -lt 50 ]; do
		sleep 0.2; _wait_log_n=$((_wait_log_n + 1))
	done
}

# wait_gate WHICH: waits (up to 120 s: a debug kernel under TCG is slow)
# until cr_target is held at its WHICH gate (init or exit).
wait_gate() {
	_wait_gate_n=0
	while ! log_since | grep -q "cr_target: $1 gate shut" && [ $_wait_gate_n -lt 600 ]; do
		sleep 0.2; _wait_gate_n=$((_wait_gate_n + 1))
	done
}

# wait_hpctl_tracing: waits (up to 120 s) until an `hpctl trace` has
# enabled hp_call in its tracefs instance: a gate a test opens once the
# reader is ready, where a fixed delay closes before a slow (debug) kernel
# gets there.
wait_hpctl_tracing() {
	_wait_trace_n=0
	while ! cat /sys/kernel/tracing/instances/hpctl-*/events/hp_patcher/hp_call/enable 2>/dev/null | grep -q 1 &&
		[ $_wait_trace_n -lt 600 ]; do
		sleep 0.2; _wait_trace_n=$((_wait_trace_n + 1))
	done
}

# expect_log NAME PATTERN: the kernel log since the mark matches PATTERN
# (within wait_log's 10 s).
expect_log() {
	wait_log "$2"
	if log_since | grep -qE "$2"; then pass "$1"; else fail "$1" "no log line matches: $2"; fi
}

# expect_log_text NAME TEXT: like expect_log, for a fixed string.
expect_log_text() {
	if log_since | grep -qF "$2"; then pass "$1"; else fail "$1" "no log line contains: $2"; fi
}

# What busybox insmod says for the errno values we return.
EINVAL_TEXT="Invalid argument"
ENOENT_TEXT="unknown symbol in module, or unknown parameter"

# expect_insmod_fails NAME ERRNO-TEXT LOG-PATTERN ARGS...
expect_insmod_fails() {
	name=$1; errtext=$2; pattern=$3; shift 3
	out=$(insmod $HP "$@" 2>&1)
	if [ $? -eq 0 ]; then
		fail "$name" "insmod $* succeeded"; rmmod hp_patcher; return
	fi
	case "$out" in
	*"$errtext"*) pass "$name.errno" ;;
	*) fail "$name.errno" "insmod said: $out" ;;
	esac
	expect_log "$name.message" "$pattern"
	if grep -q '^hp_patcher ' /proc/modules; then fail "$name.unloaded" "hp_patcher stayed loaded"; else pass "$name.unloaded"; fi
	expect_no_probes "$name.no_probes"
}

# expect_no_probes NAME: no kprobe is left on cr_target's or our code.
expect_no_probes() {
	if grep -q 'hp_patcher\|cr_target\|cr_twin' /sys/kernel/debug/kprobes/list 2>/dev/null; then
		fail "$1" "kprobes left: $(cat /sys/kernel/debug/kprobes/list)"
	else
		pass "$1"
	fi
}

# Unloads hp_patcher and cr_target if loaded; succeeds when neither is left.
unload_all() {
	grep -q '^hp_patcher ' /proc/modules && rmmod hp_patcher
	grep -q '^cr_target ' /proc/modules && rmmod cr_target
	! grep -qE '^(hp_patcher|cr_target) ' /proc/modules
}

# Counter of one function in cr_target (all contexts summed).
# cr_target's intercepted functions (rows with @ count calls from sites
# kprobes refuses, which are not intercepted at all).
cr_functions() { awk 'NF == 2 && $1 != "rounds" && $1 !~ /@/ { print $1 }' $CR/counters; }
cr_count() { awk -v f="$1" 'NF == 2 && $1 == f { print $2 }' $CR/counters; }

# The symbol one kind of call compiles to on this kernel, e.g. `sym kmalloc`
# is __kmalloc_noprof on 6.12 and __kmalloc on 6.1 (cr_target must be loaded).
sym() { awk -v r="$1" '$1 == r { print $2 }' $CR/symbols; }

# The last detach summary line of this script's log.
last_summary() { log_since | grep 'hp_patcher: detached from' | tail -n 1; }

# Hits of one function in the last detach summary (0 when absent).
hp_hits() {
	last_summary | tr ' ' '\n' | tr -d ';' |
		awk -F= -v f="$1" 'BEGIN { n = 0 } $1 == f { n = $2 } END { print n }'
}

# A field "word N" from the last detach summary, e.g. hp_summary logged.
hp_summary() {
	last_summary | awk -v w="$1" '{ for (i = 1; i < NF; i++) if ($i == w) print $(i + 1) }' | tr -d ':;'
}

# Total calls in the last detach summary.
hp_total() {
	last_summary | awk '{ for (i = 2; i <= NF; i++) if ($i == "calls") print $(i - 1) }'
}

uptime_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }

ENOMEM_TEXT="Cannot allocate memory"

# A /proc/meminfo field in kB, e.g. meminfo SUnreclaim.
meminfo() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }

# expect_growth_below NAME BEFORE AFTER CYCLES MAX_KB_PER_CYCLE
expect_growth_below() {
	grown=$(($3 - $2))
	if [ $grown -lt $(($4 * $5)) ]; then pass "$1"
	else fail "$1" "grew by $grown kB over $4 cycles (limit $5 kB per cycle)"; fi
}

# Catalogue names for the running kernel: 6.1 has no _noprof suffixes.
case $(uname -r) in
6.1.*) KMALLOC=__kmalloc; KMALLOC_NODE=__kmalloc_node; KMALLOC_CACHE=kmalloc_trace ;;
*) KMALLOC=__kmalloc_noprof; KMALLOC_NODE=__kmalloc_node_noprof; KMALLOC_CACHE=__kmalloc_cache_noprof ;;
esac

# ---- /dev/hp_patcher ----
HPDEV=/dev/hp_patcher

# hpcmd COMMAND: one write of COMMAND to the control device, then its reply
# (read on the same open file). The exit status is the write's; a failed
# write's errno text goes to stderr (dd says it: the shell's printf would
# not), its reply (`error ...`) to stdout.
hpcmd() { printf '%s' "$1" | hpwrite; }
# hpwrite: the same for the bytes on stdin, written in one write().
hpwrite() {
	exec 3<>$HPDEV || return 1
	dd bs=128k 2>/tmp/hpwrite.err >&3
	rc=$?
	cat <&3
	exec 3>&-
	grep -v 'records\|bytes' /tmp/hpwrite.err >&2
	return $rc
}
# The targets, without their hit counts (which move while they run).
targets_now() { hpcmd targets | sed 's/ hits=[0-9]*//'; }

# park_caller NAME TICKET: attaches to cr_target's calls of cr_gate_wait
# and has cr_target make one, which sleeps in cr_callee until its gate is
# written; checks NAME.attach and NAME.inflight (the caller is inside).
park_caller() {
	expect_eq $1.attach "$(hpcmd "attach cr_target fn=cr_gate_wait:x sink=printk" | field state cr_target)" attached
	echo $2 > $CR/gate
	_park_n=0
	while [ "$(hpcmd stats | field inflight cr_gate_wait)" != 1 ] && [ $_park_n -lt 50 ]; do
		sleep 0.1; _park_n=$((_park_n + 1))
	done
	expect_eq $1.inflight "$(hpcmd stats | field inflight cr_gate_wait)" 1
}

# expect_refused NAME ERRNO-TEXT COMMAND: the write fails with that errno,
# the reply and the log say why, and the targets are as they were.
expect_refused() {
	before=$(targets_now)
	out=$(hpcmd "$3" 2>&1)
	if [ $? -eq 0 ]; then fail "$1" "'$3' was accepted: $out"; return; fi
	case "$out" in
	*"$2"*) case "$out" in *error*) pass "$1" ;; *) fail "$1" "no error reply: $out" ;; esac ;;
	*) fail "$1" "'$3' said: $out" ;;
	esac
	expect_eq "$1.unchanged" "$(targets_now)" "$before"
}

# The value of KEY in the first reply line of kind KIND that has name=NAME.
field() { awk -v k="$1" -v n="name=$2" '$0 ~ (" " n " ") || $0 ~ (" " n "$") { for (i = 2; i <= NF; i++) if (index($i, k "=") == 1) { print substr($i, length(k) + 2); exit } }'; }
target_field() { hpcmd targets | field "$2" "$1"; }

# as_user COMMAND: runs COMMAND as an unprivileged user (uid 1000), output
# and errors on stdout.
as_user() {
	mkdir -p /etc
	grep -q '^hpuser:' /etc/passwd 2>/dev/null || {
		echo 'hpuser:x:1000:1000::/tmp:/bin/sh' >> /etc/passwd
		echo 'hpuser:x:1000:' >> /etc/group
	}
	su hpuser -c "$1" 2>&1
}

# mount_ext4_ramdisk NAME: loads Debian's ext4 and brd (ext4.order has
# ext4's soft dependencies too, crc32c on 6.x: nobody runs modprobe here),
# writes the lab's ext4 image to /dev/ram0 and mounts it on /mnt; checks
# NAME.load_<module> and NAME.mount.
mount_ext4_ramdisk() {
	for m in $(cat /modules/ext4.order /modules/brd.order); do
		grep -q "^$(echo $m | tr - _) " /proc/modules || insmod /modules/$m.ko || fail $1.load_$m "insmod $m"
	done
	dd if=/ext4.img of=/dev/ram0 bs=1M 2>/dev/null
	check $1.mount mount -t ext4 /dev/ram0 /mnt
}
