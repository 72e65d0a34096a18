//! The Rust half of /dev/hp_patcher: parsing a command for C (the grammar is
//! `hp_core::control`), and the reply text. docs/control.md describes the
//! records; C writes the `target`, `detached`, `info` and `gfp` lines, this
//! file the ones built from sessions and the catalogue.

use alloc::vec::Vec;
use core::ffi::{c_char, CStr};
use core::fmt::{self, Write};

use hp_core::catalogue::MEMORY;
use hp_core::control::{parse, Command, Sink, MAX_COMMAND};
use hp_core::sites::{Site, SiteKind};

use crate::ffi;
use crate::session::Session;

/// The text a write leaves for reads, built with fallible growth: a piece
/// that does not fit marks the reply lost. A query then answers ENOMEM; a
/// command that changed something succeeds, and its reply ends with
/// [`TRUNCATED`], for which room is kept from the start.
#[derive(Default)]
pub struct Reply {
    text: Vec<u8>,
    lost: bool,
    /// Testing (the `reply_limit` parameter): the text grows no further; 0: no limit.
    limit: usize,
}

/// The last line of a reply that lost lines.
const TRUNCATED: &[u8] = b"truncated reason=out_of_memory\n";

impl Write for Reply {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let over_limit = self.limit != 0 && self.text.len() + s.len() > self.limit;
        if !self.lost && !over_limit && self.text.try_reserve(s.len() + TRUNCATED.len()).is_ok() {
            self.text.extend_from_slice(s.as_bytes());
        } else if !self.lost {
            // A line is written in pieces: drop the part of this one that
            // made it, so that the reply ends with whole lines.
            let whole = self.text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            self.text.truncate(whole);
            self.lost = true;
        }
        Ok(())
    }
}

/// A reply whose text may grow to `limit` bytes (0: as memory allows).
#[no_mangle]
pub extern "C" fn hp_reply_new(limit: usize) -> *mut Reply {
    let mut reply = Reply { limit, ..Reply::default() };
    if reply.text.try_reserve(TRUNCATED.len()).is_err() {
        return core::ptr::null_mut();
    }
    crate::runtime::try_box(reply).unwrap_or(core::ptr::null_mut())
}

/// # Safety
/// `r` came from `hp_reply_new` (or is null) and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn hp_reply_free(r: *mut Reply) {
    if !r.is_null() {
        drop(unsafe { alloc::boxed::Box::from_raw(r) });
    }
}

/// # Safety
/// `r` came from `hp_reply_new`, and nobody else uses it meanwhile.
#[no_mangle]
pub unsafe extern "C" fn hp_reply_clear(r: *mut Reply) {
    let r = unsafe { &mut *r };
    r.text.clear();
    r.lost = false;
}

/// The reply's bytes (no NUL) and their count; valid until the next change.
/// A reply that lost lines gets its `truncated` line here, in room every
/// successful growth kept for it.
///
/// # Safety
/// `r` came from `hp_reply_new`, and nobody else uses it meanwhile; `len` is writable.
#[no_mangle]
pub unsafe extern "C" fn hp_reply_data(r: *mut Reply, len: *mut u64) -> *const u8 {
    let r = unsafe { &mut *r };
    if r.lost && !r.text.ends_with(TRUNCATED) && r.text.capacity() - r.text.len() >= TRUNCATED.len() {
        r.text.extend_from_slice(TRUNCATED);
    }
    unsafe { *len = r.text.len() as u64 };
    r.text.as_ptr()
}

/// # Safety
/// `r` came from `hp_reply_new`.
#[no_mangle]
pub unsafe extern "C" fn hp_reply_lost(r: *const Reply) -> bool {
    unsafe { &*r }.lost
}

/// Appends a line C has formatted.
///
/// # Safety
/// `r` came from `hp_reply_new`; `line` is NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn hp_reply_line(r: *mut Reply, line: *const c_char) {
    let line = unsafe { CStr::from_ptr(line) }.to_str().unwrap_or("?");
    let _ = writeln!(unsafe { &mut *r }, "{line}");
}

pub const HP_CMD_ATTACH: u32 = 1;
pub const HP_CMD_DETACH: u32 = 2;
pub const HP_CMD_DETACH_ALL: u32 = 3;
pub const HP_CMD_PLAN: u32 = 4;
pub const HP_CMD_TARGETS: u32 = 5;
pub const HP_CMD_SITES: u32 = 6;
pub const HP_CMD_STATS: u32 = 7;
pub const HP_CMD_INFO: u32 = 8;
pub const HP_CMD_CALLEES: u32 = 9;
pub const HP_CMD_FAIL: u32 = 10;
pub const HP_CMD_FAIL_CLEAR: u32 = 11;
pub const HP_CMD_FAULTS: u32 = 12;
pub const HP_CMD_LEAKS: u32 = 13;
pub const HP_CMD_FAIL_NEXT: u32 = 14;
pub const HP_CMD_PROGRESS: u32 = 15;

/// A parsed command for C (struct hp_command): strings NUL-terminated.
#[repr(C)]
pub struct ControlCommand {
    pub verb: u32,
    pub sink: u32,
    pub follow: u32,
    pub has_module: u32,
    /// Lines per window for sink printk; u64::MAX: the module's log_burst.
    pub burst: u64,
    /// attach: the leak table's size; 0: no leak checking.
    pub leak_slots: u64,
    /// attach: watch the kernel's own frees of the table's objects.
    pub kernel_frees: u32,
    pub module: [u8; 64],
    pub functions: [u8; MAX_COMMAND + 1],
}

fn copy_c(dst: &mut [u8], s: &str) {
    // The grammar keeps both within their buffers; cut anyway, never overflow.
    let n = s.len().min(dst.len() - 1);
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
    dst[n] = 0;
}

/// Parses one written command into `out`. A malformed one is -EINVAL, with
/// one log line and the reply `error <why>`.
///
/// # Safety
/// `bytes` is valid for `len` bytes; `out` is writable; `r` came from
/// `hp_reply_new`.
#[no_mangle]
pub unsafe extern "C" fn hp_control_parse(bytes: *const u8, len: usize, out: *mut ControlCommand, r: *mut Reply) -> i32 {
    let bytes = unsafe { core::slice::from_raw_parts(bytes, len) };
    let (out, reply) = unsafe { (&mut *out, &mut *r) };
    let command = match parse(bytes) {
        Ok(command) => command,
        Err(e) => {
            crate::log::error!("control: {e}");
            let _ = writeln!(reply, "error control: {e}");
            return -ffi::EINVAL;
        }
    };
    let mut burst = u64::MAX;
    let (mut leak_slots, mut kernel_frees) = (0, false);
    let (verb, module, functions, sink, follow) = match command {
        Command::Attach { module, functions, sink, follow, burst: b, leaks, kernel_frees: k } => {
            burst = b.map_or(u64::MAX, u64::from);
            leak_slots = leaks.map_or(0, u64::from);
            kernel_frees = k;
            (HP_CMD_ATTACH, Some(module), functions, sink, follow)
        }
        Command::Detach { module } => (HP_CMD_DETACH, Some(module), "", Sink::Trace, false),
        Command::DetachAll => (HP_CMD_DETACH_ALL, None, "", Sink::Trace, false),
        Command::Plan { module, functions } => (HP_CMD_PLAN, Some(module), functions, Sink::Trace, false),
        Command::Targets => (HP_CMD_TARGETS, None, "", Sink::Trace, false),
        Command::Sites { module } => (HP_CMD_SITES, module, "", Sink::Trace, false),
        Command::Stats { module } => (HP_CMD_STATS, module, "", Sink::Trace, false),
        Command::Info => (HP_CMD_INFO, None, "", Sink::Trace, false),
        Command::Callees { module } => (HP_CMD_CALLEES, Some(module), "", Sink::Trace, false),
        Command::Fail { module, rule } => (HP_CMD_FAIL, Some(module), rule, Sink::Trace, false),
        Command::FailClear { module } => (HP_CMD_FAIL_CLEAR, Some(module), "", Sink::Trace, false),
        Command::FailNext { module } => (HP_CMD_FAIL_NEXT, Some(module), "", Sink::Trace, false),
        Command::Faults { module } => (HP_CMD_FAULTS, module, "", Sink::Trace, false),
        Command::Leaks { module } => (HP_CMD_LEAKS, module, "", Sink::Trace, false),
        Command::Progress => (HP_CMD_PROGRESS, None, "", Sink::Trace, false),
    };
    out.verb = verb;
    out.sink = match sink {
        Sink::Trace => ffi::HP_SINK_TRACE,
        Sink::Printk => ffi::HP_SINK_PRINTK,
        Sink::None => ffi::HP_SINK_NONE,
    };
    out.follow = follow as u32;
    out.has_module = module.is_some() as u32;
    out.burst = burst;
    out.leak_slots = leak_slots;
    out.kernel_frees = kernel_frees as u32;
    copy_c(&mut out.module, module.unwrap_or(""));
    copy_c(&mut out.functions, functions);
    0
}

/// A value as a C formatter of the kernel's prints it: `symbol+off/size`
/// (hp_c_format_symbol, without ` [module]`) or an address as `%p` shows it
/// (hp_c_format_ptr, raw with raw_pointers=1).
pub(crate) struct CFormatted {
    pub(crate) value: u64,
    pub(crate) format: unsafe extern "C" fn(usize, *mut c_char, u32) -> u32,
}

impl fmt::Display for CFormatted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 128];
        // SAFETY: buf is writable for its length; both formatters write at
        // most len-1 bytes and return how many.
        let len = unsafe { (self.format)(self.value as usize, buf.as_mut_ptr().cast(), buf.len() as u32) } as usize;
        f.write_str(core::str::from_utf8(&buf[..len.min(buf.len())]).unwrap_or("?"))
    }
}

fn site_line(r: &mut Reply, s: &Session, site: &Site, state: &str, hits: u64) {
    let module = s.target();
    let kind = match site.kind {
        SiteKind::Call => "call",
        SiteKind::TailJump => "tail",
    };
    let _ = writeln!(
        r,
        "site module={module} addr={} caller={} callee={} kind={kind} state={state} hits={hits}",
        CFormatted { value: site.addr, format: ffi::hp_c_format_ptr },
        CFormatted { value: site.addr, format: ffi::hp_c_format_symbol },
        s.function_name(site.func)
    );
}

/// A `site` line for every site of the session, redirected or skipped.
///
/// # Safety
/// `r` came from `hp_reply_new`; `s` is a live session.
#[no_mangle]
pub unsafe extern "C" fn hp_reply_sites(r: *mut Reply, s: *const Session) {
    let (r, s) = unsafe { (&mut *r, &*s) };
    for site in s.sites() {
        site_line(r, s, site.site(), site.state_name(), site.counters()[0]);
    }
    for (site, why) in s.skipped() {
        site_line(r, s, site, why, 0);
    }
}

/// A `func` line per intercepted function with sites, summed by name over
/// the target's sessions (core text, and init text while it has one): every
/// name of every session, each once, so that a function only init calls is
/// listed while the target is in its init.
///
/// # Safety
/// `r` came from `hp_reply_new`; `sessions` holds `n` pointers, each null or
/// a live session of the same target.
#[no_mangle]
pub unsafe extern "C" fn hp_reply_stats(r: *mut Reply, sessions: *const *const Session, n: usize) {
    let r = unsafe { &mut *r };
    let sessions = unsafe { core::slice::from_raw_parts(sessions, n) };
    let sessions = || sessions.iter().filter(|s| !s.is_null()).map(|&s| unsafe { &*s });
    let Some(first) = sessions().next() else { return };
    let module = first.target();
    let names = sessions().enumerate().flat_map(move |(k, s)| {
        // Each name once: skip one an earlier session already listed (no
        // allocation, so no set; a target has two sessions at most).
        s.function_names().filter(move |name| !sessions().take(k).any(|earlier| earlier.function_names().any(|n| n == *name)))
    });
    for name in names {
        let mut sum = [0u64; 5];
        let mut any = false;
        let sites = sessions().flat_map(|s| s.sites().iter().map(move |site| (s, site)));
        for (_, site) in sites.filter(|(s, site)| s.function_name(site.func()) == name) {
            any = true;
            for (total, value) in sum.iter_mut().zip(site.counters()) {
                *total += value;
            }
        }
        if any {
            let [hits, inflight, events, dropped, missed] = sum;
            let _ = writeln!(
                r,
                "func module={module} name={name} hits={hits} inflight={inflight} events={events} dropped={dropped} missed={missed}"
            );
        }
    }
}

/// Site count, armed sites and hits of a session, for the `target` line.
///
/// # Safety
/// `s` is a live session; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn hp_session_totals(s: *const Session, out: *mut [u64; 3]) {
    let s = unsafe { &*s };
    let armed = s.sites().iter().filter(|site| site.is_armed()).count() as u64;
    let hits = s.sites().iter().map(|site| site.counters()[0]).sum();
    unsafe { *out = [s.sites().len() as u64, armed, hits] };
}

/// A `function` line per catalogue entry.
///
/// # Safety
/// `r` came from `hp_reply_new`; `addrs` holds `len` addresses.
#[no_mangle]
pub unsafe extern "C" fn hp_reply_functions(r: *mut Reply, addrs: *const u64, len: usize) {
    let r = unsafe { &mut *r };
    let addrs = unsafe { core::slice::from_raw_parts(addrs, len) };
    for (index, f) in MEMORY.iter().enumerate() {
        let available = addrs.get(index).is_some_and(|&a| a != 0) as u32;
        let _ = writeln!(r, "function index={index} name={} available={available}", f.name);
    }
}
