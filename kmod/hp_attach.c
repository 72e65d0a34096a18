// SPDX-License-Identifier: GPL-2.0
/*
 * The targets, and attaching to one: planning its sites (on a fresh stack,
 * in a worker), then arming them (hp_probes.c), and a target's detach. The
 * detach sequence itself, and the wait for callers still inside, are
 * hp_detach.c's.
 */
#define pr_fmt(fmt) "hp_patcher: " fmt

#include <linux/module.h>
#include <linux/kprobes.h>
#include <linux/kallsyms.h>
#include <linux/percpu.h>
#include <linux/rcupdate.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/mutex.h>
#include <linux/delay.h>
#include <linux/sched.h>
#include <linux/jiffies.h>
#include <linux/uaccess.h>
#include <linux/static_call.h>
#include <linux/workqueue.h>
#include <linux/completion.h>
#include <linux/security.h>
#include <asm/nops.h>
#include <asm/bug.h>
#include <asm/insn.h>	/* MAX_INSN_SIZE */

#include "hp_internal.h"
#include "hp_compat.h"

static ulong log_burst = 200;
module_param(log_burst, ulong, 0400);
MODULE_PARM_DESC(log_burst, "call lines logged per 5 s window (each CPU its share), 0: unlimited; the rest are counted as suppressed");

static uint plan_epilogue_delay_ms;
module_param(plan_epilogue_delay_ms, uint, 0400);
MODULE_PARM_DESC(plan_epilogue_delay_ms, "testing: sleep this long in the plan worker after handing back its result");

/* ---- the targets ---- */

struct hp_target *hp_find_target(const char *name)
{
	struct hp_target *t;

	lockdep_assert_held(&hp_lock);
	list_for_each_entry(t, &hp_targets, node)
		if (!strcmp(t->name, name))
			return t;
	return NULL;
}

/* Not yet on the list; nothing attached. burst U64_MAX: log_burst=. */
static struct hp_target *hp_target_new(const char *name, const char *functions,
				       u32 sink, u64 burst, u64 leak_slots, bool kernel_frees,
				       bool follow)
{
	struct hp_target *t = hp_alloc(sizeof(*t));
	size_t len = strlen(functions) + 1;

	if (!t)
		goto oom;
	memset(t, 0, sizeof(*t));
	t->functions = hp_alloc(len);
	t->shared = hp_shared_new(leak_slots);
	if (!t->functions || !t->shared) {
		kvfree(t->functions);
		hp_shared_put(t->shared);
		kvfree(t);
		goto oom;
	}
	memcpy(t->functions, functions, len);
	strscpy(t->name, name, sizeof(t->name));
	t->sink = sink;
	t->log_burst = burst == U64_MAX ? log_burst : burst;
	t->follow = follow;
	t->kernel_frees = kernel_frees;
	t->state = HP_AWAITED;
	INIT_LIST_HEAD(&t->node);
	return t;
oom:
	hp_err("out of memory for target %s", name);
	return NULL;
}

/* Off the list and detached. */
void hp_target_free(struct hp_target *t)
{
	if (!t)
		return;
	kvfree(t->functions);
	/* No probe on the kernel's frees looks at the table after this (the
	 * detach stopped them; a target never attached has none). */
	hp_kfrees_stop(t->kfrees);
	/* Its sessions, still draining, may hold the table a while longer. */
	hp_shared_put(t->shared);
	kvfree(t);
}

/*
 * Plans one text range of mod: copies it (Rust decodes this private copy,
 * which nobody else's text_poke can race) and hands it to Rust with the
 * symbols. On success att owns the session and the copy.
 */
/* Room for n addresses: NULL when n is 0, ERR_PTR(-ENOMEM) when memory runs out. */
static u64 *hp_addr_array(unsigned int n)
{
	u64 *addrs;

	if (!n)
		return NULL;
	addrs = hp_alloc(array_size(n, sizeof(*addrs)));
	return addrs ? addrs : ERR_PTR(-ENOMEM);
}

/*
 * The instructions the kernel's static_call rewrites in mod (calls through
 * a static key's trampoline, patched to the current target or a NOP): never
 * ours to redirect. NULL with *n = 0 when there are none.
 */
static u64 *hp_static_call_sites(const struct module *mod, u64 *n)
{
	u64 *addrs = NULL;

	*n = 0;
#ifdef CONFIG_HAVE_STATIC_CALL_INLINE
	addrs = hp_addr_array(mod->num_static_call_sites);
	if (IS_ERR_OR_NULL(addrs))
		return addrs;
	for (*n = 0; *n < mod->num_static_call_sites; (*n)++) {
		const struct static_call_site *site = &mod->static_call_sites[*n];

		/* The field holds the site relative to its own address. */
		addrs[*n] = (unsigned long)&site->addr + site->addr;
	}
#endif
	return addrs;
}

/*
 * The ud2 of every WARN and BUG in mod (its __bug_table): the kernel's own
 * traps, after which a WARN's execution goes on, so a call just before one
 * is no sign that its callee never returns. NULL with *n = 0 when none.
 */
static u64 *hp_bug_traps(const struct module *mod, u64 *n)
{
	u64 *addrs = NULL;

	*n = 0;
#ifdef CONFIG_GENERIC_BUG
	addrs = hp_addr_array(mod->num_bugs);
	if (IS_ERR_OR_NULL(addrs))
		return addrs;
	for (*n = 0; *n < mod->num_bugs; (*n)++) {
		const struct bug_entry *bug = &mod->bug_table[*n];

#ifdef CONFIG_GENERIC_BUG_RELATIVE_POINTERS
		/* Relative to the field's own address, as lib/bug.c reads it. */
		addrs[*n] = (unsigned long)&bug->bug_addr_disp + bug->bug_addr_disp;
#else
		addrs[*n] = bug->bug_addr;
#endif
	}
#endif
	return addrs;
}

/*
 * Planning runs on a worker's fresh stack. Decoding a large module goes
 * deep (hp_plan, the decoder, then an allocation that may schedule), and
 * under insmod that comes on top of load_module's frames: i386's 8 kB
 * stack overflowed there with ext4 ("corrupted stack end detected inside
 * scheduler"). The caller waits, holding hp_lock as before; an error the
 * plan logs still goes to the caller's reply.
 */
struct hp_plan_work {
	struct work_struct work;
	struct completion done;
	const struct hp_attach_request *req;
	struct hp_session **session;
	struct task_struct *caller;
	int err;
};

static void hp_plan_work_fn(struct work_struct *work)
{
	struct hp_plan_work *pw = container_of(work, struct hp_plan_work, work);
	/* The caller sleeps below until done: its reply is ours meanwhile. */
	bool capture = hp_capture_pass(pw->caller, current);
#ifdef CONFIG_FAULT_INJECTION
	/* failslab's task filter fails what it would have failed the caller. */
	bool make_it_fail = current->make_it_fail;

	current->make_it_fail = pw->caller->make_it_fail;
#endif
	pw->err = hp_plan(pw->req, pw->session);
	if (capture)
		hp_capture_pass(current, pw->caller);
#ifdef CONFIG_FAULT_INJECTION
	current->make_it_fail = make_it_fail;
#endif
	complete(&pw->done);
	/* Testing: stretch the epilogue, in which pw is gone already. */
	if (plan_epilogue_delay_ms)
		msleep(plan_epilogue_delay_ms);
}

static int hp_plan_on_fresh_stack(const struct hp_attach_request *req,
				  struct hp_session **session)
{
	struct hp_plan_work pw = {
		.req = req,
		.session = session,
		.caller = current,
	};

	INIT_WORK_ONSTACK(&pw.work, hp_plan_work_fn);
	init_completion(&pw.done);
	/* hp_wq, not a system queue: hp_exit's destroy_workqueue waits until
	 * the worker has left hp_plan_work_fn, whose epilogue still runs our
	 * text after complete() has let us go. */
	queue_work(hp_wq, &pw.work);
	/* In slices: planning btrfs takes 40 s under TCG, and a task blocked
	 * without a break for 120 s is reported as hung. */
	while (!wait_for_completion_timeout(&pw.done, 10 * HZ))
		;
	destroy_work_on_stack(&pw.work);
	return pw.err;
}

static int hp_attachment_plan(struct module *mod, const char *functions, u32 sink,
			      u64 burst, const struct mod_kallsyms *syms, u64 base, u64 size,
			      bool quiet_if_none, struct hp_reply *callees,
			      struct hp_shared *shared, struct hp_attachment *att)
{
	struct hp_attach_request req = {
		.target_name = mod->name,
		.symtab = syms->symtab,
		.num_symtab = syms->num_symtab,
		.catalogue_addrs = hp_catalogue_addrs,
		.catalogue_len = hp_catalogue_len,
		.gfp_names = hp_gfp_names,
		.num_gfp_names = hp_gfp_name_count(),
		.functions = functions,
		.log_burst = burst,
		.module_space_start = MODULES_VADDR,
		.module_space_end = MODULES_END,
		.slab_buckets = IS_ENABLED(CONFIG_SLAB_BUCKETS),
		.call_thunks = IS_ENABLED(CONFIG_CALL_THUNKS),
		.sink = sink,
		.quiet_if_none = quiet_if_none,
		.text_base = base,
		.text_size = size,
		.callees = callees,
		.shared = shared,
		.module = mod,
	};
	u64 *static_sites, *bug_traps, init_base, init_size;
	int err;

	hp_module_text(mod, true, &init_base, &init_size);
	req.init_text = init_size && base == init_base;

	att->text_base = base;
	att->text_size = size;
	att->text_copy = hp_alloc(size);
	if (!att->text_copy) {
		hp_err("out of memory for a copy of %s's text", mod->name);
		return -ENOMEM;
	}
	memcpy(att->text_copy, (const void *)(unsigned long)base, size);
	req.text = att->text_copy;
	if (sink == HP_SINK_PRINTK && burst) {
		att->budget = alloc_percpu_gfp(struct hp_budget, GFP_KERNEL | __GFP_NOWARN);
		if (!att->budget) {
			hp_attachment_free(att);
			hp_err("out of memory for %s's printk budget", mod->name);
			return -ENOMEM;
		}
		req.budget = (unsigned long)att->budget;
		req.budget_share = min_t(u64, div_u64(burst - 1, num_online_cpus()) + 1, ULONG_MAX);
	}
	static_sites = hp_static_call_sites(mod, &req.num_static_call_sites);
	if (IS_ERR(static_sites)) {
		hp_attachment_free(att);
		hp_err("out of memory for %s's static call sites", mod->name);
		return -ENOMEM;
	}
	req.static_call_sites = static_sites;
	bug_traps = hp_bug_traps(mod, &req.num_bug_traps);
	if (IS_ERR(bug_traps)) {
		kvfree(static_sites);
		hp_attachment_free(att);
		hp_err("out of memory for %s's bug table", mod->name);
		return -ENOMEM;
	}
	req.bug_traps = bug_traps;
	err = hp_plan_on_fresh_stack(&req, &att->session);
	kvfree(bug_traps);
	kvfree(static_sites);
	if (err || callees)
		hp_attachment_free(att);
	return err;
}

static void hp_core_text(const struct module *mod, u64 *base, u64 *size)
{
	hp_module_text(mod, false, base, size);
}

static void hp_init_text(const struct module *mod, u64 *base, u64 *size)
{
	hp_module_text(mod, true, base, size);
}

/* For `plan`: the core text's sites in att->session, nothing registered;
 * the caller frees att with hp_attachment_free. */
int hp_plan_module(struct module *mod, const char *functions,
		   struct hp_attachment *att)
{
	u64 base, size;

	hp_core_text(mod, &base, &size);
	return hp_attachment_plan(mod, functions, HP_SINK_NONE, 0, &mod->core_kallsyms,
				  base, size, false, NULL, NULL, att);
}

/* For `callees`: every function outside mod's core text it calls, into r. */
int hp_list_callees(struct module *mod, struct hp_reply *r)
{
	struct hp_attachment att = {};
	u64 base, size;

	hp_core_text(mod, &base, &size);
	return hp_attachment_plan(mod, "", HP_SINK_NONE, 0, &mod->core_kallsyms,
				  base, size, false, r, NULL, &att);
}

static int hp_attachment_attach(struct hp_target *t, struct module *mod,
				const struct mod_kallsyms *syms, u64 base, u64 size,
				bool quiet_if_none, struct hp_attachment *att)
{
	u64 plan_started;
	int err;

	/* Allocated now, so that a detach, whenever it comes, needs no memory. */
	att->drain = hp_drain_alloc();
	if (!att->drain) {
		hp_err("out of memory for %s", t->name);
		return -ENOMEM;
	}
	plan_started = ktime_get_ns();
	err = hp_attachment_plan(mod, t->functions, t->sink, t->log_burst, syms, base, size,
				 quiet_if_none, NULL, t->shared, att);
	if (!err)
		err = hp_register_probes(t->name, att, mod, ktime_get_ns() - plan_started);
	/* Probes armed before a failure may have sent callers our way. */
	if (err && att->nr_kprobes)
		hp_attachment_detach(t->name, att, "attach failed");
	else if (err)
		hp_attachment_free(att);
	return err;
}

/*
 * What lockdown=confidentiality refuses the kernel's own tracers, it refuses
 * us: kprobes (LOCKDOWN_KPROBES, as for kprobe events), and with
 * raw_pointers=1 the kernel addresses our lines would show
 * (LOCKDOWN_BPF_READ_KERNEL). Asked at every attach, since lockdown can be
 * raised at run time; under integrity neither is refused.
 */
static int hp_lockdown_refuses(const char *name)
{
	int err = security_locked_down(LOCKDOWN_KPROBES);

	if (err) {
		hp_err("lockdown (confidentiality) forbids kprobes, as for the kernel's own kprobe events: not attaching to %s",
		       name);
		return err;
	}
	if (hp_raw_pointers) {
		err = security_locked_down(LOCKDOWN_BPF_READ_KERNEL);
		if (err) {
			hp_err("lockdown (confidentiality) forbids raw_pointers=1: not attaching to %s", name);
			return err;
		}
	}
	return 0;
}

/*
 * Attaches t to mod, LIVE or, from the notifier, COMING: then its init text
 * too, with the full symbol table that still covers it. All or nothing.
 */
int hp_target_attach(struct hp_target *t, struct module *mod)
{
	bool coming = mod->state == MODULE_STATE_COMING;
	u64 base, size;
	int err, init_err = -ENOENT;

	lockdep_assert_held(&hp_lock);
	err = hp_lockdown_refuses(mod->name);
	if (err)
		return err;
	/*
	 * A forced unload may have begun since the lookup (our reference does
	 * not stop `rmmod -f`). Its notifier is waiting on hp_lock, so mod is
	 * still there to look at; kprobes would refuse every site anyway.
	 */
	if (!coming && READ_ONCE(mod->state) != MODULE_STATE_LIVE) {
		hp_err("module %s began unloading: not attaching", mod->name);
		return -EINVAL;
	}
	hp_leaks_restart(t->shared, coming);
	if (coming)
		hp_faults_next_round(t->shared, true);	/* each load takes another error path */
	if (coming) {
		/* Stable here: only do_init_module, after our LIVE, replaces it. */
		const struct mod_kallsyms *all = rcu_dereference_raw(mod->kallsyms);

		hp_init_text(mod, &base, &size);
		if (size)
			init_err = hp_attachment_attach(t, mod, all, base, size, true, &t->init);
		if (init_err && init_err != -ENOENT)
			return init_err;
	}
	hp_core_text(mod, &base, &size);
	err = hp_attachment_attach(t, mod, &mod->core_kallsyms, base, size, !init_err,
				   &t->core);
	if (err == -ENOENT && !init_err)
		err = 0;	/* calls only from its init: still worth following */
	/*
	 * The probes on the kernel's own frees: here, after the lockdown check
	 * and the leak table's restart, and only while attached (a followed
	 * target awaited costs the kernel's callers nothing).
	 */
	if (!err && t->kernel_frees) {
		t->kfrees = hp_kfrees_start(t->shared, t->name);
		if (IS_ERR(t->kfrees)) {
			err = PTR_ERR(t->kfrees);
			t->kfrees = NULL;
			hp_err("%s: the kernel's free functions cannot be probed (%d)", t->name, err);
			hp_attachment_detach(t->name, &t->core, "attach failed");
		}
	}
	if (err) {
		hp_attachment_detach(t->name, &t->init, "attach failed");
		return err;
	}
	t->mod = mod;
	t->state = HP_ATTACHED;
	hp_leaks_start(t->shared);
	return 0;
}

/* Returns the id of its last drain (hp_detach.c), 0 if there was none. */
u64 hp_target_detach(struct hp_target *t, const char *why)
{
	u64 init, core;

	lockdep_assert_held(&hp_lock);
	hp_kfrees_stop(t->kfrees);
	t->kfrees = NULL;
	init = hp_attachment_detach(t->name, &t->init, why);
	core = hp_attachment_detach(t->name, &t->core, why);
	t->mod = NULL;
	return max(init, core);
}

/*
 * A new target on the list: attached to mod (the caller holds it), or
 * awaited when mod is null. All or nothing: on failure nothing is left.
 */
int hp_target_add(const char *name, const char *functions, u32 sink, u64 burst,
		  u64 leak_slots, bool kernel_frees, bool follow, struct module *mod,
		  struct hp_target **out)
{
	struct hp_target *t = hp_target_new(name, functions, sink, burst, leak_slots,
					    kernel_frees, follow);
	int err = t ? 0 : -ENOMEM;

	lockdep_assert_held(&hp_lock);
	if (t && mod)
		err = hp_target_attach(t, mod);
	else if (t)
		pr_info("awaiting %s: attaching when it loads\n", name);
	if (err) {
		hp_target_free(t);
		return err;
	}
	list_add_tail(&t->node, &hp_targets);
	*out = t;
	return 0;
}
