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
 * would have returned to. The real call also gets a copy of the STACK_WORDS
 * words above our return address: a function that takes arguments on the
 * stack (more than six, a struct by value, variadic) still finds them, even
 * when user space did not say so. Those words are in the caller's frame or
 * the frames above it, which every module function has (entry code and
 * pt_regs sit at the top of every kernel stack).
 *
 * hp_trampoline_jump: for a function that returns nothing. Rust logs the
 * call up front, and we jump into the real function with the original
 * return address in place, so that its _RET_IP_ is the target's site and
 * nothing of ours is on the stack while it runs.
 */
#include <linux/linkage.h>
#include <asm/nospec-branch.h>

/* Frame layout below %rbp, shared by both. */
#define SITE	-8
#define ARGS	-56	/* args[0..6]: rdi, rsi, rdx, rcx, r8, r9 */
#define CALL	-112	/* struct CallFrame: args[0..6] for the real call, then start_ns */
#define RET2	-120	/* rdx after the real call */
#define STACK	-192	/* STACK_WORDS (hp_core::proto) words of stack arguments, at %rsp for the call */

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

.macro LOAD_ARGS from
	mov	\from+0(%rbp), %rdi
	mov	\from+8(%rbp), %rsi
	mov	\from+16(%rbp), %rdx
	mov	\from+24(%rbp), %rcx
	mov	\from+32(%rbp), %r8
	mov	\from+40(%rbp), %r9
.endm

	.text
SYM_FUNC_START(hp_trampoline)
	SAVE_ARGS
	sub	$(-STACK - 56), %rsp	/* down to STACK: 16-byte aligned */

	mov	%r11, %rdi
	lea	ARGS(%rbp), %rsi
	lea	CALL(%rbp), %rdx
	mov	8(%rbp), %rcx		/* our return address: the caller the real function would see */
	call	hp_on_entry		/* counts, fills the CallFrame, returns what to call */
	mov	%rax, %r11

	/* The caller's stack arguments start above our return address. */
	.irp i, 0, 1, 2, 3, 4, 5, 6, 7
	mov	16 + 8 * \i(%rbp), %r10
	mov	%r10, STACK + 8 * \i(%rbp)
	.endr

	LOAD_ARGS CALL
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

SYM_FUNC_START(hp_trampoline_jump)
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
