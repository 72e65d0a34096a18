// SPDX-License-Identifier: GPL-2.0
/*
 * A QEMU TCG plugin for `cargo xtask bench --profile`: counts how often
 * each guest instruction in the kernel half of the address space runs, and
 * at exit writes "<address> <count>" lines (counts of 1000 and more) to the
 * file $HP_INSN_COUNTS names. xtask maps the addresses to the guest's
 * symbols. Built by xtask with the host's cc; QEMU's plugin API version 1
 * (QEMU 7.2, Debian 12), whose few declarations are written out below as
 * Debian packages no plugin header.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;
typedef struct {
	const char *target_name;
	struct { int min, cur; } version;
	bool system_emulation;
	union { struct { int smp_vcpus, max_vcpus; } system; };
} qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id,
		void (*cb)(qemu_plugin_id_t, struct qemu_plugin_tb *));
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn,
		enum qemu_plugin_op op, void *ptr, uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id,
		void (*cb)(qemu_plugin_id_t, void *), void *userdata);

EXPORT int qemu_plugin_version = 1;

/* Open addressing, never resized: a kernel boot runs well under 4M distinct
 * instructions. The guest runs on one host thread (thread=single), so
 * the counters need no atomics. */
#define SLOTS (1u << 22)
struct slot { uint64_t addr, count; };
static struct slot *table;
static const char *out_path;

static uint64_t *counter(uint64_t addr)
{
	uint64_t i = (addr * 0x9E3779B97F4A7C15ull) >> 42;

	for (;; i = (i + 1) & (SLOTS - 1)) {
		if (table[i].addr == addr || !table[i].addr) {
			table[i].addr = addr;
			return &table[i].count;
		}
	}
}

static void translated(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	for (size_t i = 0; i < qemu_plugin_tb_n_insns(tb); i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
		uint64_t addr = qemu_plugin_insn_vaddr(insn);

		if (addr >= 0xffff800000000000ull)
			qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
								   counter(addr), 1);
	}
}

static void finished(qemu_plugin_id_t id, void *unused)
{
	FILE *f = fopen(out_path, "w");

	if (!f)
		return;
	for (uint32_t i = 0; i < SLOTS; i++)
		if (table[i].count >= 1000)
			fprintf(f, "%llx %llu\n", (unsigned long long)table[i].addr,
				(unsigned long long)table[i].count);
	fclose(f);
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
	out_path = getenv("HP_INSN_COUNTS");
	table = calloc(SLOTS, sizeof(*table));
	if (!out_path || !table)
		return -1;
	qemu_plugin_register_vcpu_tb_trans_cb(id, translated);
	qemu_plugin_register_atexit_cb(id, finished, NULL);
	return 0;
}
