//! The leak checker (`attach <module> leaks`): every object the target's
//! own sites allocate goes into a lock-free table (hp_core::leaks), every
//! free at its sites takes one out, and what is left is reported by
//! allocating site: `leaks <module>` on the device, and in the kernel log
//! when a followed target unloads.
//!
//! Each object also keeps its allocation's stack (the target's caller and
//! up, [`STACK_DEPTH`] frames, stored once per distinct stack), so the
//! report groups by stack within a site, as kmemleak's backtraces do.
//!
//! Frees the target makes of objects the table does not hold are "unknown
//! frees": allocated before the attach, by someone else, or a bad free.
//! Objects the target hands to the kernel, which frees them elsewhere, stay
//! in the table: the report says so in its header.

use alloc::vec::Vec;
use core::ffi::{c_char, CStr};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hp_core::event::RegisterArgs;
use hp_core::leaks::{Object, Role, SiteCounts, Size, Stacks, Table, STACK_DEPTH};

use crate::control::Reply;
use crate::ffi;
use crate::log::info;
use crate::session::Session;
use crate::site::SiteRecord;
use crate::shared::Shared;

pub struct Leaks {
    table: Table,
    stacks: Stacks,
    /// Per allocating site, its objects the target freed at its own sites,
    /// and those the kernel freed (`kernel_frees`, seen by
    /// kmod/hp_kfrees.c's probes on the free functions).
    module_freed: SiteCounts,
    kernel_freed: SiteCounts,
    unknown_frees: AtomicU64,
    /// The table holds everything since the target's load (it was
    /// followed from COMING), not only since an attach to it live.
    since_load: AtomicBool,
    /// Set once every site of an attach is armed. An allocation recorded
    /// while its free's site was not armed yet would be a false leak.
    recording: AtomicBool,
}

impl Leaks {
    pub fn new(slots: usize) -> Option<Leaks> {
        Some(Leaks {
            table: Table::new(slots)?,
            // A stack per 4 objects: most of a module's objects share
            // their path with many others.
            stacks: Stacks::new((slots / 4).clamp(256, 1 << 16))?,
            module_freed: SiteCounts::new(1024)?,
            kernel_freed: SiteCounts::new(1024)?,
            unknown_frees: AtomicU64::new(0),
            since_load: AtomicBool::new(false),
            recording: AtomicBool::new(false),
        })
    }

    /// Outstanding objects and their bytes, now.
    pub fn totals(&self) -> (u64, u64) {
        self.table.outstanding().fold((0, 0), |(n, b), o| (n + 1, b + o.size))
    }

    fn mode(&self) -> &'static str {
        if self.since_load.load(Ordering::Relaxed) {
            "since_load"
        } else {
            "since_attach"
        }
    }
}

/// An error pointer (`IS_ERR`): no object.
fn is_err_ptr(value: u64) -> bool {
    value as usize >= (-4095isize) as usize
}

impl SiteRecord {
    /// After an allocator returned `ret`: records the new object, and the
    /// one a krealloc freed. Any context; no lock, no allocation. Out of
    /// line: a target without leak checking pays one flag test.
    #[inline(never)]
    pub(crate) fn track_result(&self, args: &RegisterArgs, ret: u64) {
        let Some(Role::Allocates { size, resizes }) = self.role else { return };
        let session = self.session();
        // SAFETY: the session holds a reference on what it shares.
        let Some(leaks) = unsafe { session.shared.as_ref() }.and_then(|s| s.leaks.as_ref()) else { return };
        let ret = ret as usize as u64; // i386: the 32-bit register, not sign-extended
        if ret == 0 || is_err_ptr(ret) || !leaks.recording.load(Ordering::Relaxed) {
            return; // failed: a krealloc's object stays where it was
        }
        if let Some(old) = resizes.map(|k| args[k]).filter(|&old| old != 0) {
            self.forget(leaks, old);
        }
        let size = match size {
            Size::Arg(k) => args[k],
            // SAFETY: the argument is the kmem_cache the call allocated from.
            Size::CacheOf(k) => u64::from(unsafe { ffi::hp_c_cache_size(args[k] as usize) }),
            Size::Unknown => 0,
        };
        // SAFETY: reads a clock, any context.
        let since = unsafe { ffi::hp_c_now_ns() };
        let mut frames = [0usize; STACK_DEPTH];
        // SAFETY: frames has room for the count passed; the unwinder does
        // not sleep, lock or allocate.
        let depth = unsafe { ffi::hp_c_stack_save(frames.as_mut_ptr(), STACK_DEPTH as u32) } as usize;
        let stack = leaks.stacks.intern(&frames[..depth.min(STACK_DEPTH)]);
        leaks.table.allocated(Object { address: ret, site: self.addr(), size, since, stack });
    }

    /// Before a free: takes its object out of the table.
    #[inline(never)]
    pub(crate) fn track_free(&self, args: &RegisterArgs) {
        let Some(object) = self.role.and_then(|r| r.freed_object(args)) else { return };
        // SAFETY: as in track_result.
        let Some(leaks) = unsafe { self.session().shared.as_ref() }.and_then(|s| s.leaks.as_ref()) else { return };
        if object != 0 {
            self.forget(leaks, object);
        }
    }

    fn forget(&self, leaks: &Leaks, address: u64) {
        match leaks.table.freed(address) {
            Some(o) => leaks.module_freed.add(o.site),
            None => {
                leaks.unknown_frees.fetch_add(1, Ordering::Relaxed);
                self.unknown_frees.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Outstanding objects of one allocating site, or of one stack of it.
#[derive(Clone, Copy)]
struct Group {
    site: u64,
    /// 0 for a site's group; its objects' stack for a stack's.
    stack: u32,
    count: u64,
    bytes: u64,
    oldest: u64,
}

/// Adds `g` to its group in `groups` (same site and stack), or starts one;
/// None if memory runs out. A linear search: a module has tens to hundreds
/// of allocating sites, and a sort's scratch space would not fit a kernel
/// stack frame.
fn merge(groups: &mut Vec<Group>, g: Group) -> Option<()> {
    match groups.iter_mut().find(|h| h.site == g.site && h.stack == g.stack) {
        Some(h) => {
            h.count += g.count;
            h.bytes += g.bytes;
            h.oldest = h.oldest.min(g.oldest);
        }
        None => {
            groups.try_reserve(1).ok()?;
            groups.push(g);
        }
    }
    Some(())
}

/// The outstanding objects grouped by site and stack, in one pass over the
/// table; None if memory runs out.
fn by_stack(table: &Table) -> Option<Vec<Group>> {
    let mut groups = Vec::new();
    for o in table.outstanding() {
        merge(&mut groups, Group { site: o.site, stack: o.stack, count: 1, bytes: o.size, oldest: o.since })?;
    }
    Some(groups)
}

/// The same objects by site alone (stack 0), summed from `by_stack`'s
/// groups: the two agree even while calls change the table.
fn by_site(stacks: &[Group]) -> Option<Vec<Group>> {
    let mut groups = Vec::new();
    for g in stacks {
        merge(&mut groups, Group { stack: 0, ..*g })?;
    }
    Some(groups)
}

/// The name of the function called at `site`, from the sessions that have it.
fn callee_at<'a>(sessions: &[&'a Session], site: u64) -> &'a str {
    sessions
        .iter()
        .find_map(|s| s.sites().iter().find(|r| r.addr() == site).map(|r| s.function_name(r.func())))
        .unwrap_or("?")
}

/// Writes the report: a `leaks` header, a `leak` line per allocating site,
/// a `leak-stack` line per stack of each, a `stack` line per frame of each
/// stack, a `freed` line per allocating site whose objects were freed (by
/// the module, by the kernel), an `unknown-free` line per freeing site that
/// freed what it was not seen to allocate. docs/control.md describes the
/// records.
fn report(out: &mut impl Write, leaks: &Leaks, target: &str, sessions: &[&Session]) {
    let stacks = by_stack(&leaks.table);
    let groups = stacks.as_deref().and_then(by_site);
    // Sites that free but kprobes refused: what they free stays outstanding.
    let blind = sessions
        .iter()
        .flat_map(|s| s.sites())
        .filter(|r| r.role.is_some_and(Role::is_free) && !r.is_armed())
        .count();
    let (count, bytes) = groups.iter().flatten().fold((0, 0), |(c, b), g| (c + g.count, b + g.bytes));
    let _ = writeln!(
        out,
        "leaks module={target} mode={} outstanding={count} bytes={bytes} slots={} overflowed={} replaced={} unknown_frees={} unwatched_free_sites={blind} stacks_overflowed={} frees_overflowed={} complete={}",
        leaks.mode(),
        leaks.table.capacity(),
        leaks.table.overflowed(),
        leaks.table.replaced(),
        leaks.unknown_frees.load(Ordering::Relaxed),
        leaks.stacks.overflowed(),
        leaks.module_freed.overflowed() + leaks.kernel_freed.overflowed(),
        (groups.is_some() && stacks.is_some()) as u32,
    );
    // SAFETY: reads a clock.
    let now = unsafe { ffi::hp_c_now_ns() };
    for g in groups.iter().flatten() {
        let mut caller = [0u8; 128];
        let _ = writeln!(
            out,
            "leak module={target} caller={} callee={} count={} bytes={} oldest_ms={}",
            format_symbol(g.site, &mut caller),
            callee_at(sessions, g.site),
            g.count,
            g.bytes,
            now.saturating_sub(g.oldest) / 1_000_000
        );
        for k in stacks.iter().flatten().filter(|k| k.site == g.site && k.stack != 0) {
            let _ = writeln!(
                out,
                "leak-stack module={target} caller={} stack={} count={} bytes={} oldest_ms={}",
                format_symbol(g.site, &mut caller),
                k.stack,
                k.count,
                k.bytes,
                now.saturating_sub(k.oldest) / 1_000_000
            );
        }
    }
    // Each stack once, in the order of first use.
    let stacks = stacks.unwrap_or_default();
    for (i, k) in stacks.iter().enumerate().filter(|(_, k)| k.stack != 0) {
        if stacks[..i].iter().any(|earlier| earlier.stack == k.stack) {
            continue;
        }
        let Some(frames) = leaks.stacks.get(k.stack) else { continue };
        for (depth, &frame) in frames.as_slice().iter().enumerate() {
            let mut at = [0u8; 128];
            let _ = writeln!(
                out,
                "stack module={target} id={} frame={depth} at={}",
                k.stack,
                format_symbol(frame as u64, &mut at)
            );
        }
    }
    // Who freed each allocating site's objects: every site the module
    // freed at, then those only the kernel freed.
    let module_sites = leaks.module_freed.iter().map(|(site, n)| (site, n, leaks.kernel_freed.get(site)));
    let kernel_only =
        leaks.kernel_freed.iter().filter(|&(site, _)| leaks.module_freed.get(site) == 0).map(|(site, n)| (site, 0, n));
    for (site, by_module, by_kernel) in module_sites.chain(kernel_only) {
        let mut caller = [0u8; 128];
        let _ = writeln!(
            out,
            "freed module={target} caller={} callee={} by_module={by_module} by_kernel={by_kernel}",
            format_symbol(site, &mut caller),
            callee_at(sessions, site)
        );
    }
    for s in sessions {
        for site in s.sites().iter().filter(|r| r.unknown_frees.load(Ordering::Relaxed) != 0) {
            let mut caller = [0u8; 128];
            let _ = writeln!(
                out,
                "unknown-free module={target} caller={} callee={} count={}",
                format_symbol(site.addr(), &mut caller),
                s.function_name(site.func()),
                site.unknown_frees.load(Ordering::Relaxed)
            );
        }
    }
}

/// `function+0xoff/0xsize` while the module's symbols cover it, else the
/// address as `%p` shows it.
fn format_symbol(addr: u64, buf: &mut [u8; 128]) -> &str {
    // SAFETY: buf is writable for its length; both formatters write at most
    // len-1 bytes and return how many.
    let mut len = unsafe { ffi::hp_c_format_symbol(addr as usize, buf.as_mut_ptr().cast(), buf.len() as u32) } as usize;
    if len == 0 || buf[..len.min(buf.len())].starts_with(b"0x") {
        len = unsafe { ffi::hp_c_format_ptr(addr as usize, buf.as_mut_ptr().cast(), buf.len() as u32) } as usize;
    }
    core::str::from_utf8(&buf[..len.min(buf.len())]).unwrap_or("?")
}

/// The live sessions among `n` pointers; None if memory runs out.
///
/// # Safety
/// `sessions` holds `n` pointers, each null or a live session.
unsafe fn live<'a>(sessions: *const *const Session, n: usize) -> Option<Vec<&'a Session>> {
    let all = unsafe { core::slice::from_raw_parts(sessions, n) };
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    v.extend(all.iter().filter(|s| !s.is_null()).map(|&s| unsafe { &*s }));
    Some(v)
}

/// The `leaks` reply for one target (nothing if it does not check leaks).
///
/// # Safety
/// Under hp_lock; `r` came from `hp_reply_new`; `t` is live; `target` is
/// NUL-terminated; `sessions` holds `n` pointers, each null or a live
/// session of the target.
#[no_mangle]
pub unsafe extern "C" fn hp_reply_leaks(
    r: *mut Reply,
    t: *const Shared,
    target: *const c_char,
    sessions: *const *const Session,
    n: usize,
) {
    unsafe { report_from_c(&mut *r, t, target, sessions, n) }
}

/// `report` from the C side's arguments (see `hp_reply_leaks`).
unsafe fn report_from_c(
    out: &mut impl Write,
    t: *const Shared,
    target: *const c_char,
    sessions: *const *const Session,
    n: usize,
) {
    let Some(leaks) = unsafe { &*t }.leaks.as_ref() else { return };
    let target = unsafe { CStr::from_ptr(target) }.to_str().unwrap_or("?");
    let sessions = unsafe { live(sessions, n) }.unwrap_or_default();
    report(out, leaks, target, &sessions);
}

/// Whether the target checks leaks.
///
/// # Safety
/// `t` is live.
#[no_mangle]
pub unsafe extern "C" fn hp_leaks_enabled(t: *const Shared) -> bool {
    unsafe { &*t }.leaks.is_some()
}

/// At a new attach: a load of a followed target starts an empty table
/// (`since_load`); an attach to a live module keeps nothing from before.
///
/// # Safety
/// Under hp_lock, before the attach arms a probe; `t` is live.
#[no_mangle]
pub unsafe extern "C" fn hp_leaks_restart(t: *const Shared, since_load: bool) {
    if let Some(leaks) = unsafe { &*t }.leaks.as_ref() {
        leaks.recording.store(false, Ordering::Relaxed);
        leaks.table.clear();
        leaks.stacks.clear();
        leaks.module_freed.clear();
        leaks.kernel_freed.clear();
        leaks.unknown_frees.store(0, Ordering::Relaxed);
        leaks.since_load.store(since_load, Ordering::Relaxed);
    }
}

/// Once every site of the attach is armed: allocations are recorded from
/// now on (their frees cannot be missed any more). Before it, frees are
/// still looked up, so what was allocated earlier shows as unknown frees.
///
/// # Safety
/// `t` is live.
#[no_mangle]
pub unsafe extern "C" fn hp_leaks_start(t: *const Shared) {
    if let Some(leaks) = unsafe { &*t }.leaks.as_ref() {
        leaks.recording.store(true, Ordering::Release);
    }
}

/// From a probe on a kernel free function (kmod/hp_kfrees.c), any caller,
/// any context: if `object` is one of the target's, it is gone, and its
/// site counts one freed by the kernel. The target's own frees took their
/// objects out at its sites, before the call, so they are not found here.
///
/// # Safety
/// `t` is live (the probes are unregistered before the target lets it go).
#[no_mangle]
pub unsafe extern "C" fn hp_leaks_kernel_free(t: *const Shared, object: usize) {
    let Some(leaks) = unsafe { &*t }.leaks.as_ref() else { return };
    if let Some(o) = leaks.table.freed(object as u64) {
        leaks.kernel_freed.add(o.site);
    }
}

/// A line-at-a-time writer into the kernel log.
struct LogLines(hp_core::event::LineBuf<256>);

impl Write for LogLines {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for piece in s.split_inclusive('\n') {
            let _ = self.0.write_str(piece.trim_end_matches('\n'));
            if piece.ends_with('\n') {
                info!("{}", self.0.as_str());
                self.0 = Default::default();
            }
        }
        Ok(())
    }
}

/// At a followed target's unload (GOING, its text still mapped): the leak
/// report into the kernel log. From COMING to GOING it is a true leak
/// report: nothing the module allocated since its load is left to free it.
///
/// # Safety
/// As for `hp_reply_leaks`, without a reply.
#[no_mangle]
pub unsafe extern "C" fn hp_leaks_log(
    t: *const Shared,
    target: *const c_char,
    sessions: *const *const Session,
    n: usize,
) {
    unsafe { report_from_c(&mut LogLines(Default::default()), t, target, sessions, n) }
}
