//! Kernel log lines from Rust: formatted into a stack buffer, printed by C.

use core::fmt;
use core::fmt::Write;

use hp_core::event::LineBuf;

use crate::ffi;

pub type Line = LineBuf<1024>;

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
    // SAFETY: as_c_bytes is NUL-terminated and outlives the call.
    unsafe { ffi::hp_c_log(level, line.as_c_bytes().as_ptr().cast()) }
}

/// Like `log`, with ` at symbol+off/size [module]` for `addr` appended by C.
pub fn log_at(level: u32, addr: u64, args: fmt::Arguments<'_>) {
    let mut line = line(args);
    // SAFETY: as above.
    unsafe { ffi::hp_c_log_at(level, line.as_c_bytes().as_ptr().cast(), addr) }
}

macro_rules! info {
    ($($t:tt)*) => { $crate::log::log($crate::ffi::HP_INFO, format_args!($($t)*)) };
}
macro_rules! error {
    ($($t:tt)*) => { $crate::log::log($crate::ffi::HP_ERR, format_args!($($t)*)) };
}
pub(crate) use {error, info};
