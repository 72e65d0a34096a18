//! One attachment to one target: its sites, counters and log state.

use alloc::vec::Vec;
use core::alloc::Layout;
use core::ffi::{c_char, CStr};
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

use hp_core::control::Sink;

use hp_core::catalogue::{self, CallerArgs, KernelConfig, Kind, MEMORY};
use hp_core::event::{write_any_call, write_call, LineBuf, RegisterArgs};
use hp_core::proto::{strings, PairRole, Spec};
use hp_core::gfp::GfpName;
use hp_core::leaks::{self, Role, Size};
use hp_core::ratelimit::RateLimit;
use hp_core::sites::{self, Discovery, DisturbanceKind, Options, Site, SiteKind, Symbol, Target};

use crate::callees::{self, Callee};
use crate::shared::Shared;
use crate::ffi::{self, AttachRequest, CallEvent, CallFrame};
use crate::log::{error, info, log_at};

/// The module runs on 32-bit x86 (its arguments past the third travel on the stack).
const I386: bool = cfg!(target_pointer_width = "32");

pub struct SiteRecord {
    site: Site,
    /// The site's identity across loads (hp_core::fault::site_key), set
    /// with its fault mask: only a site some rule selects needs it.
    pub(crate) key: AtomicU64,
    /// What the trampoline calls or jumps to: the function, or its
    /// `_track_caller` form.
    real: u64,
    /// Set when `real` is a `_track_caller` form, to build its arguments.
    track_caller: Option<CallerArgs>,
    /// A void function: entered through hp_trampoline_jump, no exit hook.
    jump_through: bool,
    /// i386: words of `real`'s arguments the trampoline passes on the
    /// stack, from its arity (0 on x86_64, where it forwards a fixed window).
    stack_words: u32,
    /// `SiteState` as set by C: planned until kprobes accepts or refuses it.
    state: AtomicU8,
    hits: AtomicU64,
    /// Calls inside the real function right now; detach waits for 0.
    /// A word, not a u64: on i386 a u64 decrement is `adc $-1` into a
    /// `lock cmpxchg8b` loop, after which QEMU 7.2's TCG can compute EFLAGS
    /// from stale flag state (all ones: VM, NT, TF) and double-fault on the
    /// next interrupt; seen in 4 of 4 i386 runs with one code layout. A
    /// word is `lock xadd`, and no more callers than that can be inside.
    inflight: AtomicUsize,
    /// Trace events written or lines logged.
    events: AtomicU64,
    /// Calls that became no event (no tracer enabled, or rate-limited).
    dropped: AtomicU64,
    /// Probe hits kprobes did not hand to us, as C last read them.
    missed: AtomicU64,
    /// Bit i: the target's fault rule in slot i selects this site
    /// (faults.rs); set and cleared under hp_lock.
    pub(crate) fault_mask: AtomicU8,
    /// Calls a fault rule failed here.
    pub(crate) failed: AtomicU64,
    /// The register indices of the size and gfp arguments a fault rule's
    /// filters read (a catalogue function's), worked out once per site.
    pub(crate) size_arg: Option<u8>,
    pub(crate) gfp_arg: Option<u8>,
    /// What the leak checker does at this site (a catalogue function's role).
    pub(crate) role: Option<Role>,
    /// Frees here of objects the leak checker had not seen allocated.
    pub(crate) unknown_frees: AtomicU64,
    /// The owning session, which outlives every site (both are freed together).
    session: *const Session,
}

/// A site as `function+0xoff/0xsize`.
pub type SiteName = LineBuf<64>;

/// Module names are at most 55 bytes (MODULE_NAME_LEN).
type TargetName = LineBuf<64>;

/// What C tells us of a site's probe.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SiteState {
    Planned = 0,
    Armed = 1,
    Refused = 2,
}

/// A function name with its NUL, for the trace event.
pub type CalleeName = LineBuf<64>;

/// A function a session intercepts: `Site::func` indexes `Session::functions`.
pub struct Intercepted {
    name: CalleeName,
    kind: FunctionKind,
    /// A user's pair (`+alloc`, `+freeN`): what the leak checker makes of
    /// a callee outside the catalogue.
    pair_role: Option<PairRole>,
}

#[derive(Clone, Copy)]
enum FunctionKind {
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
    fn catalogue_index(&self) -> u32 {
        match self.kind {
            FunctionKind::Memory(i) => i as u32,
            FunctionKind::Any(_) => u32::MAX,
        }
    }
}

pub struct Session {
    pub(crate) target: TargetName,
    sink: Sink,
    pub(crate) config: KernelConfig,
    gfp: Vec<GfpName<'static>>,
    sites: Vec<SiteRecord>,
    /// Found but not redirected, with the reason shown in site lists.
    skipped: Vec<(Site, &'static str)>,
    functions: Vec<Intercepted>,
    ratelimit: RateLimit,
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
            ratelimit: RateLimit::new(req.log_burst),
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

    pub fn inflight(&self) -> u64 {
        self.sites.iter().map(|s| s.inflight.load(Ordering::SeqCst) as u64).sum()
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
                self.sites.iter().filter(|s| s.site.func == func).map(|s| s.inflight.load(Ordering::SeqCst) as u64).sum();
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

    /// One line with the totals and per-function hits, then one per site hit.
    pub fn report(&self, why: &str, missed: u64) {
        let hits_of = |func: usize| -> u64 {
            self.sites.iter().filter(|s| s.site.func == func).map(|s| s.hits.load(Ordering::Relaxed)).sum()
        };
        let total: u64 = self.sites.iter().map(|s| s.hits.load(Ordering::Relaxed)).sum();
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
        let events: u64 = self.sites.iter().map(|s| s.events.load(Ordering::Relaxed)).sum();
        let dropped: u64 = self.sites.iter().map(|s| s.dropped.load(Ordering::Relaxed)).sum();
        let (events_name, dropped_name) = match self.sink {
            Sink::Printk => ("logged", "suppressed"),
            Sink::Trace | Sink::None => ("events", "dropped"),
        };
        let _ = write!(line, "; {events_name} {events} {dropped_name} {dropped} missed {missed}");
        crate::log::emit(ffi::HP_INFO, &mut line);
        for s in self.sites.iter().filter(|s| s.hits.load(Ordering::Relaxed) > 0) {
            log_at(
                ffi::HP_INFO,
                s.site.addr,
                format_args!("site hits {} {}", self.functions[s.site.func].name(), s.hits.load(Ordering::Relaxed)),
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

/// One site's record, as planned. Out of line: built inside `plan`, its
/// temporaries pushed that frame over the 1 kB the build allows.
#[inline(never)]
fn site_record(
    site: Site,
    functions: &[Intercepted],
    targets: &[Target],
    addrs: &[u64],
    config: KernelConfig,
    available: &dyn Fn(usize) -> bool,
) -> SiteRecord {
    let memory = functions[site.func].memory_index().map(|i| &MEMORY[i]);
    let role = match functions[site.func].kind {
        FunctionKind::Memory(func) => leaks::role(&MEMORY[func], config),
        FunctionKind::Any(_) => functions[site.func].pair_role.map(|r| match r {
            PairRole::Allocates => Role::Allocates { size: Size::Unknown, resizes: None },
            PairRole::Frees(k) => Role::Frees { object: usize::from(k) },
        }),
    };
    let (jump_through, real, track_caller, arity) = match functions[site.func].kind {
        FunctionKind::Memory(func) => {
            let jump_through = MEMORY[func].ret == Kind::Void;
            // Only where the kernel at hand exports the _track_caller form.
            let via = catalogue::track_caller(func)
                .filter(|_| !jump_through)
                .and_then(|t| Some((t, catalogue::index_of(t.via).filter(|&v| available(v))?)));
            match via {
                Some((t, via)) => {
                    (jump_through, addrs[via], Some(t.resolve(config)), MEMORY[via].arity(config))
                }
                None => (jump_through, addrs[func], None, MEMORY[func].arity(config)),
            }
        }
        // With a SPEC on x86_64, called through: the trampoline
        // forwards 8 stack words besides the registers, and sees the
        // result. With none (Raw), nothing says how many arguments
        // there are, or whether it is variadic; on i386 a SPEC's
        // letters do not say how many stack words each argument
        // takes (a u64 takes two). Then the call is jumped into with
        // its own return address, which is right for every call,
        // and its result is not recorded.
        FunctionKind::Any(spec) => (spec == Spec::Raw || I386, targets[site.func].addr, None, spec.arity()),
    };
    let stack_words = if I386 { catalogue::i386_stack_words(arity) as u32 } else { 0 };
    SiteRecord {
        site,
        key: AtomicU64::new(0),
        real,
        track_caller,
        jump_through,
        stack_words,
        state: AtomicU8::new(SiteState::Planned as u8),
        hits: AtomicU64::new(0),
        inflight: AtomicUsize::new(0),
        events: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        missed: AtomicU64::new(0),
        fault_mask: AtomicU8::new(0),
        failed: AtomicU64::new(0),
        size_arg: memory.and_then(|f| f.first_of(config, Kind::Size)).map(|k| k as u8),
        gfp_arg: memory.and_then(|f| f.first_of(config, Kind::Gfp)).map(|k| k as u8),
        role,
        unknown_frees: AtomicU64::new(0),
        session: core::ptr::null(),
    }
}

impl SiteRecord {
    pub fn addr(&self) -> u64 {
        self.site.addr
    }

    pub fn is_tail_jump(&self) -> bool {
        self.site.kind == SiteKind::TailJump
    }

    pub(crate) fn session(&self) -> &Session {
        // SAFETY: the session owns this site and is freed after it.
        unsafe { &*self.session }
    }

    pub fn is_jump_through(&self) -> bool {
        self.jump_through
    }

    pub fn site(&self) -> &Site {
        &self.site
    }

    pub fn func(&self) -> usize {
        self.site.func
    }

    pub fn set_state(&self, state: SiteState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub fn set_missed(&self, missed: u64) {
        self.missed.store(missed, Ordering::Relaxed);
    }

    pub fn is_armed(&self) -> bool {
        self.state.load(Ordering::Relaxed) == SiteState::Armed as u8
    }

    pub fn state_name(&self) -> &'static str {
        match self.state.load(Ordering::Relaxed) {
            s if s == SiteState::Armed as u8 => "armed",
            s if s == SiteState::Refused as u8 => "refused",
            _ => "planned",
        }
    }

    /// hits, inflight, events, dropped, missed.
    pub fn counters(&self) -> [u64; 5] {
        let inflight = self.inflight.load(Ordering::Relaxed) as u64;
        [self.hits.load(Ordering::Relaxed), inflight, self.events.load(Ordering::Relaxed), self.dropped.load(Ordering::Relaxed), self.missed.load(Ordering::Relaxed)]
    }

    /// Counts the call and says what to call with which arguments; the C
    /// detach sequence waits for `inflight` to drain. `caller` is where the
    /// real function would have returned to.
    pub fn enter(&self, args: &RegisterArgs, frame: &mut CallFrame, caller: u64) -> u64 {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        self.hits.fetch_add(1, Ordering::Relaxed);
        if self.session().sink == Sink::Trace {
            // SAFETY: reads a clock, any context.
            frame.start_ns = unsafe { ffi::hp_c_now_ns() };
        }
        frame.args = match &self.track_caller {
            Some(t) => t.build(args, caller),
            None => *args,
        };
        frame.stack_words = u64::from(self.stack_words);
        // A user's free that returns a value (+freeN) is called through;
        // the catalogue's frees are void, and jumped into.
        if self.session().checks_leaks {
            self.track_free(args);
        }
        // Acquire: pairs with arm_faults, so the site's key is seen too.
        if self.fault_mask.load(Ordering::Acquire) != 0 {
            if let Some(value) = self.injected_failure(args) {
                // hp_fail_return hands args[0] back as the result.
                frame.args[0] = value;
                return ffi::hp_fail_return as unsafe extern "C" fn() as usize as u64;
            }
        }
        self.real
    }

    /// Logs the call (or counts it as suppressed) and returns `ret` as is.
    pub fn exit(&self, ret: u64, ret2: u64, args: &RegisterArgs, frame: &CallFrame) -> u64 {
        self.record(args, Some(Returned { ret, ret2, start_ns: frame.start_ns }));
        if self.session().checks_leaks {
            self.track_result(args, ret);
        }
        // Last touch of the session: after this the detach may free it.
        self.inflight.fetch_sub(1, Ordering::SeqCst);
        ret
    }

    /// Counts and logs a call to a void function, before it runs; returns
    /// the function to jump into. Not in `inflight`: once we jump, nothing
    /// of ours is used, and RCU-tasks covers the time until then.
    pub fn jump_through(&self, args: &RegisterArgs) -> u64 {
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.record(args, None);
        if self.session().checks_leaks {
            self.track_free(args);
        }
        self.real
    }

    pub(crate) fn function(&self) -> &Intercepted {
        &self.session().functions[self.site.func]
    }

    /// Sends the call to the session's sink; `result` is None for a call
    /// we jump into and never see return.
    fn record(&self, args: &RegisterArgs, result: Option<Returned>) {
        match self.session().sink {
            Sink::Printk => self.log_call(args, result),
            Sink::Trace => self.trace_call(args, result),
            Sink::None => {}
        }
    }

    /// Runs in the target's context: no allocation, no lock, no sleep.
    fn trace_call(&self, args: &RegisterArgs, result: Option<Returned>) {
        // SAFETY: reads a static key.
        if !unsafe { ffi::hp_c_trace_enabled() } {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let session = self.session();
        let function = self.function();
        let (ret, ret2, start_ns, duration_ns) = match result {
            // SAFETY: reads a clock.
            Some(r) => (r.ret, r.ret2, r.start_ns, unsafe { ffi::hp_c_now_ns() }.saturating_sub(r.start_ns)),
            None => (0, 0, unsafe { ffi::hp_c_now_ns() }, 0),
        };
        let mut text = [0u8; strings::CAPACITY];
        let text_len = read_strings(function, args, &mut text);
        let event = CallEvent {
            target: session.target.as_c_ptr().cast(),
            callee: function.name.as_c_ptr().cast(),
            site: self.site.addr,
            func: function.catalogue_index(),
            returned: result.is_some() as u32,
            args: *args,
            ret,
            ret2,
            start_ns,
            duration_ns,
            strings: text.as_ptr(),
            strings_len: text_len as u32,
        };
        // SAFETY: the event's strings are NUL-terminated and live as long as
        // the session, which outlives this call; `text` outlives it too.
        unsafe { ffi::hp_c_trace_call(&event) };
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs in the target's context: no allocation, no lock, no sleep.
    fn log_call(&self, args: &RegisterArgs, result: Option<Returned>) {
        let session = self.session();
        // SAFETY: a plain read of jiffies.
        if !session.ratelimit.allow(unsafe { ffi::hp_c_log_window() }) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut line = LineBuf::<256>::default();
        let function = self.function();
        let ret = result.map_or(0, |r| r.ret);
        let _ = match function.kind {
            FunctionKind::Memory(func) => {
                write_call(&mut line, &MEMORY[func], session.config, args, ret, &session.gfp, &kernel_pointer)
            }
            FunctionKind::Any(spec) => {
                let mut text = [0u8; strings::CAPACITY];
                let len = read_strings(function, args, &mut text);
                let ret = result.map(|r| (r.ret, r.ret2));
                write_any_call(&mut line, function.name(), spec, args, ret, &text[..len], &kernel_pointer)
            }
        };
        // SAFETY: the buffer is NUL-terminated and outlives the call.
        unsafe { ffi::hp_c_emit_call(line.as_c_bytes().as_ptr().cast(), self.site.addr as usize) };
        self.events.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the real function gave back, and when it was entered.
#[derive(Clone, Copy)]
struct Returned {
    ret: u64,
    ret2: u64,
    start_ns: u64,
}

/// The string arguments SPEC names, read with a nofault copy (a wrong SPEC
/// reads garbage or nothing, never faults), encoded for the event.
fn read_strings(function: &Intercepted, args: &RegisterArgs, out: &mut [u8; strings::CAPACITY]) -> usize {
    let FunctionKind::Any(spec) = function.kind else { return 0 };
    let mask = spec.string_mask();
    let mut used = 0;
    for (_, &ptr) in args.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0) {
        let mut buf = [0u8; hp_core::proto::MAX_STRING + 1];
        // SAFETY: buf is writable for its length; C reads at most that many
        // bytes with copy_from_kernel_nofault.
        let n = unsafe { ffi::hp_c_read_string(ptr as usize, buf.as_mut_ptr(), buf.len() as u32) };
        let bytes = usize::try_from(n).ok().map(|n| &buf[..n.min(buf.len())]);
        strings::encode(out, &mut used, bytes);
    }
    used
}

/// A pointer as the kernel prints `%p` (hashed), or `%px` with raw_pointers=1.
/// Kept out of line so that xtask's stack report can name its frame.
#[inline(never)]
fn kernel_pointer(w: &mut dyn Write, value: u64) -> core::fmt::Result {
    let mut buf = [0u8; 24];
    // SAFETY: buf is writable for its length; C writes at most len-1 bytes.
    let len = unsafe { ffi::hp_c_format_ptr(value as usize, buf.as_mut_ptr().cast(), buf.len() as u32) } as usize;
    w.write_str(core::str::from_utf8(&buf[..len.min(buf.len())]).unwrap_or("?"))
}
