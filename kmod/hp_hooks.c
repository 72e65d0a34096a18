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
