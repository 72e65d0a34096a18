#!/bin/busybox sh
# Guest /init: mount what the scripts need, run each script named in
# /scripts/run, then power off. Output goes to the second serial port.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The kernel's console is ttyS0; ours is ttyS1, apart. Since 7.x the serial
# console prints from a thread of its own, at any moment, so a kernel line
# can land inside one of ours: CI once missed "HP-SCRIPT-END failslab".
exec >/dev/ttyS1 2>&1
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
# cr_target and cr_twin call into cr_callee: it stays loaded all along.
[ -f /modules/cr_callee.ko ] && insmod /modules/cr_callee.ko
echo "HP-GUEST-START $(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo)"
for script in $(cat /scripts/run); do
	echo "HP-SCRIPT-BEGIN $script"
	sh /scripts/$script.sh
	rc=$?
	# A script the shell gave up on (a syntax or arithmetic error) did not
	# run all its checks.
	[ $rc -ne 0 ] && echo "HPTEST $script.script FAIL exit status $rc"
	echo "HP-SCRIPT-END $script"
done
# The whole kernel log, for the host to keep and scan.
echo "HP-DMESG-BEGIN"
dmesg
echo "HP-DMESG-END"
echo "HP-GUEST-DONE"
# poweroff -f does not wait for the serial port: the last lines can still be
# in ttyS1's buffer (an RT guest lost the end of its dmesg dump so). Closing
# our hold on the port waits until it has sent everything, when ours is the
# last; a process a script left behind may still hold it, so then wait until
# the port's count of bytes sent stops moving (at most 5 s).
exec >/dev/null 2>&1
sent() { sed -n 's/^1: .* tx:\([0-9]*\).*/\1/p' /proc/tty/driver/serial; }
before=-1 now=$(sent) n=0
while [ "$now" != "$before" ] && [ $n -lt 50 ]; do
	before=$now
	n=$((n + 1))
	sleep 0.1
	now=$(sent)
done
poweroff -f
