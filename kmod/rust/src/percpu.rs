//! This CPU's copy of a per-CPU variable (memory from `alloc_percpu`),
//! written with no lock: the same single segment-relative instructions the
//! kernel's `this_cpu_*` operations use, which C has as macros and Rust
//! cannot call. A per-CPU address is an offset from the CPU's per-CPU base,
//! which x86_64 keeps in %gs and i386 in %fs.
//!
//! Each operation is one instruction (two for a u64 on i386), so an
//! interrupt on this CPU sees it whole, and a preempted task's next
//! instruction writes whichever CPU it then runs on: every copy stays
//! a valid count, and only the sum over CPUs (done in C) means anything.
//! None is `lock`-prefixed: no cache line is fought over by CPUs.
//! `hp_percpu_check` tests all of it against C's `per_cpu_ptr` at load.
//!
//! Every asm block leaves out `nomem`, so the compiler orders memory
//! accesses around it as written: an exit count is the last touch of a
//! session (x86 keeps stores after earlier loads and stores).

use core::arch::asm;

/// Adds 1 to this CPU's copy of the u64 at per-CPU address `addr`.
///
/// # Safety
/// `addr` is a per-CPU address of a u64 that is still allocated.
#[inline(always)]
pub unsafe fn inc_u64(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: per this function's contract.
    unsafe {
        asm!("incq %gs:({0})", in(reg) addr, options(att_syntax, nostack));
    }
    // The carry travels in EFLAGS, which an interrupt saves and restores;
    // a task moved to another CPU between the two adds that CPU's high
    // half instead: its copy is off by 2^32 and the other's by -2^32, and
    // the sum is exact.
    #[cfg(target_arch = "x86")]
    // SAFETY: per this function's contract.
    unsafe {
        asm!("addl $1, %fs:({0})", "adcl $0, %fs:4({0})", in(reg) addr, options(att_syntax, nostack));
    }
}

/// This CPU's copy of the word at per-CPU address `addr`.
///
/// # Safety
/// `addr` is a per-CPU address of a usize that is still allocated.
#[inline(always)]
pub unsafe fn read_word(addr: usize) -> usize {
    let value: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: per this function's contract.
    unsafe {
        asm!("movq %gs:({0}), {1}", in(reg) addr, out(reg) value, options(att_syntax, nostack, readonly, preserves_flags));
    }
    #[cfg(target_arch = "x86")]
    // SAFETY: per this function's contract.
    unsafe {
        asm!("movl %fs:({0}), {1}", in(reg) addr, out(reg) value, options(att_syntax, nostack, readonly, preserves_flags));
    }
    value
}

/// Sets this CPU's copy of the word at per-CPU address `addr`.
///
/// # Safety
/// As for `read_word`.
#[inline(always)]
pub unsafe fn write_word(addr: usize, value: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: per this function's contract.
    unsafe {
        asm!("movq {1}, %gs:({0})", in(reg) addr, in(reg) value, options(att_syntax, nostack, preserves_flags));
    }
    #[cfg(target_arch = "x86")]
    // SAFETY: per this function's contract.
    unsafe {
        asm!("movl {1}, %fs:({0})", in(reg) addr, in(reg) value, options(att_syntax, nostack, preserves_flags));
    }
}

/// Adds 1 to this CPU's copy of the word at `addr` and returns what it
/// was: `xadd` with no `lock`, whole against interrupts on this CPU.
///
/// # Safety
/// As for `read_word`.
#[inline(always)]
pub unsafe fn fetch_inc_word(addr: usize) -> usize {
    let mut value: usize = 1;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: per this function's contract.
    unsafe {
        asm!("xaddq {1}, %gs:({0})", in(reg) addr, inout(reg) value, options(att_syntax, nostack));
    }
    #[cfg(target_arch = "x86")]
    // SAFETY: per this function's contract.
    unsafe {
        asm!("xaddl {1}, %fs:({0})", in(reg) addr, inout(reg) value, options(att_syntax, nostack));
    }
    value
}

/// The load-time check (hp_init): C hands a fresh per-CPU `struct
/// hp_percpu_check` ({u64, usize, usize}), with preemption off; Rust
/// carries the u64 across its low half (on i386 the second instruction),
/// writes, reads and bumps the words. C then compares every CPU's copy
/// with what this CPU's should be and refuses to load on a difference,
/// so that a kernel whose per-CPU addressing differs from this module's
/// never runs the hot path. Returns what Rust read back of the word.
///
/// # Safety
/// `addr` is such a per-CPU address, this CPU's u64 holds 0xffff_ffff and
/// its words 0, and the task cannot move between CPUs during the call.
#[no_mangle]
pub unsafe extern "C" fn hp_percpu_check(addr: usize) -> usize {
    let word = addr + 8;
    // SAFETY: per this function's contract, for the u64 and both words.
    unsafe {
        inc_u64(addr);
        inc_u64(addr);
        write_word(word, 40);
        let before = fetch_inc_word(word);
        write_word(word + core::mem::size_of::<usize>(), before);
        read_word(word)
    }
}
