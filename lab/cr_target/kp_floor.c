// SPDX-License-Identifier: GPL-2.0
/*
 * The floors `cargo xtask bench` measures hp_patcher against: one kprobe on
 * a call site (sym+off, a `call rel32`), with
 *   mode=bare      a pre-handler that does nothing: kprobes emulates the
 *                  call itself (what any kprobe on a call site costs);
 *   mode=redirect  a pre-handler that does the call's work and returns 1
 *                  (push the return address, go to the destination): the
 *                  least a module can do to send a call somewhere else.
 * It counts nothing and records nothing.
 */
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/string.h>

static char *sym;
module_param(sym, charp, 0400);
static unsigned int off;
module_param(off, uint, 0400);
static char *mode = "bare";
module_param(mode, charp, 0400);

static unsigned long kp_floor_dest;

static int kp_floor_bare(struct kprobe *kp, struct pt_regs *regs)
{
	return 0;
}

static int kp_floor_redirect(struct kprobe *kp, struct pt_regs *regs)
{
	/* As hp_patcher's pre-handler emulates a call (hp_attach.c says why
	 * the int3 frame leaves room for this word). */
	regs->sp -= sizeof(unsigned long);
	*(unsigned long *)regs->sp = (unsigned long)kp->addr + 5;
	regs->ip = kp_floor_dest;
	return 1;
}

/* Keeps kprobes from optimizing the probe into a jump (which would ignore
 * a changed ip); never runs for the redirecting handler. */
static void kp_floor_post(struct kprobe *kp, struct pt_regs *regs, unsigned long flags)
{
}

static struct kprobe kp_floor_probe;

static int __init kp_floor_init(void)
{
	const u8 *insn;
	s32 rel;
	int err;

	if (!sym)
		return -EINVAL;
	kp_floor_probe.symbol_name = sym;
	kp_floor_probe.offset = off;
	kp_floor_probe.post_handler = kp_floor_post;
	if (!strcmp(mode, "bare"))
		kp_floor_probe.pre_handler = kp_floor_bare;
	else if (!strcmp(mode, "redirect"))
		kp_floor_probe.pre_handler = kp_floor_redirect;
	else
		return -EINVAL;
	/* Registered disabled: the address resolved, the text not yet
	 * patched, so the call is read as the module has it. */
	kp_floor_probe.flags = KPROBE_FLAG_DISABLED;
	err = register_kprobe(&kp_floor_probe);
	if (err)
		return err;
	insn = (const u8 *)kp_floor_probe.addr;
	if (insn[0] != 0xe8) {
		unregister_kprobe(&kp_floor_probe);
		return -EINVAL;
	}
	memcpy(&rel, insn + 1, sizeof(rel));
	kp_floor_dest = (unsigned long)kp_floor_probe.addr + 5 + rel;
	err = enable_kprobe(&kp_floor_probe);
	if (err)
		unregister_kprobe(&kp_floor_probe);
	return err;
}

static void __exit kp_floor_exit(void)
{
	unregister_kprobe(&kp_floor_probe);
}

module_init(kp_floor_init);
module_exit(kp_floor_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("A bare or redirect-only kprobe on one call site: the floors of cargo xtask bench");

