// SPDX-License-Identifier: GPL-2.0
/*
 * What the per-call hooks ask of the kernel from the target's context: a
 * fault rule's decision (kmod/rust/src/faults.rs) and the leak checker's
 * bookkeeping (leaks.rs). Nothing here sleeps, locks or allocates.
 */
#include <linux/module.h>
#include <linux/random.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/stacktrace.h>
#include <linux/string.h>

#include "hp_glue.h"

/* Around a read of the rules: `fail ... clear` frees them a grace period
 * after unpublishing them. */
void hp_c_rcu_read_lock(void)
{
	rcu_read_lock();
}

void hp_c_rcu_read_unlock(void)
{
	rcu_read_unlock();
}

/* Per CPU and lock-free (a batch of ChaCha output per CPU), any context but NMI. */
u32 hp_c_random_u32(void)
{
	return get_random_u32();
}

void hp_c_current_task(u32 *pid, char comm[16])
{
	*pid = task_pid_nr(current);
	/* A racy copy, as the kernel's own tracers take it (a rename is atomic enough). */
	strscpy_pad(comm, current->comm, 16);
}

/* The module is running its init: between COMING and LIVE. */
bool hp_c_module_coming(const struct module *mod)
{
	return mod && READ_ONCE(mod->state) == MODULE_STATE_COMING;
}

/* The object size of a kmem_cache an allocation came from. */
u32 hp_c_cache_size(unsigned long cache)
{
	return kmem_cache_size((struct kmem_cache *)cache);
}

/*
 * The stack of the allocation being recorded, from the target's call site
 * up: our own frames (the hook, the trampoline) are left out, so the first
 * frame is the target's. The unwinder neither sleeps nor locks, and works
 * in any context we hook (hard IRQ included); it stops early where it
 * cannot go on, which only shortens the stack.
 */
u32 hp_c_stack_save(unsigned long *frames, u32 max)
{
	unsigned long all[16];
	unsigned int n = stack_trace_save(all, ARRAY_SIZE(all), 0);
	unsigned int i = 0, k = 0;

	while (i < n && within_module(all[i], THIS_MODULE))
		i++;
	while (i < n && k < max)
		frames[k++] = all[i++];
	return k;
}
