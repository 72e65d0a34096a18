// SPDX-License-Identifier: GPL-2.0
/*
 * hp_patcher: hot-patch a running module's calls to memory functions.
 *
 * This file is the thin C edge: module parameters, finding the target,
 * kprobe and module-notifier glue, the detach sequence, and printk. The
 * decisions (which sites, what to log) are made by the Rust core through
 * the contract in hp_glue.h.
 */
#define pr_fmt(fmt) "hp_patcher: " fmt

#include <linux/module.h>
#include <linux/kprobes.h>
#include <linux/kallsyms.h>
#include <linux/rcupdate.h>
#include <linux/rcupdate_trace.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/mutex.h>
#include <linux/delay.h>
#include <linux/sched.h>
#include <linux/jiffies.h>
#include <linux/version.h>
#include <linux/tracepoint.h>	/* TRACE_DEFINE_ENUM, used by mmflags.h */
#include <trace/events/mmflags.h>

#include "hp_glue.h"

static char *target_name;
module_param(target_name, charp, 0400);
MODULE_PARM_DESC(target_name, "name of the loaded module to instrument");

static char *functions = "";
module_param(functions, charp, 0400);
MODULE_PARM_DESC(functions, "comma list of catalogue functions; empty: all");

static ulong log_burst = 200;
module_param(log_burst, ulong, 0400);
MODULE_PARM_DESC(log_burst, "call lines logged per 5 s window, 0: unlimited; the rest are counted as suppressed");

static bool raw_pointers;
module_param(raw_pointers, bool, 0400);
MODULE_PARM_DESC(raw_pointers, "log pointers as they are (%px) instead of hashed like %p; exposes kernel addresses to whoever reads the log");

/* For the tests: make the error paths reachable on demand. */
static uint fail_alloc_nth;
module_param(fail_alloc_nth, uint, 0400);
MODULE_PARM_DESC(fail_alloc_nth, "testing: fail the Nth memory allocation of this load (0: never)");

static uint attach_delay_ms;
module_param(attach_delay_ms, uint, 0400);
MODULE_PARM_DESC(attach_delay_ms, "testing: sleep this long between finding the target and attaching");

#define HP_LOG_WINDOW_SECS 5
#define HP_BRANCH_LEN 5		/* call rel32 and jmp rel32 */

static const struct trace_print_flags hp_gfp_names[] = {
	__def_gfpflag_names __def_gfpflag_names_kasan
};

/* One kprobe per redirected site. */
struct hp_probe {
	struct kprobe kp;
	const struct hp_site *site;
	bool tail_jump;
	bool jump_through;	/* a void function: hp_trampoline_jump */
};

/* The attachment; all fields are protected by hp_lock. */
static DEFINE_MUTEX(hp_lock);
static struct module *hp_target;	/* only compared, never dereferenced after attach */
static struct hp_session *hp_session;
static struct hp_probe *hp_probes;
static struct kprobe **hp_kprobes;	/* the registered ones, for the batch unregister */
static unsigned int hp_nr_kprobes;
static u8 *hp_text_copy;		/* the target's text as it was before attach */
static u64 hp_text_base, hp_text_size;

/* ---- called from Rust ---- */

void hp_c_log(u32 level, const char *msg)
{
	if (level == HP_ERR)
		pr_err("%s\n", msg);
	else if (level == HP_WARN)
		pr_warn("%s\n", msg);
	else
		pr_info("%s\n", msg);
}

void hp_c_log_at(u32 level, const char *msg, u64 addr)
{
	if (level == HP_ERR)
		pr_err("%s at %pS\n", msg, (void *)addr);
	else if (level == HP_WARN)
		pr_warn("%s at %pS\n", msg, (void *)addr);
	else
		pr_info("%s at %pS\n", msg, (void *)addr);
}

/*
 * May run in any context the target calls from, so nothing here sleeps.
 * printk_deferred would be safer under scheduler or console locks, but 6.12
 * does not export it to modules (see README's limitations).
 */
void hp_c_emit_call(const char *text, u64 site_addr)
{
	pr_info("%s from %pS cpu=%u pid=%d comm=%s\n", text, (void *)site_addr,
		raw_smp_processor_id(), task_pid_nr(current), current->comm);
}

u64 hp_c_log_window(void)
{
	return jiffies / (HP_LOG_WINDOW_SECS * HZ);
}

u32 hp_c_format_ptr(u64 value, char *buf, u32 len)
{
	return scnprintf(buf, len, raw_pointers ? "%px" : "%p", (void *)value);
}

/* Whether addr is in some function the kernel knows (kernel or module text,
 * BPF, ftrace): sprint_symbol falls back to the bare number otherwise. */
bool hp_c_is_known_code(u64 addr)
{
	char buf[KSYM_SYMBOL_LEN];

	sprint_symbol(buf, addr);
	return strncmp(buf, "0x", 2) != 0;
}

static atomic_t hp_alloc_count = ATOMIC_INIT(0);

/* Every allocation of ours, C or Rust, goes through here: in process
 * context only (attach, detach, load, unload). */
static void *hp_alloc(size_t size)
{
	if (fail_alloc_nth && atomic_inc_return(&hp_alloc_count) == fail_alloc_nth) {
		pr_info("fail_alloc_nth=%u: failing this allocation of %zu bytes\n",
			fail_alloc_nth, size);
		return NULL;
	}
	/* A failure is ours to report, and we do: no allocation-failure splat. */
	return kvmalloc(size, GFP_KERNEL | __GFP_NOWARN);
}

void *hp_c_alloc(size_t size)
{
	return hp_alloc(size);
}

void hp_c_free(void *ptr)
{
	kvfree(ptr);
}

void hp_c_panic(const char *msg, size_t len)
{
	pr_emerg("Rust panic: %.*s\n", (int)len, msg);
	BUG();
}

/* ---- finding the target ---- */

/*
 * The module list is walked from our own entry, because the list head is
 * not exported. The walk meets that head once: it is not inside any
 * module's memory, which is how it is told apart before its container is
 * ever dereferenced.
 */
static bool hp_is_module_struct(const struct module *mod)
{
	unsigned long addr = (unsigned long)mod;

	return addr >= MODULES_VADDR && addr < MODULES_END;
}

/*
 * Returns the target with a reference held, or an ERR_PTR. Called under
 * hp_lock, which the notifier takes on every GOING: a target that is LIVE
 * here cannot finish unloading, even by `rmmod -f`, before we release it.
 */
static struct module *hp_get_target(const char *name)
{
	struct module *mod, *found = NULL;
	int err = -ENOENT;

	lockdep_assert_held(&hp_lock);
	if (!strcmp(name, THIS_MODULE->name)) {
		pr_err("cannot instrument itself (target_name=%s)\n", name);
		return ERR_PTR(-EINVAL);
	}
	rcu_read_lock();
	list_for_each_entry_rcu(mod, &THIS_MODULE->list, list) {
		if (!hp_is_module_struct(mod) || strcmp(mod->name, name))
			continue;
		if (mod->state != MODULE_STATE_LIVE) {
			pr_err("module %s is %s, not live\n", name,
			       mod->state == MODULE_STATE_COMING ? "still loading" :
			       mod->state == MODULE_STATE_GOING ? "being unloaded" : "not ready");
			err = -EINVAL;
		} else if (!try_module_get(mod)) {
			pr_err("module %s is being unloaded\n", name);
			err = -EINVAL;
		} else {
			found = mod;
		}
		break;
	}
	rcu_read_unlock();
	if (!found && err == -ENOENT)
		pr_err("module %s is not loaded\n", name);
	return found ? found : ERR_PTR(err);
}

static void hp_target_text(const struct module *mod, u64 *base, u64 *size)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
	*base = (u64)mod->mem[MOD_TEXT].base;
	*size = mod->mem[MOD_TEXT].size;
#else
	*base = (u64)mod->core_layout.base;
	*size = mod->core_layout.text_size;
#endif
}

/* ---- redirecting ---- */

/*
 * Emulates the probed `call rel32` or `jmp rel32` as if it went to the
 * trampoline: a call pushes its return address (the int3 entry leaves a
 * gap below a kernel-mode stack for exactly this), and %r11 carries the
 * site. Returning 1 tells kprobes that we set the next ip ourselves, so the
 * original instruction is not executed. No lock, no allocation, no sleep.
 */
static int hp_pre_handler(struct kprobe *kp, struct pt_regs *regs)
{
	struct hp_probe *probe = container_of(kp, struct hp_probe, kp);

	if (!probe->tail_jump) {
		regs->sp -= sizeof(unsigned long);
		*(unsigned long *)regs->sp = (unsigned long)kp->addr + HP_BRANCH_LEN;
	}
	regs->r11 = (unsigned long)probe->site;
	regs->ip = probe->jump_through ? (unsigned long)hp_trampoline_jump :
					 (unsigned long)hp_trampoline;
	return 1;
}
NOKPROBE_SYMBOL(hp_pre_handler);

/*
 * Never runs, since the pre-handler always returns 1. Its presence keeps
 * kprobes from optimizing a probe into a jump, which would ignore our ip.
 */
static void hp_post_handler(struct kprobe *kp, struct pt_regs *regs,
			    unsigned long flags)
{
}

static void hp_free_attachment(void)
{
	hp_session_free(hp_session);
	kvfree(hp_kprobes);
	kvfree(hp_probes);
	kvfree(hp_text_copy);
	hp_session = NULL;
	hp_kprobes = NULL;
	hp_probes = NULL;
	hp_text_copy = NULL;
	hp_nr_kprobes = 0;
	hp_target = NULL;
}

static int hp_register_probes(void)
{
	u64 i, count = hp_session_site_count(hp_session);

	hp_probes = hp_alloc(array_size(count, sizeof(*hp_probes)));
	hp_kprobes = hp_probes ? hp_alloc(array_size(count, sizeof(*hp_kprobes))) : NULL;
	if (!hp_kprobes) {
		pr_err("out of memory for %llu probes\n", count);
		return -ENOMEM;
	}
	memset(hp_probes, 0, array_size(count, sizeof(*hp_probes)));
	for (i = 0; i < count; i++) {
		struct hp_probe *probe = &hp_probes[i];
		u64 addr;
		int err;

		probe->site = hp_session_site(hp_session, i, &addr, &probe->tail_jump,
					      &probe->jump_through);
		probe->kp.addr = (kprobe_opcode_t *)addr;
		probe->kp.pre_handler = hp_pre_handler;
		probe->kp.post_handler = hp_post_handler;
		err = register_kprobe(&probe->kp);
		if (err) {
			pr_warn("site %pS refused by kprobes (%d): not intercepted\n",
				(void *)addr, err);
			continue;
		}
		hp_kprobes[hp_nr_kprobes++] = &probe->kp;
	}
	if (!hp_nr_kprobes) {
		pr_err("kprobes refused every site in %s\n", target_name);
		return -EINVAL;
	}
	pr_info("attached to %s: %u of %llu sites redirected\n", target_name,
		hp_nr_kprobes, count);
	return 0;
}

static void hp_check_text_restored(void)
{
	const u8 *live = (const u8 *)hp_text_base;
	u64 i;

	for (i = 0; i < hp_text_size; i++) {
		if (live[i] != hp_text_copy[i]) {
			pr_err("%s text differs from before attach at %pS: %02x, was %02x\n",
			       target_name, live + i, live[i], hp_text_copy[i]);
			return;
		}
	}
	pr_info("%s text identical to before attach (%llu bytes)\n",
		target_name, hp_text_size);
}

/*
 * The safe order: unhook every site at once; wait until every task sent to
 * the trampoline has entered it and been counted; wait for the callers still
 * inside a real function (they may sleep there); wait once more for those
 * between their decrement and their `ret`. Only then is anything freed.
 */
static void hp_detach(const char *why)
{
	unsigned long waited = 0;
	u64 missed = 0;
	unsigned int i;

	lockdep_assert_held(&hp_lock);
	/*
	 * Restore every site's text first, and keep the probes in kprobes'
	 * table for a grace period before unregistering: a CPU that still
	 * executes an int3 it fetched before the restore then finds its probe
	 * (x86's kprobe_int3_handler has no fallback for a vanished probe, and
	 * dies). Seen under QEMU TCG, twice in a few thousand detaches.
	 */
	for (i = 0; i < hp_nr_kprobes; i++)
		disable_kprobe(hp_kprobes[i]);
	synchronize_rcu();
	unregister_kprobes(hp_kprobes, hp_nr_kprobes);
	synchronize_rcu_tasks();
	while (hp_session_inflight(hp_session)) {
		msleep(1);
		if (++waited % 10000 == 0)
			pr_warn("still waiting for %llu calls to return\n",
				hp_session_inflight(hp_session));
	}
	synchronize_rcu_tasks();
	hp_check_text_restored();
	/* Hits kprobes did not hand to us (a probe hit inside another probe's
	 * handling): the real call ran unlogged, so report how many. */
	for (i = 0; i < hp_nr_kprobes; i++)
		missed += hp_kprobes[i]->nmissed;
	hp_session_report(hp_session, why, missed);
	hp_free_attachment();
}

static int hp_attach(struct module *mod)
{
	struct mod_kallsyms *syms = &mod->core_kallsyms;
	struct hp_attach_request req = {
		.target_name = mod->name,
		.symtab = syms->symtab,
		.num_symtab = syms->num_symtab,
		.catalogue_addrs = hp_catalogue_addrs,
		.catalogue_len = hp_catalogue_len,
		.gfp_names = hp_gfp_names,
		.num_gfp_names = ARRAY_SIZE(hp_gfp_names),
		.functions = functions ? functions : "",
		.log_burst = log_burst,
		.module_space_start = MODULES_VADDR,
		.module_space_end = MODULES_END,
		.slab_buckets = IS_ENABLED(CONFIG_SLAB_BUCKETS),
		.call_thunks = IS_ENABLED(CONFIG_CALL_THUNKS),
	};
	int err;

	lockdep_assert_held(&hp_lock);
	/*
	 * A forced unload may have begun since the lookup (our reference does
	 * not stop `rmmod -f`). Its notifier is waiting on hp_lock, so mod is
	 * still there to look at; kprobes would refuse every site anyway.
	 */
	if (READ_ONCE(mod->state) != MODULE_STATE_LIVE) {
		pr_err("module %s began unloading: not attaching\n", mod->name);
		return -EINVAL;
	}
	/* From here the notifier's GOING, which waits on hp_lock, detaches us. */
	hp_target = mod;
	hp_target_text(mod, &hp_text_base, &hp_text_size);
	/* Rust decodes this private copy: nobody else's text_poke can race it. */
	hp_text_copy = hp_alloc(hp_text_size);
	if (!hp_text_copy) {
		pr_err("out of memory for a copy of %s's text\n", mod->name);
		hp_target = NULL;
		return -ENOMEM;
	}
	memcpy(hp_text_copy, (const void *)hp_text_base, hp_text_size);
	req.text = hp_text_copy;
	req.text_base = hp_text_base;
	req.text_size = hp_text_size;

	err = hp_plan(&req, &hp_session);
	if (!err)
		err = hp_register_probes();
	if (err) {
		if (hp_nr_kprobes)
			unregister_kprobes(hp_kprobes, hp_nr_kprobes);
		hp_free_attachment();
	}
	return err;
}

/* ---- following the target ---- */

static int hp_module_event(struct notifier_block *nb, unsigned long state,
			   void *data)
{
	struct module *mod = data;

	/*
	 * Always through the lock, never a peek at hp_target first: an attach
	 * between finding its target and setting hp_target holds the lock, and
	 * this must wait for it, or a forced unload frees the module under it.
	 */
	if (state != MODULE_STATE_GOING)
		return NOTIFY_DONE;
	mutex_lock(&hp_lock);
	if (hp_target == mod) {
		pr_info("%s is being unloaded: detaching\n", mod->name);
		hp_detach("target unloaded");
	}
	mutex_unlock(&hp_lock);
	return NOTIFY_OK;
}

/* Before kprobes' own notifier (priority 0), which would drop our probes
 * without restoring the text. */
static struct notifier_block hp_module_nb = {
	.notifier_call = hp_module_event,
	.priority = 1,
};

static int __init hp_init(void)
{
	struct module *mod;
	int err;

	if (!target_name || !*target_name) {
		pr_err("target_name= is required\n");
		return -EINVAL;
	}
	/* Before anything is decoded: the one allocation iced-x86 would
	 * otherwise make infallibly, and leak at unload. */
	err = hp_decoder_setup();
	if (err)
		return err;
	err = register_module_notifier(&hp_module_nb);
	if (err)
		goto out_decoder;
	mutex_lock(&hp_lock);
	mod = hp_get_target(target_name);
	if (IS_ERR(mod)) {
		err = PTR_ERR(mod);
	} else {
		if (attach_delay_ms) {
			pr_info("attach_delay_ms: waiting %u ms before attaching to %s\n",
				attach_delay_ms, target_name);
			msleep(attach_delay_ms);
		}
		err = hp_attach(mod);
		/*
		 * From here on the notifier, not a reference, follows the
		 * target. Put under the lock: a forced unload's notifier waits
		 * for it, so mod is not freed before this.
		 */
		module_put(mod);
	}
	mutex_unlock(&hp_lock);
	if (!err)
		return 0;
	unregister_module_notifier(&hp_module_nb);
out_decoder:
	hp_decoder_teardown();
	return err;
}

static void __exit hp_exit(void)
{
	/*
	 * Detach before giving up the notifier: were the target unloaded in
	 * between, its text would be freed under our feet. A notifier call that
	 * comes meanwhile waits on hp_lock, then finds nothing to do.
	 */
	mutex_lock(&hp_lock);
	if (hp_target)
		hp_detach("hp_patcher unloaded");
	mutex_unlock(&hp_lock);
	unregister_module_notifier(&hp_module_nb);
	hp_decoder_teardown();
}

module_init(hp_init);
module_exit(hp_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Hot-patch the calls of a running module to log them");
