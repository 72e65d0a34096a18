/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The one replacement for every intercepted function.
 *
 * A kprobe pre-handler sends the target here instead of into the catalogue
 * function, with the stack exactly as that function would see it and with
 * %r11 = the struct hp_site * of the call site. %r11 is free to carry it:
 * the System V ABI passes no argument in it and lets any call clobber it.
 *
 * We save the six register arguments, tell Rust about the call, make the
 * real call with the same arguments, tell Rust about the result, and return
 * what Rust returns (today: the real result, unchanged) to whoever the real
 * function would have returned to.
 */
#include <linux/linkage.h>
#include <asm/nospec-branch.h>

	.text
SYM_FUNC_START(hp_trampoline)
	push	%rbp
	mov	%rsp, %rbp
	push	%r11			/* -8(%rbp): the site */
	push	%r9			/* -56(%rbp)..-16(%rbp): args[0..6] */
	push	%r8
	push	%rcx
	push	%rdx
	push	%rsi
	push	%rdi
	sub	$8, %rsp		/* 16-byte alignment for the calls */

	mov	%r11, %rdi
	lea	-56(%rbp), %rsi
	call	hp_on_entry		/* counts the call, returns the real function */
	mov	%rax, %r11

	mov	-56(%rbp), %rdi
	mov	-48(%rbp), %rsi
	mov	-40(%rbp), %rdx
	mov	-32(%rbp), %rcx
	mov	-24(%rbp), %r8
	mov	-16(%rbp), %r9
	CALL_NOSPEC r11

	mov	-8(%rbp), %rdi
	mov	%rax, %rsi
	lea	-56(%rbp), %rdx
	call	hp_on_exit		/* logs, uncounts, returns the result */

	leave
	RET
SYM_FUNC_END(hp_trampoline)
