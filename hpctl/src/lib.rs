//! hpctl: the user-space side of hp_patcher's control device and of its
//! `hp_patcher:hp_call` trace event. The binary is `src/main.rs`; the
//! modules are a library so that tests/ can exercise them.

pub mod btf;
pub mod callees;
pub mod capture;
pub mod catalogue;
pub mod cli;
pub mod device;
pub mod event;
pub mod faults;
pub mod format;
pub mod json;
pub mod kmod;
pub mod leaks;
pub mod prototype;
pub mod records;
pub mod ringbuf;
pub mod symbols;
pub mod table;
pub mod trace;
pub mod tracefs;
