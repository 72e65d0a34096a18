// SPDX-License-Identifier: GPL-2.0
/*
 * hp_patcher: hot-patch a running module's calls to memory functions.
 *
 * This file is the thin C edge: module parameters, the targets, finding
 * their modules, kprobe and module-notifier glue, the detach sequence, and
 * printk. The decisions (which sites, what to log) are made by the Rust core
 * through the contract in hp_glue.h; the control device is hp_control.c.
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

static ulong log_burst = 200;
module_param(log_burst, ulong, 0400);
MODULE_PARM_DESC(log_burst, "call lines logged per 5 s window, 0: unlimited; the rest are counted as suppressed");

bool hp_raw_pointers;
module_param_named(raw_pointers, hp_raw_pointers, bool, 0400);
MODULE_PARM_DESC(raw_pointers, "log pointers as they are (%px) instead of hashed like %p; exposes kernel addresses to whoever reads the log");

/* For the tests: make the error paths reachable on demand. */
static uint fail_alloc_nth;
module_param(fail_alloc_nth, uint, 0400);
MODULE_PARM_DESC(fail_alloc_nth, "testing: fail the Nth memory allocation of this load (0: never)");

static uint plan_epilogue_delay_ms;
module_param(plan_epilogue_delay_ms, uint, 0400);
MODULE_PARM_DESC(plan_epilogue_delay_ms, "testing: sleep this long in the plan worker after handing back its result");

/*
 * A gate, not a delay: a test opens it when what it needs has happened (a
 * forced unload of the target has begun), however slow the kernel.
 */
static bool attach_gate;
module_param(attach_gate, bool, 0600);
MODULE_PARM_DESC(attach_gate, "testing: hold the load-time attach between finding the target and attaching until this is written 0 (at most 300 s)");
#define HP_GATE_MAX_MS (300 * 1000)


#define HP_LOG_WINDOW_SECS 5
#define HP_BRANCH_LEN 5		/* call rel32 and jmp rel32 */

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

/*
 * While a control command runs (under hp_lock), its errors also go to its
 * reply: the task is remembered so that a log line from elsewhere (a
 * target's call line on another CPU) is never taken for one.
 */
static struct task_struct *hp_capture_task;
static struct hp_reply *hp_capture_reply;

void hp_capture_errors(struct hp_reply *r)
{
	lockdep_assert_held(&hp_lock);
	WRITE_ONCE(hp_capture_task, r ? current : NULL);
	hp_capture_reply = r;
}

/* ---- called from Rust ---- */

void hp_c_log(u32 level, const char *msg)
{
	if (level == HP_ERR) {
		pr_err("%s\n", msg);
		/* Set and cleared under hp_lock by the command's own task. */
		if (READ_ONCE(hp_capture_task) == current && hp_capture_reply) {
			char line[256];

			snprintf(line, sizeof(line), "error %s", msg);
			hp_reply_line(hp_capture_reply, line);
		}
	} else if (level == HP_WARN) {
		pr_warn("%s\n", msg);
	} else {
		pr_info("%s\n", msg);
	}
}

void hp_err(const char *fmt, ...)
{
	char msg[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	hp_c_log(HP_ERR, msg);
}

bool hp_c_is_known_code(unsigned long addr);

void hp_c_log_at(u32 level, const char *msg, unsigned long addr)
{
	char where[KSYM_SYMBOL_LEN + 16];

	/*
	 * %pS prints an address kallsyms no longer knows (a detach report
	 * after its target was unloaded) as the bare number: hash it like %p
	 * instead, so that no kernel address reaches the log.
	 */
	if (hp_c_is_known_code(addr) || hp_raw_pointers)
		snprintf(where, sizeof(where), "%pS", (void *)addr);
	else
		snprintf(where, sizeof(where), "%p (unloaded)", (void *)addr);
	if (level == HP_ERR)
		pr_err("%s at %s\n", msg, where);
	else if (level == HP_WARN)
		pr_warn("%s at %s\n", msg, where);
	else
		pr_info("%s at %s\n", msg, where);
}

/*
 * May run in any context the target calls from, so nothing here sleeps.
 * printk_deferred would be safer under scheduler or console locks, but 6.12
 * does not export it to modules (see README's limitations).
 */
void hp_c_emit_call(const char *text, unsigned long site_addr)
{
	pr_info("%s from %pS cpu=%u pid=%d comm=%s\n", text, (void *)site_addr,
		raw_smp_processor_id(), task_pid_nr(current), current->comm);
}

u64 hp_c_log_window(void)
{
	return jiffies / (HP_LOG_WINDOW_SECS * HZ);
}

u32 hp_c_format_ptr(unsigned long value, char *buf, u32 len)
{
	return scnprintf(buf, len, hp_raw_pointers ? "%px" : "%p", (void *)value);
}

/* `symbol+off/size`, the kernel's own symbolization without ` [module]`,
 * so that a control reply's value has no space. */
u32 hp_c_format_symbol(unsigned long addr, char *buf, u32 len)
{
	char sym[KSYM_SYMBOL_LEN];
	char *space;

	sprint_symbol(sym, addr);
	space = strchr(sym, ' ');
	if (space)
		*space = '\0';
	return strscpy(buf, sym, len) < 0 ? len - 1 : strlen(buf);
}

/*
 * Whether addr starts with an fentry site, as ftrace left it: the 5-byte NOP
 * (after endbr64 or its sealed form), or a call into ftrace's code while someone traces it.
 * That is the compiler's mark of a C function entered by an ordinary call
 * (-mfentry); assembly (thunks, __get_user_*, rep_movs_alternative) and
 * noinstr code have none. ftrace's own records would say the same, but its
 * exported way to ask (a filter on a private ftrace_ops) frees hashes we do
 * not own; reading the bytes has no side effect.
 */
bool hp_c_is_traceable(unsigned long addr)
{
	/* endbr64, or the 4-byte NOP that seals it when nothing takes the
	 * function's address (IBT sealing poisons unneeded ENDBRs). */
	static const u8 entry[][4] = {
		{ 0xf3, 0x0f, 0x1e, 0xfa }, { 0x66, 0x0f, 0x1f, 0x00 }, { 0x0f, 0x1f, 0x40, 0x00 },
	};
	/* ftrace's NOP (x86_nops[5]): 0f 1f 44 00 00 on x86_64, but
	 * 3e 8d 74 26 00 on 32-bit, where every callee looked untraceable. */
	static const u8 nop5[] = { BYTES_NOP5 };
	size_t i;
	char sym[KSYM_SYMBOL_LEN];
	u8 insn[9];
	const u8 *p = insn;
	s32 rel;

	if (copy_from_kernel_nofault(insn, (const void *)addr, sizeof(insn)))
		return false;
	for (i = 0; i < ARRAY_SIZE(entry); i++) {
		if (!memcmp(p, entry[i], sizeof(entry[i]))) {
			p += sizeof(entry[i]);
			break;
		}
	}
	if (!memcmp(p, nop5, sizeof(nop5)))
		return true;
	if (p[0] != 0xe8)
		return false;
	memcpy(&rel, p + 1, sizeof(rel));
	sprint_symbol_no_offset(sym, addr + (p - insn) + 5 + rel);
	return strncmp(sym, "ftrace_", 7) == 0;
}

/*
 * Where a string argument may be read: RAM the kernel maps directly (slab,
 * the page allocator, the kernel image) or a module's own memory. Never the
 * rest of the vmalloc range, where ioremap puts device registers, which a
 * wrong SPEC could otherwise point a read at (a read of a device register
 * can have effects); a string in vmalloc'd memory therefore reads as
 * unreadable. Any context.
 */
static bool hp_is_module_struct(const struct module *mod);

/* Whether addr is in some loaded module's memory (what the unexported
 * __module_address tells): the module list, walked from our own entry. */
static bool hp_in_a_module(unsigned long addr)
{
	struct module *mod;
	bool found = false;

	rcu_read_lock();
	list_for_each_entry_rcu(mod, &THIS_MODULE->list, list) {
		if (hp_is_module_struct(mod) && within_module(addr, mod)) {
			found = true;
			break;
		}
	}
	rcu_read_unlock();
	return found;
}

static bool hp_is_string_memory(unsigned long addr)
{
	if (virt_addr_valid((void *)addr))
		return true;
	if (addr < MODULES_VADDR || addr >= MODULES_END)
		return false;
	/* x86_64 keeps modules in a range of their own; i386 puts them in
	 * the vmalloc range, next to ioremap's mappings. */
	return !is_vmalloc_addr((void *)addr) || hp_in_a_module(addr);
}

/*
 * Up to len bytes of a string argument, page by page, with the kernel's
 * nofault copy: a wrong SPEC, a NULL or a user address gives -EFAULT (or
 * fewer bytes), never a fault. Any context.
 */
int hp_c_read_string(unsigned long addr, u8 *buf, u32 len)
{
	u32 done = 0;

	/* Under lockdown=confidentiality the kernel's own tracers may not read
	 * kernel memory (bpf_probe_read_kernel, kprobe events' fetch args): a
	 * string then reads as unreadable. */
	if (security_locked_down(LOCKDOWN_BPF_READ_KERNEL))
		return -EPERM;
	while (done < len) {
		unsigned long at = addr + done;
		u32 chunk = min_t(unsigned long, len - done, PAGE_SIZE - offset_in_page(at));

		if (!hp_is_string_memory(at))
			return done ? done : -EFAULT;
		if (copy_from_kernel_nofault(buf + done, (const void *)at, chunk))
			return done ? done : -EFAULT;
		if (memchr(buf + done, 0, chunk))
			return done + chunk;
		done += chunk;
	}
	return done;
}

/* Whether addr is in some function the kernel knows (kernel or module text,
 * BPF, ftrace): sprint_symbol falls back to the bare number otherwise. */
bool hp_c_is_known_code(unsigned long addr)
{
	char buf[KSYM_SYMBOL_LEN];

	sprint_symbol(buf, addr);
	return strncmp(buf, "0x", 2) != 0;
}

static atomic_t hp_alloc_count = ATOMIC_INIT(0);

/* Every allocation of ours, C or Rust, goes through here: in process
 * context only (attach, detach, commands, load, unload). */
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

/* ---- finding a module ---- */

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
	if (kernel_frees) {
		t->kfrees = hp_kfrees_start(t->shared, name);
		if (IS_ERR(t->kfrees)) {
			hp_err("%s: the kernel's free functions cannot be probed (%ld)",
			       name, PTR_ERR(t->kfrees));
			kvfree(t->functions);
			hp_shared_put(t->shared);
			kvfree(t);
			return NULL;
		}
	}
	memcpy(t->functions, functions, len);
	strscpy(t->name, name, sizeof(t->name));
	t->sink = sink;
	t->log_burst = burst == U64_MAX ? log_burst : burst;
	t->follow = follow;
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
	/* No probe on the kernel's frees looks at the table after this. */
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
#ifdef CONFIG_X86_64
	regs->r11 = (unsigned long)probe->site;
#else
	hp_push(regs, (unsigned long)probe->site);
#endif
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

void hp_attachment_free(struct hp_attachment *att)
{
	hp_drain_free_unused(att->drain);
	hp_session_free(att->session);
	kvfree(att->kprobes);
	kvfree(att->probes);
	kvfree(att->text_copy);
	memset(att, 0, sizeof(*att));
}

/* Tells Rust which sites kprobes took and how many hits it kept from us. */
void hp_attachment_sync(struct hp_attachment *att)
{
	u64 i, count;

	if (!att->session)
		return;
	count = hp_session_site_count(att->session);
	for (i = 0; i < count; i++)
		hp_site_set_probe(att->probes[i].site, att->probes[i].armed,
				  att->probes[i].kp.nmissed);
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
 * Registers a probe on every planned site of att. A module that began
 * unloading meanwhile (`rmmod -f` ignores our reference; its GOING notifier
 * waits for hp_lock, so mod is still there to look at) makes kprobes
 * refuse its sites one by one: that is no refused site but a target going
 * away, and the attach stops there, leaving what it armed for the caller
 * to detach.
 */
static int hp_register_probes(const char *name, struct hp_attachment *att,
			      const struct module *mod)
{
	u64 i, count = hp_session_site_count(att->session);

	att->probes = hp_alloc(array_size(count, sizeof(*att->probes)));
	att->kprobes = att->probes ? hp_alloc(array_size(count, sizeof(*att->kprobes))) : NULL;
	if (!att->kprobes) {
		hp_err("out of memory for %llu probes", count);
		return -ENOMEM;
	}
	memset(att->probes, 0, array_size(count, sizeof(*att->probes)));
	for (i = 0; i < count; i++) {
		struct hp_probe *probe = &att->probes[i];
		u64 addr;
		int err;

		probe->site = hp_session_site(att->session, i, &addr, &probe->tail_jump,
					      &probe->jump_through);
		probe->kp.addr = (kprobe_opcode_t *)(unsigned long)addr;
		probe->kp.pre_handler = hp_pre_handler;
		probe->kp.post_handler = hp_post_handler;
		if (hp_kprobes_would_overread(att, addr)) {
			pr_warn("site %pS not probed: kprobes would decode past the end of %s's text there\n",
				(void *)(unsigned long)addr, name);
			continue;
		}
		err = register_kprobe(&probe->kp);
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
	}
	hp_attachment_sync(att);
	if (!att->nr_kprobes) {
		hp_err("kprobes refused every site in %s", name);
		return -EINVAL;
	}
	pr_info("attached to %s: %u of %llu sites redirected\n", name,
		att->nr_kprobes, count);
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
	bool capture = READ_ONCE(hp_capture_task) == pw->caller;
#ifdef CONFIG_FAULT_INJECTION
	/* failslab's task filter fails what it would have failed the caller. */
	bool make_it_fail = current->make_it_fail;

	current->make_it_fail = pw->caller->make_it_fail;
#endif
	if (capture)
		WRITE_ONCE(hp_capture_task, current);
	pw->err = hp_plan(pw->req, pw->session);
	if (capture)
		WRITE_ONCE(hp_capture_task, pw->caller);
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
	int err;

	/* Allocated now, so that a detach, whenever it comes, needs no memory. */
	att->drain = hp_drain_alloc();
	if (!att->drain) {
		hp_err("out of memory for %s", t->name);
		return -ENOMEM;
	}
	err = hp_attachment_plan(mod, t->functions, t->sink, t->log_burst, syms, base, size,
				 quiet_if_none, NULL, t->shared, att);
	if (!err)
		err = hp_register_probes(t->name, att, mod);
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

/* ---- following the targets' modules ---- */

static struct hp_target *hp_target_of(const struct module *mod)
{
	struct hp_target *t;

	list_for_each_entry(t, &hp_targets, node)
		if (t->mod == mod)
			return t;
	return NULL;
}

/* COMING, as hp_module_coming_nb passes it on; hp_module_nb ignores COMING. */
#define HP_STATE_COMING_LAST (-1UL)

static int hp_module_event(struct notifier_block *nb, unsigned long state,
			   void *data)
{
	struct module *mod = data;
	struct hp_target *t;

	/*
	 * Always through the lock, never a peek first: an attach between
	 * finding its module and setting t->mod holds the lock, and a GOING
	 * must wait for it, or a forced unload frees the module under it.
	 */
	mutex_lock(&hp_lock);
	switch (state) {
	case HP_STATE_COMING_LAST:
		t = hp_find_target(mod->name);
		if (t && t->follow && t->state != HP_ATTACHED) {
			pr_info("%s is loading: attaching before its init\n", mod->name);
			t->state = hp_target_attach(t, mod) ? HP_REFUSED : HP_ATTACHED;
		}
		break;
	case MODULE_STATE_LIVE:
		/* Before kprobes' notifier and before the kernel frees init text. */
		t = hp_target_of(mod);
		if (t)
			hp_faults_load_event(t->shared, false);
		if (t && t->init.session)
			hp_attachment_detach(t->name, &t->init, "init done");
		break;
	case MODULE_STATE_GOING:
		t = hp_target_of(mod);
		if (!t)
			break;
		pr_info("%s is being unloaded: detaching\n", mod->name);
		{
			/* Its text is still mapped: the sites still have names. */
			const struct hp_session *sessions[] = { t->core.session, t->init.session };

			hp_leaks_log(t->shared, t->name, sessions, ARRAY_SIZE(sessions));
			hp_faults_load_event(t->shared, true);
		}
		hp_target_detach(t, "target unloaded");
		if (t->follow) {
			t->state = HP_AWAITED;
		} else {
			list_del(&t->node);
			hp_target_free(t);
		}
		break;
	}
	mutex_unlock(&hp_lock);
	return NOTIFY_OK;
}

/* LIVE and GOING: before kprobes' own notifier (priority 0), which would
 * drop our probes without restoring the text. */
static struct notifier_block hp_module_nb = {
	.notifier_call = hp_module_event,
	.priority = 1,
};

/*
 * COMING: after every other notifier. Some patch the new module's text at
 * COMING (static_call's, at priority 0, rewrites the calls of
 * cond_resched() and friends): attaching before them would decode, and
 * keep as the reference for detach, text that is not final yet.
 */
static int hp_module_coming(struct notifier_block *nb, unsigned long state,
			    void *data)
{
	if (state != MODULE_STATE_COMING)
		return NOTIFY_DONE;
	return hp_module_event(nb, HP_STATE_COMING_LAST, data);
}

static struct notifier_block hp_module_coming_nb = {
	.notifier_call = hp_module_coming,
	.priority = INT_MIN,
};

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

#ifdef CONFIG_X86_32
/*
 * The 64-bit division helpers LLVM calls from the Rust object (formatting
 * a u64 divides). LLVM passes their u64 arguments as gcc does under
 * regparm(3), which compiler_builtins' own versions (built by rustc with
 * -Zregparm=3) do not expect; these, built by gcc, do. xtask renames the
 * others away (build.rs, I386_C_LIBCALLS).
 */
u64 __udivdi3(u64 a, u64 b);
u64 __umoddi3(u64 a, u64 b);
s64 __divdi3(s64 a, s64 b);
s64 __moddi3(s64 a, s64 b);

u64 __udivdi3(u64 a, u64 b)
{
	return div64_u64(a, b);
}

u64 __umoddi3(u64 a, u64 b)
{
	u64 rem;

	div64_u64_rem(a, b, &rem);
	return rem;
}

s64 __divdi3(s64 a, s64 b)
{
	return div64_s64(a, b);
}

s64 __moddi3(s64 a, s64 b)
{
	return a - div64_s64(a, b) * b;
}
#endif

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

static int __init hp_init(void)
{
	int err;

	err = hp_check_abi();
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
	err = register_module_notifier(&hp_module_nb);
	if (err)
		goto out_decoder;
	err = register_module_notifier(&hp_module_coming_nb);
	if (err)
		goto out_notifier;
	if (target_name && *target_name) {
		err = hp_attach_at_load();
		if (err)
			goto out_notifier;
	}
	err = hp_control_init();
	if (err)
		goto out_detach;
	return 0;
out_detach:
	hp_detach_all("hp_patcher failed to load");
out_notifier:
	unregister_module_notifier(&hp_module_coming_nb);
	unregister_module_notifier(&hp_module_nb);
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
	unregister_module_notifier(&hp_module_coming_nb);
	unregister_module_notifier(&hp_module_nb);
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
