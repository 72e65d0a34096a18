// SPDX-License-Identifier: GPL-2.0
/*
 * The hp_patcher:hp_call and hp_fault tracepoints, and the calls Rust makes on them.
 * Both run in the target's context: nothing here sleeps or allocates.
 */
#include <linux/module.h>
#include <linux/trace_clock.h>
#include <linux/timekeeping.h>

#define CREATE_TRACE_POINTS
#include "hp_events.h"

u64 hp_c_now_ns(void)
{
	/* NMI-safe and lock-free: the target may call from any context. */
	return ktime_get_mono_fast_ns();
}

/*
 * A traced call's entry time, or 0 while nobody has the event enabled:
 * trace_clock_local(), ftrace's default clock ("local", which hpctl's
 * instance uses too), as the ring buffer reads it for every event. Any
 * context, NMI included.
 */
u64 hp_c_trace_clock(void)
{
	return trace_hp_call_enabled() ? trace_clock_local() : 0;
}

/* Whether anyone (a tracefs instance, perf) has the event enabled. */
bool hp_c_trace_enabled(void)
{
	return trace_hp_call_enabled();
}

/* Writes the event, with its duration; false if nobody has it enabled,
 * for Rust to count the call as dropped. */
bool hp_c_trace_call(struct hp_call_event *event)
{
	if (!trace_hp_call_enabled())
		return false;
	/* A call entered before the event was enabled has no start. The
	 * clock is per CPU: a call that moved to a CPU whose clock is behind
	 * gets 0, not 2^64 - a few. */
	if (event->start_ns) {
		u64 now = trace_clock_local();

		event->duration_ns = now > event->start_ns ? now - event->start_ns : 0;
	}
	trace_hp_call(event);
	return true;
}

void hp_c_trace_fault(const char *target, const char *callee, unsigned long site,
		      u32 rule, long value)
{
	trace_hp_fault(target, callee, site, rule, value);
}
