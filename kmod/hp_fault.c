// SPDX-License-Identifier: GPL-2.0
/*
 * What a fault rule's decision asks of the kernel (kmod/rust/src/faults.rs),
 * from the target's context: nothing here sleeps, locks or allocates.
 */
#include <linux/module.h>
#include <linux/random.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
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
