/* SPDX-License-Identifier: GPL-2.0 */
/*
 * cr_callee's exported functions: what cr_target calls to test the
 * interception of any callee (typed arguments, refusals, a sleeping call).
 * The expected results are computed in this header, so that the caller can
 * check every result it gets back through an intercepted call.
 */
#ifndef CR_CALLEE_H
#define CR_CALLEE_H

#include <linux/types.h>

/* A flags-like enum, printed by name from BTF. */
enum cr_mode {
	CR_MODE_READ = 1,
	CR_MODE_WRITE = 2,
	CR_MODE_SYNC = 4,
};

/* 24 bytes: passed by value in memory, on the stack (System V AMD64). */
struct cr_triple {
	u64 a, b, c;
};

/* Six arguments of six kinds; the result depends on every one of them. */
long cr_mixed(int level, size_t len, const void *cookie, const char *label,
	      enum cr_mode mode, bool urgent);
/* Three arguments, two of them strings. */
bool cr_match(const char *name, const char *pattern, size_t n);
/* Seven arguments: the seventh travels on the stack. */
u64 cr_seven(u64 a, u64 b, u64 c, u64 d, u64 e, u64 f, u64 g);
/* A struct passed by value. */
u64 cr_by_value(struct cr_triple t);
/* A u64 between two ints: two stack words on i386. */
u64 cr_wide(int a, u64 b, int c);
/* Variadic: the sum of its n long arguments after n. */
long cr_sum(int n, ...);
/* An allocator and its free of cr_callee's own, outside the catalogue: the
 * leak checker learns them from `--pair cr_buf_get:cr_buf_put@1`. */
void *cr_buf_get(size_t size);
void cr_buf_put(int reason, void *buf);
/*
 * Sleeps until /sys/kernel/debug/cr_callee/gate is written (or 120 s pass:
 * -ETIMEDOUT), then returns 2 * ticket + 1.
 */
long cr_gate_wait(unsigned int ticket);

static inline long cr_mixed_expected(int level, size_t len, const void *cookie,
				     long label_len, enum cr_mode mode, bool urgent)
{
	return (long)level * 3 + (long)len + label_len * 1000 +
	       (long)mode * 100000 + (urgent ? 10000000 : 0) + (cookie ? 0 : 7);
}

static inline u64 cr_seven_expected(u64 a, u64 b, u64 c, u64 d, u64 e, u64 f, u64 g)
{
	return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g;
}

static inline u64 cr_triple_expected(struct cr_triple t)
{
	return t.a + 2 * t.b + 3 * t.c;
}

static inline u64 cr_wide_expected(int a, u64 b, int c)
{
	return (u64)(s64)a + 3 * b + 5 * (u64)(s64)c;
}

/* What cr_target passes to cr_sum: 16 arguments in all. */
#define CR_SUM_N 15
static inline long cr_sum_expected(long s)
{
	return CR_SUM_N * s + CR_SUM_N * (CR_SUM_N - 1) / 2;
}

#endif
