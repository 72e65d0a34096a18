//! Pure logic of hp_patcher, shared by the kernel module and the host tools.
//!
//! `no_std` with `alloc`, so that it links into the module and is unit-tested
//! on the host with a plain `cargo test`. Nothing here touches the kernel:
//! the module hands in bytes, symbols and addresses, and gets decisions and
//! text back.
#![no_std]

extern crate alloc;

pub mod arena;
pub mod catalogue;
pub mod control;
pub mod event;
pub mod fault;
pub mod gfp;
pub mod leaks;
pub mod proto;
pub mod ratelimit;
pub mod sites;
