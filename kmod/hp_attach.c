// SPDX-License-Identifier: GPL-2.0
/*
 * The targets, and attaching to one: planning its sites (on a fresh stack,
 * in a worker), arming a kprobe on each, and the pre-handler that sends a
 * probed call to the trampoline; and a target's detach. The detach
 * sequence itself, and the wait for callers still inside, are
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

#define HP_BRANCH_LEN 5		/* call rel32 and jmp rel32 */

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

/* ---- redirecting ---- */

/* A push onto the interrupted kernel stack, as the emulated call does. */
static __always_inline void hp_push(struct pt_regs *regs, unsigned long value)
{
	regs->sp -= sizeof(unsigned long);
	*(unsigned long *)regs->sp = value;
}

/*
 * Emulates the probed `call rel32` or `jmp rel32` as if it went to the
 * trampoline: a call pushes its return address, and the int3 entry leaves
 * room below a kernel-mode stack for exactly this, as text-patching.h's
 * int3_emulate_push() relies on: entry_64.S's idtentry copies the iret
 * frame 6 words down for X86_TRAP_BP, and entry_32.S's FIXUP_FRAME builds a
 * full frame below the original one (IRET_FRAME then returns to the
 * modified regs->sp). We use 1 word on x86_64 and 2 on i386. The site travels
 * with it: in %r11 on x86_64, which no argument uses; pushed on i386, where
 * regparm(3) leaves no register free. Returning 1 tells kprobes that we set
 * the next ip ourselves, so the original instruction is not executed. No
 * lock, no allocation, no sleep.
 */
static int hp_pre_handler(struct kprobe *kp, struct pt_regs *regs)
{
	struct hp_probe *probe = container_of(kp, struct hp_probe, kp);

	if (!probe->tail_jump)
		hp_push(regs, (unsigned long)kp->addr + HP_BRANCH_LEN);
	/*
	 * Counting only: the call goes where the module sent it, with its own
	 * return address (so _RET_IP_ is the site), and nothing of ours runs
	 * after this handler: the detach's grace period after disarming is all
	 * it needs. Every call is counted here, on this CPU, with no lock: a
	 * call that reaches the trampoline is counted before it gets there,
	 * and the grace period makes the count final.
	 */
	if (READ_ONCE(probe->direct)) {
		this_cpu_inc(probe->counts->passes);
		regs->ip = probe->callee;
		return 1;
	}
#ifdef CONFIG_X86_64
	regs->r11 = (unsigned long)probe->site;
#else
	hp_push(regs, (unsigned long)probe->site);
#endif
	if (probe->jump_through) {
		this_cpu_inc(probe->counts->passes);
		regs->ip = (unsigned long)hp_trampoline_jump;
	} else {
		this_cpu_inc(probe->counts->entries);
		regs->ip = (unsigned long)hp_trampoline;
	}
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

void hp_attachment_free(struct hp_attachment *att)
{
	u64 i;

	hp_drain_free_unused(att->drain);
	if (att->probes && att->session)
		for (i = 0; i < hp_session_site_count(att->session); i++)
			free_percpu(att->probes[i].counts);
	hp_session_free(att->session);
	free_percpu(att->budget);
	kvfree(att->kprobes);
	kvfree(att->probes);
	kvfree(att->text_copy);
	memset(att, 0, sizeof(*att));
}

/*
 * Tells Rust which sites kprobes took, how many hits it kept from us, and
 * each site's counters summed over CPUs. Each CPU's counters only grow, so
 * a sum read while calls go on is a lower bound of each. Once no
 * pre-handler runs (after unregister_kprobes) entries are final, and
 * exits never pass them: entries minus exits read then is never below
 * the calls still inside, and 0 means none is. (On i386 a u64 is read in
 * two halves: a read racing a carry can be 2^32 off, never 0 by mistake.)
 * An attach that stopped part-way left the probes after the last one it
 * reached without a site: they are skipped.
 */
void hp_attachment_sync(struct hp_attachment *att)
{
	u64 i, count;
	int cpu;

	if (!att->session || !att->probes)
		return;
	count = hp_session_site_count(att->session);
	for (i = 0; i < count; i++) {
		const struct hp_probe *probe = &att->probes[i];
		struct hp_site_counts sum = {};

		if (!probe->site)
			continue;
		if (probe->counts)
			for_each_possible_cpu(cpu) {
				const struct hp_site_counts *c = per_cpu_ptr(probe->counts, cpu);

				sum.entries += READ_ONCE(c->entries);
				sum.passes += READ_ONCE(c->passes);
				sum.exits += READ_ONCE(c->exits);
				sum.events += READ_ONCE(c->events);
				sum.dropped += READ_ONCE(c->dropped);
			}
		hp_site_set_probe(probe->site, probe->armed, probe->kp.nmissed, &sum);
	}
}

/*
 * Which sites go through the trampoline: after an attach, and whenever
 * fault rules change (under hp_lock). A call already past the flag's read
 * goes the way it read; a rule applies to the calls after its command.
 */
void hp_attachment_route(struct hp_attachment *att)
{
	u64 i, count;

	if (!att->session || !hp_session_may_count_only(att->session))
		return;
	count = hp_session_site_count(att->session);
	for (i = 0; i < count; i++)
		if (att->probes[i].site)
			WRITE_ONCE(att->probes[i].direct, hp_site_counts_only(att->probes[i].site));
}

/*
 * x86 kprobes' can_optimize(), which runs for every new probe, decodes the
 * probed function from its start to its end as kallsyms sees it. For the
 * last function of a module's text that end is the end of the text, and
 * the decoder may read up to MAX_INSN_SIZE bytes past an instruction that
 * starts before it: when the text ends that close to an unmapped page, the
 * kernel faults there (seen under follow, on cr_target's init text: a
 * probe in cr_target_init, "BUG: unable to handle page fault" in
 * insn_get_modrm). Such a site is not probed.
 */
static bool hp_kprobes_would_overread(const struct hp_attachment *att, unsigned long addr)
{
	unsigned long text_end = att->text_base + att->text_size;
	char sym[KSYM_SYMBOL_LEN];
	unsigned long off, size;
	const char *extent;

	if (!IS_ENABLED(CONFIG_OPTPROBES) || PAGE_ALIGN(text_end) - text_end >= MAX_INSN_SIZE)
		return false;
	sprint_symbol(sym, addr);
	extent = strchr(sym, '+');
	if (!extent || sscanf(extent, "+%lx/%lx", &off, &size) != 2)
		return true;	/* cannot tell: do not risk it */
	return addr - off + size >= text_end;
}

/*
 * How far the attach under way has got, for `progress`, which answers
 * without hp_lock (the attach holds it: arming btrfs's 957 sites takes
 * 40 s under TCG). Only the attach writes it, under hp_lock; the spinlock
 * keeps the name and the numbers of one answer together.
 */
static DEFINE_SPINLOCK(hp_progress_lock);
static struct {
	char name[MODULE_NAME_LEN];
	u64 armed, sites;	/* sites 0: no attach under way */
} hp_progress;

static void hp_progress_set(const char *name, u64 armed, u64 sites)
{
	spin_lock(&hp_progress_lock);
	strscpy(hp_progress.name, name, sizeof(hp_progress.name));
	hp_progress.armed = armed;
	hp_progress.sites = sites;
	spin_unlock(&hp_progress_lock);
}

/* `progress`: one line, "progress state=idle" or the attach's numbers. */
void hp_progress_reply(struct hp_reply *r)
{
	char name[MODULE_NAME_LEN], line[MODULE_NAME_LEN + 80];
	u64 armed, sites;

	spin_lock(&hp_progress_lock);
	strscpy(name, hp_progress.name, sizeof(name));
	armed = hp_progress.armed;
	sites = hp_progress.sites;
	spin_unlock(&hp_progress_lock);
	if (sites)
		snprintf(line, sizeof(line), "progress state=arming name=%s armed=%llu sites=%llu",
			 name, armed, sites);
	else
		snprintf(line, sizeof(line), "progress state=idle");
	hp_reply_line(r, line);
}

/*
 * Registers a probe on every planned site of att. A module that began
 * unloading meanwhile (`rmmod -f` ignores our reference; its GOING notifier
 * waits for hp_lock, so mod is still there to look at) makes kprobes
 * refuse its sites one by one: that is no refused site but a target going
 * away, and the attach stops there, leaving what it armed for the caller
 * to detach.
 */
static int hp_register_probes(const char *name, struct hp_attachment *att,
			      const struct module *mod, u64 plan_ns)
{
	u64 i, count = hp_session_site_count(att->session);
	u64 started = ktime_get_ns(), in_kprobes = 0;

	att->probes = hp_alloc(array_size(count, sizeof(*att->probes)));
	att->kprobes = att->probes ? hp_alloc(array_size(count, sizeof(*att->kprobes))) : NULL;
	if (!att->kprobes) {
		hp_err("out of memory for %llu probes", count);
		return -ENOMEM;
	}
	memset(att->probes, 0, array_size(count, sizeof(*att->probes)));
	hp_progress_set(name, 0, count);
	for (i = 0; i < count; i++) {
		struct hp_probe *probe = &att->probes[i];
		u64 addr;
		s32 rel;
		int err;

		probe->site = hp_session_site(att->session, i, &addr, &probe->tail_jump,
					      &probe->jump_through);
		/* One allocation a site: the percpu allocator serves at most
		 * 32 kB at once, 819 sites' worth of counters. */
		probe->counts = alloc_percpu_gfp(struct hp_site_counts, GFP_KERNEL | __GFP_NOWARN);
		if (!probe->counts) {
			hp_err("out of memory for %s's counters", name);
			return -ENOMEM;
		}
		hp_site_set_counts(probe->site, probe->counts);
		/* The copy holds the site as the module was loaded: its rel32. */
		memcpy(&rel, att->text_copy + (addr - att->text_base) + 1, sizeof(rel));
		probe->callee = (unsigned long)addr + HP_BRANCH_LEN + rel;
		probe->direct = hp_site_counts_only(probe->site);
		probe->kp.addr = (kprobe_opcode_t *)(unsigned long)addr;
		probe->kp.pre_handler = hp_pre_handler;
		probe->kp.post_handler = hp_post_handler;
		if (hp_kprobes_would_overread(att, addr)) {
			pr_warn("site %pS not probed: kprobes would decode past the end of %s's text there\n",
				(void *)(unsigned long)addr, name);
			continue;
		}
		in_kprobes -= ktime_get_ns();
		err = register_kprobe(&probe->kp);
		in_kprobes += ktime_get_ns();
		if (err && READ_ONCE(mod->state) == MODULE_STATE_GOING) {
			hp_err("module %s began unloading: not attaching", name);
			return -EINVAL;
		}
		if (err) {
			pr_warn("site %pS refused by kprobes (%d): not intercepted\n",
				(void *)(unsigned long)addr, err);
			continue;
		}
		probe->armed = true;
		att->kprobes[att->nr_kprobes++] = &probe->kp;
		if (i % 16 == 15)
			hp_progress_set(name, att->nr_kprobes, count);
	}
	hp_attachment_sync(att);
	if (!att->nr_kprobes) {
		hp_err("kprobes refused every site in %s", name);
		return -EINVAL;
	}
	/* Where an attach's time goes: decoding (ours), register_kprobe
	 * (kprobes': text pokes and syncs per site), and the rest (ours). */
	pr_info("attached to %s: %u of %llu sites redirected (planning %llu ms, register_kprobe %llu ms, the rest %llu ms)\n",
		name, att->nr_kprobes, count, div_u64(plan_ns, NSEC_PER_MSEC),
		div_u64(in_kprobes, NSEC_PER_MSEC),
		div_u64(ktime_get_ns() - started - in_kprobes, NSEC_PER_MSEC));
	return 0;
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
		req.budget_share = DIV_ROUND_UP(burst, num_online_cpus());
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
	if (!err) {
		err = hp_register_probes(t->name, att, mod, ktime_get_ns() - plan_started);
		hp_progress_set("", 0, 0);
	}
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
