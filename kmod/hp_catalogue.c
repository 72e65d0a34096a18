// SPDX-License-Identifier: GPL-2.0
/*
 * Addresses of the catalogue functions that this kernel exports.
 *
 * hp_catalogue.h is generated at build time from the kernel's Module.symvers
 * and the Rust catalogue, so a function the kernel lacks is simply absent
 * (address 0) instead of breaking the module load. No kernel header that
 * declares these functions is included here: each is declared as an opaque
 * object, which cannot clash with its real prototype. Only addresses are used.
 */
#include <linux/types.h>	/* only this: see above; hp_glue.h declares the two tables */

#define HP_CATALOGUE_FN(index, symbol) extern const char symbol[];
#include "hp_catalogue.h"
#undef HP_CATALOGUE_FN

extern const u64 hp_catalogue_len;

#ifdef CONFIG_X86_64
extern const u64 hp_catalogue_addrs[];
const u64 hp_catalogue_addrs[HP_CATALOGUE_LEN] = {
#define HP_CATALOGUE_FN(index, symbol) [index] = (u64)symbol,
#include "hp_catalogue.h"
#undef HP_CATALOGUE_FN
};
#else
/*
 * i386: a 32-bit address cannot initialize a u64 statically, so each entry
 * is the address and a zero high half: the bytes of that u64 (little
 * endian), which is what hp_glue.h's `const u64 hp_catalogue_addrs[]` reads.
 */
struct hp_addr_u64 {
	unsigned long low, high;
};
extern const struct hp_addr_u64 hp_catalogue_addrs[];
const struct hp_addr_u64 hp_catalogue_addrs[HP_CATALOGUE_LEN] = {
#define HP_CATALOGUE_FN(index, symbol) [index] = { (unsigned long)symbol, 0 },
#include "hp_catalogue.h"
#undef HP_CATALOGUE_FN
};
#endif

const u64 hp_catalogue_len = HP_CATALOGUE_LEN;
