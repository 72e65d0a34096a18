//! One attachment to one target: its sites, counters and log state.

use alloc::vec::Vec;
use core::alloc::Layout;
use core::ffi::{c_char, CStr};
use core::fmt::Write;

use hp_core::control::Sink;

use hp_core::catalogue::{self, KernelConfig, MEMORY};
use hp_core::event::LineBuf;
use hp_core::proto::{PairRole, Spec};
use hp_core::gfp::GfpName;
use hp_core::ratelimit;
use hp_core::sites::{self, Discovery, DisturbanceKind, Options, Site, SiteKind, Symbol, Target};

use crate::callees::{self, Callee};
use crate::site::{site_record, SiteRecord};
use crate::shared::Shared;
use crate::ffi::{self, AttachRequest};
use crate::percpu;
use crate::log::{error, info, log_at};

/// The module runs on 32-bit x86 (its arguments past the third travel on the stack).
pub(crate) const I386: bool = cfg!(target_pointer_width = "32");

/// A site as `function+0xoff/0xsize`.
pub type SiteName = LineBuf<64>;

/// Module names are at most 55 bytes (MODULE_NAME_LEN).
type TargetName = LineBuf<64>;

/// A function name with its NUL, for the trace event.
pub type CalleeName = LineBuf<64>;

/// A function a session intercepts: `Site::func` indexes `Session::functions`.
pub struct Intercepted {
    pub(crate) name: CalleeName,
    pub(crate) kind: FunctionKind,
    /// A user's pair (`+alloc`, `+freeN`): what the leak checker makes of
    /// a callee outside the catalogue.
    pub(crate) pair_role: Option<PairRole>,
}

#[derive(Clone, Copy)]
pub(crate) enum FunctionKind {
    /// The memory catalogue's entry, with its hand-written semantics.
    Memory(usize),
    /// Any other callee, as SPEC (or raw) describes it.
    Any(Spec),
}

impl Intercepted {
    fn new(name: &str, kind: FunctionKind) -> Intercepted {
        let mut n = CalleeName::default();
        let _ = n.write_str(name);
        Intercepted { name: n, kind, pair_role: None }
    }

    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// Its index in the memory catalogue, if it is from there.
    pub fn memory_index(&self) -> Option<usize> {
        match self.kind {
            FunctionKind::Memory(i) => Some(i),
            FunctionKind::Any(_) => None,
        }
    }

    pub fn c_name(&self) -> *const c_char {
        self.name.as_c_ptr().cast()
    }

    /// The event's `func`: the catalogue index, or u32::MAX.
    pub(crate) fn catalogue_index(&self) -> u32 {
        match self.kind {
            FunctionKind::Memory(i) => i as u32,
            FunctionKind::Any(_) => u32::MAX,
        }
    }
}

pub struct Session {
    pub(crate) target: TargetName,
    pub(crate) sink: Sink,
    pub(crate) config: KernelConfig,
    pub(crate) gfp: Vec<GfpName<'static>>,
    sites: Vec<SiteRecord>,
    /// Found but not redirected, with the reason shown in site lists.
    skipped: Vec<(Site, &'static str)>,
    pub(crate) functions: Vec<Intercepted>,
    /// printk lines per window on each CPU (its share of the burst), 0: no limit.
    burst: usize,
    /// Per-CPU address of each CPU's budget (`ffi::Budget`), C's memory;
    /// 0 unless the sink is printk with a limit.
    budget: usize,
    /// What the target shares with its sessions (a reference of ours):
    /// fault rules and the leak table. Null for plan.
    pub(crate) shared: *const Shared,
    /// The target's `struct module`, and whether this is its init text.
    pub(crate) module: *const core::ffi::c_void,
    pub(crate) init_text: bool,
    /// The target was attached with `leaks`: the hooks call the checker.
    pub(crate) checks_leaks: bool,
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.shared.is_null() {
            // SAFETY: plan took this reference; the session is dropped once
            // no caller is inside it (the detach sequence).
            unsafe { Shared::put(self.shared) }
        }
    }
}

/// What `plan` hands to `into_heap`.
struct Parts {
    config: KernelConfig,
    gfp: Vec<GfpName<'static>>,
    sites: Vec<SiteRecord>,
    skipped: Vec<(Site, &'static str)>,
    functions: Vec<Intercepted>,
}

/// # Safety
/// `ptr` is a NUL-terminated string that lives as long as the module.
unsafe fn static_str(ptr: *const c_char) -> &'static str {
    unsafe { CStr::from_ptr(ptr) }.to_str().unwrap_or("?")
}

/// # Safety
/// `ptr` is valid for `len` elements (or `len` is 0).
unsafe fn slice<'a, T>(ptr: *const T, len: u64) -> &'a [T] {
    if len == 0 {
        &[]
    } else {
        unsafe { core::slice::from_raw_parts(ptr, len as usize) }
    }
}

impl Session {
    /// Decides what to redirect. Errors are logged here and returned as a
    /// positive errno.
    ///
    /// # Safety
    /// Every pointer in `req` is valid for the length it gives; the gfp names
    /// are static strings of the module.
    /// Returns a heap session for `hp_session_free` (`Box::from_raw`) to drop.
    pub unsafe fn plan(req: &AttachRequest) -> Result<*mut Session, i32> {
        let target = unsafe { CStr::from_ptr(req.target_name) }.to_str().unwrap_or("?");
        let addrs = unsafe { slice(req.catalogue_addrs, req.catalogue_len) };
        let available = |i: usize| addrs.get(i).is_some_and(|&a| a != 0);

        let text = unsafe { slice(req.text, req.text_size) };
        let symbols = unsafe { slice(req.symtab, req.num_symtab) }.iter().map(|s| Symbol {
            addr: u64::from(s.st_value),
            size: u64::from(s.st_size),
            is_function: s.st_info & 0xf == ffi::STT_FUNC,
        });
        let ranges =
            sites::function_ranges(symbols, req.text_base, req.text_base + req.text_size).map_err(out_of_memory)?;
        if ranges.is_empty() {
            error!("{target}: no function symbol in its text: nothing to decode");
            return Err(ffi::ENOENT);
        }
        if !req.callees.is_null() {
            // SAFETY: C passes its reply, alive and not shared during the call.
            callees::reply(req, unsafe { &mut *req.callees }, text, &ranges)?;
            return Ok(core::ptr::null_mut());
        }
        let functions = unsafe { CStr::from_ptr(req.functions) }.to_str().map_err(|_| ffi::EINVAL)?;
        let choice = catalogue::select(functions, available).map_err(|e| {
            error!("functions={functions}: {e}");
            ffi::EINVAL
        })?;
        let static_call_sites = callees::sorted_static_call_sites(req).map_err(out_of_memory)?;

        let (functions, targets) = intercepted(target, &choice, addrs, text, req, &ranges)?;
        drop(choice);

        let options = Options {
            mode: sites::Mode::NATIVE,
            call_thunks: req.call_thunks != 0,
            module_space_start: req.module_space_start,
            module_space_end: req.module_space_end,
        };
        let mut found = sites::discover(text, req.text_base, &ranges, &targets, &options).map_err(out_of_memory)?;
        drop(ranges);

        info!(
            "{target}: decoded {} functions, {} of {} text bytes",
            found.functions_decoded, found.bytes_decoded, req.text_size
        );
        report_skipped(&found, &functions);
        let static_sites = take_static_call_sites(&mut found.sites, &static_call_sites)?;
        if found.sites.is_empty() {
            if req.quiet_if_none == 0 {
                error!("{target}: no call or tail call to the selected functions ({} selected)", targets.len());
            }
            return Err(ffi::ENOENT);
        }
        let mut skipped = Vec::new();
        let skips = [
            (&static_sites, "static_call"),
            (&found.foreign_probes, "foreign"),
            (&found.conditional_jumps, "jcc"),
            (&found.long_branches, "long"),
        ];
        skipped.try_reserve_exact(skips.iter().map(|(list, _)| list.len()).sum()).map_err(out_of_memory)?;
        for (list, why) in skips {
            skipped.extend(list.iter().map(|&site| (site, why)));
        }
        log_sites(target, &found.sites, &functions);

        let gfp_names = unsafe { slice(req.gfp_names, req.num_gfp_names) };
        let mut gfp = Vec::new();
        gfp.try_reserve_exact(gfp_names.len()).map_err(out_of_memory)?;
        gfp.extend(gfp_names.iter().map(|g| GfpName { mask: g.mask as u64, name: unsafe { static_str(g.name) } }));
        let mut sites = Vec::new();
        sites.try_reserve_exact(found.sites.len()).map_err(out_of_memory)?;
        let config = KernelConfig { slab_buckets: req.slab_buckets != 0 };
        for &site in &found.sites {
            sites.push(site_record(site, &functions, &targets, addrs, config, &available));
        }
        // SAFETY: per this function's contract.
        unsafe { Session::into_heap(req, target, Parts { config, gfp, sites, skipped, functions }) }
    }

    /// The session on the heap, its sites pointing at it, its fault rules
    /// armed. Out of line: `plan`'s frame stays under the 1 kB the build
    /// allows.
    ///
    /// # Safety
    /// As for `plan`.
    #[inline(never)]
    unsafe fn into_heap(req: &AttachRequest, target: &str, parts: Parts) -> Result<*mut Session, i32> {
        let Parts { config, gfp, mut sites, skipped, functions } = parts;
        let mut name = TargetName::default();
        let _ = name.write_str(target);

        // Like Box::new, but an allocation failure is an errno, not a panic.
        // The sites point at the session through this raw pointer, never
        // through a reference that a later move or borrow would invalidate.
        // SAFETY: Session is not zero-sized.
        let raw = unsafe { alloc::alloc::alloc(Layout::new::<Session>()) }.cast::<Session>();
        if raw.is_null() {
            return Err(out_of_memory(()));
        }
        for site in &mut sites {
            site.session = raw;
        }
        let sink = match req.sink {
            ffi::HP_SINK_PRINTK => Sink::Printk,
            ffi::HP_SINK_NONE => Sink::None,
            _ => Sink::Trace,
        };
        let session = Session {
            target: name,
            sink,
            config,
            gfp,
            sites,
            skipped,
            functions,
            burst: if req.budget == 0 { 0 } else { req.budget_share },
            budget: req.budget,
            shared: req.shared,
            module: req.module,
            init_text: req.init_text != 0,
            checks_leaks: unsafe { req.shared.as_ref() }.is_some_and(|s| s.leaks.is_some()),
        };
        if let Some(shared) = unsafe { req.shared.as_ref() } {
            shared.get();
        }
        // SAFETY: raw is a fresh allocation with Session's layout.
        unsafe { raw.write(session) };
        // The events' names point into the session, now in its place.
        // SAFETY: just written, and not shared yet.
        let Session { sites, target, functions, .. } = unsafe { &mut *raw };
        for site in sites.iter_mut() {
            let callee = &functions[site.site.func].name;
            site.event.target = target.as_c_ptr().cast();
            site.event.target_size = target.c_words().len() as u32;
            site.event.callee = callee.as_c_ptr().cast();
            site.event.callee_size = callee.c_words().len() as u32;
        }
        // SAFETY: just written; under hp_lock, as every attach.
        let session = unsafe { &*raw };
        if let Some(shared) = unsafe { session.shared.as_ref() } {
            session.arm_faults(&shared.faults);
        }
        Ok(raw)
    }

    pub fn sites(&self) -> &[SiteRecord] {
        &self.sites
    }

    pub fn skipped(&self) -> &[(Site, &'static str)] {
        &self.skipped
    }

    pub fn target(&self) -> &str {
        self.target.as_str()
    }

    pub fn function_name(&self, func: usize) -> &str {
        self.functions.get(func).map_or("?", |f| f.name())
    }

    /// Functions with at least one site, in the order of `fn=`.
    pub fn function_names(&self) -> impl Iterator<Item = &str> {
        self.functions
            .iter()
            .enumerate()
            .filter(|(func, _)| self.sites.iter().any(|s| s.site.func == *func))
            .map(|(_, f)| f.name())
    }

    /// Calls inside a real function through hp_trampoline, as last summed.
    pub fn inflight(&self) -> u64 {
        self.sites.iter().map(SiteRecord::inside).sum()
    }

    /// Whether this CPU's printk budget allows one more line now.
    pub(crate) fn may_log(&self) -> bool {
        /// This CPU's budget, in per-CPU memory.
        struct ThisCpu(usize);
        impl ratelimit::Budget for ThisCpu {
            // SAFETY (all three): the session's budget, allocated by C for
            // as long as the session lives, its fields at their offsets.
            fn window(&self) -> usize {
                unsafe { percpu::read_word(self.0 + core::mem::offset_of!(ffi::Budget, window)) }
            }
            fn restart(&self, now: usize) {
                unsafe { percpu::write_word(self.0 + core::mem::offset_of!(ffi::Budget, window), now) };
                unsafe { percpu::write_word(self.0 + core::mem::offset_of!(ffi::Budget, used), 0) };
            }
            fn take(&self) -> usize {
                unsafe { percpu::fetch_inc_word(self.0 + core::mem::offset_of!(ffi::Budget, used)) }
            }
        }
        // SAFETY: a plain read of jiffies.
        self.burst == 0 || ratelimit::allow(&ThisCpu(self.budget), self.burst, unsafe { ffi::hp_c_log_window() } as usize)
    }

    /// The calls inside a real function now, and into `out` the names of
    /// the functions they are in, space-separated and NUL-terminated (cut
    /// to fit): what a detach says it waits for.
    pub fn waiting(&self, out: &mut [u8]) -> u64 {
        /// Writes into a fixed buffer, cutting what does not fit (no allocation).
        struct Cut<'a> {
            out: &'a mut [u8],
            len: usize,
        }
        impl Write for Cut<'_> {
            fn write_str(&mut self, s: &str) -> core::fmt::Result {
                let room = self.out.len().saturating_sub(self.len + 1);
                let n = s.len().min(room);
                self.out[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
                self.len += n;
                Ok(())
            }
        }
        let mut names = Cut { out, len: 0 };
        let mut total = 0;
        for (func, f) in self.functions.iter().enumerate() {
            let inside: u64 =
                self.sites.iter().filter(|s| s.site.func == func).map(SiteRecord::inside).sum();
            if inside > 0 {
                let _ = write!(names, "{}{}", if total == 0 { "" } else { " " }, f.name());
                total += inside;
            }
        }
        let end = names.len;
        if let Some(nul) = names.out.get_mut(end) {
            *nul = 0;
        }
        total
    }

    /// Whether a site of this session can ever skip the trampoline: sink
    /// none and no leak checking, which an attach fixes; fault rules come
    /// and go (SiteRecord::counts_only).
    pub fn may_count_only(&self) -> bool {
        self.sink == Sink::None && !self.checks_leaks
    }

    /// One line with the totals and per-function hits, then one per site hit.
    pub fn report(&self, why: &str, missed: u64) {
        let hits_of = |func: usize| -> u64 {
            self.sites.iter().filter(|s| s.site.func == func).map(SiteRecord::hits).sum()
        };
        let total: u64 = self.sites.iter().map(SiteRecord::hits).sum();
        let mut line = crate::log::Line::default();
        let _ = write!(line, "detached from {} ({why}): {total} calls", self.target.as_str());
        for (func, f) in self.functions.iter().enumerate() {
            let hits = hits_of(func);
            if hits > 0 {
                let _ = write!(line, " {}={hits}", f.name());
            }
        }
        // The sites' own counters: with sink printk an event is a line
        // logged and a drop one the rate limit suppressed.
        let events: u64 = self.sites.iter().map(SiteRecord::events).sum();
        let dropped: u64 = self.sites.iter().map(SiteRecord::dropped).sum();
        let (events_name, dropped_name) = match self.sink {
            Sink::Printk => ("logged", "suppressed"),
            Sink::Trace | Sink::None => ("events", "dropped"),
        };
        let _ = write!(line, "; {events_name} {events} {dropped_name} {dropped} missed {missed}");
        crate::log::emit(ffi::HP_INFO, &mut line);
        for s in self.sites.iter().filter(|s| s.hits() > 0) {
            log_at(
                ffi::HP_INFO,
                s.site.addr,
                format_args!("site hits {} {}", self.functions[s.site.func].name(), s.hits()),
            );
        }
    }
}

/// Logs and returns ENOMEM, whatever the allocation error looked like.
fn out_of_memory<E>(_: E) -> i32 {
    crate::log::error_static(c"out of memory while planning");
    ffi::ENOMEM
}

/// What decoding found and will not redirect, or could not be sure of.
fn report_skipped(found: &Discovery, functions: &[Intercepted]) {
    let warn = |site: &Site, why: &str| {
        log_at(ffi::HP_WARN, site.addr, format_args!("{} {}: skipped", functions[site.func].name(), why));
    };
    for probed in &found.foreign_probes {
        warn(probed, "call already probed by someone else");
    }
    for jcc in &found.conditional_jumps {
        warn(jcc, "reached by a conditional jump, which cannot be redirected");
    }
    for long in &found.long_branches {
        warn(long, "reached by a prefixed call or jump (not 5 bytes), which cannot be redirected");
    }
    for d in &found.disturbances {
        let why = match d.kind {
            DisturbanceKind::Int3 => {
                "an int3 the compiler did not put there (someone else's probe on a longer instruction?)"
            }
            DisturbanceKind::PaddingInt3 => "an int3 after a jump hides a call (someone else's probe?)",
            // A tail call into another module's known code is no disturbance.
            // SAFETY (the guard's call): it only looks the address up.
            DisturbanceKind::ModuleSpaceJump { dest }
                if d.recovered_sites == 0 && unsafe { ffi::hp_c_is_known_code(dest as usize) } =>
            {
                continue
            }
            DisturbanceKind::ModuleSpaceJump { .. } => {
                "a jump out of the module to no known code (someone else's optimized probe?)"
            }
        };
        log_at(
            ffi::HP_WARN,
            d.addr,
            format_args!("decoding disturbed by {why}; {} hidden sites recovered after it", d.recovered_sites),
        );
    }
}

/// `target: S sites: kfree=3 (1 tail) vfree=1 ...`
/// Out of line, so that its line buffer is not in `plan`'s frame.
#[inline(never)]
fn log_sites(target: &str, found: &[Site], functions: &[Intercepted]) {
    crate::log::emit(ffi::HP_INFO, &mut line_for_sites(target, found, functions));
}

fn line_for_sites(target: &str, found: &[Site], functions: &[Intercepted]) -> crate::log::Line {
    let mut line = crate::log::Line::default();
    let _ = write!(line, "{target}: {} sites:", found.len());
    for (func, f) in functions.iter().enumerate() {
        let count = |kind: SiteKind| found.iter().filter(|s| s.func == func && s.kind == kind).count();
        let (calls, tails) = (count(SiteKind::Call), count(SiteKind::TailJump));
        if calls + tails > 0 {
            let _ = write!(line, " {}={}", f.name(), calls + tails);
            if tails > 0 {
                let _ = write!(line, " ({tails} tail)");
            }
        }
    }
    line
}

/// The functions `choice` names, and where each is: the catalogue's address,
/// or the destination of the module's own calls.
#[inline(never)] // keeps its locals out of the planner's frame
fn intercepted(
    target: &str,
    choice: &catalogue::Choice<'_>,
    addrs: &[u64],
    text: &[u8],
    req: &AttachRequest,
    ranges: &[sites::FunctionRange],
) -> Result<(Vec<Intercepted>, Vec<Target>), i32> {
    let mut functions = Vec::new();
    let mut targets = Vec::new();
    let n = MEMORY.len() + catalogue::MAX_CALLEES;
    functions.try_reserve_exact(n).map_err(out_of_memory)?;
    targets.try_reserve_exact(n).map_err(out_of_memory)?;
    for i in choice.memory.iter() {
        targets.push(Target { addr: addrs[i], func: functions.len() });
        functions.push(Intercepted::new(MEMORY[i].name, FunctionKind::Memory(i)));
    }
    if choice.callees().next().is_some() {
        let marks = callees::Marks::of(req).map_err(out_of_memory)?;
        let found = callees::list(text, req.text_base, ranges, &marks)?;
        for wanted in choice.callees() {
            // A followed target's init text and core text are planned
            // apart: a callee only the other one calls is no error here.
            if req.quiet_if_none != 0 && !found.iter().any(|c| c.name.as_str() == wanted.name) {
                continue;
            }
            let callee = pick_callee(target, &found, wanted.name, wanted.spec)?;
            let spec = wanted.spec.unwrap_or(Spec::Raw);
            check_pair_role(target, wanted.name, spec, wanted.role)?;
            targets.push(Target { addr: callee.dest, func: functions.len() });
            let mut function = Intercepted::new(wanted.name, FunctionKind::Any(spec));
            function.pair_role = wanted.role;
            functions.push(function);
        }
    }
    Ok((functions, targets))
}

/// Moves out of `sites` those the kernel's static_call rewrites itself.
#[inline(never)]
fn take_static_call_sites(sites: &mut Vec<Site>, static_call_sites: &[u64]) -> Result<Vec<Site>, i32> {
    let is_static = |s: &Site| static_call_sites.binary_search(&s.addr).is_ok();
    let mut taken = Vec::new();
    taken.try_reserve_exact(sites.iter().filter(|s| is_static(s)).count()).map_err(out_of_memory)?;
    taken.extend(sites.iter().filter(|s| is_static(s)).copied());
    sites.retain(|s| !is_static(s));
    Ok(taken)
}

/// Whether a pair's role can be kept for a callee attached as `spec`: an
/// allocator's result is only seen through the trampoline (a SPEC, on
/// x86_64), and a free's object must be one of its arguments.
fn check_pair_role(target: &str, name: &str, spec: Spec, role: Option<PairRole>) -> Result<(), i32> {
    let why = match role {
        Some(PairRole::Allocates) if spec == Spec::Raw || I386 => {
            "+alloc needs its result, which a call jumped into (no SPEC, or i386) returns unseen"
        }
        Some(PairRole::Frees(k)) if usize::from(k) >= spec.arity() => "+free names an argument it does not take",
        _ => return Ok(()),
    };
    error!("{target}: '{name}' refused: {why}");
    Err(ffi::EINVAL)
}

/// The callee `name` of the module, if it may be intercepted as `spec` says.
fn pick_callee<'a>(target: &str, found: &'a [Callee], name: &str, spec: Option<Spec>) -> Result<&'a Callee, i32> {
    let Some(callee) = found.iter().find(|c| c.name.as_str() == name) else {
        error!("{target} never calls '{name}' directly (its callees: 'callees {target}')");
        return Err(ffi::EINVAL);
    };
    if let Some(why) = callee.refusal.or(spec.and_then(|s| s.refusal())) {
        error!("{target}: '{name}' refused: {why}");
        return Err(ffi::EINVAL);
    }
    Ok(callee)
}
