// SPDX-License-Identifier: GPL-2.0
/*
 * cr_target - stand-in "driver" used as the victim of the hp_patcher
 * hot-patching tests.
 *
 * It calls the memory functions hp_patcher intercepts from every context a
 * driver calls them from:
 *   task      one kthread per online CPU, a fixed "round" of calls;
 *   irqoff    the same kthreads, with interrupts disabled (local_lock_irqsave);
 *   spinlock  the same kthreads, holding a spinlock both of them take;
 *   softirq   a timer_list callback;
 *   hardirq   an hrtimer callback (HRTIMER_MODE_REL_HARD).
 *
 * On PREEMPT_RT nothing may allocate with interrupts really off or in hard
 * interrupt context, and spinlock_t sleeps. The contexts become what a
 * driver uses there instead (CR_RT below, the one place that differs):
 * irqoff holds the same local_lock, which on RT disables migration and
 * takes a per-CPU lock but leaves interrupts on; spinlock's lock is an
 * rt_mutex, preemptible; hardirq's hrtimer is a soft one, run by the timer
 * softirq. The names stay, so that the tests compare like with like.
 * The atomic contexts use GFP_ATOMIC and only kmalloc/kfree-type functions.
 *
 * Every call is paired with an atomic counter increment placed directly
 * before it, keyed by context and by the symbol the compiler really emits
 * for that call on the kernel it is built for (e.g. kmalloc() with a
 * variable size is a call to __kmalloc_noprof on 6.12, __kmalloc on 6.1).
 * The tests compare these counters with hp_patcher's kprobe hit counters,
 * so the counters must match the number of executed call/jmp instructions
 * exactly. Each context's calls live in functions of their own (named
 * cr_<context>_* except the task round's), so that hp_patcher's per-site
 * hits can be summed per context too.
 *
 * Nothing else in this module calls any of the counted functions, so there
 * are no uncounted call sites.
 *
 * debugfs interface (/sys/kernel/debug/cr_target/):
 *   pause     rw  write "1": pause and block until no context can make a
 *                 call any more (workers parked, timers stopped and their
 *                 callbacks finished); write "0": resume;
 *                 read: "0\n" or "1\n"
 *   counters  r   "<symbol> <count>\n" per function, all contexts summed,
 *                 then "rounds <n>\n", then per context:
 *                 "run <context> <runs> <runs not in that context>\n" and
 *                 "call <context> <symbol> <count>\n" for each symbol that
 *                 context has called
 *   symbols   r   "<role> <symbol>\n": which symbol each kind of call is on
 *                 this kernel (role names do not change between kernels)
 *   text_crc  r   "%08x\n" crc32_le(~0, core text of this module)
 *   cpus      r   number of worker threads
 *   typed     r   "<callee> <calls> <wrong results>\n" per cr_callee function
 *   gate      rw  write a ticket: a work item calls cr_gate_wait(ticket);
 *                 read: "idle", "waiting <ticket>", "returned <ticket> <result>"
 */

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/version.h>
#include <linux/init.h>
#include <linux/kthread.h>
#include <linux/sched.h>
#include <linux/delay.h>
#include <linux/cpu.h>
#include <linux/cpumask.h>
#include <linux/percpu.h>
#include <linux/wait.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/irqflags.h>
#include <linux/random.h>
#include <linux/local_lock.h>
#include <linux/preempt.h>
#include <linux/timer.h>
#include <linux/hrtimer.h>
#include <linux/ktime.h>
#include <linux/atomic.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/vmalloc.h>
#include <linux/mm.h>
#include <linux/numa.h>
#include <linux/debugfs.h>
#include <linux/seq_file.h>
#include <linux/fs.h>
#include <linux/uaccess.h>
#include <linux/crc32.h>
#include <linux/kprobes.h>
#include <linux/workqueue.h>
#include "cr_callee.h"

/*
 * The symbol a call compiles to. Memory allocation profiling (6.10) renamed
 * the allocators to *_noprof, and 6.11 renamed kmalloc_trace and friends to
 * __kmalloc_cache*. Both columns were checked against `objdump -dr` of this
 * module built for Debian's 6.12.117 and 6.1.0-56; 6.10 is a mix of both
 * and is refused rather than counted wrongly.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 11, 0)
#define CR_SYM(v6_12, v6_1)	v6_12
#elif LINUX_VERSION_CODE < KERNEL_VERSION(6, 10, 0)
#define CR_SYM(v6_12, v6_1)	v6_1
#else
#error "cr_target does not know which allocator symbols Linux 6.10 calls"
#endif

/*
 * 7.x's krealloc takes an alignment and a node: krealloc_noprof became a
 * macro over krealloc_node_align_noprof.
 */
#ifdef krealloc_noprof
#define CR_KREALLOC_SYM	"krealloc_node_align_noprof"
#else
#define CR_KREALLOC_SYM	CR_SYM("krealloc_noprof", "krealloc")
#endif

/* The timer API's renames: timer_delete_sync (6.2), hrtimer_setup (6.13). */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
#define cr_timer_delete_sync(t)	timer_delete_sync(t)
#else
#define cr_timer_delete_sync(t)	del_timer_sync(t)
#endif
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 13, 0)
#define cr_hrtimer_setup(t, fn, clock, mode)	hrtimer_setup(t, fn, clock, mode)
#else
#define cr_hrtimer_setup(t, fn, clock, mode)	\
	do { hrtimer_init(t, clock, mode); (t)->function = fn; } while (0)
#endif

/* Counter ids; the order here is the order of the "counters" file. */
enum cr_fn {
	CR_KMALLOC,		/* kmalloc(var)                   */
	CR_KMALLOC_CACHE,	/* kzalloc(64)                    */
	CR_KMALLOC_NODE,	/* kmalloc_node(var)              */
	CR_KMALLOC_CACHE_NODE,	/* kzalloc_node(64)               */
	CR_KMALLOC_LARGE,	/* kmalloc(16 KiB)                */
	CR_KMALLOC_TRACK,	/* kmalloc_track_caller(var)      */
	CR_CACHE_ALLOC,		/* kmem_cache_alloc()             */
	CR_CACHE_ALLOC_NODE,	/* kmem_cache_alloc_node()        */
	CR_CACHE_FREE,		/* kmem_cache_free()              */
	CR_KSTRDUP,		/* kstrdup()                      */
	CR_KMEMDUP,		/* kmemdup()                      */
	CR_KREALLOC,		/* krealloc()                     */
	CR_VMALLOC,		/* vmalloc()                      */
	CR_VFREE,		/* vfree()                        */
	CR_KVMALLOC,		/* kvmalloc()                     */
	CR_KVFREE,		/* kvfree()                       */
	CR_KFREE,		/* kfree(), incl. tail jmp        */
	CR_KFREE_RCU,		/* kfree_rcu(), kvfree_rcu_mightsleep() */
	CR_KFREE_UNPROBEABLE,	/* kfree() from .kprobes.text     */
	CR_NR_FN,
};

struct cr_fn_desc {
	const char *role;	/* what the source calls; kernel-independent */
	const char *sym;	/* what the emitted call/jmp references */
};

static const struct cr_fn_desc cr_fns[CR_NR_FN] = {
	[CR_KMALLOC]		= { "kmalloc",
				    CR_SYM("__kmalloc_noprof", "__kmalloc") },
	[CR_KMALLOC_CACHE]	= { "kzalloc",
				    CR_SYM("__kmalloc_cache_noprof", "kmalloc_trace") },
	[CR_KMALLOC_NODE]	= { "kmalloc_node",
				    CR_SYM("__kmalloc_node_noprof", "__kmalloc_node") },
	[CR_KMALLOC_CACHE_NODE]	= { "kzalloc_node",
				    CR_SYM("__kmalloc_cache_node_noprof", "kmalloc_node_trace") },
	[CR_KMALLOC_LARGE]	= { "kmalloc_large",
				    CR_SYM("__kmalloc_large_noprof", "kmalloc_large") },
	[CR_KMALLOC_TRACK]	= { "kmalloc_track_caller",
				    CR_SYM("__kmalloc_node_track_caller_noprof",
					   "__kmalloc_node_track_caller") },
	[CR_CACHE_ALLOC]	= { "kmem_cache_alloc",
				    CR_SYM("kmem_cache_alloc_noprof", "kmem_cache_alloc") },
	[CR_CACHE_ALLOC_NODE]	= { "kmem_cache_alloc_node",
				    CR_SYM("kmem_cache_alloc_node_noprof",
					   "kmem_cache_alloc_node") },
	[CR_CACHE_FREE]		= { "kmem_cache_free", "kmem_cache_free" },
	[CR_KSTRDUP]		= { "kstrdup", "kstrdup" },
	[CR_KMEMDUP]		= { "kmemdup", CR_SYM("kmemdup_noprof", "kmemdup") },
	[CR_KREALLOC]		= { "krealloc", CR_KREALLOC_SYM },
	[CR_VMALLOC]		= { "vmalloc", CR_SYM("vmalloc_noprof", "vmalloc") },
	[CR_VFREE]		= { "vfree", "vfree" },
	/* kvmalloc() is inline; this is the exported function it calls. */
	[CR_KVMALLOC]		= { "kvmalloc",
				    CR_SYM("__kvmalloc_node_noprof", "kvmalloc_node") },
	[CR_KVFREE]		= { "kvfree", "kvfree" },
	[CR_KFREE]		= { "kfree", "kfree" },
	/* Both macros call it (the object freed a grace period later). */
	[CR_KFREE_RCU]		= { "kfree_rcu", "kvfree_call_rcu" },
	/* Not a symbol: the '@' tells the tests this call cannot be probed. */
	[CR_KFREE_UNPROBEABLE]	= { "kfree_unprobeable", "kfree@kprobes.text" },
};

/* The contexts calls are made from; the order of the "counters" file. */
enum cr_ctx {
	CR_CTX_TASK,
	CR_CTX_IRQOFF,
	CR_CTX_SPINLOCK,
	CR_CTX_SOFTIRQ,
	CR_CTX_HARDIRQ,
	CR_NR_CTX,
};

static const char *const cr_ctx_name[CR_NR_CTX] = {
	[CR_CTX_TASK]		= "task",
	[CR_CTX_IRQOFF]		= "irqoff",
	[CR_CTX_SPINLOCK]	= "spinlock",
	[CR_CTX_SOFTIRQ]	= "softirq",
	[CR_CTX_HARDIRQ]	= "hardirq",
};

static atomic64_t cr_calls[CR_NR_CTX][CR_NR_FN];
static atomic64_t cr_rounds;
static atomic64_t cr_ctx_runs[CR_NR_CTX];
/* Runs that found themselves in another context than their name says. */
static atomic64_t cr_ctx_wrong[CR_NR_CTX];

/* Count one call; always placed immediately before the call it counts. */
#define CR_COUNT(ctx, id)	atomic64_inc(&cr_calls[ctx][id])

/*
 * Allocations that came back NULL, per context and function: what a fault
 * rule made fail, as the target itself saw it. Every path below survives
 * a NULL (kfree, vfree and kvfree take one; the rest is checked).
 */
static atomic64_t cr_nulls[CR_NR_CTX][CR_NR_FN];
#define CR_NULL(ctx, id, p)	do { if (!(p)) atomic64_inc(&cr_nulls[ctx][id]); } while (0)

/*
 * Called at the start of each context's calls: proves to the tests that
 * the context is the one claimed (a timer could, e.g., be run from a
 * thread on PREEMPT_RT), rather than trusting the code's structure.
 */
static inline void cr_ctx_enter(enum cr_ctx ctx, bool as_claimed)
{
	atomic64_inc(&cr_ctx_runs[ctx]);
	if (!as_claimed)
		atomic64_inc(&cr_ctx_wrong[ctx]);
}

static struct kmem_cache *cr_cache;

#define CR_OBJ_SIZE	96
#define CR_VMALLOC_SIZE	8192
#define CR_DUP_SIZE	48
/* Above KMALLOC_MAX_CACHE_SIZE (two pages with SLUB): the page allocator. */
#define CR_LARGE_SIZE	16384

static const u8 cr_pattern[CR_DUP_SIZE] = {
	0x63, 0x72, 0x5f, 0x74, 0x61, 0x72, 0x67, 0x65,
	0x74, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06,
	0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
	0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16,
	0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e,
	0x1f, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26,
};

/* Worker bookkeeping. */
static DEFINE_PER_CPU(struct task_struct *, cr_task);
static unsigned int cr_nr_workers;

/* Taken by the workers of all CPUs, so that it is really contended. */
static DEFINE_SPINLOCK(cr_lock);

/* Timer periods: every tick for the timer, 5 ms for the hrtimer. */
#define CR_TIMER_JIFFIES	1
#define CR_HRTIMER_NS		(5 * NSEC_PER_MSEC)

static struct timer_list cr_timer;
static struct hrtimer cr_hrtimer;
static unsigned int cr_hardirq_seq;	/* the hrtimer never runs concurrently */
static unsigned int cr_softirq_seq;	/* nor does the timer */

/* Pause protocol. */
static bool cr_paused;
static atomic_t cr_parked = ATOMIC_INIT(0);
static DECLARE_WAIT_QUEUE_HEAD(cr_resume_wq);	/* workers wait here  */
static DECLARE_WAIT_QUEUE_HEAD(cr_ack_wq);	/* pauser waits here  */
static DEFINE_MUTEX(cr_pause_lock);		/* serialises writers */

static struct dentry *cr_dir;

/*
 * Must stay a separate function whose body compiles to "jmp kfree"
 * (a tail call), so that hp_patcher has a jmp site to patch.  The caller
 * counts the kfree before calling this.
 */
static noinline void cr_release(void *p)
{
	kfree(p);
}

/*
 * A call that kprobes must refuse: code in .kprobes.text (the seed's
 * "__kprobes qualifier") is on the kprobe blacklist, so hp_patcher has to
 * report this site as not intercepted. The barrier keeps it a real `call`.
 */
static noinline void __kprobes cr_unprobeable_free(void *p)
{
	kfree(p);
	barrier();
}

static inline void cr_touch(void *p, unsigned int seq)
{
	if (p)
		*(volatile u8 *)p = (u8)seq;
}

/*
 * Calls outside the memory catalogue, with typed arguments and known
 * results, one each per round: hp_patcher's any-callee tests check every
 * recorded call against its own arguments (the string parses to the value,
 * the nanoseconds split into the two-register timespec64).
 */
static const char *const cr_numbers[] = { "7", "-42", "123456", "0x1f", "2147483648", "" };
static long cr_typed_sink;

/*
 * Calls into cr_callee, each counted, and each result checked against what
 * the callee must return: an interception that loses or garbles an argument
 * (a register, a stack word, a struct passed in memory) or the result shows
 * up as a "wrong" count in the typed file.
 */
enum cr_callee_fn {
	CR_CALLEE_MIXED, CR_CALLEE_MATCH, CR_CALLEE_SEVEN, CR_CALLEE_BY_VALUE, CR_CALLEE_SUM,
	CR_CALLEE_WIDE, CR_NR_CALLEE
};
static const char *const cr_callee_names[CR_NR_CALLEE] = {
	"cr_mixed", "cr_match", "cr_seven", "cr_by_value", "cr_sum", "cr_wide",
};
static atomic64_t cr_callee_calls[CR_NR_CALLEE];
static atomic64_t cr_callee_wrong[CR_NR_CALLEE];

/* Labels of known length; NULL and the 36-byte one test unreadable and truncated strings. */
static const char *const cr_labels[] = { "read", "write-back", "", NULL, "a label longer than thirty-two bytes" };
static unsigned long cr_cookies[4];

static void cr_callee_result(enum cr_callee_fn fn, bool right)
{
	atomic64_inc(&cr_callee_calls[fn]);
	if (!right)
		atomic64_inc(&cr_callee_wrong[fn]);
}

static noinline void cr_callee_calls_round(unsigned int seq)
{
	const char *label = cr_labels[seq % ARRAY_SIZE(cr_labels)];
	int level = (int)(seq % 2000) - 1000;
	size_t len = (size_t)seq * 7;
	/*
	 * Every 8th cookie is text on this kthread's stack, which is in the
	 * vmalloc range (VMAP_STACK) and not a module's: a string read there
	 * (a wrong SPEC) must find nothing, since ioremap puts device
	 * registers in that range too.
	 */
	char stack_cookie[16] = "stack cookie";
	const void *cookie = seq % 8 == 0 ? (const void *)stack_cookie :
			     (const void *)&cr_cookies[seq % ARRAY_SIZE(cr_cookies)];
	enum cr_mode mode = (enum cr_mode)(1 << (seq % 3));
	bool urgent = seq & 1;
	size_t n = 5 + seq % 2;
	struct cr_triple t = { seq, (u64)seq << 20, ~(u64)seq };
	u64 s = seq;

	cr_callee_result(CR_CALLEE_MIXED, cr_mixed(level, len, cookie, label, mode, urgent) ==
			 cr_mixed_expected(level, len, cookie, label ? (long)strlen(label) : -1, mode, urgent));
	cr_callee_result(CR_CALLEE_MATCH, cr_match(label, "write", n) == (label && !strncmp(label, "write", n)));
	cr_callee_result(CR_CALLEE_SEVEN, cr_seven(s, s + 1, s + 2, s + 3, s + 4, s + 5, s << 32) ==
			 cr_seven_expected(s, s + 1, s + 2, s + 3, s + 4, s + 5, s << 32));
	cr_callee_result(CR_CALLEE_BY_VALUE, cr_by_value(t) == cr_triple_expected(t));
	cr_callee_result(CR_CALLEE_SUM, cr_sum(CR_SUM_N, (long)s, (long)s + 1, (long)s + 2, (long)s + 3,
					       (long)s + 4, (long)s + 5, (long)s + 6, (long)s + 7, (long)s + 8,
					       (long)s + 9, (long)s + 10, (long)s + 11, (long)s + 12,
					       (long)s + 13, (long)s + 14) == cr_sum_expected((long)s));
	cr_callee_result(CR_CALLEE_WIDE, cr_wide(level, s << 33 | s, -level) ==
					 cr_wide_expected(level, s << 33 | s, -level));
}

static noinline void cr_typed_calls(unsigned int seq)
{
	struct timespec64 ts;
	int value = 0;
	int err;

	err = kstrtoint(cr_numbers[seq % ARRAY_SIZE(cr_numbers)], 10, &value);
	ts = ns_to_timespec64((s64)seq * 1000000007LL);
	WRITE_ONCE(cr_typed_sink, err + value + ts.tv_sec + ts.tv_nsec);
	cr_callee_calls_round(seq);
}

/*
 * A call that sleeps inside its callee: a write of a ticket number to the
 * gate file makes a work item call cr_gate_wait(ticket), which returns only
 * when cr_callee's own gate file is written. Reading gate shows
 * "idle", "waiting <ticket>" or "returned <ticket> <result>".
 */
static DEFINE_MUTEX(cr_gate_lock);
/* Our own: 7.x warns about queueing on system_unbound_wq. */
static struct workqueue_struct *cr_gate_wq;
static unsigned int cr_gate_ticket;
static long cr_gate_result;
static int cr_gate_state;	/* 0 idle, 1 waiting, 2 returned */

static void cr_gate_fn(struct work_struct *work)
{
	long r = cr_gate_wait(READ_ONCE(cr_gate_ticket));

	WRITE_ONCE(cr_gate_result, r);
	smp_store_release(&cr_gate_state, 2);
}
static DECLARE_WORK(cr_gate_work, cr_gate_fn);

/* One task-context round: one call per counter below (kfree: five). */
static noinline void cr_round(unsigned int seq)
{
	size_t n = 32 + (seq * 37u) % 481u;		/* 32..512    */
	size_t nn = 32 + (seq * 53u + 11u) % 481u;	/* 32..512    */
	size_t kvn = 64 + (seq * 97u) % 4033u;		/* 64..4096   */
	void *a, *z, *nd, *obj, *s, *d, *r, *v, *kv;
	const enum cr_ctx ctx = CR_CTX_TASK;

	cr_ctx_enter(ctx, in_task() && !irqs_disabled());

	CR_COUNT(ctx, CR_KMALLOC);
	a = kmalloc(n, GFP_KERNEL);
	CR_NULL(ctx, CR_KMALLOC, a);

	CR_COUNT(ctx, CR_KMALLOC_CACHE);
	z = kzalloc(64, GFP_KERNEL);
	CR_NULL(ctx, CR_KMALLOC_CACHE, z);

	CR_COUNT(ctx, CR_KMALLOC_NODE);
	nd = kmalloc_node(nn, GFP_KERNEL, NUMA_NO_NODE);
	CR_NULL(ctx, CR_KMALLOC_NODE, nd);

	CR_COUNT(ctx, CR_CACHE_ALLOC);
	obj = kmem_cache_alloc(cr_cache, GFP_KERNEL);
	CR_NULL(ctx, CR_CACHE_ALLOC, obj);

	CR_COUNT(ctx, CR_KSTRDUP);
	s = kstrdup("cr_target", GFP_KERNEL);
	CR_NULL(ctx, CR_KSTRDUP, s);

	CR_COUNT(ctx, CR_KMEMDUP);
	d = kmemdup(cr_pattern, CR_DUP_SIZE, GFP_KERNEL);
	CR_NULL(ctx, CR_KMEMDUP, d);

	/* On failure krealloc leaves d valid; on success d was freed. */
	CR_COUNT(ctx, CR_KREALLOC);
	r = krealloc(d, CR_DUP_SIZE + n, GFP_KERNEL);
	CR_NULL(ctx, CR_KREALLOC, r);
	if (r)
		d = r;

	CR_COUNT(ctx, CR_VMALLOC);
	v = vmalloc(CR_VMALLOC_SIZE);
	CR_NULL(ctx, CR_VMALLOC, v);

	CR_COUNT(ctx, CR_KVMALLOC);
	kv = kvmalloc(kvn, GFP_KERNEL);
	CR_NULL(ctx, CR_KVMALLOC, kv);

	cr_touch(a, seq);
	cr_touch(z, seq);
	cr_touch(nd, seq);
	cr_touch(obj, seq);
	cr_touch(d, seq);
	cr_touch(v, seq);
	cr_touch(kv, seq);

	CR_COUNT(ctx, CR_KVFREE);
	kvfree(kv);

	CR_COUNT(ctx, CR_VFREE);
	vfree(v);

	/* kmem_cache_free() must not be given NULL; count only real calls. */
	if (obj) {
		CR_COUNT(ctx, CR_CACHE_FREE);
		kmem_cache_free(cr_cache, obj);
	}

	CR_COUNT(ctx, CR_KFREE_UNPROBEABLE);
	cr_unprobeable_free(s);

	CR_COUNT(ctx, CR_KFREE);
	kfree(nd);

	CR_COUNT(ctx, CR_KFREE);
	kfree(z);

	CR_COUNT(ctx, CR_KFREE);
	kfree(a);

	CR_COUNT(ctx, CR_KFREE);
	cr_release(d);			/* tail call: jmp kfree */

	cr_typed_calls(seq);
	atomic64_inc(&cr_rounds);
}

#define CR_RT IS_ENABLED(CONFIG_PREEMPT_RT)
/* Soft on RT, where a hard hrtimer may not allocate. */
#define CR_HRTIMER_MODE (CR_RT ? HRTIMER_MODE_REL_SOFT : HRTIMER_MODE_REL_HARD)

struct cr_irqoff {
	local_lock_t lock;
};
static DEFINE_PER_CPU(struct cr_irqoff, cr_irqoff) = { .lock = INIT_LOCAL_LOCK(lock) };

/* Interrupts off, as a driver's hot path under local_lock_irqsave() is
 * (on RT: migration off and a per-CPU lock, interrupts on). */
static noinline void cr_irqoff_round(unsigned int seq)
{
	size_t n = 16 + (seq * 29u) % 241u;		/* 16..256 */
	const enum cr_ctx ctx = CR_CTX_IRQOFF;
	unsigned long flags;
	void *a, *s;

	local_lock_irqsave(&cr_irqoff.lock, flags);
	cr_ctx_enter(ctx, in_task() && (CR_RT || irqs_disabled()));

	CR_COUNT(ctx, CR_KMALLOC_TRACK);
	a = kmalloc_track_caller(n, GFP_ATOMIC);
	CR_NULL(ctx, CR_KMALLOC_TRACK, a);

	CR_COUNT(ctx, CR_KSTRDUP);
	s = kstrdup("cr_irqoff", GFP_ATOMIC);
	CR_NULL(ctx, CR_KSTRDUP, s);

	cr_touch(a, seq);

	CR_COUNT(ctx, CR_KFREE);
	kfree(s);

	CR_COUNT(ctx, CR_KFREE);
	kfree(a);

	local_unlock_irqrestore(&cr_irqoff.lock, flags);
}

/* Under a spinlock the workers of both CPUs contend for. */
static noinline void cr_spinlock_round(unsigned int seq)
{
	size_t n = 64 + (seq * 31u) % 449u;		/* 64..512 */
	const enum cr_ctx ctx = CR_CTX_SPINLOCK;
	void *big, *p, *r;

	spin_lock(&cr_lock);
	cr_ctx_enter(ctx, in_task() && spin_is_locked(&cr_lock));

	CR_COUNT(ctx, CR_KMALLOC_LARGE);
	big = kmalloc(CR_LARGE_SIZE, GFP_ATOMIC);
	CR_NULL(ctx, CR_KMALLOC_LARGE, big);

	CR_COUNT(ctx, CR_KMALLOC_CACHE);
	p = kzalloc(64, GFP_ATOMIC);
	CR_NULL(ctx, CR_KMALLOC_CACHE, p);

	/* On failure krealloc leaves p valid; on success p was freed. */
	CR_COUNT(ctx, CR_KREALLOC);
	r = krealloc(p, n, GFP_ATOMIC);
	CR_NULL(ctx, CR_KREALLOC, r);
	if (r)
		p = r;

	cr_touch(big, seq);
	cr_touch(p, seq);

	CR_COUNT(ctx, CR_KFREE);
	kfree(p);

	CR_COUNT(ctx, CR_KFREE);
	kfree(big);

	spin_unlock(&cr_lock);
}

/*
 * Softirq (TIMER_SOFTIRQ). Re-arms itself unless paused; cr_pause() then
 * waits for a running callback with cr_timer_delete_sync().
 */
static void cr_softirq_timer(struct timer_list *t)
{
	const enum cr_ctx ctx = CR_CTX_SOFTIRQ;
	unsigned int seq = cr_softirq_seq++;
	void *obj, *d;

	if (READ_ONCE(cr_paused))
		return;
	cr_ctx_enter(ctx, in_serving_softirq());

	CR_COUNT(ctx, CR_CACHE_ALLOC_NODE);
	obj = kmem_cache_alloc_node(cr_cache, GFP_ATOMIC, NUMA_NO_NODE);
	CR_NULL(ctx, CR_CACHE_ALLOC_NODE, obj);

	CR_COUNT(ctx, CR_KMEMDUP);
	d = kmemdup(cr_pattern, CR_DUP_SIZE, GFP_ATOMIC);
	CR_NULL(ctx, CR_KMEMDUP, d);

	cr_touch(obj, seq);
	cr_touch(d, seq);

	CR_COUNT(ctx, CR_KFREE);
	kfree(d);

	if (obj) {
		CR_COUNT(ctx, CR_CACHE_FREE);
		kmem_cache_free(cr_cache, obj);
	}

	mod_timer(&cr_timer, jiffies + CR_TIMER_JIFFIES);
}

/*
 * Hard interrupt: REL_HARD keeps it there even where hrtimers default to
 * softirq (PREEMPT_RT). Restarts itself unless paused; cr_pause() then
 * waits for a running callback with hrtimer_cancel().
 */
static void cr_free_handoff(enum cr_ctx ctx);

static enum hrtimer_restart cr_hardirq_timer(struct hrtimer *t)
{
	const enum cr_ctx ctx = CR_CTX_HARDIRQ;
	unsigned int seq = cr_hardirq_seq++;
	size_t n = 8 + (seq * 41u) % 249u;		/* 8..256 */
	void *z, *a;

	if (READ_ONCE(cr_paused))
		return HRTIMER_NORESTART;
	cr_ctx_enter(ctx, CR_RT ? in_serving_softirq() : in_hardirq());

	CR_COUNT(ctx, CR_KMALLOC_CACHE_NODE);
	z = kzalloc_node(64, GFP_ATOMIC, NUMA_NO_NODE);
	CR_NULL(ctx, CR_KMALLOC_CACHE_NODE, z);

	CR_COUNT(ctx, CR_KMALLOC);
	a = kmalloc(n, GFP_ATOMIC);
	CR_NULL(ctx, CR_KMALLOC, a);

	cr_touch(z, seq);
	cr_touch(a, seq);

	CR_COUNT(ctx, CR_KFREE);
	kfree(a);

	CR_COUNT(ctx, CR_KFREE);
	kfree(z);

	cr_free_handoff(ctx);

	hrtimer_forward_now(t, ns_to_ktime(CR_HRTIMER_NS));
	return HRTIMER_RESTART;
}

static void cr_start_timers(void)
{
	mod_timer(&cr_timer, jiffies + CR_TIMER_JIFFIES);
	hrtimer_start(&cr_hrtimer, ns_to_ktime(CR_HRTIMER_NS),
		      CR_HRTIMER_MODE);
}

/*
 * Returns with neither timer pending nor running. The callbacks re-arm
 * themselves, but both calls loop until the callback has finished and then
 * remove whatever it re-armed; cr_paused stops any re-arming after that.
 */
static void cr_stop_timers(void)
{
	cr_timer_delete_sync(&cr_timer);
	hrtimer_cancel(&cr_hrtimer);
}

/*
 * The pause between a worker's rounds, in microseconds (a range up to twice
 * this). 0 runs rounds back to back, yielding only in cond_resched(): the
 * events test raises the call rate this way until hpctl's reader falls
 * behind.
 */
static uint round_sleep_us = 2000;
module_param(round_sleep_us, uint, 0600);
MODULE_PARM_DESC(round_sleep_us, "sleep between a worker's rounds, in us (0: none)");

static int cr_worker_fn(void *data)
{
	unsigned int seq = (unsigned int)(unsigned long)data * 7919u;
	uint sleep_us;

	while (!kthread_should_stop()) {
		if (READ_ONCE(cr_paused)) {
			/* Acknowledge: this worker is between rounds. */
			atomic_inc(&cr_parked);
			wake_up(&cr_ack_wq);
			wait_event_interruptible(cr_resume_wq,
						 !READ_ONCE(cr_paused) ||
						 kthread_should_stop());
			atomic_dec(&cr_parked);
			/*
			 * Pairs with smp_mb() in cr_pause(): either the pauser
			 * sees this decrement, or we see cr_paused == true at
			 * the top of the loop and park again without a round.
			 */
			smp_mb__after_atomic();
			continue;
		}

		cr_round(seq);
		cr_irqoff_round(seq);
		cr_spinlock_round(seq);
		seq++;
		sleep_us = READ_ONCE(round_sleep_us);
		if (sleep_us)
			usleep_range(sleep_us, 2 * sleep_us);
		else
			cond_resched();
	}

	return 0;
}

/* Called with cr_pause_lock held. */
static int cr_pause(void)
{
	WRITE_ONCE(cr_paused, true);
	smp_mb();	/* pairs with smp_mb__after_atomic() in the worker */
	cr_stop_timers();
	return wait_event_killable(cr_ack_wq,
				   atomic_read(&cr_parked) == cr_nr_workers);
}

/* Called with cr_pause_lock held. */
static void cr_resume(void)
{
	if (!READ_ONCE(cr_paused))
		return;		/* timers already run: do not start them twice */
	WRITE_ONCE(cr_paused, false);
	wake_up_all(&cr_resume_wq);
	cr_start_timers();
}

/* ---- debugfs ---------------------------------------------------------- */

static ssize_t cr_pause_read(struct file *file, char __user *ubuf,
			     size_t count, loff_t *ppos)
{
	char buf[2];

	buf[0] = READ_ONCE(cr_paused) ? '1' : '0';
	buf[1] = '\n';
	return simple_read_from_buffer(ubuf, count, ppos, buf, sizeof(buf));
}

static ssize_t cr_pause_write(struct file *file, const char __user *ubuf,
			      size_t count, loff_t *ppos)
{
	char buf[2];
	int ret;

	/* Accept exactly "0", "1", "0\n" or "1\n". */
	if (count < 1 || count > sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, count))
		return -EFAULT;
	if (count == 2 && buf[1] != '\n')
		return -EINVAL;
	if (buf[0] != '0' && buf[0] != '1')
		return -EINVAL;

	ret = mutex_lock_killable(&cr_pause_lock);
	if (ret)
		return ret;

	if (buf[0] == '1')
		ret = cr_pause();
	else
		cr_resume();

	mutex_unlock(&cr_pause_lock);

	return ret ? ret : count;
}

static const struct file_operations cr_pause_fops = {
	.owner	= THIS_MODULE,
	.open	= simple_open,
	.read	= cr_pause_read,
	.write	= cr_pause_write,
	.llseek	= default_llseek,
};

static int cr_counters_show(struct seq_file *m, void *v)
{
	long long n;
	int c, i;

	for (i = 0; i < CR_NR_FN; i++) {
		n = 0;
		for (c = 0; c < CR_NR_CTX; c++)
			n += atomic64_read(&cr_calls[c][i]);
		seq_printf(m, "%s %lld\n", cr_fns[i].sym, n);
	}
	seq_printf(m, "rounds %lld\n", (long long)atomic64_read(&cr_rounds));
	for (c = 0; c < CR_NR_CTX; c++) {
		seq_printf(m, "run %s %lld %lld\n", cr_ctx_name[c],
			   (long long)atomic64_read(&cr_ctx_runs[c]),
			   (long long)atomic64_read(&cr_ctx_wrong[c]));
		for (i = 0; i < CR_NR_FN; i++) {
			n = atomic64_read(&cr_calls[c][i]);
			if (n)
				seq_printf(m, "call %s %s %lld\n",
					   cr_ctx_name[c], cr_fns[i].sym, n);
			n = atomic64_read(&cr_nulls[c][i]);
			if (n)
				seq_printf(m, "null %s %s %lld\n",
					   cr_ctx_name[c], cr_fns[i].sym, n);
		}
	}
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(cr_counters);

static int cr_symbols_show(struct seq_file *m, void *v)
{
	int i;

	for (i = 0; i < CR_NR_FN; i++)
		seq_printf(m, "%s %s\n", cr_fns[i].role, cr_fns[i].sym);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(cr_symbols);

static int cr_text_crc_show(struct seq_file *m, void *v)
{
	const void *base;
	unsigned int size;

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
	base = THIS_MODULE->mem[MOD_TEXT].base;
	size = THIS_MODULE->mem[MOD_TEXT].size;
#else
	base = THIS_MODULE->core_layout.base;
	size = THIS_MODULE->core_layout.text_size;
#endif
	seq_printf(m, "%08x\n", crc32_le(~0U, base, size));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(cr_text_crc);

static int cr_cpus_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%u\n", cr_nr_workers);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(cr_cpus);

static int cr_typed_show(struct seq_file *m, void *v)
{
	int i;

	for (i = 0; i < CR_NR_CALLEE; i++)
		seq_printf(m, "%s %lld %lld\n", cr_callee_names[i],
			   (long long)atomic64_read(&cr_callee_calls[i]),
			   (long long)atomic64_read(&cr_callee_wrong[i]));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(cr_typed);

static ssize_t cr_gate_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	char buf[64];
	int n;

	switch (smp_load_acquire(&cr_gate_state)) {
	case 0:
		n = scnprintf(buf, sizeof(buf), "idle\n");
		break;
	case 1:
		n = scnprintf(buf, sizeof(buf), "waiting %u\n", READ_ONCE(cr_gate_ticket));
		break;
	default:
		n = scnprintf(buf, sizeof(buf), "returned %u %ld\n", READ_ONCE(cr_gate_ticket),
			      READ_ONCE(cr_gate_result));
	}
	return simple_read_from_buffer(ubuf, count, ppos, buf, n);
}

static ssize_t cr_gate_write(struct file *file, const char __user *ubuf, size_t count, loff_t *ppos)
{
	unsigned int ticket;
	int ret = kstrtouint_from_user(ubuf, count, 10, &ticket);

	if (ret)
		return ret;
	mutex_lock(&cr_gate_lock);
	if (smp_load_acquire(&cr_gate_state) == 1) {
		ret = -EBUSY;
	} else {
		WRITE_ONCE(cr_gate_ticket, ticket);
		WRITE_ONCE(cr_gate_state, 1);
		queue_work(cr_gate_wq, &cr_gate_work);
	}
	mutex_unlock(&cr_gate_lock);
	return ret ? ret : count;
}

static const struct file_operations cr_gate_fops = {
	.owner	= THIS_MODULE,
	.open	= simple_open,
	.read	= cr_gate_read,
	.write	= cr_gate_write,
	.llseek	= default_llseek,
};

/*
 * Material for the leak checker, driven by writes to debugfs `leak`:
 *   leak K     K objects of leak_size bytes allocated and dropped: a real leak
 *   hold K     K objects kept (allocate them before an attach...)
 *   release    ...and free them after it: frees of objects it never saw
 *   rcu K      K objects allocated and given up with kfree_rcu()
 *   rcu1 K     the same with kvfree_rcu_mightsleep() (no rcu_head)
 *   kernel K   K objects handed to the kernel, which frees them (kfree_const)
 *   pair K     K buffers from cr_callee's cr_buf_get, all but the last given
 *              back with cr_buf_put: one leaks
 *   handoff K  K objects allocated here and freed by the hard-IRQ timer
 * All from noinline functions, so that each has a site of its own.
 */
#define CR_KEPT_MAX 64
static ulong leak_size = 200;
module_param(leak_size, ulong, 0600);
MODULE_PARM_DESC(leak_size, "size of the objects the leak file allocates");
static void *cr_held[CR_KEPT_MAX];
static void *cr_handoff[CR_KEPT_MAX];
static DEFINE_MUTEX(cr_kept_lock);	/* cr_held */

static noinline void cr_leak_objects(unsigned int k)
{
	void *p;

	while (k--) {
		CR_COUNT(CR_CTX_TASK, CR_KMALLOC);
		p = kmalloc(READ_ONCE(leak_size), GFP_KERNEL);
		CR_NULL(CR_CTX_TASK, CR_KMALLOC, p);
		cr_touch(p, k);	/* and forgotten */
	}
}

static noinline void cr_hold_objects(unsigned int k)
{
	unsigned int i;

	for (i = 0; i < CR_KEPT_MAX && k; i++) {
		if (cr_held[i])
			continue;
		CR_COUNT(CR_CTX_TASK, CR_KMALLOC);
		cr_held[i] = kmalloc(READ_ONCE(leak_size), GFP_KERNEL);
		CR_NULL(CR_CTX_TASK, CR_KMALLOC, cr_held[i]);
		k--;
	}
}

static noinline void cr_release_held(void)
{
	unsigned int i;

	for (i = 0; i < CR_KEPT_MAX; i++) {
		if (!cr_held[i])
			continue;
		CR_COUNT(CR_CTX_TASK, CR_KFREE);
		kfree(cr_held[i]);
		cr_held[i] = NULL;
	}
}

static noinline void cr_handoff_objects(unsigned int k)
{
	unsigned int i;
	void *p;

	for (i = 0; i < CR_KEPT_MAX && k; i++) {
		if (READ_ONCE(cr_handoff[i]))
			continue;
		CR_COUNT(CR_CTX_TASK, CR_KMALLOC);
		p = kmalloc(READ_ONCE(leak_size), GFP_KERNEL);
		CR_NULL(CR_CTX_TASK, CR_KMALLOC, p);
		/* The timer takes it with xchg; a NULL is simply no object. */
		smp_store_release(&cr_handoff[i], p);
		k--;
	}
}

/* In the hard-IRQ timer (and at unload): frees what was handed off. */
static noinline void cr_free_handoff(enum cr_ctx ctx)
{
	unsigned int i;
	void *p;

	for (i = 0; i < CR_KEPT_MAX; i++) {
		p = xchg(&cr_handoff[i], NULL);
		if (p) {
			CR_COUNT(ctx, CR_KFREE);
			kfree(p);
		}
	}
}

/* An object freed with kfree_rcu(): its rcu_head not at its start, so that
 * 6.1's kvfree_call_rcu(head, offset) names it by a nonzero offset. */
struct cr_rcu_object {
	unsigned long payload[4];
	struct rcu_head rcu;
};

/* k objects given up with kfree_rcu() (and, with `single`, with the
 * headless kvfree_rcu_mightsleep()): none of them is a leak. */
static noinline void cr_rcu_free_objects(unsigned int k, bool single)
{
	struct cr_rcu_object *p;

	while (k--) {
		CR_COUNT(CR_CTX_TASK, CR_KMALLOC);
		p = kmalloc(max_t(size_t, READ_ONCE(leak_size), sizeof(*p)), GFP_KERNEL);
		CR_NULL(CR_CTX_TASK, CR_KMALLOC, p);
		if (!p)
			continue;
		cr_touch(p, k);
		CR_COUNT(CR_CTX_TASK, CR_KFREE_RCU);
		if (single)
			kvfree_rcu_mightsleep(p);
		else
			kfree_rcu(p, rcu);
	}
}

/* k objects handed to a kernel function that frees them: the module's
 * call is kfree_const (outside the catalogue), the free is the kernel's. */
static noinline void cr_kernel_frees_objects(unsigned int k)
{
	void *p;

	while (k--) {
		CR_COUNT(CR_CTX_TASK, CR_KMALLOC);
		p = kmalloc(READ_ONCE(leak_size), GFP_KERNEL);
		CR_NULL(CR_CTX_TASK, CR_KMALLOC, p);
		cr_touch(p, k);
		kfree_const(p);
	}
}

static noinline void cr_pair_objects(unsigned int k)
{
	void *p;

	while (k--) {
		p = cr_buf_get(READ_ONCE(leak_size));
		if (k)
			cr_buf_put(0, p);
	}
}

static ssize_t cr_leak_write(struct file *file, const char __user *ubuf, size_t count, loff_t *ppos)
{
	char buf[32];
	unsigned int k = 0;
	size_t n = min(count, sizeof(buf) - 1);

	if (copy_from_user(buf, ubuf, n))
		return -EFAULT;
	buf[n] = 0;
	mutex_lock(&cr_kept_lock);
	if (sscanf(buf, "leak %u", &k) == 1)
		cr_leak_objects(min(k, 1000u));
	else if (sscanf(buf, "hold %u", &k) == 1)
		cr_hold_objects(k);
	else if (!strncmp(buf, "release", 7))
		cr_release_held();
	else if (sscanf(buf, "handoff %u", &k) == 1)
		cr_handoff_objects(k);
	else if (sscanf(buf, "pair %u", &k) == 1)
		cr_pair_objects(min(k, 1000u));
	else if (sscanf(buf, "kernel %u", &k) == 1)
		cr_kernel_frees_objects(min(k, 1000u));
	else if (sscanf(buf, "rcu1 %u", &k) == 1)	/* before "rcu %u", which "rcu1" matches */
		cr_rcu_free_objects(min(k, 1000u), true);
	else if (sscanf(buf, "rcu %u", &k) == 1)
		cr_rcu_free_objects(min(k, 1000u), false);
	else
		count = -EINVAL;
	mutex_unlock(&cr_kept_lock);
	return count;
}

static const struct file_operations cr_leak_fops = {
	.owner	= THIS_MODULE,
	.open	= simple_open,
	.write	= cr_leak_write,
	.llseek	= default_llseek,
};

/*
 * Material for `cargo xtask bench`, driven by debugfs `bench`: writing
 * "kstrdup N" or "kfree N" makes N calls of kstrdup(NULL) (a catalogue
 * allocator that returns at once) or kfree(NULL) from one site each ("kfree
 * N BURST": in bursts, a millisecond apart); reading
 * gives the nanoseconds the last run took. Under QEMU's -icount shift=0 a
 * nanosecond is one guest instruction.
 */
static u64 cr_bench_ns;

static noinline void cr_bench_kstrdup(unsigned int n)
{
	while (n--) {
		const char *p = kstrdup(NULL, GFP_KERNEL);

		OPTIMIZER_HIDE_VAR(p);
	}
}

static noinline void cr_bench_kfree(unsigned int n)
{
	void *p = NULL;

	while (n--) {
		OPTIMIZER_HIDE_VAR(p);
		kfree(p);
	}
}

/* N calls in bursts of `burst`, a millisecond's sleep after each: a steady
 * rate of events, with the CPU left idle in between. */
static noinline void cr_bench_kfree_paced(unsigned int n, unsigned int burst)
{
	while (n) {
		unsigned int k = min(n, burst);

		cr_bench_kfree(k);
		n -= k;
		usleep_range(1000, 1000);
	}
}

static ssize_t cr_bench_write(struct file *file, const char __user *ubuf, size_t count, loff_t *ppos)
{
	char buf[32];
	unsigned int n = 0, burst = 0;
	size_t len = min(count, sizeof(buf) - 1);
	u64 t0;

	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	buf[len] = 0;
	t0 = ktime_get_ns();
	if (sscanf(buf, "kstrdup %u", &n) == 1)
		cr_bench_kstrdup(n);
	else if (sscanf(buf, "kfree %u %u", &n, &burst) == 2 && burst)
		cr_bench_kfree_paced(n, burst);
	else if (sscanf(buf, "kfree %u", &n) == 1)
		cr_bench_kfree(n);
	else
		return -EINVAL;
	WRITE_ONCE(cr_bench_ns, ktime_get_ns() - t0);
	return count;
}

static ssize_t cr_bench_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	char buf[24];
	int len = scnprintf(buf, sizeof(buf), "%llu\n", READ_ONCE(cr_bench_ns));

	return simple_read_from_buffer(ubuf, count, ppos, buf, len);
}

static const struct file_operations cr_bench_fops = {
	.owner	= THIS_MODULE,
	.open	= simple_open,
	.read	= cr_bench_read,
	.write	= cr_bench_write,
	.llseek	= default_llseek,
};

static void cr_debugfs_init(void)
{
	cr_dir = debugfs_create_dir(KBUILD_MODNAME, NULL);
	debugfs_create_file("pause", 0600, cr_dir, NULL, &cr_pause_fops);
	debugfs_create_file("counters", 0400, cr_dir, NULL, &cr_counters_fops);
	debugfs_create_file("symbols", 0400, cr_dir, NULL, &cr_symbols_fops);
	debugfs_create_file("text_crc", 0400, cr_dir, NULL, &cr_text_crc_fops);
	debugfs_create_file("cpus", 0400, cr_dir, NULL, &cr_cpus_fops);
	debugfs_create_file("typed", 0400, cr_dir, NULL, &cr_typed_fops);
	debugfs_create_file("leak", 0200, cr_dir, NULL, &cr_leak_fops);
	debugfs_create_file("bench", 0600, cr_dir, NULL, &cr_bench_fops);
	debugfs_create_file("gate", 0600, cr_dir, NULL, &cr_gate_fops);
}

/* ---- workers ---------------------------------------------------------- */

static void cr_stop_workers(void)
{
	struct task_struct *t;
	unsigned int cpu;

	for_each_possible_cpu(cpu) {
		t = per_cpu(cr_task, cpu);
		if (!t)
			continue;
		/* Wakes the task; a parked worker sees kthread_should_stop(). */
		kthread_stop(t);
		per_cpu(cr_task, cpu) = NULL;
	}
}

static int cr_start_workers(void)
{
	struct task_struct *t;
	unsigned int cpu;
	int ret = 0;

	cpus_read_lock();
	for_each_online_cpu(cpu) {
		t = kthread_create_on_cpu(cr_worker_fn,
					  (void *)(unsigned long)cpu, cpu,
					  "cr_worker/%u");
		if (IS_ERR(t)) {
			ret = PTR_ERR(t);
			break;
		}
		per_cpu(cr_task, cpu) = t;
		cr_nr_workers++;
		wake_up_process(t);
	}
	cpus_read_unlock();

	return ret;
}

/*
 * Gates that hold the module in MODULE_STATE_COMING (at the end of init) or
 * _GOING (at the start of exit) until the test writes 0 to the parameter,
 * so that it can try to attach to a module that is still loading or
 * unloading, on a kernel however slow. A gate left shut opens by itself
 * after CR_GATE_MAX_MS: a test that died must not hang insmod or rmmod.
 */
static bool init_gate;
module_param(init_gate, bool, 0600);
MODULE_PARM_DESC(init_gate, "hold init at its end until this is written 0");

static bool exit_gate;
module_param(exit_gate, bool, 0600);
MODULE_PARM_DESC(exit_gate, "hold exit at its start until this is written 0");

#define CR_GATE_MAX_MS (300 * 1000)

static void cr_hold_at_gate(const bool *gate, const char *which)
{
	unsigned int waited = 0;

	if (!READ_ONCE(*gate))
		return;
	pr_info("cr_target: %s gate shut\n", which);
	while (READ_ONCE(*gate) && waited < CR_GATE_MAX_MS) {
		msleep(10);
		waited += 10;
	}
	pr_info("cr_target: %s gate open after %u ms\n", which, waited);
}

/*
 * Calls made from init text only: a tracer that attaches at COMING, before
 * init runs, sees exactly CR_INIT_CALLS of each, from cr_init_calls.
 */
#define CR_INIT_CALLS 4
static uint init_call_size = 48;
module_param(init_call_size, uint, 0400);
MODULE_PARM_DESC(init_call_size, "size of the allocations init makes");

/* What cr_init_calls got from get_random_u32, which only init calls. */
static u32 cr_init_random;

static noinline void __init cr_init_calls(void)
{
	int i;

	for (i = 0; i < CR_INIT_CALLS; i++)
		kfree(kmalloc(init_call_size, GFP_KERNEL));
	cr_init_random = get_random_u32();
}

/*
 * init_setup=1: an init with error paths, for systematic fault injection.
 * Four allocations, each at its own site; what a NULL from each does:
 *   cr_cfg (kzalloc)       the load fails with -ENOMEM, nothing leaked
 *   cr_table (kmalloc)     the load fails; cr_cfg is freed first
 *   cr_label (kstrdup)     the load fails, and this path forgets cr_cfg and
 *                          cr_table: a deliberate leak of two objects
 *   cr_scratch (vmalloc)   optional: the load goes on without it
 */
static bool init_setup;
module_param(init_setup, bool, 0400);
MODULE_PARM_DESC(init_setup, "init allocates a configuration, with an error path per allocation");
static void *cr_cfg, *cr_table, *cr_scratch;
static char *cr_label;

static noinline int __init cr_init_setup(void)
{
	cr_cfg = kzalloc(96, GFP_KERNEL);
	if (!cr_cfg)
		return -ENOMEM;
	cr_table = kmalloc(init_call_size * 4, GFP_KERNEL);
	if (!cr_table) {
		kfree(cr_cfg);
		return -ENOMEM;
	}
	cr_label = kstrdup("cr_target setup", GFP_KERNEL);
	if (!cr_label)
		return -ENOMEM;		/* forgets cr_cfg and cr_table: on purpose */
	cr_scratch = vmalloc(8192);	/* may stay NULL */
	return 0;
}

static noinline void cr_setup_free(void)
{
	vfree(cr_scratch);
	kfree(cr_label);
	kfree(cr_table);
	kfree(cr_cfg);
}

static bool start_paused;
module_param(start_paused, bool, 0400);
MODULE_PARM_DESC(start_paused, "load paused: only init's own calls happen until pause is written 0");

static int __init cr_target_init(void)
{
	int ret;

	cr_init_calls();
	if (init_setup) {
		ret = cr_init_setup();
		if (ret)
			return ret;
	}
	WRITE_ONCE(cr_paused, start_paused);

	cr_cache = kmem_cache_create(KBUILD_MODNAME "_obj", CR_OBJ_SIZE, 0, 0, NULL);
	if (!cr_cache) {
		ret = -ENOMEM;
		goto free_setup;
	}
	cr_gate_wq = alloc_workqueue("cr_gate", WQ_UNBOUND, 0);
	if (!cr_gate_wq) {
		kmem_cache_destroy(cr_cache);
		ret = -ENOMEM;
		goto free_setup;
	}

	timer_setup(&cr_timer, cr_softirq_timer, 0);
	cr_hrtimer_setup(&cr_hrtimer, cr_hardirq_timer, CLOCK_MONOTONIC, CR_HRTIMER_MODE);

	ret = cr_start_workers();
	if (ret) {
		cr_stop_workers();
		destroy_workqueue(cr_gate_wq);
		kmem_cache_destroy(cr_cache);
		goto free_setup;
	}
	if (!start_paused)
		cr_start_timers();

	cr_debugfs_init();

	pr_info("cr_target: loaded, %d workers\n", (int)cr_nr_workers);
	cr_hold_at_gate(&init_gate, "init");
	return 0;

free_setup:
	if (init_setup)
		cr_setup_free();
	return ret;
}

static void __exit cr_target_exit(void)
{
	cr_hold_at_gate(&exit_gate, "exit");
	/* Waits for in-flight debugfs ops (e.g. a blocked pause writer). */
	debugfs_remove_recursive(cr_dir);
	/* No pause writer can run now; keeps the callbacks from re-arming. */
	WRITE_ONCE(cr_paused, true);
	cr_stop_timers();
	cr_stop_workers();
	cr_release_held();
	cr_free_handoff(CR_CTX_TASK);
	/* A caller still asleep in cr_gate_wait() holds this until the gate opens. */
	destroy_workqueue(cr_gate_wq);
	kmem_cache_destroy(cr_cache);
	if (init_setup)
		cr_setup_free();
	pr_info("cr_target: unloaded\n");
}

module_init(cr_target_init);
module_exit(cr_target_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Hot-patching test target issuing counted memory calls");
