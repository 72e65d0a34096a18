# The demo (`lab/run demo`): an hpctl session on cr_target, a module that
# is already loaded and running, as README shows it. Its lines start with
# HPDEMO: the host prints those, and keeps the whole guest log in a file.
. /scripts/lib.sh
mark demo
HPCTL=/modules/hpctl
say() { echo "HPDEMO $*"; }
# show FIRST LAST COMMAND...: the command, then the first and last lines of its output.
show() {
	first=$1 last=$2; shift 2
	say "# ${*#/modules/}"
	"$@" > /tmp/demo.out 2>&1
	if [ "$(wc -l < /tmp/demo.out)" -gt $((first + last)) ]; then
		head -n "$first" /tmp/demo.out | sed 's/^/HPDEMO /'
		say "   ..."
		tail -n "$last" /tmp/demo.out | sed 's/^/HPDEMO /'
	else
		sed 's/^/HPDEMO /' /tmp/demo.out
	fi
}
insmod /modules/cr_target.ko
sleep 1
say "cr_target is loaded and running: $(cr_count rounds) rounds so far"
show 4 1 $HPCTL plan cr_target --fn kstrdup,kfree,cr_mixed
show 1 0 $HPCTL attach cr_target --fn kstrdup,kfree,cr_mixed
show 6 1 $HPCTL trace cr_target --duration 2
show 4 0 $HPCTL stats
show 1 0 $HPCTL detach cr_target
say "$(log_since | grep -m 1 'text identical' | sed 's/.*hp_patcher: //')"
say "cr_target kept running: $(cr_count rounds) rounds so far"
rmmod cr_target
rmmod hp_patcher
