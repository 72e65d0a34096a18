# Debian's own trace-cmd (packed with its libraries) records hp_call events
# like any other tracepoint. Over a quiesced window, per function, the events
# in its report equal cr_target's own count of the calls it made, and each
# event's site is symbolized from the kallsyms trace-cmd saved.
. /scripts/lib.sh
mark tracecmd
TC=/usr/bin/trace-cmd
grep -q '^cr_target ' /proc/modules || insmod /modules/cr_target.ko
grep -q '^hp_patcher ' /proc/modules || insmod $HP
expect_eq tracecmd.attached "$(hpcmd 'attach cr_target' | field state cr_target)" attached

echo 1 > $CR/pause
for f in $(cr_functions); do eval "before_$f=$(cr_count $f)"; done
# trace-cmd enables the event before it starts the command, and stops
# recording after the command ends: the window is the command's.
$TC record -e hp_patcher:hp_call -b 8192 -o /tmp/tc.dat \
	sh -c "echo 0 > $CR/pause; sleep 2; echo 1 > $CR/pause" > /tmp/tc.rec 2>&1
expect_eq tracecmd.record_exit "$?" 0
tail -n 4 /tmp/tc.rec | sed 's/^/HPINFO tracecmd: record: /'
$TC report -i /tmp/tc.dat 2>/dev/null | grep ' hp_call: ' | tr -s ' ' > /tmp/tc.txt
head -n 2 /tmp/tc.txt | sed 's/^/HPINFO tracecmd: report: /'

bad=0 total=0
for f in $(cr_functions); do
	eval "delta=\$(( $(cr_count $f) - before_$f ))"
	got=$(grep -c " hp_call: cr_target [^ ]* $f(" /tmp/tc.txt)
	total=$((total + delta))
	[ "$delta" = "$got" ] || { bad=1; fail tracecmd.$f "cr_target made $delta calls, trace-cmd recorded $got"; }
done
[ $bad = 0 ] && pass tracecmd.every_call_recorded
[ $total -gt 0 ] && pass tracecmd.calls || fail tracecmd.calls "no call in the window"
expect_eq tracecmd.no_other_lines "$(wc -l < /tmp/tc.txt)" "$total"
grep -q ' hp_call: cr_target cr_round+0x' /tmp/tc.txt &&
	pass tracecmd.site_symbolized || fail tracecmd.site_symbolized "$(head -n 1 /tmp/tc.txt)"
echo "HPINFO tracecmd: $total calls in 2 s, all recorded"

echo 0 > $CR/pause
$TC reset > /dev/null 2>&1
hpcmd 'detach cr_target' | grep -q '^detached name=cr_target' && pass tracecmd.detach || fail tracecmd.detach "no detached line"
expect_log tracecmd.identical "cr_target text identical to before attach"
check tracecmd.unload rmmod hp_patcher
expect_no_probes tracecmd.no_probes
