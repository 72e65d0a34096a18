// SPDX-License-Identifier: GPL-2.0
/*
 * What the Rust side asks of C, besides the per-call hooks (hp_hooks.c):
 * log lines (and a command's errors copied to its reply), symbols and
 * pointers as the kernel prints them, nofault string reads, memory (with
 * the tests' allocation failure), and on i386 the 64-bit division helpers.
 */
#define pr_fmt(fmt) "hp_patcher: " fmt

#include <linux/module.h>
#include <linux/kprobes.h>
#include <linux/kallsyms.h>
#include <linux/rcupdate.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/mutex.h>
#include <linux/delay.h>
#include <linux/sched.h>
#include <linux/jiffies.h>
#include <linux/uaccess.h>
#include <linux/security.h>
#include <asm/nops.h>

#include "hp_internal.h"
#include "hp_compat.h"

#define HP_LOG_WINDOW_SECS 5

/* For the tests: make the error paths reachable on demand. */
static uint fail_alloc_nth;
module_param(fail_alloc_nth, uint, 0400);
MODULE_PARM_DESC(fail_alloc_nth, "testing: fail the Nth memory allocation of this load (0: never)");

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

/* Hands the capture of a command's errors from one task to another (the
 * plan worker, while the command's task waits for it); false if `from`
 * was not capturing. */
bool hp_capture_pass(struct task_struct *from, struct task_struct *to)
{
	if (READ_ONCE(hp_capture_task) != from)
		return false;
	WRITE_ONCE(hp_capture_task, to);
	return true;
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
void *hp_alloc(size_t size)
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
