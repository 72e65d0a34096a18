/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the C files of hp_patcher share: the targets and their attachments
 * (hp_main.c), used by the control device (hp_control.c).
 */
#ifndef HP_INTERNAL_H
#define HP_INTERNAL_H

#include <linux/module.h>
#include <linux/kprobes.h>
#include <linux/list.h>
#include <linux/mutex.h>

#include "hp_glue.h"

/* One kprobe per redirected site. */
struct hp_probe {
	struct kprobe kp;
	const struct hp_site *site;
	unsigned long callee;	/* where the site's call or jump goes */
	struct hp_site_counts __percpu *counts;	/* the site's, written by the hooks */
	bool direct;		/* counting only: no trampoline (hp_attachment_route) */
	bool tail_jump;
	bool jump_through;	/* a void function: hp_trampoline_jump */
	bool armed;		/* kprobes accepted it */
};

/* The sites of one text range of a target: its core text, or its init text
 * while the module is still in its init. */
struct hp_attachment {
	struct hp_session *session;	/* null: nothing attached here */
	struct hp_probe *probes;
	struct kprobe **kprobes;	/* the registered ones, for the batch unregister */
	unsigned int nr_kprobes;
	u8 *text_copy;			/* the text as it was before attach */
	u64 text_base, text_size;
	struct hp_drain *drain;		/* what it becomes at detach, allocated at attach */
	struct hp_budget __percpu *budget;	/* sink printk with a limit: each CPU's */
};

enum hp_target_state {
	HP_ATTACHED,
	HP_AWAITED,	/* followed, not loaded */
	HP_REFUSED,	/* followed, its last load could not be attached */
};

struct hp_target {
	struct list_head node;
	char name[MODULE_NAME_LEN];
	char *functions;	/* the selection as given; "" is all */
	u32 sink;		/* enum hp_sink */
	u64 log_burst;		/* printk lines per window, 0: unlimited */
	bool follow;
	enum hp_target_state state;
	struct module *mod;	/* while attached; compared, only dereferenced under hp_lock */
	struct hp_attachment core, init;
	struct hp_shared *shared;	/* fault rules, leak table (Rust), shared with its sessions */
	bool kernel_frees;		/* watch the kernel's frees of its objects, when attached */
	struct hp_kfrees *kfrees;	/* their probes while attached, or NULL */
};

/* Everything below is protected by hp_lock. */
extern struct mutex hp_lock;
extern struct list_head hp_targets;
extern bool hp_raw_pointers;
extern const struct trace_print_flags hp_gfp_names[];
size_t hp_gfp_name_count(void);	/* the names before any { 0, NULL } end */

struct hp_target *hp_find_target(const char *name);
int hp_target_add(const char *name, const char *functions, u32 sink, u64 burst,
		  u64 leak_slots, bool kernel_frees, bool follow, struct module *mod,
		  struct hp_target **out);
void hp_target_free(struct hp_target *t);
bool hp_is_module_struct(const struct module *mod);
void *hp_alloc(size_t size);		/* kvzalloc, or the tests' failure */
bool hp_capture_pass(struct task_struct *from, struct task_struct *to);
int hp_follow_start(void);		/* hp_follow.c: the module notifiers */
void hp_follow_stop(void);

/* hp_kfrees.c: the kernel's own frees of a target's objects (kernel_frees). */
struct hp_kfrees *hp_kfrees_start(struct hp_shared *shared, const char *target);
void hp_kfrees_stop(struct hp_kfrees *k);
void hp_kfrees_reply(struct hp_reply *r, const char *target, const struct hp_kfrees *k);
struct module *hp_get_module(const char *name);
int hp_target_attach(struct hp_target *t, struct module *mod);
u64 hp_target_detach(struct hp_target *t, const char *why);
int hp_plan_module(struct module *mod, const char *functions,
		   struct hp_attachment *att);
int hp_list_callees(struct module *mod, struct hp_reply *r);

/* hp_probes.c: an attachment's probes, their counters, attach progress. */
int hp_register_probes(const char *name, struct hp_attachment *att,
		       const struct module *mod, u64 plan_ns);
void hp_attachment_free(struct hp_attachment *att);
void hp_attachment_sync(struct hp_attachment *att);
void hp_attachment_route(struct hp_attachment *att);
void hp_progress_reply(struct hp_reply *r);	/* `progress`, without hp_lock */

/* hp_detach.c: the detach sequence, and the wait for callers after it. */
extern struct workqueue_struct *hp_wq;
struct hp_drain *hp_drain_alloc(void);
void hp_drain_free_unused(struct hp_drain *d);
u64 hp_attachment_detach(const char *name, struct hp_attachment *att, const char *why);
u64 hp_drains_next_id(void);
int hp_drains_wait(u64 from, u64 to);
void hp_drains_wait_all(void);
void hp_drains_reply(struct hp_reply *r);
u64 hp_drains_inside(const char *name);

/* An error for the kernel log and, during a control command, its reply. */
__printf(1, 2) void hp_err(const char *fmt, ...);
void hp_capture_errors(struct hp_reply *r);

int hp_control_init(void);
void hp_control_exit(void);

#endif
