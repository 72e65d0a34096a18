//! Mirror of kmod/hp_glue.h: the types and C functions the Rust side uses.

use core::ffi::c_char;

#[repr(C)]
pub struct AttachRequest {
    pub target_name: *const c_char,
    pub text: *const u8,
    pub text_base: u64,
    pub text_size: u64,
    pub symtab: *const ElfSym,
    pub num_symtab: u64,
    pub catalogue_addrs: *const u64,
    pub catalogue_len: u64,
    pub gfp_names: *const TracePrintFlags,
    pub num_gfp_names: u64,
    pub functions: *const c_char,
    pub log_burst: u64,
    pub module_space_start: u64,
    pub module_space_end: u64,
    pub slab_buckets: u32,
    pub call_thunks: u32,
    pub sink: u32,
    /// No error line when there is no site (an init text without any).
    pub quiet_if_none: u32,
    pub static_call_sites: *const u64,
    pub num_static_call_sites: u64,
    pub bug_traps: *const u64,
    pub num_bug_traps: u64,
    /// Non-null: list the callees into this reply, plan nothing.
    pub callees: *mut crate::control::Reply,
    /// What the target shares with its sessions; null for plan and callees.
    pub shared: *const crate::shared::Shared,
    /// The target's `struct module`, to ask whether it is in its init.
    pub module: *const core::ffi::c_void,
    /// Planning the init text.
    pub init_text: u32,
    /// Per-CPU address of the session's printk budget (`struct
    /// hp_budget`), or 0: sink printk with no limit, or only planning.
    pub budget: usize,
    /// Each CPU's lines per window: `log_burst` split between the CPUs.
    pub budget_share: usize,
}

pub const HP_SINK_TRACE: u32 = 0;
pub const HP_SINK_PRINTK: u32 = 1;
pub const HP_SINK_NONE: u32 = 2;

/// hp_trampoline's frame area for the real call: its arguments, and the
/// entry time kept for the exit hook.
#[repr(C)]
pub struct CallFrame {
    pub args: [u64; 6],
    pub start_ns: u64,
    /// Words of stack arguments for the real call: i386 args[3..]; x86_64 0 or STACK_WORDS.
    pub stack_words: u64,
    /// The real call's arguments: the saved ones, or `args` when they differ.
    pub call_args: *const u64,
}

/// One site's counters on one CPU (struct hp_site_counts), in per-CPU
/// memory C allocates for each probe: written by that CPU only, with no
/// lock (percpu.rs), and read as sums over CPUs.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct SiteCounts {
    /// Calls the pre-handler sent to hp_trampoline: each ends in an exit.
    pub entries: u64,
    /// Calls it sent elsewhere: straight to the callee, or hp_trampoline_jump.
    pub passes: u64,
    /// hp_trampoline calls done with us: the last thing each does to a session.
    pub exits: u64,
    /// Trace events written or lines logged.
    pub events: u64,
    /// Calls that became no event (no tracer enabled, or rate-limited).
    pub dropped: u64,
}

/// One CPU's printk budget (struct hp_budget): hp_core::ratelimit.
#[repr(C)]
pub struct Budget {
    pub window: usize,
    pub used: usize,
}

/// What every `hp_call` event of one site says of it, fixed at attach
/// (struct hp_event_site).
#[repr(C)]
pub struct EventSite {
    pub target: *const c_char,
    pub callee: *const c_char,
    pub site: u64,
    pub func: u32,
    /// Bytes of `target` and `callee` to copy: each name, its NUL and NULs
    /// up to a multiple of 8 (LineBuf::c_words).
    pub target_size: u32,
    pub callee_size: u32,
}

/// One `hp_patcher:hp_call` trace event (struct hp_call_event).
#[repr(C)]
pub struct CallEvent {
    pub at: *const EventSite,
    /// The call's six register arguments, where the trampoline saved them.
    pub args: *const u64,
    pub ret: u64,
    pub ret2: u64,
    /// hp_c_trace_clock() at entry; 0 for a void function.
    pub start_ns: u64,
    /// Set by hp_c_trace_call.
    pub duration_ns: u64,
    pub strings: *const u8,
    pub strings_len: u32,
    pub returned: u32,
}

/// The kernel's `Elf_Sym`: `Elf64_Sym` on x86_64.
#[cfg(target_pointer_width = "64")]
#[repr(C)]
pub struct ElfSym {
    pub st_name: u32,
    pub st_info: u8,
    pub st_other: u8,
    pub st_shndx: u16,
    pub st_value: u64,
    pub st_size: u64,
}

/// The kernel's `Elf_Sym`: `Elf32_Sym` on i386, whose fields come in
/// another order.
#[cfg(target_pointer_width = "32")]
#[repr(C)]
pub struct ElfSym {
    pub st_name: u32,
    pub st_value: u32,
    pub st_size: u32,
    pub st_info: u8,
    pub st_other: u8,
    pub st_shndx: u16,
}

pub const STT_FUNC: u8 = 2;

/// The kernel's `struct trace_print_flags`.
#[repr(C)]
pub struct TracePrintFlags {
    pub mask: usize, // unsigned long
    pub name: *const c_char,
}

pub const HP_ERR: u32 = 0;
pub const HP_WARN: u32 = 1;
pub const HP_INFO: u32 = 2;

pub const EINVAL: i32 = 22;
pub const ENOENT: i32 = 2;
pub const ENOMEM: i32 = 12;
pub const ENOSPC: i32 = 28;

extern "C" {
    pub fn hp_c_abi_mix(a: *const u8, b: usize, c: *const u64, d: *const u8, e: usize) -> u64;
    pub fn hp_c_log(level: u32, msg: *const c_char);
    pub fn hp_c_log_at(level: u32, msg: *const c_char, addr: usize);
    pub fn hp_c_emit_call(text: *const c_char, site_addr: usize);
    pub fn hp_c_format_ptr(value: usize, buf: *mut c_char, len: u32) -> u32;
    pub fn hp_c_is_known_code(addr: usize) -> bool;
    pub fn hp_c_log_window() -> u64;
    pub fn hp_c_alloc(size: usize) -> *mut u8;
    pub fn hp_c_free(ptr: *mut u8);
    pub fn hp_c_now_ns() -> u64;
    pub fn hp_c_trace_clock() -> u64;
    pub fn hp_c_trace_enabled() -> bool;
    pub fn hp_c_trace_call(event: *mut CallEvent) -> bool;
    pub fn hp_c_format_symbol(addr: usize, buf: *mut c_char, len: u32) -> u32;
    pub fn hp_c_is_traceable(addr: usize) -> bool;
    pub fn hp_c_read_string(addr: usize, buf: *mut u8, len: u32) -> i32;
    pub fn hp_c_panic(msg: *const u8, len: usize) -> !;
    pub fn hp_c_cache_size(cache: usize) -> u32;
    pub fn hp_c_stack_save(frames: *mut usize, max: u32) -> u32;
    pub fn hp_c_rcu_read_lock();
    pub fn hp_c_rcu_read_unlock();
    pub fn hp_c_random_u32() -> u32;
    pub fn hp_c_current_task(pid: *mut u32, comm: *mut u8);
    pub fn hp_c_module_coming(module: *const core::ffi::c_void) -> bool;
    pub fn hp_c_trace_fault(target: *const c_char, callee: *const c_char, site: usize, rule: u32, value: isize);
    /// Not a function to call from Rust: its address is what hp_trampoline
    /// calls in place of a failed call.
    pub fn hp_fail_return();
}
