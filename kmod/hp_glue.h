/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The contract between the C layer and the Rust core of hp_patcher.
 * kmod/rust/src/ffi.rs mirrors every type and prototype here.
 */
#ifndef HP_GLUE_H
#define HP_GLUE_H

#include <linux/types.h>
#include <linux/elf.h>
#include <asm/module.h>		/* Elf_Sym: Elf64_Sym, or Elf32_Sym on i386 */
#include <linux/tracepoint-defs.h>

/*
 * Scalars crossing between C and Rust as function arguments are `unsigned
 * long` (Rust's usize), never u64: on i386 gcc's regparm(3) passes a u64 in
 * two registers and rustc's -Zregparm=3 on the stack, so the two would not
 * meet (measured by hp_abi_check, which failed with u64 arguments). u64
 * stays in structs and results, where both agree.
 */

/* What the C layer knows of the target and of this kernel, for planning. */
struct hp_attach_request {
	const char *target_name;
	const u8 *text;			/* private snapshot of the core text */
	u64 text_base;			/* where that text lives in the target */
	u64 text_size;
	const Elf_Sym *symtab;		/* the target's core symbol table */
	u64 num_symtab;
	const u64 *catalogue_addrs;	/* by catalogue index, 0: not exported */
	u64 catalogue_len;
	const struct trace_print_flags *gfp_names;
	u64 num_gfp_names;
	const char *functions;		/* the functions= parameter */
	u64 log_burst;			/* log lines per window, 0: unlimited */
	u64 module_space_start;		/* MODULES_VADDR .. MODULES_END */
	u64 module_space_end;
	u32 slab_buckets;		/* CONFIG_SLAB_BUCKETS */
	u32 call_thunks;		/* CONFIG_CALL_THUNKS */
	u32 sink;			/* enum hp_sink */
	u32 quiet_if_none;		/* no error line if no site (init text) */
	const u64 *static_call_sites;	/* addresses the kernel's static_call rewrites */
	u64 num_static_call_sites;
	const u64 *bug_traps;		/* the ud2 of each WARN and BUG (__bug_table) */
	u64 num_bug_traps;
	struct hp_reply *callees;	/* non-NULL: list callees here, plan nothing */
	struct hp_shared *shared;	/* the target's fault rules and leak table; NULL for plan, callees */
	const struct module *module;	/* the target: is it still in its init? */
	u32 init_text;			/* planning its init text */
	unsigned long budget;		/* per-CPU struct hp_budget for sink printk, or 0 */
	unsigned long budget_share;	/* each CPU's lines per window: log_burst split between CPUs */
};

/* Where a target's calls go (hp_core::control::Sink). */
enum hp_sink { HP_SINK_TRACE = 0, HP_SINK_PRINTK = 1, HP_SINK_NONE = 2 };

/* hp_trampoline's area for the real call (Rust's CallFrame). */
struct hp_call_frame {
	u64 args[6];		/* filled by hp_on_entry only when the real call's arguments differ */
	u64 start_ns;		/* hp_c_trace_clock() at entry */
	u64 stack_words;	/* words of stack arguments for the real call: i386 args[3..]; x86_64 0 or STACK_WORDS */
	const u64 *call_args;	/* the real call's arguments: the saved ones, or args above */
};

/*
 * One site's counters on one CPU (Rust's SiteCounts): each written only on
 * its CPU, with no lock (this_cpu_inc in C, kmod/rust/src/percpu.rs in
 * Rust), and read as sums over CPUs. The pre-handler counts every call
 * (entries or passes), so a call is counted before anything of ours that
 * a detach waits for can run.
 */
struct hp_site_counts {
	u64 entries;	/* sent to hp_trampoline: each ends with an exit */
	u64 passes;	/* sent straight to the callee, or to hp_trampoline_jump */
	u64 exits;	/* hp_trampoline calls done with the session */
	u64 events;	/* trace events written or lines logged */
	u64 dropped;	/* calls that became no event */
};

/* One CPU's printk budget (hp_core::ratelimit; Rust's Budget). */
struct hp_budget {
	unsigned long window;
	unsigned long used;
};

/* hp_percpu_check's area: see kmod/rust/src/percpu.rs. */
struct hp_percpu_check {
	u64 count;
	unsigned long word, before;
};

/* What every hp_call event of one site says of it, fixed at attach (Rust's EventSite). */
struct hp_event_site {
	const char *target;
	const char *callee;
	u64 site;
	u32 func;
	u32 target_size, callee_size;	/* each name, its NUL, and NULs to a multiple of 8 bytes */
};

/* One hp_patcher:hp_call event (Rust's CallEvent). */
struct hp_call_event {
	const struct hp_event_site *at;
	const u64 *args;	/* the six register arguments, where the trampoline saved them */
	u64 ret;
	u64 ret2;		/* rdx after the call */
	u64 start_ns;		/* hp_c_trace_clock() at entry; 0 for a void function */
	u64 duration_ns;	/* set by hp_c_trace_call */
	const u8 *strings;	/* hp_core::proto::strings encoding; NULL when strings_len is 0 */
	u32 strings_len;
	u32 returned;		/* 0: a void function, ret and duration are 0 */
};

/* A parsed control command (Rust's ControlCommand). */
enum hp_verb {
	HP_CMD_ATTACH = 1, HP_CMD_DETACH, HP_CMD_DETACH_ALL, HP_CMD_PLAN,
	HP_CMD_TARGETS, HP_CMD_SITES, HP_CMD_STATS, HP_CMD_INFO, HP_CMD_CALLEES,
	HP_CMD_FAIL, HP_CMD_FAIL_CLEAR, HP_CMD_FAULTS, HP_CMD_LEAKS, HP_CMD_FAIL_NEXT,
	HP_CMD_PROGRESS,
};
#define HP_MAX_COMMAND 1024
struct hp_command {
	u32 verb;
	u32 sink;
	u32 follow;
	u32 has_module;
	u64 burst;		/* printk lines per window; U64_MAX: log_burst= */
	u64 leak_slots;		/* attach: the leak table's size, 0: no leak checking */
	u32 kernel_frees;	/* attach: watch the kernel's frees of its objects */
	char module[64];
	char functions[HP_MAX_COMMAND + 1];	/* fail: the rule's words */
};

struct hp_reply;	/* owned by Rust: the text a write leaves for reads */
struct module;

struct hp_session;	/* owned by Rust */
struct hp_shared;	/* owned by Rust: a target's fault rules and leak table, shared with its sessions */
struct hp_site;		/* owned by Rust, lives as long as its session */

/* Implemented in Rust (kmod/rust). */
int hp_decoder_setup(void);
void hp_decoder_teardown(void);
int hp_plan(const struct hp_attach_request *req, struct hp_session **out);
u64 hp_session_site_count(const struct hp_session *s);
const struct hp_site *hp_session_site(const struct hp_session *s, unsigned long index,
				      u64 *addr, bool *tail_jump,
				      bool *jump_through);
u64 hp_session_inflight(const struct hp_session *s);
/* The calls inside, and the functions they are in ("a b", cut to len). */
u64 hp_session_waiting(const struct hp_session *s, char *buf, size_t len);
void hp_session_report(const struct hp_session *s, const char *why, unsigned long missed);
void hp_session_free(struct hp_session *s);
/* armed: kprobes took the site; sum: its counters summed over CPUs. */
void hp_site_set_probe(const struct hp_site *site, bool armed, unsigned long missed,
		       const struct hp_site_counts *sum);
/* Where the site's hooks count; before its probe is armed. */
void hp_site_set_counts(const struct hp_site *site, struct hp_site_counts __percpu *counts);
/* Sink none and no leak checking: its sites may skip the trampoline. */
bool hp_session_may_count_only(const struct hp_session *s);
/* Nothing at this site needs the trampoline: sink none, no leak checking,
 * no fault rule selects it. */
bool hp_site_counts_only(const struct hp_site *site);
u64 hp_on_entry(const struct hp_site *site, const u64 *args,
		struct hp_call_frame *frame, unsigned long caller);
u64 hp_on_exit(const struct hp_site *site, unsigned long ret, const u64 *args,
	       const struct hp_call_frame *frame, unsigned long ret2);
u64 hp_on_jump_through(const struct hp_site *site, const u64 *args);
struct hp_shared *hp_shared_new(unsigned long leak_slots);
void hp_leaks_kernel_free(const struct hp_shared *t, unsigned long object);
void hp_shared_put(struct hp_shared *t);
int hp_faults_add(struct hp_shared *t, const char *target, const char *rule,
		  unsigned long len, const struct hp_session *const *sessions, unsigned long n);
u32 hp_faults_clear(struct hp_shared *t, const struct hp_session *const *sessions,
		    unsigned long n);
void hp_faults_reap(struct hp_shared *t);	/* a grace period after clear */
void hp_faults_next_round(const struct hp_shared *t, bool is_load);
void hp_faults_load_event(const struct hp_shared *t, bool going);
void hp_reply_faults(struct hp_reply *r, const struct hp_shared *t, const char *target,
		     const struct hp_session *const *sessions, unsigned long n);
bool hp_leaks_enabled(const struct hp_shared *t);
void hp_leaks_restart(struct hp_shared *t, bool since_load);
void hp_leaks_start(struct hp_shared *t);
void hp_reply_leaks(struct hp_reply *r, const struct hp_shared *t, const char *target,
		    const struct hp_session *const *sessions, unsigned long n);
void hp_leaks_log(const struct hp_shared *t, const char *target,
		  const struct hp_session *const *sessions, unsigned long n);
unsigned long hp_percpu_check(struct hp_percpu_check __percpu *area);
u64 hp_abi_check(const u8 *a, unsigned long b, const u64 *c, const u8 *d, unsigned long e);

struct hp_reply *hp_reply_new(size_t limit);
void hp_reply_free(struct hp_reply *r);
void hp_reply_clear(struct hp_reply *r);
const u8 *hp_reply_data(struct hp_reply *r, u64 *len);
bool hp_reply_lost(const struct hp_reply *r);
void hp_reply_line(struct hp_reply *r, const char *line);
int hp_control_parse(const u8 *bytes, unsigned long len, struct hp_command *out,
		     struct hp_reply *r);
void hp_reply_sites(struct hp_reply *r, const struct hp_session *s);
void hp_reply_stats(struct hp_reply *r, const struct hp_session *const *sessions,
		    unsigned long n);
void hp_session_totals(const struct hp_session *s, u64 out[3]);
void hp_reply_functions(struct hp_reply *r, const u64 *addrs, unsigned long len);

/* Implemented in C, called from Rust. */
enum hp_level { HP_ERR = 0, HP_WARN = 1, HP_INFO = 2 };
void hp_c_log(u32 level, const char *msg);
void hp_c_log_at(u32 level, const char *msg, unsigned long addr);
void hp_c_emit_call(const char *text, unsigned long site_addr);
u32 hp_c_format_ptr(unsigned long value, char *buf, u32 len);
bool hp_c_is_known_code(unsigned long addr);
u64 hp_c_log_window(void);
void *hp_c_alloc(size_t size);
void hp_c_free(void *ptr);
u64 hp_c_now_ns(void);
bool hp_c_trace_call(struct hp_call_event *event);
u64 hp_c_trace_clock(void);
bool hp_c_trace_enabled(void);
u32 hp_c_format_symbol(unsigned long addr, char *buf, u32 len);
bool hp_c_is_traceable(unsigned long addr);
int hp_c_read_string(unsigned long addr, u8 *buf, u32 len);
void __noreturn hp_c_panic(const char *msg, size_t len);
u32 hp_c_cache_size(unsigned long cache);
u32 hp_c_stack_save(unsigned long *frames, u32 max);
void hp_c_rcu_read_lock(void);
void hp_c_rcu_read_unlock(void);
u32 hp_c_random_u32(void);
void hp_c_current_task(u32 *pid, char comm[16]);
bool hp_c_module_coming(const struct module *mod);
void hp_c_trace_fault(const char *target, const char *callee, unsigned long site,
		      u32 rule, long value);
u64 hp_c_abi_mix(const u8 *a, unsigned long b, const u64 *c, const u8 *d, unsigned long e);

/* Where redirected calls go (hp_trampoline.S): with a result, and without. */
void hp_trampoline(void);
void hp_trampoline_jump(void);
/* What a failed call "calls" instead: returns its first argument. */
void hp_fail_return(void);

/* Addresses of the catalogue functions this kernel exports (hp_catalogue.c). */
extern const u64 hp_catalogue_addrs[];
extern const u64 hp_catalogue_len;

#endif
