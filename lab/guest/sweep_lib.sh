# The sweep's helpers: attach hp_patcher to one in-tree module while that
# module is exercised before, during and after the attach, and report one
# row for lab/SWEEP.md:
#   HPSWEEP <module> exercise=<function> sites=<redirected>/<found> hits=<n> attach_ms=<n> [kprobes_ms=<n>] identical=yes|no|- note=<text>
#   HPSWEEP-RMMOD <module> yes|no
#   HPSWEEP-EXERCISE <function> <what it does, for the table's legend>
# An exercise is a shell function taking the phase (before, during, after);
# it fails when the module did not do what was asked of it.
. /scripts/lib.sh

describe() { echo "HPSWEEP-EXERCISE $1 $2"; }

loaded() { grep -q "^$(echo $1 | tr - _) " /proc/modules; }

# a_module_here NAME: loaded, or packed to be loaded. Some of 6.x's modules
# are built in on 7.x (nfnetlink) or gone (libcrc32c, crc32c_generic,
# lz4_compress): they get no row there, and nothing to unload.
a_module_here() { loaded $1 || [ -f /modules/$1.ko ]; }

# load NAME: NAME and its dependencies, in the order the host wrote.
load() {
	local m
	for m in $(cat /modules/$1.order); do
		loaded $m && continue
		insmod /modules/$m.ko || { fail sweep.load.$m "insmod $m failed"; return 1; }
	done
}

# unload NAME...: rmmod each, in the order given, and record whether it worked.
unload() {
	local m u
	for m in "$@"; do
		a_module_here $m || continue
		u=$(echo $m | tr - _)
		if rmmod $u; then echo "HPSWEEP-RMMOD $u yes"; pass sweep.$u.rmmod
		else echo "HPSWEEP-RMMOD $u no"; fail sweep.$u.rmmod "rmmod $u failed"; fi
	done
}

# phase NAME EXERCISE PHASE: runs one exercise and checks it.
phase() {
	if $2 $3; then pass sweep.$1.$3; else fail sweep.$1.$3 "$2 $3 failed"; fi
}

# row MODULE EXERCISE EXPECT
#   EXPECT is `hits` (the exercise must make the module call the memory
#   functions), `nohits:<why>` (it cannot, and why), or `refused:<why>` (the
#   module makes no such call at all, so the attach must be refused).
row() {
	# Not `name`: lib.sh's check() assigns that one.
	local rmod exercise expect t0 t1 sites hits identical note why
	rmod=$(echo $1 | tr - _); exercise=$2; expect=$3
	if ! a_module_here $1; then
		echo "HPINFO sweep: $1 is not a module on this kernel: no row"
		return 0
	fi
	mark sweep-$rmod
	phase $rmod $exercise before
	t0=$(uptime_ms)
	if insmod $HP target_name=$rmod log_burst=3 2>/dev/null; then
		t1=$(uptime_ms)
		phase $rmod $exercise during
		check sweep.$rmod.detach rmmod hp_patcher
		phase $rmod $exercise after
		sites=$(log_since | sed -n "s/.*hp_patcher: attached to $rmod: \([0-9]*\) of \([0-9]*\) sites.*/\1\/\2/p" | tail -n 1)
		# Of the attach, kprobes' own time (hp_attach.c logs the split).
		kprobes_ms=$(log_since | sed -n "s/.*hp_patcher: attached to $rmod: .* register_kprobe \([0-9]*\) ms.*/\1/p" | tail -n 1)
		hits=$(hp_total)
		if log_since | grep -q "hp_patcher: $rmod text identical to before attach"; then
			identical=yes; pass sweep.$rmod.text_identical
		else
			identical=no; fail sweep.$rmod.text_identical "no 'text identical' line"
		fi
		if grep -q "\[$rmod\]" /sys/kernel/debug/kprobes/list; then
			fail sweep.$rmod.no_probes_left "$(grep "\[$rmod\]" /sys/kernel/debug/kprobes/list | head -n 3)"
		else
			pass sweep.$rmod.no_probes_left
		fi
		case $expect in
		hits)
			note=
			if [ "${hits:-0}" -gt 0 ]; then pass sweep.$rmod.hits; else fail sweep.$rmod.hits "no call intercepted"; fi ;;
		nohits:*)
			# A hit would make the row's explanation wrong.
			expect_eq sweep.$rmod.no_hits_as_explained "${hits:-0}" 0
			note=${expect#nohits:} ;;
		refused:*)
			note="attached, though refusal was expected: ${expect#refused:}"
			fail sweep.$rmod.refused "attach succeeded" ;;
		esac
		echo "HPSWEEP $rmod exercise=$exercise sites=$sites hits=${hits:-0} attach_ms=$((t1 - t0)) kprobes_ms=${kprobes_ms:--} identical=$identical note=$note"
	else
		# Refused: what hp_patcher said is the reason.
		why=$(log_since | grep -E 'hp_patcher: .*(no call|refused|not|cannot)' | tail -n 1 | sed "s/.*hp_patcher: \($rmod: \)*//")
		case $expect in
		refused:*)
			pass sweep.$rmod.refused
			note="refused, \"$why\": ${expect#refused:}" ;;
		*)
			fail sweep.$rmod.attach "insmod refused: $why"
			note="refused, \"$why\"" ;;
		esac
		case $why in *"no call"*) sites=0 ;; *) sites=- ;; esac
		echo "HPSWEEP $rmod exercise=$exercise sites=$sites hits=- attach_ms=- identical=- note=$note"
	fi
}

# fs_cycle TYPE IMAGE PHASE: the host-made image on a loop device: mount,
# write, unmount, mount again, read back, unmount. Each phase writes its own
# files, and the later phases also read what `before` left.
fs_cycle() {
	local fstype=$1 img=$2 phase=$3 dev ok i
	dev=$(losetup -f) && losetup $dev $img || return 1
	ok=1
	if mount -t $fstype $dev /mnt; then
		i=0
		while [ $i -lt 20 ]; do
			i=$((i + 1))
			echo "$phase file $i" > /mnt/$phase-$i || ok=0
		done
		mkdir -p /mnt/$phase-dir/sub && cp /mnt/$phase-1 /mnt/$phase-dir/sub/copy && rm /mnt/$phase-2 || ok=0
		sync
		umount /mnt || ok=0
		if mount -t $fstype $dev /mnt; then
			[ "$(cat /mnt/$phase-dir/sub/copy)" = "$phase file 1" ] || ok=0
			[ ! -e /mnt/$phase-2 ] || ok=0
			[ "$(cat /mnt/before-3)" = "before file 3" ] || ok=0
			umount /mnt || ok=0
		else
			ok=0
		fi
	else
		ok=0
	fi
	losetup -d $dev || ok=0
	[ $ok = 1 ]
}
