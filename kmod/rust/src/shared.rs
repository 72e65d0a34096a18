//! What a target shares with its sessions: its fault rules, and the leak
//! checker's table when it asked for one. Created with the target (C holds
//! the first reference); each session takes one more at plan and drops it
//! when it is freed. A detached target's sessions may outlive it while
//! their callers drain, and followed targets keep both across reloads, so
//! the last reference frees them.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::faults::FaultTable;
use crate::leaks::Leaks;
use crate::runtime::try_box;

pub struct Shared {
    refs: AtomicUsize,
    pub faults: FaultTable,
    pub leaks: Option<Leaks>,
}

impl Shared {
    pub fn get(&self) {
        self.refs.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops a reference; the last frees everything.
    ///
    /// # Safety
    /// `s` came from `hp_shared_new`, and the caller's reference is not used
    /// afterwards. With the last one gone no session uses it, so no caller
    /// is inside.
    pub unsafe fn put(s: *const Shared) {
        if unsafe { &*s }.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            drop(unsafe { alloc::boxed::Box::from_raw(s as *mut Shared) });
        }
    }
}

/// A new target's, with one reference (the target's), and a leak table of
/// `leak_slots` objects (0: no leak checking). Null if memory runs out.
#[no_mangle]
pub extern "C" fn hp_shared_new(leak_slots: usize) -> *mut Shared {
    let leaks = match leak_slots {
        0 => None,
        n => match Leaks::new(n) {
            Some(leaks) => Some(leaks),
            None => return core::ptr::null_mut(),
        },
    };
    try_box(Shared { refs: AtomicUsize::new(1), faults: FaultTable::new(), leaks }).unwrap_or(core::ptr::null_mut())
}

/// # Safety
/// As for `Shared::put`; `s` may be null.
#[no_mangle]
pub unsafe extern "C" fn hp_shared_put(s: *const Shared) {
    if !s.is_null() {
        unsafe { Shared::put(s) }
    }
}
