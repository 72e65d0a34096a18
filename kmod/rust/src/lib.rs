//! The Rust part of the hp_patcher kernel module.
//!
//! `hp_plan` turns what the C layer knows of the target into a `Session`: the
//! sites to redirect, each with its own hit counter. `hp_on_entry` and
//! `hp_on_exit` are called by the trampoline around every redirected call.
//! Every `extern "C"` item here is declared in kmod/hp_glue.h.
#![no_std]

extern crate alloc;

mod callees;
mod control;
mod faults;
mod leaks;
mod ffi;
mod log;
mod percpu;
mod runtime;
mod session;
mod site;
mod shared;

use core::ffi::{c_char, CStr};

use session::Session;
use site::{SiteRecord, SiteState};
use ffi::CallFrame;

/// With `req.callees` set, lists the callees into that reply and sets `*out`
/// to null.
///
/// # Safety
/// `req` points to a valid request whose pointers are valid for the sizes
/// it gives and outlive the call (the text copy, symbols and tables are kept
/// by the C layer); `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn hp_plan(req: *const ffi::AttachRequest, out: *mut *mut Session) -> i32 {
    // SAFETY: per this function's contract.
    let req = unsafe { &*req };
    match unsafe { Session::plan(req) } {
        Ok(session) => {
            // SAFETY: out is writable per the contract.
            unsafe { *out = session };
            0
        }
        Err(errno) => -errno,
    }
}

/// # Safety
/// `s` came from `hp_plan` and has not been freed.
#[no_mangle]
pub unsafe extern "C" fn hp_session_site_count(s: *const Session) -> u64 {
    unsafe { &*s }.sites().len() as u64
}

/// # Safety
/// `s` came from `hp_plan`; `index` is below the site count; `addr`,
/// `tail_jump` and `jump_through` are writable.
#[no_mangle]
pub unsafe extern "C" fn hp_session_site(
    s: *const Session,
    index: usize,
    addr: *mut u64,
    tail_jump: *mut bool,
    jump_through: *mut bool,
) -> *const SiteRecord {
    let site = &unsafe { &*s }.sites()[index];
    unsafe {
        *addr = site.addr();
        *tail_jump = site.is_tail_jump();
        *jump_through = site.is_jump_through();
    }
    site
}

/// # Safety
/// `s` came from `hp_plan` and has not been freed.
#[no_mangle]
pub unsafe extern "C" fn hp_session_inflight(s: *const Session) -> u64 {
    unsafe { &*s }.inflight()
}

/// # Safety
/// `s` came from `hp_plan` and has not been freed; `buf` has room for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn hp_session_waiting(s: *const Session, buf: *mut u8, len: usize) -> u64 {
    let out = unsafe { core::slice::from_raw_parts_mut(buf, len) };
    unsafe { &*s }.waiting(out)
}

/// # Safety
/// `s` came from `hp_plan`; `why` is a NUL-terminated string. `missed`
/// counts probe hits kprobes did not pass to us.
#[no_mangle]
pub unsafe extern "C" fn hp_session_report(s: *const Session, why: *const c_char, missed: usize) {
    let why = unsafe { CStr::from_ptr(why) }.to_str().unwrap_or("?");
    unsafe { &*s }.report(why, missed as u64);
}

/// # Safety
/// `s` came from `hp_plan` (or is null), and no site of it can be entered
/// any more: the C layer has finished the detach sequence.
#[no_mangle]
pub unsafe extern "C" fn hp_session_free(s: *mut Session) {
    if !s.is_null() {
        drop(unsafe { alloc::boxed::Box::from_raw(s) });
    }
}

/// C tells whether kprobes took the site (`armed`) or not, how many hits
/// kprobes kept from us, and the site's counters summed over CPUs.
///
/// # Safety
/// `site` came from `hp_session_site` of a live session; `sum` points to a
/// `SiteCounts`.
#[no_mangle]
pub unsafe extern "C" fn hp_site_set_probe(site: *const SiteRecord, armed: bool, missed: usize, sum: *const ffi::SiteCounts) {
    let site = unsafe { &*site };
    site.set_state(if armed { SiteState::Armed } else { SiteState::Refused });
    site.set_missed(missed as u64);
    site.set_summed(unsafe { &*sum });
}

/// Where the site's hooks count: C's per-CPU `struct hp_site_counts`.
///
/// # Safety
/// `site` came from `hp_session_site` of a live session, whose probe is
/// not armed yet; `counts` stays allocated until the session is freed.
#[no_mangle]
pub unsafe extern "C" fn hp_site_set_counts(site: *const SiteRecord, counts: usize) {
    unsafe { &*site }.set_counts(counts);
}

/// # Safety
/// `s` came from `hp_plan` and is live.
#[no_mangle]
pub unsafe extern "C" fn hp_session_may_count_only(s: *const Session) -> bool {
    unsafe { &*s }.may_count_only()
}

/// # Safety
/// `site` came from `hp_session_site` of a live session.
#[no_mangle]
pub unsafe extern "C" fn hp_site_counts_only(site: *const SiteRecord) -> bool {
    unsafe { &*site }.counts_only()
}

/// Called by hp_trampoline before the real call; fills `frame` and returns
/// what to call.
///
/// # Safety
/// `site` is a live `SiteRecord` (the detach sequence guarantees it while
/// any task can still reach the trampoline); `args` points to six `u64`,
/// `frame` to the trampoline's `CallFrame`, distinct.
#[no_mangle]
pub unsafe extern "C" fn hp_on_entry(
    site: *const SiteRecord,
    args: *const [u64; 6],
    frame: *mut CallFrame,
    caller: usize,
) -> u64 {
    unsafe { &*site }.enter(unsafe { &*args }, unsafe { &mut *frame }, caller as u64)
}

/// Called by hp_trampoline_jump; returns the function to jump into.
///
/// # Safety
/// As for `hp_on_entry`.
#[no_mangle]
pub unsafe extern "C" fn hp_on_jump_through(site: *const SiteRecord, args: *const [u64; 6]) -> u64 {
    unsafe { &*site }.jump_through(unsafe { &*args })
}

/// Called by the trampoline after the real function; returns what the
/// caller will see.
///
/// # Safety
/// As for `hp_on_entry`.
#[no_mangle]
pub unsafe extern "C" fn hp_on_exit(
    site: *const SiteRecord,
    ret: usize,
    args: *const [u64; 6],
    frame: *const CallFrame,
    ret2: usize,
) -> u64 {
    unsafe { &*site }.exit(ret as u64, ret2 as u64, unsafe { &*args }, unsafe { &*frame })
}

/// The calling-convention check C runs at load (hp_init): it calls this
/// with known values in hp_on_exit's shape (pointer, unsigned long, pointer,
/// pointer, unsigned long), which spans registers and the stack under
/// i386's regparm(3), and returns a u64 in two registers there; it
/// calls C's `hp_c_abi_mix` back with the same values. Both sides mix
/// the values the same way; a result that differs from C's own mix means
/// that Rust and C disagree on where an argument travels (built without
/// `-Zregparm=3`, say), and the module refuses to load.
#[no_mangle]
pub extern "C" fn hp_abi_check(a: *const u8, b: usize, c: *const u64, d: *const u8, e: usize) -> u64 {
    let own = abi_mix(a as usize as u64, b as u64, c as usize as u64, d as usize as u64, e as u64);
    // SAFETY: C's function reads its arguments only.
    let back = unsafe { ffi::hp_c_abi_mix(a, b, c, d, e) };
    if own == back {
        own
    } else {
        0
    }
}

/// Each argument in its own position, so that a swap or a lost half shows;
/// hp_c_abi_mix in hp_main.c is the same.
fn abi_mix(a: u64, b: u64, c: u64, d: u64, e: u64) -> u64 {
    a ^ b.rotate_left(8) ^ c.rotate_left(16) ^ d.rotate_left(24) ^ e.rotate_left(32)
}
