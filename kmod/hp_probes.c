// SPDX-License-Identifier: GPL-2.0
/*
 * An attachment's probes: arming one kprobe per planned site, the
 * pre-handler that counts each call and sends it to the trampoline (or
 * straight on, when only counting), the per-CPU counters and their sums,
 * and how far an attach under way has got.
 */
#define pr_fmt(fmt) "hp_patcher: " fmt

#include <linux/module.h>
#include <linux/kprobes.h>
#include <linux/kallsyms.h>
#include <linux/percpu.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <asm/insn.h>	/* MAX_INSN_SIZE */

#include "hp_internal.h"
#include "hp_compat.h"

#define HP_BRANCH_LEN 5		/* call rel32 and jmp rel32 */

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
static int hp_arm_sites(const char *name, struct hp_attachment *att,
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

int hp_register_probes(const char *name, struct hp_attachment *att,
		       const struct module *mod, u64 plan_ns)
{
	int err = hp_arm_sites(name, att, mod, plan_ns);

	hp_progress_set("", 0, 0);
	return err;
}
