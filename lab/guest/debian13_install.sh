#!/bin/sh
# The install test, in a real Debian 13 guest (xtask/src/install_test.rs):
# the packages installed as README says, DKMS building the module for the
# running kernel, hpctl on the guest's own root file system (ext4), man,
# a second kernel's headers (DKMS builds for it), then apt purge, after
# which no file of ours may be left. Runs as root from hp-lab.service, with
# no network; the lab disk (read-only) is at /mnt/lab.
lab=/mnt/lab
. $lab/lib.sh	# the lab's guest helpers (wait_hpctl_tracing); pass and fail are ours below
. $lab/env	# VERSION, SECOND (the second kernel's release)
export DEBIAN_FRONTEND=noninteractive
running=$(uname -r)
pass() { echo "HPTEST install.$1 PASS"; }
fail() { echo "HPTEST install.$1 FAIL $2"; }
info() { echo "HPINFO $*"; }
show() { sed 's/^/HPSHOW /' "$@"; }

# Every file outside the kernel's own and the package manager's state: what
# apt purge must leave as it found it.
files() {
	find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \
		-o -path /var/lib/dpkg -o -path /var/lib/apt -o -path /var/cache -o -path /var/log \
		-o -path /var/lib/systemd -o -path /mnt/lab -o -path /root \) -prune -o -type f -print |
		LC_ALL=C sort
}
files > /tmp/files.before

# The install, as README gives it (-y: no one answers). apt may not fetch
# anything: no network.
start=$(date +%s)
(cd $lab && apt install -y ./hp-patcher-dkms_${VERSION}_amd64.deb ./hpctl_${VERSION}_amd64.deb) > /tmp/apt.out 2>&1
status=$?
info "dkms_build_and_install_seconds=$(($(date +%s) - start)) (apt install of both packages, under TCG)"
if [ $status = 0 ]; then pass apt_install; else fail apt_install "apt exited $status"; show /tmp/apt.out; fi
grep -iE 'dkms|hp_patcher|error' /tmp/apt.out | head -n 20 | sed 's/^/HPSHOW /'
dkms status -m hp_patcher > /tmp/dkms.out 2>&1
show /tmp/dkms.out
grep -q "hp_patcher/$VERSION, $running, x86_64: installed" /tmp/dkms.out && pass dkms_running_kernel ||
	fail dkms_running_kernel "not installed for $running: $(cat /tmp/dkms.out)"
for f in /var/lib/dkms/hp_patcher/$VERSION/build/make.log; do [ -f $f ] && tail -n 5 $f | sed 's/^/HPSHOW make.log: /'; done
ko=$(modinfo -n hp_patcher 2>&1)
info "module: $ko"
case $ko in /lib/modules/$running/updates/dkms/hp_patcher.ko* | /usr/lib/modules/$running/updates/dkms/hp_patcher.ko*)
	pass module_in_updates ;; *) fail module_in_updates "modinfo -n: $ko" ;; esac
signer=$(modinfo -F signer hp_patcher 2>/dev/null)
[ -n "$signer" ] && pass module_signed || fail module_signed "no signature (DKMS signs with /var/lib/dkms/mok.key)"
info "signer: $signer; DKMS key: $(ls /var/lib/dkms/mok.pub 2>&1)"

# hpctl on the guest's own root file system. hpctl loads the module itself,
# with modprobe: nothing else has loaded it.
grep -q '^hp_patcher ' /proc/modules && fail not_loaded_yet "hp_patcher is loaded before hpctl asked"
work() {
	i=0
	while [ $i -lt 20 ]; do
		i=$((i + 1)); echo "file $i" > /var/tmp/hp-work-$i
	done
	sync; rm -f /var/tmp/hp-work-*; sync
}
hpctl attach ext4 --fn jbd2_journal_stop,kfree > /tmp/attach.out 2>&1
show /tmp/attach.out
grep -q 'attached to ext4' /tmp/attach.out && pass hpctl_attach || fail hpctl_attach "$(cat /tmp/attach.out)"
grep -q '^hp_patcher ' /proc/modules && pass hpctl_loaded_module || fail hpctl_loaded_module "not in /proc/modules"
( wait_hpctl_tracing; work ) &
hpctl trace ext4 --duration 8 > /tmp/trace.out 2>&1
wait
grep -m 3 ' jbd2_journal_stop(' /tmp/trace.out | sed 's/^/HPSHOW /'
grep 'events received' /tmp/trace.out | sed 's/^/HPSHOW /'
grep -q 'jbd2_journal_stop(handle=0x[0-9a-f]*) = 0 (' /tmp/trace.out && pass typed_trace ||
	fail typed_trace "no typed jbd2_journal_stop call: $(tail -n 2 /tmp/trace.out)"
hpctl detach ext4 > /tmp/detach.out 2>&1
show /tmp/detach.out
journalctl -k -b --no-pager 2>/dev/null | grep -q 'hp_patcher: ext4 text identical to before attach' ||
	dmesg | grep -q 'hp_patcher: ext4 text identical to before attach'
[ $? = 0 ] && pass text_identical || fail text_identical "no 'ext4 text identical' line in the kernel log"
modprobe -r hp_patcher && pass unload || fail unload "modprobe -r hp_patcher failed"

# man, from the hpctl package.
man -P cat hpctl > /tmp/man.out 2>&1
grep -q 'hpctl-attach' /tmp/man.out && pass man || fail man "$(head -n 3 /tmp/man.out)"
man -P cat hpctl-leaks 2>/dev/null | grep -q 'leaks' && pass man_subcommand || fail man_subcommand "no hpctl-leaks page"
[ -f /usr/share/bash-completion/completions/hpctl ] && pass completions || fail completions "no bash completion"

# A kernel upgrade: a second kernel's headers, from the lab disk; their
# postinst hook has DKMS build the module for it.
start=$(date +%s)
apt-get install -y --no-install-recommends $lab/second/*.deb > /tmp/apt2.out 2>&1
status=$?
info "second_kernel_headers_and_dkms_seconds=$(($(date +%s) - start)) ($SECOND)"
[ $status = 0 ] || { fail second_headers "apt-get exited $status"; show /tmp/apt2.out; }
dkms status -m hp_patcher > /tmp/dkms.out 2>&1
show /tmp/dkms.out
grep -q "hp_patcher/$VERSION, $SECOND, x86_64: installed" /tmp/dkms.out && pass dkms_second_kernel ||
	{ fail dkms_second_kernel "not installed for $SECOND"; grep -iE 'dkms|error' /tmp/apt2.out | sed 's/^/HPSHOW /'; }
ls /usr/lib/modules/$SECOND/updates/dkms/ 2>&1 | sed 's/^/HPSHOW /'

# apt purge leaves no file behind: neither the packages' (dpkg -L, taken
# before) nor what DKMS made (sources' copies, builds, installed modules).
dpkg -L hp-patcher-dkms hpctl > /tmp/owned 2>/dev/null
apt purge -y hp-patcher-dkms hpctl > /tmp/purge.out 2>&1 && pass apt_purge || { fail apt_purge "apt purge failed"; show /tmp/purge.out; }
left=""
while read -r path; do
	[ -f "$path" ] && left="$left $path"
done < /tmp/owned
[ -z "$left" ] && pass purge_owned_files || fail purge_owned_files "left:$left"
# The second kernel's headers stay installed; their files are theirs.
for deb in $lab/second/*.deb; do dpkg -L "$(dpkg-deb -f "$deb" Package)"; done 2>/dev/null | LC_ALL=C sort > /tmp/second.owned
files | LC_ALL=C comm -13 /tmp/files.before - | LC_ALL=C comm -23 - /tmp/second.owned > /tmp/new.files
# Not ours to remove: depmod's index of a kernel whose image is not
# installed (only its headers), made by DKMS's depmod and removed by that
# kernel's image package; DKMS's own signing key, made at its first build,
# which other DKMS modules share and the firmware may have enrolled.
grep -vE "^/usr/lib/modules/$SECOND/modules\.[a-z.]+$|^/var/lib/dkms/mok\.(key|pub)$" /tmp/new.files > /tmp/left.files
info "new files besides the second kernel's headers: $(wc -l < /tmp/new.files):" $(cat /tmp/new.files)
[ -s /tmp/left.files ] && { fail purge_no_file_left "$(wc -l < /tmp/left.files) files left"; show /tmp/left.files | head -n 30; } ||
	pass purge_no_file_left
[ ! -e /var/lib/dkms/hp_patcher ] && pass purge_dkms_tree || fail purge_dkms_tree "/var/lib/dkms/hp_patcher remains"
ls -d /usr/src/hp_patcher-* 2>/dev/null | grep -q . && fail purge_sources "/usr/src/hp_patcher-* remains" || pass purge_sources

# Other distributions: the tarball's install.sh, then its --uninstall.
files > /tmp/files.before
tar -xzf $lab/hp_patcher-$VERSION-x86_64.tar.gz -C /tmp
start=$(date +%s)
/tmp/hp_patcher-$VERSION-x86_64/install.sh > /tmp/tar.out 2>&1 && pass tarball_install ||
	{ fail tarball_install "install.sh failed"; show /tmp/tar.out; }
info "tarball_install_seconds=$(($(date +%s) - start))"
dkms status -m hp_patcher | grep -q "hp_patcher/$VERSION, $running, x86_64: installed" && pass tarball_dkms ||
	fail tarball_dkms "$(dkms status -m hp_patcher 2>&1)"
/usr/local/sbin/hpctl attach ext4 --fn kfree > /tmp/status.out 2>&1 && grep -q '^hp_patcher ' /proc/modules &&
	/usr/local/sbin/hpctl detach ext4 >> /tmp/status.out 2>&1 && pass tarball_hpctl || fail tarball_hpctl "$(cat /tmp/status.out)"
MANPATH=/usr/local/share/man man -P cat hpctl-trace 2>/dev/null | grep -q 'trace' && pass tarball_man || fail tarball_man "no hpctl-trace page"
modprobe -r hp_patcher
/tmp/hp_patcher-$VERSION-x86_64/install.sh --uninstall > /tmp/untar.out 2>&1 && pass tarball_uninstall ||
	{ fail tarball_uninstall "install.sh --uninstall failed"; show /tmp/untar.out; }
files | LC_ALL=C comm -13 /tmp/files.before - > /tmp/left.files
[ -s /tmp/left.files ] && { fail tarball_no_file_left "$(wc -l < /tmp/left.files) files left"; show /tmp/left.files | head -n 30; } ||
	pass tarball_no_file_left

echo "HP-SCRIPT-END install"
echo "HP-GUEST-DONE"
