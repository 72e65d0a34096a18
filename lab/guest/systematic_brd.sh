# Systematic mode on one of Debian's own modules, brd (the RAM disk): every
# allocation site its init reaches fails once, in a load of its own, with
# brd followed from load to unload and checked for leaks. What each load
# did and what the leak checker found are printed (HPINFO); checked: every
# init site is failed exactly once, one per load, the kernel log stays clean
# (the host scans it), and brd loads normally once nothing is left to fail.
. /scripts/lib.sh
mark systematic_brd
grep -q '^brd ' /proc/modules && rmmod brd
insmod $HP || fail systematic_brd.load "insmod hp_patcher failed"
expect_eq systematic_brd.follow "$(hpcmd 'attach brd sink=none follow leaks' | field state brd)" awaited
# A first load with no rule: the sites of its init, from the attach's log line.
insmod /modules/brd.ko && rmmod brd
init_line=$(log_since | grep 'hp_patcher: brd: [0-9]* sites:' | head -n 1)
echo "HPINFO systematic_brd: init: ${init_line#*hp_patcher: }"
fns=$(echo "$init_line" | sed 's/.*sites://' | tr ' ' '\n' | sed -n 's/=.*//p' | grep -v free | head -n 8)
sites=$(echo "$init_line" | sed 's/.*sites://' | tr ' ' '\n' | grep -v free | sed -n 's/.*=\([0-9]*\).*/\1/p' | awk '{ n += $1 } END { print n + 0 }')
for f in $fns; do hpcmd "fail brd fn=$f systematic init" >/dev/null || fail systematic_brd.rule_$f "refused"; done

loads() { log_since | grep -c 'hp_patcher: brd is loading'; }
n=0
while [ $n -lt $((sites + 4)) ]; do
	n=$((n + 1))
	insmod /modules/brd.ko 2>/dev/null && rmmod brd
	done_now=$(hpcmd 'faults brd' | grep -c '^systematic-site')
	[ "$done_now" -ge "$sites" ] && [ "$(log_since | tail -n 5 | grep -c 'brd: module loaded')" -gt 0 ] && break
done
hpcmd 'faults brd' | grep '^systematic-site' | sed 's/^/HPINFO systematic_brd: /'
log_since | grep -E 'hp_patcher: (leaks|leak) module=brd' | grep -v 'outstanding=0 ' | sed 's/^.*hp_patcher: /HPINFO systematic_brd: /'
echo "HPINFO systematic_brd: $(loads) loads, $(log_since | grep -c 'brd: module loaded') of them loaded"
failed=$(hpcmd 'faults brd' | grep -c '^systematic-site')
expect_eq systematic_brd.every_init_site "$failed" "$sites"
rounds=$(hpcmd 'faults brd' | awk '$1 == "systematic-site" { print $4 }' | sort -u | wc -l)
expect_eq systematic_brd.one_per_load "$rounds" "$sites"
grep -q '^brd ' /proc/modules || insmod /modules/brd.ko
check systematic_brd.loads_clean grep -q '^brd ' /proc/modules
check systematic_brd.detach hpcmd 'detach brd'
check systematic_brd.unload rmmod hp_patcher
