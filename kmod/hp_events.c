// SPDX-License-Identifier: GPL-2.0
/*
 * The hp_patcher:hp_call and hp_fault tracepoints, and the calls Rust makes on them.
 * Both run in the target's context: nothing here sleeps or allocates.
 */
#include <linux/module.h>
#include <linux/timekeeping.h>

#define CREATE_TRACE_POINTS
#include "hp_events.h"

u64 hp_c_now_ns(void)
{
	/* NMI-safe and lock-free: the target may call from any context. */
	return ktime_get_mono_fast_ns();
}

/* Whether anyone (a tracefs instance, perf) has the event enabled: if not,
 * Rust counts the call as dropped instead of writing nothing silently. */
bool hp_c_trace_enabled(void)
{
	return trace_hp_call_enabled();
}

void hp_c_trace_call(const struct hp_call_event *event)
{
	trace_hp_call(event);
}

void hp_c_trace_fault(const char *target, const char *callee, unsigned long site,
		      u32 rule, long value)
{
	trace_hp_fault(target, callee, site, rule, value);
}
