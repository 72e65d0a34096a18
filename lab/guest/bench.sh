# For `cargo xtask bench` (not part of `test`): what hp_patcher adds per
# call. The guest runs under QEMU's -icount shift=0, where a nanosecond is
# one guest instruction. cr_target, paused, calls kstrdup(NULL) (an
# allocator that returns at once) and kfree(NULL) N times from one site
# each; every configuration runs ROUNDS times, one line per round:
#   HPBENCH <configuration> <function> <total ns> <calls>
. /scripts/lib.sh
mark bench
N=20000
ROUNDS=5
insmod /modules/cr_target.ko start_paused=1
insmod $HP || echo "HPBENCH-ERROR insmod hp_patcher failed"
kmalloc=$(sym kmalloc)

measure() {
	for f in $2; do
		r=0
		while [ $r -lt $ROUNDS ]; do
			r=$((r + 1))
			echo "$f $N" > $CR/bench
			echo "HPBENCH $1 $f $(cat $CR/bench) $N"
		done
	done
}
command() { hpcmd "$1" > /dev/null || echo "HPBENCH-ERROR refused: $1"; }

measure nothing "kstrdup kfree"
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
rmmod hp_patcher
echo "HPBENCH-END"
