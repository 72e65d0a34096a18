//! One call site of an attachment: its record (counters, fault mask, leak
//! role), and the per-call hooks the trampolines reach it through: count,
//! choose the real call (or a failure), log or trace the call, track what
//! it allocates and frees. Any context; nothing here locks or allocates.

use core::fmt::Write;
use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

use hp_core::catalogue::{self, CallerArgs, KernelConfig, Kind, MEMORY};
use hp_core::control::Sink;
use hp_core::event::{write_any_call, write_call, LineBuf, RegisterArgs};
use hp_core::leaks::{self, Role, Size};
use hp_core::proto::{strings, PairRole, Spec};
use hp_core::sites::{Site, SiteKind, Target};

use crate::ffi::{self, CallEvent, CallFrame, EventSite, SiteCounts};
use crate::percpu;
use crate::session::{FunctionKind, Intercepted, Session, I386};

pub struct SiteRecord {
    pub(crate) site: Site,
    /// The site's identity across loads (hp_core::fault::site_key), set
    /// with its fault mask: only a site some rule selects needs it.
    pub(crate) key: AtomicU64,
    /// What the trampoline calls or jumps to: the function, or its
    /// `_track_caller` form.
    pub(crate) real: u64,
    /// Set when `real` is a `_track_caller` form, to build its arguments.
    pub(crate) track_caller: Option<CallerArgs>,
    /// A void function: entered through hp_trampoline_jump, no exit hook.
    pub(crate) jump_through: bool,
    /// Words of `real`'s arguments the trampoline passes on the stack: on
    /// i386 from its arity; on x86_64 0 or the whole STACK_WORDS window.
    pub(crate) stack_words: u32,
    /// `SiteState` as set by C: planned until kprobes accepts or refuses it.
    pub(crate) state: AtomicU8,
    /// Per-CPU address of this site's `SiteCounts`, set by C before the
    /// probe is armed (so never 0 where a hook runs).
    pub(crate) counts: AtomicUsize,
    /// Their sum over CPUs, as C last read it (hp_attachment_sync).
    pub(crate) summed: Summed,
    /// Probe hits kprobes did not hand to us, as C last read them.
    pub(crate) missed: AtomicU64,
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
    pub(crate) session: *const Session,
    /// What this site's trace events say of it; its names point into the
    /// session (set with `session`, in Session::into_heap).
    pub(crate) event: EventSite,
    /// The callee's SPEC names string arguments, which its events carry.
    pub(crate) strings: bool,
}


/// What C tells us of a site's probe.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SiteState {
    Planned = 0,
    Armed = 1,
    Refused = 2,
}

/// One site's record, as planned. Out of line: built inside `plan`, its
/// temporaries pushed that frame over the 1 kB the build allows.
#[inline(never)]
pub(crate) fn site_record(
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
    // x86_64: a catalogue function takes at most six register arguments,
    // so the trampoline copies no stack window for it; any other callee
    // gets STACK_WORDS, whatever its SPEC says (see hp_trampoline.S).
    let stack_words = match functions[site.func].kind {
        _ if I386 => catalogue::i386_stack_words(arity) as u32,
        FunctionKind::Memory(_) => 0,
        FunctionKind::Any(_) => hp_core::proto::STACK_WORDS as u32,
    };
    SiteRecord {
        site,
        key: AtomicU64::new(0),
        real,
        track_caller,
        jump_through,
        stack_words,
        state: AtomicU8::new(SiteState::Planned as u8),
        counts: AtomicUsize::new(0),
        summed: Summed::default(),
        missed: AtomicU64::new(0),
        fault_mask: AtomicU8::new(0),
        failed: AtomicU64::new(0),
        size_arg: memory.and_then(|f| f.first_of(config, Kind::Size)).map(|k| k as u8),
        gfp_arg: memory.and_then(|f| f.first_of(config, Kind::Gfp)).map(|k| k as u8),
        role,
        unknown_frees: AtomicU64::new(0),
        session: core::ptr::null(),
        event: EventSite {
            target: core::ptr::null(),
            callee: core::ptr::null(),
            site: site.addr,
            func: functions[site.func].catalogue_index(),
            target_size: 0,
            callee_size: 0,
        },
        strings: matches!(functions[site.func].kind, FunctionKind::Any(spec) if spec.string_mask() != 0),
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

    /// Where the hooks count (C's per-CPU memory), before the probe is armed.
    pub fn set_counts(&self, counts: usize) {
        self.counts.store(counts, Ordering::Relaxed);
    }

    /// C's sum over CPUs of this site's counters.
    pub fn set_summed(&self, sum: &SiteCounts) {
        let s = &self.summed;
        for (field, value) in [(&s.hits, sum.entries.wrapping_add(sum.passes)), (&s.events, sum.events), (&s.dropped, sum.dropped)] {
            field.store(value, Ordering::Relaxed);
        }
        // Entries are final once no pre-handler runs, and exits never pass
        // them, so a sum read while calls return is never too low.
        s.inside.store(sum.entries.wrapping_sub(sum.exits), Ordering::Relaxed);
    }

    /// Every call intercepted here, as last summed.
    pub fn hits(&self) -> u64 {
        self.summed.hits.load(Ordering::Relaxed)
    }

    /// Calls inside the real function through hp_trampoline, as last summed.
    pub fn inside(&self) -> u64 {
        self.summed.inside.load(Ordering::Relaxed)
    }

    pub fn events(&self) -> u64 {
        self.summed.events.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.summed.dropped.load(Ordering::Relaxed)
    }

    /// Adds 1 to one of this CPU's counters of this site.
    #[inline(always)]
    fn count(&self, offset: usize) {
        // SAFETY: C set `counts` before arming the probe that brought us
        // here, and frees it only after the detach sequence, which waits
        // for every hook (and for tasks between its exit count and `ret`).
        unsafe { percpu::inc_u64(self.counts.load(Ordering::Relaxed) + offset) }
    }

    /// Nothing at this site needs the trampoline: no sink to record the
    /// call in, no leak checking, no fault rule that selects it.
    pub fn counts_only(&self) -> bool {
        self.session().may_count_only() && self.fault_mask.load(Ordering::Acquire) == 0
    }

    /// hits, inside, events, dropped, missed.
    pub fn counters(&self) -> [u64; 5] {
        [self.hits(), self.inside(), self.events(), self.dropped(), self.missed.load(Ordering::Relaxed)]
    }

    /// Says what to call with which arguments (the pre-handler counted the
    /// call). `caller` is where the real function would have returned to.
    pub fn enter(&self, args: &RegisterArgs, frame: &mut CallFrame, caller: u64) -> u64 {
        // The trampoline calls with `call_args`: the saved arguments as they
        // are, unless a _track_caller form or a failure needs others.
        frame.call_args = args.as_ptr();
        frame.stack_words = u64::from(self.stack_words);
        if self.session().sink == Sink::Trace {
            // SAFETY: reads a clock (0 while nobody has the event on).
            frame.start_ns = unsafe { ffi::hp_c_trace_clock() };
        }
        if let Some(t) = &self.track_caller {
            frame.args = t.build(args, caller);
            frame.call_args = frame.args.as_ptr();
        }
        // A user's free that returns a value (+freeN) is called through;
        // the catalogue's frees are void, and jumped into. Tested here, not
        // in the out-of-line hook: an allocator's call pays no call for it.
        if self.session().checks_leaks && self.role.is_some_and(Role::is_free) {
            self.track_free(args);
        }
        // Acquire: pairs with arm_faults, so the site's key is seen too.
        if self.fault_mask.load(Ordering::Acquire) != 0 {
            if let Some(value) = self.injected_failure(args) {
                // hp_fail_return hands args[0] back as the result.
                frame.args = *args;
                frame.args[0] = value;
                frame.call_args = frame.args.as_ptr();
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
        // Last touch of the session: once exits reach entries the detach
        // may free it (after an RCU-tasks wait for the `ret` that follows).
        self.count(core::mem::offset_of!(SiteCounts, exits));
        ret
    }

    /// Logs a call to a void function, before it runs; returns the
    /// function to jump into. No exit: once we jump, nothing of ours is
    /// used, and RCU-tasks covers the time until then.
    pub fn jump_through(&self, args: &RegisterArgs) -> u64 {
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
    /// we jump into and never see return. Inlined into both hooks: a call
    /// level less on every traced call.
    #[inline(always)]
    fn record(&self, args: &RegisterArgs, result: Option<Returned>) {
        match self.session().sink {
            Sink::Printk => self.log_call(args, result),
            Sink::Trace => self.trace_call(args, result),
            Sink::None => {}
        }
    }

    /// Runs in the target's context: no allocation, no lock, no sleep.
    #[inline(always)]
    fn trace_call(&self, args: &RegisterArgs, result: Option<Returned>) {
        let r = result.unwrap_or(Returned { ret: 0, ret2: 0, start_ns: 0 });
        let mut event = CallEvent {
            at: &self.event,
            args: args.as_ptr(),
            ret: r.ret,
            ret2: r.ret2,
            start_ns: r.start_ns,
            duration_ns: 0,
            strings: core::ptr::null(),
            strings_len: 0,
            returned: result.is_some() as u32,
        };
        let written = if self.strings {
            self.trace_with_strings(args, &mut event)
        } else {
            // SAFETY: `event` and what it points to (the site's names, which
            // live as long as the session; `args`) outlive the call.
            unsafe { ffi::hp_c_trace_call(&mut event) }
        };
        if written {
            self.count(core::mem::offset_of!(SiteCounts, events));
        } else {
            self.count(core::mem::offset_of!(SiteCounts, dropped));
        }
    }

    /// Out of line: only a SPEC with strings needs the buffer (and its
    /// clearing), and only when someone will read them.
    #[inline(never)]
    fn trace_with_strings(&self, args: &RegisterArgs, event: &mut CallEvent) -> bool {
        // SAFETY: reads a static key.
        if !unsafe { ffi::hp_c_trace_enabled() } {
            return false;
        }
        let mut text = [0u8; strings::CAPACITY];
        event.strings_len = read_strings(self.function(), args, &mut text) as u32;
        event.strings = text.as_ptr();
        // SAFETY: as in trace_call; `text` outlives the call too.
        unsafe { ffi::hp_c_trace_call(event) }
    }

    /// Runs in the target's context: no allocation, no lock, no sleep. Out
    /// of line: its line buffers stay out of the other sinks' frames.
    #[inline(never)]
    fn log_call(&self, args: &RegisterArgs, result: Option<Returned>) {
        let session = self.session();
        // SAFETY: a plain read of jiffies.
        if !session.may_log() {
            self.count(core::mem::offset_of!(SiteCounts, dropped));
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
        self.count(core::mem::offset_of!(SiteCounts, events));
    }
}

/// A site's counters summed over CPUs, as C last read them: written
/// under hp_lock (or by the drain that owns a detached session), read by
/// replies and reports. Plain loads and stores.
#[derive(Default)]
pub struct Summed {
    hits: AtomicU64,
    inside: AtomicU64,
    events: AtomicU64,
    dropped: AtomicU64,
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
