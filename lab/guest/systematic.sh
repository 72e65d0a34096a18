# Systematic fault injection over cr_target's init, in follow mode: each
# allocation site of its init fails once, in its own load, and each load
# ends as cr_target's code says (init_setup in cr_target.c): a site whose
# NULL it tolerates loads, the others fail with ENOMEM; the leak checker's
# report at each unload is a true leak report, and finds exactly the two
# objects the deliberately leaky error path forgets, at their two sites.
. /scripts/lib.sh
mark systematic
insmod /modules/cr_target.ko start_paused=1
kmalloc=$(sym kmalloc); kzalloc=$(sym kzalloc); vmalloc=$(sym vmalloc)
rmmod cr_target
insmod $HP || fail systematic.load "insmod hp_patcher failed"
expect_eq systematic.follow "$(hpcmd "attach cr_target fn=$kmalloc,$kzalloc,kstrdup,$vmalloc,kfree,vfree sink=none follow leaks" | field state cr_target)" awaited
for f in $kmalloc $kzalloc kstrdup $vmalloc; do
	hpcmd "fail cr_target fn=$f systematic init" >/dev/null || fail systematic.rule_$f "refused"
done
expect_refused systematic.not_with_times "Invalid argument" "fail cr_target fn=$kmalloc systematic times=1"

# Init reaches 5 allocation sites: cr_init_calls' kmalloc, then
# cr_init_setup's kzalloc, kmalloc, kstrdup and vmalloc. Six loads: one
# per site, then one with nothing left to fail. Busybox's insmod tries
# init_module(2) again when finit_module(2) fails, so one insmod may be two
# loads: the loads are counted, and judged, from the kernel log.
loads() { log_since | grep -c 'hp_patcher: cr_target is loading'; }
n=0
while [ "$(loads)" -lt 6 ] && [ $n -lt 12 ]; do
	n=$((n + 1))
	insmod /modules/cr_target.ko init_setup=1 start_paused=1 2>/dev/null && rmmod cr_target
done
results=$(log_since | awk '/hp_patcher: cr_target is loading/ { if (n++) printf " %s", r; r = "ENOMEM" } /cr_target: loaded,/ { r = "ok" } END { printf " %s\n", r }' | cut -d' ' -f1-7)
echo "HPINFO systematic: loads:$results"
expect_eq systematic.loads "$results" " ok ENOMEM ENOMEM ENOMEM ok ok"

hpcmd 'faults cr_target' | sed 's/^/HPINFO systematic: /'
sites() { hpcmd 'faults cr_target' | awk '$1 == "systematic-site" { for (i = 2; i <= NF; i++) if (index($i, "caller=") == 1) { c = substr($i, 8); sub("\\+.*", "", c); print c } }' | sort | tr '\n' ' '; }
expect_eq systematic.sites "$(sites)" "$(echo 'cr_init_calls cr_init_setup cr_init_setup cr_init_setup cr_init_setup' | tr ' ' '\n' | sort | tr '\n' ' ')"
rounds=$(hpcmd 'faults cr_target' | awk '$1 == "systematic-site" { print $4 }' | sort -u | wc -l)
expect_eq systematic.one_site_per_load "$rounds" 5
failed=$(hpcmd 'faults cr_target' | awk '$1 == "fault" { for (i = 2; i <= NF; i++) if (index($i, "failed=") == 1) n += substr($i, 8) } END { print n + 0 }')
expect_eq systematic.failed_once_each "$failed" 5

# A leak report at each of the six unloads (a failed init unloads too):
# only the kstrdup load's leaks, both of them.
reports=$(log_since | grep -o 'hp_patcher: leaks module=cr_target mode=since_load outstanding=[0-9]*' | sed 's/.*=//' | head -n 6 | tr '\n' ' ')
expect_eq systematic.leak_reports "$reports" "0 0 0 2 0 0 "
leaked=$(log_since | grep 'hp_patcher: leak module=cr_target' | sed 's/.*caller=\([a-z_]*\)+[^ ]* callee=\([^ ]*\) count=\([0-9]*\) bytes=\([0-9]*\).*/\1 \2 \3 \4/' | sort | tr '\n' ';')
want=$(printf '%s\n' "cr_init_setup $kzalloc 1 96" "cr_init_setup $kmalloc 1 192" | sort | tr '\n' ';')
expect_eq systematic.leaked_objects "$leaked" "$want"

# What came back of each failure, per site, in round order: the module's
# notifier saw each load go live (then unloaded) or fail its init, and the
# leak table's count at that unload.
came_back=$(hpcmd 'faults cr_target' | awk '$1 == "systematic-site" { r = ""; l = ""; k = "-"
	for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "round") r = kv[2]; if (kv[1] == "load") l = kv[2]; if (kv[1] == "leaked") k = kv[2] }
	print r, l, k }' | sort -n | cut -d' ' -f2- | tr '\n' ';')
expect_eq systematic.came_back "$came_back" "unloaded 0;init_failed 0;init_failed 0;init_failed 2;unloaded 0;"
# hpctl's table of the same (README's); hpctl is x86_64 only.
if [ "$(uname -m)" = x86_64 ]; then
	/modules/hpctl faults cr_target > /tmp/faults.txt 2>&1
	sed -n '/WHAT CAME BACK/,/^$/p' /tmp/faults.txt | sed 's/^/HPSHOW /'
	grep -q 'init failed cleanly, leaked 2 objects (288 bytes)' /tmp/faults.txt && pass systematic.hpctl_table ||
		fail systematic.hpctl_table "$(cat /tmp/faults.txt)"
fi
check systematic.detach hpcmd 'detach cr_target'
check systematic.unload rmmod hp_patcher
expect_no_probes systematic.no_probes
