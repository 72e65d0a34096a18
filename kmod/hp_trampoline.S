/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The replacements every intercepted function is redirected to.
 *
 * A kprobe pre-handler sends the target here instead of into the catalogue
 * function, with the stack exactly as that function would see it and with
 * %r11 = the struct hp_site * of the call site. %r11 is free to carry it:
 * the System V ABI passes no argument in it and lets any call clobber it.
 *
 * hp_trampoline: for a function with a result. It saves the six register
 * arguments, lets Rust count the call and choose the real call (the
 * function itself, or its _track_caller form with the target's site as the
 * caller), makes it, lets Rust log the result, and returns that result
 * (rax, and rdx for a two-register result) to whoever the real function
 * would have returned to. The real call of any callee outside the catalogue
 * also gets a copy of the STACK_WORDS words above our return address: a
 * function that takes arguments on the stack (more than six, a struct by
 * value, variadic) still finds them, even when user space did not say so. Those words are in the caller's frame or
 * the frames above it, which every module function has (entry code and
 * pt_regs sit at the top of every kernel stack).
 *
 * hp_fail_return: what hp_trampoline calls in place of the real function
 * when a fault rule fails the call.
 *
 * hp_trampoline_jump: for a function that returns nothing. Rust logs the
 * call up front, and we jump into the real function with the original
 * return address in place, so that its _RET_IP_ is the target's site and
 * nothing of ours is on the stack while it runs.
 */
#include <linux/linkage.h>
#include <asm/ibt.h>
#include <asm/nospec-branch.h>

/*
 * Both entries are reached through a pointer (the pre-handler's regs->ip),
 * so under IBT each must begin with ENDBR. SYM_FUNC_START emitted one up to
 * 6.x and emits none on 7.x: add it wherever the start_ns left none. (ENDBR is
 * empty where IBT is off, and on i386.) `cargo xtask build` checks the built
 * object's entries against the kernel's config.
 */
#define HP_FUNC_START(name)	\
	SYM_FUNC_START(name) ASM_NL \
	.if . - name == 0 ASM_NL ENDBR ASM_NL .endif

#ifdef CONFIG_X86_64

/* Frame layout below %rbp, shared by both. */
#define SITE	-8
#define ARGS	-56	/* args[0..6]: rdi, rsi, rdx, rcx, r8, r9 */
#define CALL	-128	/* struct hp_call_frame: args[0..6], start_ns, stack_words (+56), call_args (+64) */
#define RET2	-136	/* rdx after the real call */
#define STACK	-208	/* STACK_WORDS (hp_core::proto) words of stack arguments, at %rsp for the call */

.macro SAVE_ARGS
	push	%rbp
	mov	%rsp, %rbp
	push	%r11
	push	%r9
	push	%r8
	push	%rcx
	push	%rdx
	push	%rsi
	push	%rdi
.endm

.macro LOAD_ARGS from, base=%rbp
	mov	\from+0(\base), %rdi
	mov	\from+8(\base), %rsi
	mov	\from+16(\base), %rdx
	mov	\from+24(\base), %rcx
	mov	\from+32(\base), %r8
	mov	\from+40(\base), %r9
.endm

	.text
HP_FUNC_START(hp_trampoline)
	SAVE_ARGS
	sub	$(-STACK - 56), %rsp	/* down to STACK: 16-byte aligned */

	mov	%r11, %rdi
	lea	ARGS(%rbp), %rsi
	lea	CALL(%rbp), %rdx
	mov	8(%rbp), %rcx		/* our return address: the caller the real function would see */
	call	hp_on_entry		/* counts, fills the CallFrame, returns what to call */
	mov	%rax, %r11

	/* The caller's stack arguments start_ns above our return address; a
	 * function known to take none (stack_words 0) needs no copy. */
	cmpq	$0, CALL+56(%rbp)
	je	1f
	.irp i, 0, 1, 2, 3, 4, 5, 6, 7
	mov	16 + 8 * \i(%rbp), %r10
	mov	%r10, STACK + 8 * \i(%rbp)
	.endr
1:

	/* Usually the saved arguments themselves (call_args = ARGS): no copy. */
	mov	CALL+64(%rbp), %rax
	LOAD_ARGS 0, %rax
	CALL_NOSPEC r11
	mov	%rdx, RET2(%rbp)

	mov	SITE(%rbp), %rdi
	mov	%rax, %rsi
	lea	ARGS(%rbp), %rdx
	lea	CALL(%rbp), %rcx
	mov	RET2(%rbp), %r8
	call	hp_on_exit		/* logs, uncounts, returns the result */
	mov	RET2(%rbp), %rdx

	leave
	RET
SYM_FUNC_END(hp_trampoline)

HP_FUNC_START(hp_trampoline_jump)
	SAVE_ARGS
	sub	$8, %rsp		/* 16-byte alignment */

	mov	%r11, %rdi
	lea	ARGS(%rbp), %rsi
	call	hp_on_jump_through	/* counts and logs, returns the real function */
	mov	%rax, %r11

	LOAD_ARGS ARGS
	leave
	JMP_NOSPEC r11
SYM_FUNC_END(hp_trampoline_jump)

/* A call a fault rule fails: hp_on_entry put the failure value in args[0]. */
HP_FUNC_START(hp_fail_return)
	mov	%rdi, %rax
	RET
SYM_FUNC_END(hp_fail_return)

#else /* i386 */

/*
 * The same two replacements for 32-bit x86, where the kernel is built with
 * -mregparm=3: arguments 1 to 3 travel in eax, edx and ecx, the rest on the
 * stack, and eax, edx and ecx are all a call may clobber. With no register
 * free to carry the site, the pre-handler pushes it: on entry (%esp) is the
 * struct hp_site *, 4(%esp) the return address, 8(%esp) the stack
 * arguments. Calls into Rust follow the glue's prototypes under
 * regparm(3), whose scalars are unsigned long (see hp_glue.h): hp_on_entry
 * takes site, args, frame in eax, edx, ecx and the caller on the stack;
 * hp_on_exit takes site, ret, args in eax, edx, ecx, then frame and ret2
 * on the stack. hp_abi_check verifies at load that Rust reads arguments
 * where C puts them.
 */

/*
 * hp_trampoline's frame is an ordinary one: the caller's return address
 * right above the saved %ebp, where the kernel's frame-pointer unwinder
 * (and the leak checker's stacks) look for it. The site the pre-handler
 * pushed moves below %ebp.
 */
#define RETADDR	4
#define STACK32	8	/* the caller's stack arguments */
#define SITE32	-4
/* Also below %ebp. */
#define ARGS32	-64	/* u64 args[6]: eax, edx, ecx, then 3 stack words */
#define CALL32	-136	/* struct hp_call_frame (72 bytes; call_args at +64) */
#define REAL32	-140	/* what to call */
#define RET32	-148	/* eax, edx after the real call */
#define EBX32	-152
#define FRAME32	152

/* args[i] as u64: the 32-bit value, zero-extended. %ebp is set; \stack is
 * where the caller's stack arguments start_ns above it. */
.macro SAVE_ARGS32 stack
	lea	-FRAME32(%ebp), %esp
	mov	%eax, ARGS32+0(%ebp)
	mov	%edx, ARGS32+8(%ebp)
	mov	%ecx, ARGS32+16(%ebp)
	/* Words the function may not take: read only, from the caller's frame. */
	.irp i, 0, 1, 2
	mov	\stack+4*\i(%ebp), %eax
	mov	%eax, ARGS32+24+8*\i(%ebp)
	.endr
	.irp i, 0, 1, 2, 3, 4, 5
	movl	$0, ARGS32+4+8*\i(%ebp)
	.endr
.endm

	.text
HP_FUNC_START(hp_trampoline)
	/* (%esp) is the site, 4(%esp) the return address: make it
	 * site, caller's %ebp, return address, with %ebp on the middle one. */
	pushl	(%esp)
	mov	%ebp, 4(%esp)
	lea	4(%esp), %ebp
	SAVE_ARGS32 STACK32
	mov	%ebx, EBX32(%ebp)

	pushl	RETADDR(%ebp)		/* caller: the return address the real function would see */
	mov	SITE32(%ebp), %eax
	lea	ARGS32(%ebp), %edx
	lea	CALL32(%ebp), %ecx
	call	hp_on_entry		/* counts, fills the frame, returns what to call */
	mov	%eax, REAL32(%ebp)
	lea	-FRAME32(%ebp), %esp

	/*
	 * Push args[3 .. 3 + stack_words], last first: exactly as many as the
	 * real function takes (hp_on_entry knows its arity, at most 3 here).
	 */
	mov	CALL32+64(%ebp), %ebx	/* call_args: usually ARGS32 itself */
	mov	CALL32+56(%ebp), %ecx
1:	test	%ecx, %ecx
	jz	2f
	pushl	16(%ebx,%ecx,8)		/* args[2 + ecx], low half */
	dec	%ecx
	jmp	1b
2:	mov	0(%ebx), %eax
	mov	8(%ebx), %edx
	mov	16(%ebx), %ecx
	mov	REAL32(%ebp), %ebx
	CALL_NOSPEC ebx
	mov	%eax, RET32(%ebp)
	mov	%edx, RET32+4(%ebp)
	lea	-FRAME32(%ebp), %esp

	/* hp_on_exit(site, ret = eax, args, frame, ret2 = edx) */
	pushl	RET32+4(%ebp)		/* ret2 */
	lea	CALL32(%ebp), %eax
	push	%eax			/* frame */
	mov	SITE32(%ebp), %eax
	mov	RET32(%ebp), %edx	/* ret */
	lea	ARGS32(%ebp), %ecx	/* args */
	call	hp_on_exit		/* logs, uncounts, returns ret */
	mov	RET32+4(%ebp), %edx

	mov	EBX32(%ebp), %ebx
	leave				/* the site is dropped with the frame */
	RET
SYM_FUNC_END(hp_trampoline)

/* Above %ebp in hp_trampoline_jump's frame, which keeps the site above
 * the saved %ebp: `ret` leaves through that slot. */
#define JUMP_SITE	4
#define JUMP_STACK	12

HP_FUNC_START(hp_trampoline_jump)
	push	%ebp
	mov	%esp, %ebp
	SAVE_ARGS32 JUMP_STACK
	mov	JUMP_SITE(%ebp), %eax
	lea	ARGS32(%ebp), %edx
	call	hp_on_jump_through	/* counts and logs, returns the real function */
	/*
	 * The site's slot becomes the real function's address, so that `ret`
	 * goes there with the original return address on top and the caller's
	 * stack arguments untouched, as if the target had called it.
	 */
	mov	%eax, JUMP_SITE(%ebp)
	mov	ARGS32+0(%ebp), %eax
	mov	ARGS32+8(%ebp), %edx
	mov	ARGS32+16(%ebp), %ecx
	leave
	ret
SYM_FUNC_END(hp_trampoline_jump)

/* A call a fault rule fails: its value is args[0], already in %eax. */
HP_FUNC_START(hp_fail_return)
	RET
SYM_FUNC_END(hp_fail_return)

#endif
