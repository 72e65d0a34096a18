//! Fault rules: which calls of a watched module fail, and when.
//!
//! A rule is the words after `fail <module>` on the control device:
//!
//! ```text
//! fn=<name> [site=<function>+0x<off>] [every=N] [percent=P] [after=K]
//!           [times=T] [min_size=S] [gfp=0x<mask>] [pid=N] [comm=<name>]
//!           [init] [errno=E] [err_ptr]
//! ```
//!
//! Every condition given must hold (they combine with `and`). `every`,
//! `after` and `times` count the calls that pass the other filters. This
//! file holds the grammar and the decision, both pure; whether the kernel
//! can return a failure from `fn` (its return type) is judged by
//! [`failure_value`], from what BTF or the catalogue say of it.
//!
//! The decision on the hot path ([`Rule::decide`]) takes no lock and
//! allocates nothing: its counters are atomics, and its random number comes
//! from the caller (a per-CPU generator in the module).

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::catalogue::{Function, Kind};
use crate::proto::is_symbol_name;

/// `__GFP_NOFAIL`: the kernel promises such an allocation cannot fail, so
/// no rule fails it (its value has been 0x8000 since 6.0 on every arch).
pub const GFP_NOFAIL: u64 = 0x8000;

/// The longest `comm` (TASK_COMM_LEN less its NUL).
pub const MAX_COMM: usize = 15;

/// The errno a rule returns when it names none.
pub const DEFAULT_ERRNO: u16 = 12; // ENOMEM

/// The largest errno the kernel's error pointers can carry (MAX_ERRNO).
pub const MAX_ERRNO: u16 = 4095;

/// One parsed rule. Borrowed from the command line; the module copies what
/// it keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule<'a> {
    pub function: &'a str,
    /// `function+offset` of one call site, or every site of `function`.
    pub site: Option<(&'a str, u32)>,
    /// Fail one call in every N (counted after `after`).
    pub every: Option<u32>,
    /// Fail with this probability, in percent (1..=100).
    pub percent: Option<u8>,
    /// Let this many matching calls through first.
    pub after: u32,
    /// Fail at most this many calls.
    pub times: Option<u32>,
    /// Only calls whose size argument is at least this.
    pub min_size: Option<u64>,
    /// Only calls whose gfp argument has one of these bits.
    pub gfp_mask: Option<u64>,
    pub pid: Option<u32>,
    pub comm: Option<&'a str>,
    /// Only while the module runs its init.
    pub in_init: bool,
    /// The errno returned: as `-errno` from an `int` function, as
    /// `ERR_PTR(-errno)` with `err_ptr`.
    pub errno: Option<u16>,
    /// The function fails with `ERR_PTR(-errno)`, not NULL.
    pub err_ptr: bool,
    /// Fails each site it selects once, the first time it is reached, one
    /// site per round (see [`Systematic`]).
    pub systematic: bool,
    /// What `function` returns, for one outside the catalogue: hpctl says
    /// it from BTF (`returns=int|ptr|void|struct|unsigned`).
    pub returns: Option<Returns>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleError<'a> {
    MissingFunction,
    BadFunction(&'a str),
    BadSite(&'a str),
    BadNumber(&'a str),
    BadPercent(&'a str),
    BadComm(&'a str),
    BadErrno(&'a str),
    /// An argument no rule takes, or one given twice.
    Unexpected(&'a str),
    /// `every=0` or `times=0`: a rule that could never fire.
    NeverFires(&'a str),
    /// `systematic` with `every`, `percent`, `after` or `times`.
    SystematicAlone,
    BadReturns(&'a str),
}

impl fmt::Display for RuleError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleError::MissingFunction => write!(f, "a rule needs fn=<name>"),
            RuleError::BadFunction(n) => write!(f, "'{n}' is not a function name"),
            RuleError::BadSite(s) => write!(f, "'{s}' is not a site (function+0xoffset)"),
            RuleError::BadNumber(n) => write!(f, "'{n}' is not a decimal number, or is too large"),
            RuleError::BadPercent(p) => write!(f, "'{p}' is not a percentage from 1 to 100"),
            RuleError::BadComm(c) => write!(f, "'{c}' is not a task name (1 to {MAX_COMM} printable bytes)"),
            RuleError::BadErrno(e) => write!(f, "'{e}' is not an errno from 1 to {MAX_ERRNO}"),
            RuleError::Unexpected(a) => write!(f, "unexpected or repeated argument '{a}'"),
            RuleError::NeverFires(a) => write!(f, "'{a}': this rule would never fail a call"),
            RuleError::BadReturns(r) => write!(f, "'{r}' is not a return kind (int, ptr, void, struct, unsigned)"),
            RuleError::SystematicAlone => {
                write!(f, "systematic chooses the calls itself: it takes no every, percent, after or times")
            }
        }
    }
}

impl<'a> Rule<'a> {
    /// Parses a rule from its words (already split on spaces).
    pub fn parse(words: impl IntoIterator<Item = &'a str>) -> Result<Rule<'a>, RuleError<'a>> {
        let mut rule = Rule::default();
        let mut seen: u32 = 0;
        for word in words {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            let bit = 1 << KEYS.iter().position(|k| *k == key).ok_or(RuleError::Unexpected(word))?;
            if seen & bit != 0 {
                return Err(RuleError::Unexpected(word));
            }
            seen |= bit;
            let flag = matches!(key, "init" | "err_ptr" | "systematic");
            if flag != value.is_empty() || (flag && word.contains('=')) {
                return Err(RuleError::Unexpected(word));
            }
            match key {
                "fn" if is_symbol_name(value) => rule.function = value,
                "fn" => return Err(RuleError::BadFunction(value)),
                "site" => rule.site = Some(site(value)?),
                "every" => rule.every = Some(positive(value, word)?),
                "percent" => rule.percent = Some(percent(value)?),
                "after" => rule.after = decimal(value)? as u32,
                "times" => rule.times = Some(positive(value, word)?),
                "min_size" => rule.min_size = Some(decimal(value)?),
                "gfp" => rule.gfp_mask = Some(hex(value).filter(|&m| m != 0).ok_or(RuleError::BadNumber(value))?),
                "pid" => rule.pid = Some(decimal(value)? as u32),
                "comm" => rule.comm = Some(comm(value)?),
                "init" => rule.in_init = true,
                "errno" => rule.errno = Some(errno(value)?),
                "err_ptr" => rule.err_ptr = true,
                "systematic" => rule.systematic = true,
                "returns" => rule.returns = Some(Returns::from_word(value).ok_or(RuleError::BadReturns(value))?),
                _ => unreachable!("every key of KEYS has an arm"),
            }
        }
        if rule.function.is_empty() {
            return Err(RuleError::MissingFunction);
        }
        let counted = rule.every.is_some() || rule.percent.is_some() || rule.after != 0 || rule.times.is_some();
        if rule.systematic && counted {
            return Err(RuleError::SystematicAlone);
        }
        Ok(rule)
    }

    /// The errno this rule returns.
    pub fn errno(&self) -> u16 {
        self.errno.unwrap_or(DEFAULT_ERRNO)
    }

    /// Whether a call with these facts fails, and counts it when it matches
    /// the filters. `random` is a fresh 32-bit random number.
    pub fn decide(&self, counts: &RuleCounts, call: &CallFacts<'_>, random: u32) -> Decision {
        if !self.matches(call) {
            return Decision::Run;
        }
        let n = counts.matched.fetch_add(1, Ordering::Relaxed) + 1;
        if self.systematic {
            if call.gfp.is_some_and(|g| g & GFP_NOFAIL != 0) {
                counts.spared.fetch_add(1, Ordering::Relaxed);
                return Decision::Spared;
            }
            return match counts.systematic.take(call.site_key, call.round) {
                Some(_) => {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    Decision::Fail
                }
                None => Decision::Run,
            };
        }
        if n <= u64::from(self.after) {
            return Decision::Run;
        }
        if let Some(every) = self.every {
            if !(n - u64::from(self.after)).is_multiple_of(u64::from(every)) {
                return Decision::Run;
            }
        }
        if let Some(percent) = self.percent {
            // Uniform enough: 2^32 / 100 leaves a bias below 1e-7.
            if random % 100 >= u32::from(percent) {
                return Decision::Run;
            }
        }
        if call.gfp.is_some_and(|g| g & GFP_NOFAIL != 0) {
            counts.spared.fetch_add(1, Ordering::Relaxed);
            return Decision::Spared;
        }
        let limit = self.times.map_or(u64::MAX, u64::from);
        let granted = counts
            .failed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| (f < limit).then_some(f + 1))
            .is_ok();
        if granted {
            Decision::Fail
        } else {
            Decision::Run
        }
    }

    /// Whether the rule applies to a call of `function` at `site`
    /// (`function+offset` of the call, when known): fixed for a site, so
    /// the module works it out once per site, not per call.
    pub fn selects(&self, function: &str, site: Option<(&str, u32)>) -> bool {
        self.function == function && self.site.is_none_or(|s| site == Some(s))
    }

    /// Whether the rule needs the calling task's pid or name.
    pub fn needs_task(&self) -> bool {
        self.pid.is_some() || self.comm.is_some()
    }

    /// The call-time filters; [`Rule::selects`] has already chosen the site.
    fn matches(&self, call: &CallFacts<'_>) -> bool {
        let size_ok = self.min_size.is_none_or(|min| call.size.is_some_and(|s| s >= min));
        let gfp_ok = self.gfp_mask.is_none_or(|m| call.gfp.is_some_and(|g| g & m != 0));
        let pid_ok = self.pid.is_none_or(|p| call.pid == p);
        let comm_ok = self.comm.is_none_or(|c| call.comm == c);
        size_ok && gfp_ok && pid_ok && comm_ok && (!self.in_init || call.in_init)
    }
}

/// The words a rule takes, in the order Display writes them.
const KEYS: &[&str] = &[
    "fn", "site", "every", "percent", "after", "times", "min_size", "gfp", "pid", "comm", "init", "errno", "err_ptr",
    "systematic", "returns",
];

impl fmt::Display for Rule<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fn={}", self.function)?;
        if let Some((func, off)) = self.site {
            write!(f, " site={func}+{off:#x}")?;
        }
        if let Some(n) = self.every {
            write!(f, " every={n}")?;
        }
        if let Some(p) = self.percent {
            write!(f, " percent={p}")?;
        }
        if self.after != 0 {
            write!(f, " after={}", self.after)?;
        }
        if let Some(t) = self.times {
            write!(f, " times={t}")?;
        }
        if let Some(s) = self.min_size {
            write!(f, " min_size={s}")?;
        }
        if let Some(m) = self.gfp_mask {
            write!(f, " gfp={m:#x}")?;
        }
        if let Some(p) = self.pid {
            write!(f, " pid={p}")?;
        }
        if let Some(c) = self.comm {
            write!(f, " comm={c}")?;
        }
        if self.in_init {
            write!(f, " init")?;
        }
        if let Some(e) = self.errno {
            write!(f, " errno={e}")?;
        }
        if self.err_ptr {
            write!(f, " err_ptr")?;
        }
        if self.systematic {
            write!(f, " systematic")?;
        }
        if let Some(r) = self.returns {
            write!(f, " returns={}", r.word())?;
        }
        Ok(())
    }
}

/// What one call offers the filters.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallFacts<'a> {
    /// The call site's identity across loads of the module ([`site_key`]).
    pub site_key: u64,
    /// The module's shared systematic round, if its rules share one.
    pub round: Option<Round<'a>>,
    /// The size argument, when the function has one.
    pub size: Option<u64>,
    /// The gfp argument, when the function has one.
    pub gfp: Option<u64>,
    pub pid: u32,
    pub comm: &'a str,
    pub in_init: bool,
}

/// A rule's counters, shared by every CPU: atomics, no lock. All-zero
/// bytes are a valid value (the module allocates it zeroed).
#[derive(Debug, Default)]
pub struct RuleCounts {
    /// Calls that passed the filters.
    pub matched: AtomicU64,
    /// Calls failed.
    pub failed: AtomicU64,
    /// Calls the rule chose that carried __GFP_NOFAIL, and ran.
    pub spared: AtomicU64,
    pub systematic: Systematic,
}

/// A round shared by several systematic rules: its token (set by the one
/// failure the round allows) and its number.
#[derive(Clone, Copy, Debug)]
pub struct Round<'a> {
    pub taken: &'a AtomicU32,
    pub number: u32,
}

/// Sites a systematic rule remembers; the next ones it reaches run.
/// How a followed module's load went, for the systematic round it was: so
/// each failed site's report says what came back of its failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum LoadOutcome {
    /// Not a load: a round of a live module, ended by `fail next`.
    NotALoad = 0,
    /// Its init is running.
    InInit = 1,
    /// Its init returned 0: it went live.
    Loaded = 2,
    /// It went away before going live: its init failed (cleanly: we are
    /// still here to say it).
    InitFailed = 3,
    /// It went live, and was unloaded since.
    Unloaded = 4,
}

impl LoadOutcome {
    pub fn from_u8(v: u8) -> LoadOutcome {
        match v {
            1 => LoadOutcome::InInit,
            2 => LoadOutcome::Loaded,
            3 => LoadOutcome::InitFailed,
            4 => LoadOutcome::Unloaded,
            _ => LoadOutcome::NotALoad,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            LoadOutcome::NotALoad => "-",
            LoadOutcome::InInit => "in_init",
            LoadOutcome::Loaded => "loaded",
            LoadOutcome::InitFailed => "init_failed",
            LoadOutcome::Unloaded => "unloaded",
        }
    }

    /// At the module's LIVE notification.
    pub fn at_live(self) -> LoadOutcome {
        match self {
            LoadOutcome::InInit => LoadOutcome::Loaded,
            other => other,
        }
    }

    /// At its GOING notification.
    pub fn at_going(self) -> LoadOutcome {
        match self {
            LoadOutcome::InInit => LoadOutcome::InitFailed,
            LoadOutcome::Loaded => LoadOutcome::Unloaded,
            other => other,
        }
    }
}

pub const MAX_SYSTEMATIC_SITES: usize = 128;

/// A call site's identity across loads of its module: its function's name
/// and its offset in it (FNV-1a), never 0.
pub fn site_key(function: &str, offset: u32) -> u64 {
    let bytes = function.bytes().chain(offset.to_le_bytes());
    let hash = bytes.fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    hash.max(1)
}

/// A systematic rule's memory: which sites it failed, in which round. Each
/// site fails once; each round fails at most one site. A round ends when
/// the user says so (`fail <module> next`), or at each new load of a
/// followed module, so that every load takes another error path.
#[derive(Debug)]
pub struct Systematic {
    keys: [AtomicU64; MAX_SYSTEMATIC_SITES],
    rounds: [AtomicU32; MAX_SYSTEMATIC_SITES],
    len: AtomicU32,
    round: AtomicU32,
    /// The current round has failed its site.
    taken: AtomicU32,
}

impl Default for Systematic {
    fn default() -> Systematic {
        Systematic {
            keys: core::array::from_fn(|_| AtomicU64::new(0)),
            rounds: core::array::from_fn(|_| AtomicU32::new(0)),
            len: AtomicU32::new(0),
            round: AtomicU32::new(0),
            taken: AtomicU32::new(0),
        }
    }
}

impl Systematic {
    /// Claims this call for failure: its site was not failed yet, and no
    /// other site was this round. `shared`: a round token and number that
    /// several rules share (a module's systematic rules take one site per
    /// round between them); None: the rule's own. Returns the site's index
    /// in the list.
    pub fn take(&self, key: u64, shared: Option<Round<'_>>) -> Option<usize> {
        let len = (self.len.load(Ordering::Acquire) as usize).min(MAX_SYSTEMATIC_SITES);
        if key == 0 || self.keys[..len].iter().any(|k| k.load(Ordering::Relaxed) == key) {
            return None;
        }
        let (token, round) = match shared {
            Some(r) => (r.taken, r.number),
            None => (&self.taken, self.round.load(Ordering::Relaxed)),
        };
        if token.swap(1, Ordering::AcqRel) != 0 {
            return None;
        }
        let index = self.len.load(Ordering::Relaxed) as usize;
        if index >= MAX_SYSTEMATIC_SITES {
            return None; // every slot used: the rest run
        }
        self.keys[index].store(key, Ordering::Relaxed);
        self.rounds[index].store(round, Ordering::Relaxed);
        // Only the round's winner appends, so the index is its own.
        self.len.store(index as u32 + 1, Ordering::Release);
        Some(index)
    }

    /// Lets the next site fail.
    pub fn next_round(&self) {
        self.round.fetch_add(1, Ordering::Relaxed);
        self.taken.store(0, Ordering::Release);
    }

    pub fn round(&self) -> u32 {
        self.round.load(Ordering::Relaxed)
    }

    /// The sites failed so far: (key, round).
    pub fn done(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        let len = (self.len.load(Ordering::Acquire) as usize).min(MAX_SYSTEMATIC_SITES);
        (0..len).map(|i| (self.keys[i].load(Ordering::Relaxed), self.rounds[i].load(Ordering::Relaxed)))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Make the real call.
    Run,
    /// Return the failure value instead.
    Fail,
    /// Chosen, but __GFP_NOFAIL: make the real call.
    Spared,
}

/// What a function returns, as far as failing it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Returns {
    /// A pointer that is NULL on failure (the allocators, kstrdup, kmemdup).
    NullablePointer,
    /// An unsigned integer, a bool or an enum: no errno fits.
    Unsigned,
    /// Some other pointer: fails only as an error pointer, if the user says so.
    Pointer,
    /// An integer that is a negative errno on failure.
    Int,
    Void,
    /// A struct or union by value.
    Aggregate,
    /// No prototype known.
    Unknown,
}

impl Returns {
    /// The words of `returns=`; the catalogue's NULL-failing pointers are
    /// not one of them: only the catalogue knows a function fails with NULL.
    const WORDS: [(&'static str, Returns); 5] = [
        ("int", Returns::Int),
        ("ptr", Returns::Pointer),
        ("void", Returns::Void),
        ("struct", Returns::Aggregate),
        ("unsigned", Returns::Unsigned),
    ];

    pub fn from_word(word: &str) -> Option<Returns> {
        Self::WORDS.iter().find(|(w, _)| *w == word).map(|&(_, r)| r)
    }

    pub fn word(self) -> &'static str {
        Self::WORDS.iter().find(|(_, r)| *r == self).map_or("?", |(w, _)| w)
    }
}

/// Why a rule's failure cannot be returned from its function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CannotFail {
    Void,
    Free,
    Aggregate,
    UnknownPrototype,
    /// A pointer not known to fail with NULL: `err_ptr` must say how.
    PointerNeedsErrPtr,
    /// `err_ptr` on a function that does not return a pointer.
    ErrPtrOnInt,
    /// `err_ptr` on a function known to fail with NULL.
    FailsWithNull,
    Unsigned,
}

impl fmt::Display for CannotFail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CannotFail::Void => "it returns nothing, so a caller cannot see a failure",
            CannotFail::Free => "it frees memory, and a free cannot fail",
            CannotFail::Aggregate => "it returns a struct by value",
            CannotFail::UnknownPrototype => "its prototype is unknown",
            CannotFail::PointerNeedsErrPtr => "it returns a pointer that is not known to fail with NULL: add err_ptr if it fails with ERR_PTR",
            CannotFail::ErrPtrOnInt => "err_ptr given, but it does not return a pointer",
            CannotFail::FailsWithNull => "err_ptr given, but it fails with NULL, never with an error pointer",
            CannotFail::Unsigned => "it returns an unsigned value, a bool or an enum: no errno fits",
        })
    }
}

/// How a catalogue function fails: every one that returns a pointer is an
/// allocator, NULL on failure; the void ones that free cannot fail.
pub fn catalogue_returns(function: &Function) -> (Returns, bool) {
    match function.ret {
        Kind::Ptr => (Returns::NullablePointer, false),
        Kind::Void => (Returns::Void, function.name.contains("free")),
        _ => (Returns::Unknown, false),
    }
}

/// The value a failed call returns, or why there is none. `is_free`: the
/// function releases memory (kfree, vfree, kmem_cache_free...).
pub fn failure_value(rule: &Rule<'_>, returns: Returns, is_free: bool) -> Result<u64, CannotFail> {
    let minus_errno = (-i64::from(rule.errno())) as u64;
    match returns {
        _ if is_free => Err(CannotFail::Free),
        Returns::Void => Err(CannotFail::Void),
        Returns::Aggregate => Err(CannotFail::Aggregate),
        Returns::Unknown => Err(CannotFail::UnknownPrototype),
        Returns::Unsigned => Err(CannotFail::Unsigned),
        Returns::NullablePointer if rule.err_ptr => Err(CannotFail::FailsWithNull),
        Returns::Pointer if rule.err_ptr => Ok(minus_errno),
        Returns::NullablePointer => Ok(0),
        Returns::Pointer => Err(CannotFail::PointerNeedsErrPtr),
        Returns::Int if rule.err_ptr => Err(CannotFail::ErrPtrOnInt),
        Returns::Int => Ok(minus_errno),
    }
}

fn decimal(text: &str) -> Result<u64, RuleError<'_>> {
    let digits = !text.is_empty() && text.len() <= 19 && text.bytes().all(|b| b.is_ascii_digit());
    text.parse::<u64>().ok().filter(|_| digits).ok_or(RuleError::BadNumber(text))
}

fn positive<'a>(text: &'a str, word: &'a str) -> Result<u32, RuleError<'a>> {
    match u32::try_from(decimal(text)?) {
        Ok(0) => Err(RuleError::NeverFires(word)),
        Ok(n) => Ok(n),
        Err(_) => Err(RuleError::BadNumber(text)),
    }
}

fn hex(text: &str) -> Option<u64> {
    let digits = text.strip_prefix("0x")?;
    let ok = !digits.is_empty() && digits.len() <= 16 && digits.bytes().all(|b| b.is_ascii_hexdigit());
    u64::from_str_radix(digits, 16).ok().filter(|_| ok)
}

fn percent(text: &str) -> Result<u8, RuleError<'_>> {
    decimal(text).ok().filter(|p| (1..=100).contains(p)).map(|p| p as u8).ok_or(RuleError::BadPercent(text))
}

fn errno(text: &str) -> Result<u16, RuleError<'_>> {
    decimal(text).ok().filter(|e| (1..=u64::from(MAX_ERRNO)).contains(e)).map(|e| e as u16).ok_or(RuleError::BadErrno(text))
}

fn comm(text: &str) -> Result<&str, RuleError<'_>> {
    let ok = (1..=MAX_COMM).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(text)
    } else {
        Err(RuleError::BadComm(text))
    }
}

fn site(text: &str) -> Result<(&str, u32), RuleError<'_>> {
    let (func, off) = text.split_once('+').ok_or(RuleError::BadSite(text))?;
    let off = hex(off).and_then(|o| u32::try_from(o).ok()).ok_or(RuleError::BadSite(text))?;
    if is_symbol_name(func) {
        Ok((func, off))
    } else {
        Err(RuleError::BadSite(text))
    }
}

#[cfg(test)]
mod load_outcome_tests {
    use super::LoadOutcome::*;

    #[test]
    fn a_load_ends_failed_or_unloaded() {
        assert_eq!(InInit.at_going(), InitFailed);
        assert_eq!(InInit.at_live().at_going(), Unloaded);
        assert_eq!(NotALoad.at_live().at_going(), NotALoad);
        for o in [NotALoad, InInit, Loaded, InitFailed, Unloaded] {
            assert_eq!(super::LoadOutcome::from_u8(o as u8), o);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;
    use std::string::String;
    use std::string::ToString;
    use std::vec::Vec;

    fn parse(line: &str) -> Result<Rule<'_>, RuleError<'_>> {
        Rule::parse(line.split(' ').filter(|w| !w.is_empty()))
    }

    #[test]
    fn a_full_rule_round_trips() {
        let line = "fn=__kmalloc_noprof site=cr_round+0x9d every=10 percent=50 after=3 times=5 min_size=64 \
                    gfp=0x400 pid=7 comm=cr_worker/0 init errno=28 err_ptr";
        let rule = parse(line).unwrap();
        assert_eq!(rule.site, Some(("cr_round", 0x9d)));
        assert_eq!((rule.every, rule.percent, rule.after, rule.times), (Some(10), Some(50), 3, Some(5)));
        assert_eq!(format!("{rule}"), line.split_whitespace().collect::<Vec<_>>().join(" "));
        assert_eq!(parse(&format!("{rule}")), Ok(rule));
    }

    #[test]
    fn malformed_rules_are_refused() {
        for (line, why) in [
            ("", RuleError::MissingFunction),
            ("every=3", RuleError::MissingFunction),
            ("fn=kfree fn=kfree", RuleError::Unexpected("fn=kfree")),
            ("fn=a-b", RuleError::BadFunction("a-b")),
            ("fn=kfree every=0", RuleError::NeverFires("every=0")),
            ("fn=kfree times=0", RuleError::NeverFires("times=0")),
            ("fn=kfree every=-1", RuleError::BadNumber("-1")),
            ("fn=kfree every=4294967296", RuleError::BadNumber("4294967296")),
            ("fn=kfree percent=0", RuleError::BadPercent("0")),
            ("fn=kfree percent=101", RuleError::BadPercent("101")),
            ("fn=kfree site=cr_round", RuleError::BadSite("cr_round")),
            ("fn=kfree site=cr_round+9d", RuleError::BadSite("cr_round+9d")),
            ("fn=kfree gfp=0", RuleError::BadNumber("0")),
            ("fn=kfree gfp=0x0", RuleError::BadNumber("0x0")),
            ("fn=kfree errno=0", RuleError::BadErrno("0")),
            ("fn=kfree errno=4096", RuleError::BadErrno("4096")),
            ("fn=kfree comm=a_name_far_too_long", RuleError::BadComm("a_name_far_too_long")),
            ("fn=kfree init=1", RuleError::Unexpected("init=1")),
            ("fn=kfree every", RuleError::Unexpected("every")),
            ("fn=kfree bogus=1", RuleError::Unexpected("bogus=1")),
        ] {
            assert_eq!(parse(line), Err(why), "{line}");
        }
    }

    fn call() -> CallFacts<'static> {
        CallFacts { site_key: 1, round: None, size: Some(64), gfp: Some(0xcc0), pid: 7, comm: "cr", in_init: false }
    }

    fn run(rule: &Rule<'_>, calls: usize, facts: CallFacts<'_>) -> (Vec<usize>, RuleCounts) {
        let counts = RuleCounts::default();
        let failed = (1..=calls).filter(|_| rule.decide(&counts, &facts, 0) == Decision::Fail).collect::<Vec<_>>();
        (failed, counts)
    }

    #[test]
    fn every_after_and_times_count_matching_calls() {
        let rule = parse("fn=f every=10 after=5 times=3").unwrap();
        let counts = RuleCounts::default();
        let failed: Vec<usize> = (1..=100).filter(|_| rule.decide(&counts, &call(), 0) == Decision::Fail).collect();
        // The 5 first pass; then every 10th of the rest, 3 times.
        assert_eq!(failed, [15, 25, 35]);
        assert_eq!(counts.matched.load(Ordering::Relaxed), 100);
        assert_eq!(counts.failed.load(Ordering::Relaxed), 3);
        assert_eq!(run(&parse("fn=f").unwrap(), 4, call()).0.len(), 4);
    }

    #[test]
    fn filters_combine_with_and() {
        let rule = parse("fn=f min_size=128 gfp=0x20 comm=cr").unwrap();
        assert_eq!(run(&rule, 5, call()).0.len(), 0, "size 64 is below 128");
        let big = CallFacts { size: Some(4096), ..call() };
        assert_eq!(run(&rule, 5, big).0.len(), 0, "gfp 0xcc0 lacks 0x20");
        let atomic = CallFacts { gfp: Some(0x820), ..big };
        assert_eq!(run(&rule, 5, atomic).0.len(), 5);
        let other = CallFacts { comm: "sh", ..atomic };
        let (failed, counts) = run(&rule, 5, other);
        assert_eq!((failed.len(), counts.matched.load(Ordering::Relaxed)), (0, 0), "unmatched calls are not counted");
        let init_only = parse("fn=f init site=cr_round+0x9d").unwrap();
        assert_eq!(run(&init_only, 3, call()).0.len(), 0);
        assert_eq!(run(&init_only, 3, CallFacts { in_init: true, ..call() }).0.len(), 3);
        assert!(init_only.selects("f", Some(("cr_round", 0x9d))));
        assert!(!init_only.selects("f", Some(("cr_round", 0xa0))));
        assert!(!init_only.selects("f", None));
        assert!(!init_only.selects("g", Some(("cr_round", 0x9d))));
        assert!(parse("fn=f").unwrap().selects("f", None));
    }

    #[test]
    fn systematic_fails_each_site_once_one_per_round() {
        let rule = parse("fn=f systematic").unwrap();
        let counts = RuleCounts::default();
        let at = |site: u64| CallFacts { site_key: site, ..call() };
        assert_eq!(rule.decide(&counts, &at(10), 0), Decision::Fail);
        assert_eq!(rule.decide(&counts, &at(10), 0), Decision::Run, "a site fails once");
        assert_eq!(rule.decide(&counts, &at(20), 0), Decision::Run, "one site per round");
        counts.systematic.next_round();
        assert_eq!(rule.decide(&counts, &at(10), 0), Decision::Run);
        assert_eq!(rule.decide(&counts, &at(20), 0), Decision::Fail);
        counts.systematic.next_round();
        assert_eq!(rule.decide(&counts, &at(0), 0), Decision::Run, "a site without a key never fails");
        assert_eq!(counts.systematic.done().collect::<Vec<_>>(), [(10, 0), (20, 1)]);
        assert_eq!(counts.failed.load(Ordering::Relaxed), 2);
        let nofail = CallFacts { gfp: Some(GFP_NOFAIL), ..at(30) };
        assert_eq!(rule.decide(&counts, &nofail, 0), Decision::Spared);
        // Two rules sharing a round fail one site between them.
        let (a, b) = (RuleCounts::default(), RuleCounts::default());
        let taken = AtomicU32::new(0);
        let shared = |site: u64| CallFacts { round: Some(Round { taken: &taken, number: 7 }), ..at(site) };
        assert_eq!(rule.decide(&a, &shared(1), 0), Decision::Fail);
        assert_eq!(rule.decide(&b, &shared(2), 0), Decision::Run);
        assert_eq!(a.systematic.done().collect::<Vec<_>>(), [(1, 7)]);
        assert_eq!(parse("fn=f systematic times=1"), Err(RuleError::SystematicAlone));
        assert_eq!(parse("fn=f systematic=1"), Err(RuleError::Unexpected("systematic=1")));
        assert_ne!(site_key("cr_init", 0x1c), site_key("cr_init", 0x1d));
        assert_ne!(site_key("a", 0), 0);
    }

    /// Many CPUs reach many sites in one round: exactly one call fails.
    #[test]
    fn systematic_rounds_are_exact_under_contention() {
        let rule = parse("fn=f systematic").unwrap();
        let counts = RuleCounts::default();
        for round in 0..20u64 {
            let failed = AtomicU64::new(0);
            std::thread::scope(|s| {
                for t in 0..4u64 {
                    let (rule, counts, failed) = (&rule, &counts, &failed);
                    s.spawn(move || {
                        for site in 1..=30u64 {
                            let facts = CallFacts { site_key: site * 7 + t, ..call() };
                            if rule.decide(counts, &facts, 0) == Decision::Fail {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
            });
            assert_eq!(failed.load(Ordering::Relaxed), 1, "round {round}");
            counts.systematic.next_round();
        }
        let keys: Vec<u64> = counts.systematic.done().map(|(k, _)| k).collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 20, "20 distinct sites");
    }

    #[test]
    fn nofail_allocations_are_spared_and_counted() {
        let rule = parse("fn=f times=2").unwrap();
        let nofail = CallFacts { gfp: Some(0xcc0 | GFP_NOFAIL), ..call() };
        let (failed, counts) = run(&rule, 4, nofail);
        assert!(failed.is_empty());
        assert_eq!(counts.spared.load(Ordering::Relaxed), 4);
        assert_eq!(counts.failed.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn percent_uses_the_random_number() {
        let rule = parse("fn=f percent=25").unwrap();
        let counts = RuleCounts::default();
        let failed = (0..400u32).filter(|r| rule.decide(&counts, &call(), *r) == Decision::Fail).count();
        assert_eq!(failed, 100);
    }

    #[test]
    fn failure_values_and_refusals() {
        let plain = parse("fn=f").unwrap();
        let errno = parse("fn=f errno=28").unwrap();
        let err_ptr = parse("fn=f err_ptr errno=5").unwrap();
        assert_eq!(failure_value(&plain, Returns::NullablePointer, false), Ok(0));
        assert_eq!(failure_value(&plain, Returns::Int, false), Ok((-12i64) as u64));
        assert_eq!(failure_value(&errno, Returns::Int, false), Ok((-28i64) as u64));
        assert_eq!(failure_value(&err_ptr, Returns::Pointer, false), Ok((-5i64) as u64));
        assert_eq!(failure_value(&err_ptr, Returns::NullablePointer, false), Err(CannotFail::FailsWithNull));
        assert_eq!(failure_value(&plain, Returns::Pointer, false), Err(CannotFail::PointerNeedsErrPtr));
        assert_eq!(failure_value(&err_ptr, Returns::Int, false), Err(CannotFail::ErrPtrOnInt));
        assert_eq!(failure_value(&plain, Returns::Void, false), Err(CannotFail::Void));
        assert_eq!(failure_value(&plain, Returns::Void, true), Err(CannotFail::Free));
        assert_eq!(failure_value(&plain, Returns::Aggregate, false), Err(CannotFail::Aggregate));
        assert_eq!(failure_value(&plain, Returns::Unknown, false), Err(CannotFail::UnknownPrototype));
        assert_eq!(failure_value(&plain, Returns::Unsigned, false), Err(CannotFail::Unsigned));
        let typed = parse("fn=cr_mixed errno=5 returns=int").unwrap();
        assert_eq!(typed.returns, Some(Returns::Int));
        assert_eq!(typed.to_string(), "fn=cr_mixed errno=5 returns=int");
        assert_eq!(parse("fn=f returns=float"), Err(RuleError::BadReturns("float")));
        for (word, r) in Returns::WORDS {
            assert_eq!((Returns::from_word(word), r.word()), (Some(r), word));
        }
    }

    #[test]
    fn the_catalogue_allocators_fail_with_null_and_its_frees_cannot_fail() {
        use crate::catalogue::MEMORY;
        let plain = parse("fn=f").unwrap();
        for function in MEMORY {
            let (returns, is_free) = catalogue_returns(function);
            let value = failure_value(&plain, returns, is_free);
            match function.ret {
                Kind::Ptr => assert_eq!(value, Ok(0), "{}", function.name),
                _ => assert!(value.is_err() && (is_free || function.name.contains("free")), "{}", function.name),
            }
        }
        let kfree = MEMORY.iter().find(|f| f.name == "kfree").unwrap();
        assert_eq!(failure_value(&plain, catalogue_returns(kfree).0, catalogue_returns(kfree).1), Err(CannotFail::Free));
    }

    /// Random and mutated lines: the parser never panics, and whatever it
    /// accepts prints back to a line that parses to the same rule.
    #[test]
    fn fuzzed_lines_never_panic_and_round_trip() {
        let alphabet: &[u8] = b"fn=kmalloc site+0x9d every=10 percent after times min_size gfp pid comm init errno err_ptr systematic returns=int 0123456789abcdefx_-";
        let seeds = ["fn=kfree every=3 times=2", "fn=__kmalloc_noprof site=cr_round+0x1c percent=5 gfp=0x20 init"];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..100_000 {
            let mut line: Vec<u8> = seeds[i % 2].as_bytes().to_vec();
            for _ in 0..(next() % 6) {
                let at = (next() as usize) % (line.len() + 1);
                match next() % 3 {
                    0 if at < line.len() => {
                        line.remove(at);
                    }
                    1 => line.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                    _ if at < line.len() => line[at] = alphabet[(next() as usize) % alphabet.len()],
                    _ => {}
                }
            }
            let text = String::from_utf8(line).unwrap();
            if let Ok(rule) = parse(&text) {
                let printed = format!("{rule}");
                assert_eq!(parse(&printed), Ok(rule), "{text} -> {printed}");
            }
        }
    }
}
