//! Kernel log lines from Rust, printed by C.
//!
//! Lines logged in process context (attach, detach) are built on the heap:
//! some are long (the catalogue list, a detach summary) and the kernel stack
//! is not the place for kilobyte buffers. An allocation failure truncates
//! the line; it never fails the caller.

use alloc::vec::Vec;
use core::ffi::CStr;
use core::fmt::{self, Write};

use crate::ffi;

/// printk cuts lines near 1 kB anyway.
const MAX_LINE: usize = 1024;

#[derive(Default)]
pub struct Line {
    text: Vec<u8>,
    /// A piece could not be added: printing half a line would mislead.
    lost: bool,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut take = s.len().min(MAX_LINE - self.text.len());
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        // One more byte for the NUL that print adds.
        if self.text.try_reserve(take + 1).is_ok() {
            self.text.extend_from_slice(&s.as_bytes()[..take]);
        } else {
            self.lost = true;
        }
        Ok(())
    }
}

impl Line {
    fn print(&mut self, print: impl FnOnce(*const core::ffi::c_char)) {
        if self.lost || self.text.try_reserve(1).is_err() {
            return error_static(c"a log line was lost: out of memory");
        }
        self.text.push(0);
        print(self.text.as_ptr().cast());
        self.text.pop();
    }
}

pub fn line(args: fmt::Arguments<'_>) -> Line {
    let mut line = Line::default();
    let _ = line.write_fmt(args);
    line
}

pub fn log(level: u32, args: fmt::Arguments<'_>) {
    emit(level, &mut line(args));
}

/// Prints a line built piece by piece.
pub fn emit(level: u32, line: &mut Line) {
    // SAFETY: the pointer is NUL-terminated and outlives the call.
    line.print(|text| unsafe { ffi::hp_c_log(level, text) })
}

/// Like `log`, with ` at symbol+off/size [module]` for `addr` appended by C.
pub fn log_at(level: u32, addr: u64, args: fmt::Arguments<'_>) {
    // SAFETY: as above.
    line(args).print(|text| unsafe { ffi::hp_c_log_at(level, text, addr as usize) })
}

/// An error that needs no formatting and no memory: for out-of-memory paths.
pub fn error_static(msg: &CStr) {
    // SAFETY: msg is NUL-terminated and static.
    unsafe { ffi::hp_c_log(ffi::HP_ERR, msg.as_ptr()) }
}

macro_rules! info {
    ($($t:tt)*) => { $crate::log::log($crate::ffi::HP_INFO, format_args!($($t)*)) };
}
macro_rules! error {
    ($($t:tt)*) => { $crate::log::log($crate::ffi::HP_ERR, format_args!($($t)*)) };
}
pub(crate) use {error, info};
