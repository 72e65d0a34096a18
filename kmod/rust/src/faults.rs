//! A target's fault rules (`fail <module> <rule>`), and the decision on the
//! hot path.
//!
//! A target's `FaultTable` is part of what it shares with its sessions
//! (shared.rs): a rule's counts run across the core and init text and
//! across the reloads of a followed target.
//!
//! Rules live in fixed slots. Under `hp_lock`, adding one publishes it in a
//! free slot and then sets its bit in the `fault_mask` of every site it
//! selects (the function, and the site if the rule names one); a site with
//! a mask of 0 pays one relaxed load per call. The hot path reads the mask
//! and the slots inside an RCU read-side section, and `clear` unpublishes
//! the rules, then C waits for a grace period before `hp_faults_reap` frees
//! them, so no reader can still hold one. Nothing on the hot path locks or
//! allocates. The read-side section is needed, not only the grace period
//! waits a lock-free reader would rely on: on PREEMPT_RT a `percent=`
//! rule's random number takes a per-CPU sleeping lock, and a reader
//! blocked there is seen by neither `synchronize_rcu()` nor RCU-Tasks, but
//! is by preemptible RCU's read-side tracking.

use core::alloc::Layout;
use core::cell::UnsafeCell;
use core::ffi::{c_char, CStr};
use core::fmt::Write;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};

use hp_core::catalogue::MEMORY;
use hp_core::event::RegisterArgs;
use hp_core::fault::{
    catalogue_returns, failure_value, site_key, CallFacts, CannotFail, Decision, LoadOutcome, Returns, Round, Rule,
    RuleCounts, MAX_SYSTEMATIC_SITES,
};

use crate::control::{CFormatted, Reply};
use crate::ffi;
use crate::log::error;
use crate::session::{Session, SiteName};
use crate::site::SiteRecord;
use crate::shared::Shared;

/// Rules a target may hold at once: one bit each in a site's mask.
pub const MAX_RULES: usize = 8;

/// The longest rule kept: every key with a long value fits in half of it.
const MAX_RULE_TEXT: usize = 256;

pub struct FaultRule {
    /// A systematic rule's failed sites, by their index in its list: named
    /// by the call that failed there (the one writer of its entry), then
    /// marked ready for the report.
    site_names: UnsafeCell<[[u8; SITE_NAME]; MAX_SYSTEMATIC_SITES]>,
    site_named: [AtomicBool; MAX_SYSTEMATIC_SITES],
    /// What came back of each failed site's round (`LoadOutcome`), and,
    /// with leak checking, what that load left allocated at its unload
    /// (u64::MAX: not known). Written under hp_lock by the notifier.
    site_load: [AtomicU8; MAX_SYSTEMATIC_SITES],
    site_leaked: [AtomicU64; MAX_SYSTEMATIC_SITES],
    site_leaked_bytes: [AtomicU64; MAX_SYSTEMATIC_SITES],
    /// The rule's words as given; `rule` borrows from it.
    text: [u8; MAX_RULE_TEXT],
    len: usize,
    rule: Rule<'static>,
    /// What a failed call returns (NULL, -errno or ERR_PTR(-errno)).
    value: u64,
    counts: RuleCounts,
}

/// Bytes of a site's name a systematic rule keeps.
const SITE_NAME: usize = 64;

// SAFETY: `site_names` entries are written once each, by the call that
// take() gave the index to, and read only after `site_named` says so.
unsafe impl Sync for FaultRule {}

impl FaultRule {
    /// Records the name of the site a systematic rule just failed: once
    /// per site, so kallsyms is asked from the hot path only then.
    fn name_site(&self, key: u64, site: u64) {
        let Some(index) = self.counts.systematic.done().position(|(k, _)| k == key) else { return };
        if self.site_named[index].load(Ordering::Acquire) {
            return;
        }
        // SAFETY: see the Sync impl: this call owns the entry until it
        // sets site_named.
        let entry = unsafe { &mut (*self.site_names.get())[index] };
        let (name, _) = site_identity(site);
        let name = name.as_str();
        let n = name.len().min(SITE_NAME - 1);
        entry[..n].copy_from_slice(&name.as_bytes()[..n]);
        self.site_named[index].store(true, Ordering::Release);
    }

    /// The sites a systematic rule failed: (index, round, name).
    fn failed_sites(&self) -> impl Iterator<Item = (usize, u32, &str)> {
        self.counts.systematic.done().enumerate().filter_map(move |(i, (_, round))| {
            if !self.site_named[i].load(Ordering::Acquire) {
                return None;
            }
            // SAFETY: written before site_named was set, never again.
            let entry = unsafe { &(*self.site_names.get())[i] };
            let len = entry.iter().position(|&b| b == 0).unwrap_or(SITE_NAME);
            Some((i, round, core::str::from_utf8(&entry[..len]).unwrap_or("?")))
        })
    }

    /// Marks what came back of `round` on the site failed in it, if any.
    fn end_of_round(&self, round: u32, load: LoadOutcome, leaked: Option<(u64, u64)>) {
        for (i, (_, r)) in self.counts.systematic.done().enumerate() {
            if r == round {
                self.site_load[i].store(load as u8, Ordering::Relaxed);
                let (n, bytes) = leaked.unwrap_or((u64::MAX, u64::MAX));
                self.site_leaked[i].store(n, Ordering::Relaxed);
                self.site_leaked_bytes[i].store(bytes, Ordering::Relaxed);
            }
        }
    }

    pub fn rule(&self) -> &Rule<'static> {
        &self.rule
    }

    pub fn value(&self) -> u64 {
        self.value
    }

    fn text(&self) -> &str {
        core::str::from_utf8(&self.text[..self.len]).unwrap_or("?")
    }
}

pub struct FaultTable {
    /// The systematic rules' shared round: one site fails per round
    /// between all of them (hp_core::fault::Round).
    round_taken: AtomicU32,
    round: AtomicU32,
    /// How the current round's load is going (`LoadOutcome`).
    load: AtomicU8,
    slots: [AtomicPtr<FaultRule>; MAX_RULES],
    /// Unpublished by `clear`, freed by `reap` after a grace period. Only
    /// touched under hp_lock.
    retired: UnsafeCell<[*mut FaultRule; MAX_RULES]>,
}

// SAFETY: `retired` is used under hp_lock only (see its comment); the
// rest is atomics, and a rule is read-only once published.
unsafe impl Sync for FaultTable {}

impl FaultTable {
    pub fn new() -> FaultTable {
        FaultTable {
            round_taken: AtomicU32::new(0),
            round: AtomicU32::new(0),
            load: AtomicU8::new(LoadOutcome::NotALoad as u8),
            slots: Default::default(),
            retired: UnsafeCell::new([null_mut(); MAX_RULES]),
        }
    }

    /// The rule in `slot`, for a reader inside an RCU read-side section
    /// (or under hp_lock).
    pub fn rule(&self, slot: usize) -> Option<&FaultRule> {
        // SAFETY: a published rule stays allocated until a grace period
        // after it is unpublished, longer than the caller's section.
        unsafe { self.slots[slot].load(Ordering::Acquire).as_ref() }
    }

    fn rules(&self) -> impl Iterator<Item = (usize, &FaultRule)> {
        (0..MAX_RULES).filter_map(|slot| Some((slot, self.rule(slot)?)))
    }

    /// The slots (as a mask) of the rules that select a call of `function`
    /// at `site` (`function+offset`).
    pub fn mask_for(&self, function: &str, site: Option<(&str, u32)>) -> u8 {
        self.rules()
            .filter(|(_, r)| r.rule.selects(function, site))
            .fold(0, |mask, (slot, _)| mask | 1 << slot)
    }

    /// The failure value of the first rule of `mask` that fails this call,
    /// with its slot; counts every rule consulted. `facts` is filled in by
    /// `task` only for a rule that filters by task.
    /// The task and whether the module is in its init are asked only of a
    /// rule that filters on them: each is a call into C.
    pub fn decide(
        &self,
        mask: u8,
        facts: CallFacts<'_>,
        task: impl Fn() -> (u32, [u8; 16]),
        in_init: impl Fn() -> bool,
        site: u64,
    ) -> Option<(u64, usize)> {
        let mut known_task: Option<(u32, [u8; 16])> = None;
        let mut known_init: Option<bool> = None;
        let round = Round { taken: &self.round_taken, number: self.round.load(Ordering::Relaxed) };
        let facts = CallFacts { round: Some(round), ..facts };
        for slot in (0..MAX_RULES).filter(|s| mask & 1 << s != 0) {
            let Some(rule) = self.rule(slot) else { continue };
            if rule.rule.needs_task() && known_task.is_none() {
                known_task = Some(task());
            }
            if rule.rule.in_init && known_init.is_none() {
                known_init = Some(in_init());
            }
            let comm = match &known_task {
                Some((_, c)) => core::str::from_utf8(&c[..c.iter().position(|&b| b == 0).unwrap_or(c.len())]).unwrap_or(""),
                None => "",
            };
            let pid = known_task.as_ref().map_or(0, |(p, _)| *p);
            let facts = CallFacts { pid, comm, in_init: known_init.unwrap_or(false), ..facts };
            // SAFETY: a per-CPU generator, any context; only for percent=.
            let random = if rule.rule.percent.is_some() { unsafe { ffi::hp_c_random_u32() } } else { 0 };
            if rule.rule.decide(&rule.counts, &facts, random) == Decision::Fail {
                if rule.rule.systematic {
                    rule.name_site(facts.site_key, site);
                }
                return Some((rule.value, slot));
            }
        }
        None
    }
}

impl Drop for FaultTable {
    /// Only once no session uses the table (shared.rs), so no reader is inside.
    fn drop(&mut self) {
        for slot in &self.slots {
            free_rule(slot.swap(null_mut(), Ordering::Relaxed));
        }
        for &rule in self.retired.get_mut().iter() {
            free_rule(rule);
        }
    }
}

fn free_rule(rule: *mut FaultRule) {
    if !rule.is_null() {
        // SAFETY: every rule pointer came from try_box and is freed once:
        // it is in a slot or in `retired`, never both.
        drop(unsafe { alloc::boxed::Box::from_raw(rule) });
    }
}

/// How a function fails, or why it cannot: the catalogue says it for its
/// own; for any other callee, the rule's `returns=` (hpctl fills it in from
/// BTF), else its prototype is unknown.
fn how_it_fails(rule: &Rule<'_>) -> Result<u64, CannotFail> {
    let (returns, is_free) = match MEMORY.iter().find(|f| f.name == rule.function) {
        Some(entry) => catalogue_returns(entry),
        None => (rule.returns.unwrap_or(Returns::Unknown), false),
    };
    failure_value(rule, returns, is_free)
}

/// Adds the rule in `text` to the table and arms it on every site it
/// selects in `sessions`. Returns 0, or -EINVAL (the reason is logged, and
/// so reaches the reply) with nothing changed, or -ENOSPC, -ENOMEM.
///
/// # Safety
/// Under hp_lock. `t` came from `hp_shared_new`; `text` is valid for `len`
/// bytes; `sessions` holds `n` pointers, each null or a live session of
/// the target.
#[no_mangle]
pub unsafe extern "C" fn hp_faults_add(
    t: *const Shared,
    target: *const c_char,
    text: *const u8,
    len: usize,
    sessions: *const *const Session,
    n: usize,
) -> i32 {
    let table = &unsafe { &*t }.faults;
    let target = unsafe { CStr::from_ptr(target) }.to_str().unwrap_or("?");
    let given = unsafe { core::slice::from_raw_parts(text, len) };
    let sessions = unsafe { core::slice::from_raw_parts(sessions, n) };
    let sessions = || sessions.iter().filter(|s| !s.is_null()).map(|&s| unsafe { &*s });

    let Some(slot) = (0..MAX_RULES).find(|&s| table.rule(s).is_none()) else {
        error!("{target}: already {MAX_RULES} fault rules: clear them first");
        return -ffi::ENOSPC;
    };
    if given.len() >= MAX_RULE_TEXT {
        error!("{target}: a fault rule is at most {} bytes", MAX_RULE_TEXT - 1);
        return -ffi::EINVAL;
    }
    let Ok(words) = core::str::from_utf8(given) else { return -ffi::EINVAL };
    let rule = match Rule::parse(words.split(' ').filter(|w| !w.is_empty())) {
        Ok(rule) => rule,
        Err(e) => {
            error!("{target}: fault rule: {e}");
            return -ffi::EINVAL;
        }
    };
    let value = match how_it_fails(&rule) {
        Ok(value) => value,
        Err(why) => {
            error!("{target}: cannot fail {}: {why}", rule.function);
            return -ffi::EINVAL;
        }
    };
    let attached = sessions().next().is_some();
    if attached && !sessions().any(|s| s.function_names().any(|f| f == rule.function)) {
        error!("{target}: cannot fail {}: {target} has no intercepted call to it (attach with fn={})", rule.function, rule.function);
        return -ffi::EINVAL;
    }
    // A callee attached without a SPEC (or any callee on i386) is jumped
    // into: its result never passes through us, so there is no call to
    // replace with a value.
    let jumped_into = sessions().any(|s| {
        s.sites().iter().any(|site| s.function_name(site.func()) == rule.function && site.is_jump_through())
    });
    if jumped_into {
        error!("{target}: cannot fail {}: it is jumped into (attached without a SPEC, or on i386), so its result never passes through hp_patcher", rule.function);
        return -ffi::EINVAL;
    }
    // Built in place: the rule is too large for a kernel stack frame.
    // SAFETY: FaultRule is not zero-sized; all-zero bytes are a valid
    // `text`, `len`, `value` and `counts`, and `rule` is written before use.
    let raw = unsafe { alloc::alloc::alloc_zeroed(Layout::new::<FaultRule>()) }.cast::<FaultRule>();
    if raw.is_null() {
        error!("{target}: out of memory for a fault rule");
        return -ffi::ENOMEM;
    }
    unsafe { core::ptr::addr_of_mut!((*raw).rule).write(Rule::default()) };
    // SAFETY: raw is fresh and ours; the Rule borrows its own text, which
    // lives (and never moves) as long as the rule.
    let stored = unsafe { &mut *raw };
    stored.text[..given.len()].copy_from_slice(given);
    stored.len = given.len();
    stored.value = value;
    let text: &'static str = unsafe { &*(core::str::from_utf8_unchecked(&stored.text[..stored.len]) as *const str) };
    stored.rule = Rule::parse(text.split(' ').filter(|w| !w.is_empty())).unwrap_or_default();
    table.slots[slot].store(raw, Ordering::Release);
    for session in sessions() {
        session.arm_faults(table);
    }
    0
}

/// Unpublishes every rule and disarms every site of `sessions`; the rules
/// stay allocated until `hp_faults_reap`, which C calls after a grace
/// period. Returns how many there were.
///
/// # Safety
/// Under hp_lock; as for `hp_faults_add`.
#[no_mangle]
pub unsafe extern "C" fn hp_faults_clear(t: *const Shared, sessions: *const *const Session, n: usize) -> u32 {
    let table = &unsafe { &*t }.faults;
    let sessions = unsafe { core::slice::from_raw_parts(sessions, n) };
    for &s in sessions.iter().filter(|s| !s.is_null()) {
        unsafe { &*s }.disarm_faults();
    }
    // SAFETY: under hp_lock (the contract).
    let retired = unsafe { &mut *table.retired.get() };
    let mut count = 0;
    for (slot, old) in table.slots.iter().zip(retired.iter_mut()) {
        let rule = slot.swap(null_mut(), Ordering::AcqRel);
        if !rule.is_null() {
            free_rule(core::mem::replace(old, rule));
            count += 1;
        }
    }
    count
}

/// Ends the round of every systematic rule: the next site may fail. At
/// `fail <module> next`, and at each new load of a followed target.
///
/// # Safety
/// Under hp_lock; `t` is live.
#[no_mangle]
pub unsafe extern "C" fn hp_faults_next_round(t: *const Shared, is_load: bool) {
    let table = &unsafe { &*t }.faults;
    let load = if is_load { LoadOutcome::InInit } else { LoadOutcome::NotALoad };
    table.load.store(load as u8, Ordering::Relaxed);
    table.round.fetch_add(1, Ordering::Relaxed);
    table.round_taken.store(0, Ordering::Release);
}

/// A followed target's LIVE (`going` false) or GOING (true): what came
/// back of this load's round, kept with the site it failed, and at GOING
/// what the load left allocated (a true leak count, with leak checking).
///
/// # Safety
/// Under hp_lock, from the module notifier; `t` is live.
#[no_mangle]
pub unsafe extern "C" fn hp_faults_load_event(t: *const Shared, going: bool) {
    let shared = unsafe { &*t };
    let table = &shared.faults;
    let now = LoadOutcome::from_u8(table.load.load(Ordering::Relaxed));
    let load = if going { now.at_going() } else { now.at_live() };
    table.load.store(load as u8, Ordering::Relaxed);
    let leaked = if going { shared.leaks.as_ref().map(|l| l.totals()) } else { None };
    let round = table.round.load(Ordering::Relaxed);
    for (_, rule) in table.rules().filter(|(_, r)| r.rule.systematic) {
        rule.end_of_round(round, load, leaked);
    }
}

/// Frees the rules `clear` unpublished: a grace period after it.
///
/// # Safety
/// Under hp_lock, after synchronize_rcu() following `hp_faults_clear`.
#[no_mangle]
pub unsafe extern "C" fn hp_faults_reap(t: *const Shared) {
    let retired = unsafe { &mut *(*t).faults.retired.get() };
    for rule in retired.iter_mut() {
        free_rule(core::mem::replace(rule, null_mut()));
    }
}

/// A `fault` line per rule (its words, counts and value), then a
/// `fault-site` line per site where calls were failed.
///
/// # Safety
/// Under hp_lock; `r` came from `hp_reply_new`; `t` is a live table;
/// `target` is NUL-terminated; `sessions` holds `n` pointers, each null or
/// a live session of the target.
#[no_mangle]
pub unsafe extern "C" fn hp_reply_faults(
    r: *mut Reply,
    t: *const Shared,
    target: *const c_char,
    sessions: *const *const Session,
    n: usize,
) {
    let (r, table) = unsafe { (&mut *r, &(*t).faults) };
    let target = unsafe { CStr::from_ptr(target) }.to_str().unwrap_or("?");
    for (slot, rule) in table.rules() {
        let c = &rule.counts;
        let _ = write!(
            r,
            "fault module={target} rule={slot} matched={} failed={} spared={} value={} text=",
            c.matched.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.spared.load(Ordering::Relaxed),
            rule.value as i64,
        );
        // The rule's words joined by commas: one key=value field of the record.
        for (k, word) in rule.text().split(' ').filter(|w| !w.is_empty()).enumerate() {
            let _ = write!(r, "{}{word}", if k == 0 { "" } else { "," });
        }
        let _ = writeln!(r);
    }
    let current = table.round.load(Ordering::Relaxed);
    for (slot, rule) in table.rules().filter(|(_, r)| r.rule.systematic) {
        for (i, round, caller) in rule.failed_sites() {
            // The round in progress has no end yet: how its load goes so far.
            let load = match rule.site_load[i].load(Ordering::Relaxed) {
                0 if round == current => LoadOutcome::from_u8(table.load.load(Ordering::Relaxed)),
                v => LoadOutcome::from_u8(v),
            };
            let _ = write!(r, "systematic-site module={target} rule={slot} round={round} caller={caller} load={}", load.word());
            // At a load's end (GOING), with leak checking: what it left.
            let leaked = rule.site_leaked[i].load(Ordering::Relaxed);
            if matches!(load, LoadOutcome::InitFailed | LoadOutcome::Unloaded) && leaked != u64::MAX {
                let bytes = rule.site_leaked_bytes[i].load(Ordering::Relaxed);
                let _ = write!(r, " leaked={leaked} leaked_bytes={bytes}");
            }
            let _ = writeln!(r);
        }
    }
    let sessions = unsafe { core::slice::from_raw_parts(sessions, n) };
    for s in sessions.iter().filter(|s| !s.is_null()).map(|&s| unsafe { &*s }) {
        for site in s.sites().iter().filter(|site| site.failed.load(Ordering::Relaxed) != 0) {
            let _ = writeln!(
                r,
                "fault-site module={target} caller={} callee={} failed={}",
                CFormatted { value: site.addr(), format: ffi::hp_c_format_symbol },
                s.function_name(site.func()),
                site.failed.load(Ordering::Relaxed)
            );
        }
    }
}

impl Session {
    /// Sets every site's mask from the table's rules. Under hp_lock.
    pub(crate) fn arm_faults(&self, table: &FaultTable) {
        if table.rules().next().is_none() {
            return; // every mask is 0 already
        }
        for site in self.sites() {
            let (name, key) = site_identity(site.addr());
            site.key.store(key, Ordering::Relaxed);
            let at = split_site(name.as_str());
            site.fault_mask.store(table.mask_for(self.function_name(site.func()), at), Ordering::Release);
        }
    }

    /// No rule applies to any site any more. Under hp_lock.
    pub(crate) fn disarm_faults(&self) {
        for site in self.sites() {
            site.fault_mask.store(0, Ordering::Relaxed);
        }
    }
}

/// `function+0xoff/0xsize` -> (function, off).
fn split_site(name: &str) -> Option<(&str, u32)> {
    let (function, rest) = name.split_once('+')?;
    let offset = rest.split('/').next()?.strip_prefix("0x")?;
    Some((function, u32::from_str_radix(offset, 16).ok()?))
}

/// A site's name as kallsyms gives it (`function+0xoff/0xsize`), and its
/// key for systematic rules (0 when it has no name). Out of line: its
/// buffer would otherwise land in hp_plan's frame.
#[inline(never)]
pub fn site_identity(addr: u64) -> (SiteName, u64) {
    let mut buf = [0u8; 64];
    // SAFETY: buf is writable for its length; the formatter writes at most
    // len-1 bytes and returns how many.
    let len = unsafe { ffi::hp_c_format_symbol(addr as usize, buf.as_mut_ptr().cast(), buf.len() as u32) } as usize;
    let text = core::str::from_utf8(&buf[..len.min(buf.len())]).unwrap_or("");
    let mut name = SiteName::default();
    let _ = name.write_str(text);
    let key = split_site(text).map_or(0, |(f, off)| site_key(f, off));
    (name, key)
}

fn current_task() -> (u32, [u8; 16]) {
    let (mut pid, mut comm) = (0u32, [0u8; 16]);
    // SAFETY: both are writable; comm has the 16 bytes C fills.
    unsafe { ffi::hp_c_current_task(&mut pid, comm.as_mut_ptr()) };
    (pid, comm)
}

impl SiteRecord {
    /// The value a fault rule makes this call return instead of running,
    /// or None: run it. Runs in the target's context, only for a site some
    /// rule selects: no lock but RCU's read side, no allocation. Out of
    /// line: a rule's counters are shared, and the hot-path check
    /// (xtask/src/hot_path.rs) reads the hooks without it.
    #[inline(never)]
    pub(crate) fn injected_failure(&self, args: &RegisterArgs) -> Option<u64> {
        let session = self.session();
        // SAFETY: the session holds a reference on what it shares.
        let table = &unsafe { session.shared.as_ref() }?.faults;
        let function = self.function();
        let facts = CallFacts {
            site_key: self.key.load(Ordering::Relaxed),
            size: self.size_arg.map(|k| args[usize::from(k)]),
            gfp: self.gfp_arg.map(|k| args[usize::from(k)]),
            ..CallFacts::default()
        };
        // SAFETY: the module outlives every session of it.
        let in_init = || session.init_text || unsafe { ffi::hp_c_module_coming(session.module) };
        // SAFETY: a read-side section around the reads of the mask and the
        // rules, which `clear` frees only a grace period after unpublishing.
        unsafe { ffi::hp_c_rcu_read_lock() };
        let decided = table.decide(self.fault_mask.load(Ordering::Relaxed), facts, current_task, in_init, self.addr());
        unsafe { ffi::hp_c_rcu_read_unlock() };
        let (value, slot) = decided?;
        self.failed.fetch_add(1, Ordering::Relaxed);

        // SAFETY: both names are NUL-terminated and live as long as the session.
        unsafe {
            ffi::hp_c_trace_fault(session.target.as_c_ptr().cast(), function.c_name(), self.addr() as usize, slot as u32, value as isize)
        };
        Some(value)
    }
}
