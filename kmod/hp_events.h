/* SPDX-License-Identifier: GPL-2.0 */
/*
 * hp_patcher's trace event: one per intercepted call of a target whose sink
 * is `trace`. docs/control.md lists the fields; hpctl reads them in binary
 * form through the event's format file.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM hp_patcher

#if !defined(HP_EVENTS_H) || defined(TRACE_HEADER_MULTI_READ)
#define HP_EVENTS_H

#include <linux/tracepoint.h>
#include "hp_glue.h"
#include "hp_compat.h"

#ifndef HP_EVENTS_COPY
#define HP_EVENTS_COPY
/* A name padded with NULs to whole words (struct hp_event_site), copied a
 * word at a time: a name is a few words, where a memcpy call costs more
 * than the copy. */
static __always_inline void hp_copy_name(char *dst, const char *src, u32 size)
{
	u32 i;

	for (i = 0; i < size; i += 8)
		__builtin_memcpy(dst + i, src + i, 8);	/* one move */
}
#endif

TRACE_EVENT(hp_call,
	TP_PROTO(const struct hp_call_event *e),
	TP_ARGS(e),
	TP_STRUCT__entry(
		__dynamic_array(char, target, e->at->target_size)
		__field(unsigned long, site)
		__dynamic_array(char, callee, e->at->callee_size)
		__field(u32, func)
		__field(u32, returned)
		__array(u64, args, 6)
		__field(u64, ret)
		__field(u64, ret2)
		__field(u64, start_ns)
		__field(u64, duration_ns)
		__dynamic_array(u8, strings, e->strings_len)
	),
	TP_fast_assign(
		hp_copy_name(__get_dynamic_array(target), e->at->target, e->at->target_size);
		__entry->site = e->at->site;
		hp_copy_name(__get_dynamic_array(callee), e->at->callee, e->at->callee_size);
		__entry->func = e->at->func;
		__entry->returned = e->returned;
		memcpy(__entry->args, e->args, sizeof(__entry->args));
		__entry->ret = e->ret;
		__entry->ret2 = e->ret2;
		__entry->start_ns = e->start_ns;
		__entry->duration_ns = e->duration_ns;
		if (e->strings_len)
			memcpy(__get_dynamic_array(strings), e->strings, e->strings_len);
	),
	TP_printk("%s %pS %s(0x%llx, 0x%llx, 0x%llx, 0x%llx, 0x%llx, 0x%llx) = 0x%llx:0x%llx returned=%u duration_ns=%llu",
		  __get_str(target), (void *)__entry->site, __get_str(callee),
		  __entry->args[0], __entry->args[1], __entry->args[2],
		  __entry->args[3], __entry->args[4], __entry->args[5],
		  __entry->ret, __entry->ret2, __entry->returned, __entry->duration_ns)
);

/* One call failed by a fault rule instead of running (docs/control.md). */
TRACE_EVENT(hp_fault,
	TP_PROTO(const char *target, const char *callee, unsigned long site, u32 rule, long value),
	TP_ARGS(target, callee, site, rule, value),
	TP_STRUCT__entry(
		__string(target, target)
		__field(unsigned long, site)
		__string(callee, callee)
		__field(u32, rule)
		__field(long, value)
	),
	TP_fast_assign(
		hp_assign_str(target, target);
		__entry->site = site;
		hp_assign_str(callee, callee);
		__entry->rule = rule;
		__entry->value = value;
	),
	TP_printk("%s %pS %s rule=%u returned=%ld",
		  __get_str(target), (void *)__entry->site, __get_str(callee),
		  __entry->rule, __entry->value)
);

#endif

#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE hp_events
#include <trace/define_trace.h>
