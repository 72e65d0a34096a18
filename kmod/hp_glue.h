/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The contract between the C layer and the Rust core of hp_patcher.
 * kmod/rust/src/ffi.rs mirrors every type and prototype here.
 */
#ifndef HP_GLUE_H
#define HP_GLUE_H

#include <linux/types.h>
#include <linux/elf.h>
#include <linux/tracepoint-defs.h>

/* What the C layer knows of the target and of this kernel, for planning. */
struct hp_attach_request {
	const char *target_name;
	const u8 *text;			/* private snapshot of the core text */
	u64 text_base;			/* where that text lives in the target */
	u64 text_size;
	const Elf64_Sym *symtab;	/* the target's core symbol table */
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
};

struct hp_session;	/* owned by Rust */
struct hp_site;		/* owned by Rust, lives as long as its session */

/* Implemented in Rust (kmod/rust). */
int hp_decoder_setup(void);
void hp_decoder_teardown(void);
int hp_plan(const struct hp_attach_request *req, struct hp_session **out);
u64 hp_session_site_count(const struct hp_session *s);
const struct hp_site *hp_session_site(const struct hp_session *s, u64 index,
				      u64 *addr, bool *tail_jump,
				      bool *jump_through);
u64 hp_session_inflight(const struct hp_session *s);
void hp_session_report(const struct hp_session *s, const char *why, u64 missed);
void hp_session_free(struct hp_session *s);
u64 hp_on_entry(const struct hp_site *site, const u64 *args, u64 *call_args,
		u64 caller);
u64 hp_on_exit(const struct hp_site *site, u64 ret, const u64 *args);
u64 hp_on_jump_through(const struct hp_site *site, const u64 *args);

/* Implemented in C, called from Rust. */
enum hp_level { HP_ERR = 0, HP_WARN = 1, HP_INFO = 2 };
void hp_c_log(u32 level, const char *msg);
void hp_c_log_at(u32 level, const char *msg, u64 addr);
void hp_c_emit_call(const char *text, u64 site_addr);
u32 hp_c_format_ptr(u64 value, char *buf, u32 len);
bool hp_c_is_known_code(u64 addr);
u64 hp_c_log_window(void);
void *hp_c_alloc(size_t size);
void hp_c_free(void *ptr);
void __noreturn hp_c_panic(const char *msg, size_t len);

/* Where redirected calls go (hp_trampoline.S): with a result, and without. */
void hp_trampoline(void);
void hp_trampoline_jump(void);

/* Addresses of the catalogue functions this kernel exports (hp_catalogue.c). */
extern const u64 hp_catalogue_addrs[];
extern const u64 hp_catalogue_len;

#endif
