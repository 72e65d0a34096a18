/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Where the kernels hp_patcher builds for differ (6.1, 6.12, 7.x), in one
 * place. Features are tested by what the headers define where that is
 * possible, and by version where it is not. The trampolines' ENDBR, which
 * assembly decides, is in hp_trampoline.S (HP_FUNC_START).
 */
#ifndef HP_COMPAT_H
#define HP_COMPAT_H

#include <linux/module.h>
#include <linux/version.h>

/*
 * The gfp flag names, as the kernel's own tracepoints print them. Up to
 * 6.x the KASAN flags were a second list; 7.x folds them into the first,
 * which then ends with { 0, NULL }: count names only up to that end
 * (hp_gfp_name_count).
 */
#ifdef __def_gfpflag_names_kasan
#define HP_GFP_NAMES __def_gfpflag_names __def_gfpflag_names_kasan
#else
#define HP_GFP_NAMES __def_gfpflag_names
#endif

/* A module's core and init text: struct module_memory since 6.4. */
static inline void hp_module_text(const struct module *mod, bool init,
				  u64 *base, u64 *size)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
	const struct module_memory *mem = &mod->mem[init ? MOD_INIT_TEXT : MOD_TEXT];

	*base = (unsigned long)mem->base;
	*size = mem->size;
#else
	const struct module_layout *layout = init ? &mod->init_layout : &mod->core_layout;

	*base = (unsigned long)layout->base;
	*size = layout->text_size;
#endif
}

/* __assign_str lost its source argument in 6.10. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 10, 0)
#define hp_assign_str(field, src) __assign_str(field)
#else
#define hp_assign_str(field, src) __assign_str(field, src)
#endif

#endif
