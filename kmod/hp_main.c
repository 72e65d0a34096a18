// SPDX-License-Identifier: GPL-2.0
/*
 * hp_patcher: hot-patch a running module's calls to memory functions.
 *
 * This file is the module's own: its parameters, init and exit, finding a
 * module by name, and the load-time attach (target_name=). The rest of the
 * thin C edge: hp_attach.c (targets, probes, attach), hp_detach.c,
 * hp_follow.c (module notifiers), hp_control.c (/dev/hp_patcher),
 * hp_services.c and hp_hooks.c (what Rust asks of C), hp_kfrees.c. The
 * decisions (which sites, what to log) are made by the Rust core through
 * the contract in hp_glue.h.
 */
#define pr_fmt(fmt) "hp_patcher: " fmt

#include <linux/module.h>
#include <linux/kprobes.h>
#include <linux/kallsyms.h>
#include <linux/percpu.h>
#include <linux/rcupdate.h>
#include <linux/rcupdate_trace.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/mutex.h>
#include <linux/delay.h>
#include <linux/sched.h>
#include <linux/jiffies.h>
#include <linux/version.h>
#include <linux/uaccess.h>
#include <linux/static_call.h>
#include <linux/workqueue.h>
#include <linux/completion.h>
#include <linux/security.h>
#include <asm/nops.h>
#include <asm/bug.h>
#include <asm/insn.h>	/* MAX_INSN_SIZE */
#include <linux/tracepoint.h>	/* TRACE_DEFINE_ENUM, used by mmflags.h */
#include <trace/events/mmflags.h>

#include "hp_internal.h"
#include "hp_compat.h"

static char *target_name;
module_param(target_name, charp, 0400);
MODULE_PARM_DESC(target_name, "name of a loaded module to instrument at load, with sink printk; empty: none (use /dev/hp_patcher)");

static char *functions = "";
module_param(functions, charp, 0400);
MODULE_PARM_DESC(functions, "comma list of catalogue functions; empty: all");


bool hp_raw_pointers;
module_param_named(raw_pointers, hp_raw_pointers, bool, 0400);
MODULE_PARM_DESC(raw_pointers, "log pointers as they are (%px) instead of hashed like %p; exposes kernel addresses to whoever reads the log");



/*
 * A gate, not a delay: a test opens it when what it needs has happened (a
 * forced unload of the target has begun), however slow the kernel.
 */
static bool attach_gate;
module_param(attach_gate, bool, 0600);
MODULE_PARM_DESC(attach_gate, "testing: hold the load-time attach between finding the target and attaching until this is written 0 (at most 300 s)");
#define HP_GATE_MAX_MS (300 * 1000)



const struct trace_print_flags hp_gfp_names[] = { HP_GFP_NAMES };

size_t hp_gfp_name_count(void)
{
	size_t n = 0;

	while (n < ARRAY_SIZE(hp_gfp_names) && hp_gfp_names[n].name)
		n++;
	return n;
}

DEFINE_MUTEX(hp_lock);
LIST_HEAD(hp_targets);

/* ---- finding a module ---- */

/*
 * The module list is walked from our own entry, because the list head is
 * not exported. The walk meets that head once: it is not inside any
 * module's memory, which is how it is told apart before its container is
 * ever dereferenced.
 */
bool hp_is_module_struct(const struct module *mod)
{
	unsigned long addr = (unsigned long)mod;

	return addr >= MODULES_VADDR && addr < MODULES_END;
}

/*
 * Returns the LIVE module with a reference held, or an ERR_PTR (-ENOENT:
 * not loaded). Called under hp_lock, which the notifier takes on every
 * GOING: a module that is LIVE here cannot finish unloading, even by
 * `rmmod -f`, before we release the lock.
 */
struct module *hp_get_module(const char *name)
{
	struct module *mod, *found = NULL;
	int err = -ENOENT;

	lockdep_assert_held(&hp_lock);
	if (!strcmp(name, THIS_MODULE->name)) {
		hp_err("cannot instrument itself (%s)", name);
		return ERR_PTR(-EINVAL);
	}
	rcu_read_lock();
	list_for_each_entry_rcu(mod, &THIS_MODULE->list, list) {
		if (!hp_is_module_struct(mod) || strcmp(mod->name, name))
			continue;
		if (mod->state != MODULE_STATE_LIVE) {
			hp_err("module %s is %s, not live", name,
			       mod->state == MODULE_STATE_COMING ? "still loading" :
			       mod->state == MODULE_STATE_GOING ? "being unloaded" : "not ready");
			err = -EINVAL;
		} else if (!try_module_get(mod)) {
			hp_err("module %s is being unloaded", name);
			err = -EINVAL;
		} else {
			found = mod;
		}
		break;
	}
	rcu_read_unlock();
	return found ? found : ERR_PTR(err);
}

/* insmod hp_patcher.ko target_name=X: the seed's interface, sink printk. */
static int hp_attach_at_load(void)
{
	struct hp_target *t;
	struct module *mod;
	int err;

	mutex_lock(&hp_lock);
	mod = hp_get_module(target_name);
	if (IS_ERR(mod)) {
		err = PTR_ERR(mod);
		/* pr_err, not hp_err: no command to reply to, and a parameter
		 * may be longer than hp_err's buffer. */
		if (err == -ENOENT)
			pr_err("module %s is not loaded\n", target_name);
		goto out;
	}
	if (READ_ONCE(attach_gate)) {
		unsigned int waited = 0;

		pr_info("attach_gate: holding the attach to %s\n", target_name);
		while (READ_ONCE(attach_gate) && waited < HP_GATE_MAX_MS) {
			msleep(10);
			waited += 10;
		}
	}
	err = hp_target_add(target_name, functions ? functions : "", HP_SINK_PRINTK,
			    U64_MAX, 0, false, false, mod, &t);
	/*
	 * From here on the notifier, not a reference, follows the target. Put
	 * under the lock: a forced unload's notifier waits for it, so mod is
	 * not freed before this.
	 */
	module_put(mod);
out:
	mutex_unlock(&hp_lock);
	return err;
}

static void hp_detach_all(const char *why)
{
	struct hp_target *t, *next;

	mutex_lock(&hp_lock);
	list_for_each_entry_safe(t, next, &hp_targets, node) {
		hp_target_detach(t, why);
		list_del(&t->node);
		hp_target_free(t);
	}
	mutex_unlock(&hp_lock);
}


/* hp_abi_check's partner: see kmod/rust/src/lib.rs. */
u64 hp_c_abi_mix(const u8 *a, unsigned long b, const u64 *c, const u8 *d,
		 unsigned long e)
{
	return (u64)(unsigned long)a ^ rol64(b, 8) ^
	       rol64((u64)(unsigned long)c, 16) ^
	       rol64((u64)(unsigned long)d, 24) ^ rol64(e, 32);
}

/*
 * Rust and C must pass arguments the same way: on i386 both sides are
 * built with regparm(3), and this checks that they agree, both ways, on
 * the shape of the trampoline's calls into Rust (registers and stack, and
 * a u64 result in two registers on i386). Values only: nothing is
 * dereferenced.
 */
static int hp_check_abi(void)
{
	const u8 *a = (const u8 *)0x1234567UL;
	const u64 *c = (const u64 *)0x2345678UL;
	const u8 *d = (const u8 *)0x3456789UL;
	unsigned long b = (unsigned long)0x1122334455667788ULL;
	unsigned long e = (unsigned long)0x99aabbccddeeff01ULL;
	u64 want = hp_c_abi_mix(a, b, c, d, e);

	if (hp_abi_check(a, b, c, d, e) != want) {
		pr_err("the Rust object passes arguments unlike this kernel's C (regparm?): not loading\n");
		return -ENOEXEC;
	}
	return 0;
}

/*
 * The hooks write per-CPU counters from Rust with their own segment-relative
 * instructions (kmod/rust/src/percpu.rs): check them against this kernel's
 * per_cpu_ptr(). Rust works on this CPU's copy of a fresh area, preemption
 * off; afterwards that copy, and no other, must hold what Rust wrote,
 * including a carry into the u64's high half.
 */
static int hp_check_percpu(void)
{
	struct hp_percpu_check __percpu *area = alloc_percpu(struct hp_percpu_check);
	unsigned long read_back;
	int cpu, this_cpu, wrong = 0;

	if (!area)
		return -ENOMEM;
	this_cpu = get_cpu();
	per_cpu_ptr(area, this_cpu)->count = 0xffffffffULL;
	read_back = hp_percpu_check(area);
	put_cpu();
	for_each_possible_cpu(cpu) {
		const struct hp_percpu_check *c = per_cpu_ptr(area, cpu);

		if (cpu == this_cpu)
			wrong |= c->count != 0x100000001ULL || c->word != 41 || c->before != 40 ||
				 read_back != 41;
		else
			wrong |= c->count || c->word || c->before;
	}
	free_percpu(area);
	if (wrong) {
		pr_err("the Rust object's per-CPU writes miss this kernel's per-CPU areas: not loading\n");
		return -ENOEXEC;
	}
	return 0;
}

static int __init hp_init(void)
{
	int err;

	err = hp_check_abi();
	if (!err)
		err = hp_check_percpu();
	if (err)
		return err;
	if (hp_raw_pointers && security_locked_down(LOCKDOWN_BPF_READ_KERNEL)) {
		pr_err("lockdown (confidentiality) forbids raw_pointers=1: not loading\n");
		return -EPERM;
	}
	hp_wq = alloc_workqueue("hp_patcher", WQ_UNBOUND, 0);
	if (!hp_wq)
		return -ENOMEM;

	/* Before anything is decoded: the one allocation iced-x86 would
	 * otherwise make infallibly, and leak at unload. */
	err = hp_decoder_setup();
	if (err)
		goto out_wq;
	err = hp_follow_start();
	if (err)
		goto out_decoder;
	if (target_name && *target_name) {
		err = hp_attach_at_load();
		if (err)
			goto out_follow;
	}
	err = hp_control_init();
	if (err)
		goto out_detach;
	return 0;
out_detach:
	hp_detach_all("hp_patcher failed to load");
out_follow:
	hp_follow_stop();
	hp_drains_wait_all();
out_decoder:
	hp_decoder_teardown();
out_wq:
	destroy_workqueue(hp_wq);
	return err;
}

static void __exit hp_exit(void)
{
	/* No file of the device is open: each holds a reference on us. */
	hp_control_exit();
	/*
	 * Detach before giving up the notifier: were a target unloaded in
	 * between, its text would be freed under our feet. A notifier call that
	 * comes meanwhile waits on hp_lock, then finds nothing to do.
	 */
	hp_detach_all("hp_patcher unloaded");
	hp_follow_stop();
	/*
	 * Drains hold a reference on us, so only a forced unload, or one that
	 * detached right here, gets this far with callers still inside: wait
	 * for them (each drain logs what it waits for), with no lock held.
	 */
	hp_drains_wait_all();
	hp_decoder_teardown();
	destroy_workqueue(hp_wq);
}

module_init(hp_init);
module_exit(hp_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Hot-patch the calls of running modules to trace them");
