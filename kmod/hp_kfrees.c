// SPDX-License-Identifier: GPL-2.0
/*
 * `attach ... leaks kernel_frees`: kprobes on the entry of the kernel's own
 * free functions, so that an object of the target's freed by anyone (the
 * kernel freeing what the module handed it) leaves the leak table and
 * counts against its allocating site as freed by the kernel. The target's
 * own frees took their objects out at its sites, before the call, so here
 * they are simply not found.
 *
 * Unlike everything else in hp_patcher this is callee-side: every caller
 * in the kernel pays while it is on. Each call is counted per CPU, and one
 * in 64 timed, for the leaks report (`kernel-frees` record).
 */
#define pr_fmt(fmt) "hp_patcher: " fmt

#include <linux/kprobes.h>
#include <linux/percpu.h>
#include <linux/sched/clock.h>
#include <linux/slab.h>

#include "hp_glue.h"
#include "hp_internal.h"

static const struct {
	const char *name;
	unsigned int object;	/* the argument that is the object */
} hp_kfree_functions[] = {
	{ "kfree", 0 },
	{ "kvfree", 0 },
	{ "kfree_sensitive", 0 },
	{ "vfree", 0 },
	{ "kmem_cache_free", 1 },
};
#define HP_KFREE_FUNCTIONS ARRAY_SIZE(hp_kfree_functions)

struct hp_kfree_cost {
	u64 calls;
	u64 timed;
	u64 ns;
};

struct hp_kfree_probe {
	struct kprobe kp;
	unsigned int object;
	struct hp_kfrees *owner;
};

struct hp_kfrees {
	struct hp_shared *shared;	/* the target's: outlives the probes */
	struct hp_kfree_probe probes[HP_KFREE_FUNCTIONS];
	bool registered[HP_KFREE_FUNCTIONS];
	struct hp_kfree_cost __percpu *cost;
};

/* Any context the free functions are called in; preemption is off. */
static int hp_kfree_pre(struct kprobe *kp, struct pt_regs *regs)
{
	struct hp_kfree_probe *p = container_of(kp, struct hp_kfree_probe, kp);
	struct hp_kfrees *k = p->owner;
	unsigned long object = regs_get_kernel_argument(regs, p->object);
	bool timed = !(this_cpu_inc_return(k->cost->calls) & 63);
	u64 t0 = timed ? local_clock() : 0;

	if (!ZERO_OR_NULL_PTR((void *)object))
		hp_leaks_kernel_free(k->shared, object);
	if (timed) {
		this_cpu_add(k->cost->ns, local_clock() - t0);
		this_cpu_inc(k->cost->timed);
	}
	return 0;
}

/* Under hp_lock, in process context. A function kprobes refuses is named in
 * the log and left out; none at all is an error. */
struct hp_kfrees *hp_kfrees_start(struct hp_shared *shared, const char *target)
{
	struct hp_kfrees *k = kzalloc(sizeof(*k), GFP_KERNEL);
	unsigned int i, armed = 0;
	int err;

	if (!k)
		return ERR_PTR(-ENOMEM);
	k->shared = shared;
	k->cost = alloc_percpu(struct hp_kfree_cost);
	if (!k->cost) {
		kfree(k);
		return ERR_PTR(-ENOMEM);
	}
	for (i = 0; i < HP_KFREE_FUNCTIONS; i++) {
		k->probes[i].kp.symbol_name = hp_kfree_functions[i].name;
		k->probes[i].kp.pre_handler = hp_kfree_pre;
		k->probes[i].object = hp_kfree_functions[i].object;
		k->probes[i].owner = k;
		err = register_kprobe(&k->probes[i].kp);
		if (err) {
			pr_info("%s: kernel frees: %s not watched (kprobes: %d)\n",
				target, hp_kfree_functions[i].name, err);
			continue;
		}
		k->registered[i] = true;
		armed++;
	}
	if (!armed) {
		free_percpu(k->cost);
		kfree(k);
		return ERR_PTR(-ENOENT);
	}
	pr_info("%s: kernel frees watched at %u functions: every caller of them pays\n",
		target, armed);
	return k;
}

/* Under hp_lock. Once it returns no handler runs (unregister_kprobes waits
 * for them), so the target may let its shared state go. */
void hp_kfrees_stop(struct hp_kfrees *k)
{
	struct kprobe *registered[HP_KFREE_FUNCTIONS];
	unsigned int i, n = 0;

	if (IS_ERR_OR_NULL(k))
		return;
	for (i = 0; i < HP_KFREE_FUNCTIONS; i++)
		if (k->registered[i])
			registered[n++] = &k->probes[i].kp;
	/* One grace period for all of them. */
	unregister_kprobes(registered, n);
	free_percpu(k->cost);
	kfree(k);
}

/* The `kernel-frees` record: what watching cost, summed over CPUs. */
void hp_kfrees_reply(struct hp_reply *r, const char *target, const struct hp_kfrees *k)
{
	struct hp_kfree_cost sum = {};
	unsigned int i, watched = 0;
	char line[200];
	int cpu;

	for_each_possible_cpu(cpu) {
		const struct hp_kfree_cost *c = per_cpu_ptr(k->cost, cpu);

		sum.calls += READ_ONCE(c->calls);
		sum.timed += READ_ONCE(c->timed);
		sum.ns += READ_ONCE(c->ns);
	}
	for (i = 0; i < HP_KFREE_FUNCTIONS; i++)
		watched += k->registered[i];
	snprintf(line, sizeof(line),
		 "kernel-frees module=%s functions=%u calls=%llu timed=%llu timed_ns=%llu",
		 target, watched, sum.calls, sum.timed, sum.ns);
	hp_reply_line(r, line);
}
