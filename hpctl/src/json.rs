//! `--json` output: one object per line, each with `"schema": 1` and a
//! `"type"`. docs/json-schema.md is the description; the golden files under
//! tests/golden/ hold an example of each type. A new key may be added to a
//! type without changing `schema`; renaming or removing one changes it.

use serde::Serialize;

use crate::callees::Judged;
use crate::records::{Func, Site, Target};

pub const SCHEMA: u32 = 1;

/// Serializes `value` as one line, with `schema` and `type` first.
pub fn line<T: Serialize>(kind: &str, value: &T) -> String {
    #[derive(Serialize)]
    struct Envelope<'a, T> {
        schema: u32,
        #[serde(rename = "type")]
        kind: &'a str,
        #[serde(flatten)]
        body: &'a T,
    }
    serde_json::to_string(&Envelope { schema: SCHEMA, kind, body: value }).expect("plain data serializes")
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Arg {
    pub name: String,
    /// Catalogue: `size`, `gfp`, `node`, `ptr` or `code_ptr`. Typed callee
    /// (BTF): also `int`, `uint`, `bool`, `enum`, `string`, `raw`.
    pub kind: &'static str,
    /// The register as it was.
    pub raw: u64,
    /// As the human output shows it.
    pub text: String,
    /// Typed callee: the C type, from BTF.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub ctype: Option<String>,
    /// A string argument the event carried: its bytes (lossy UTF-8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    /// A string argument the event carried: cut at 32 bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
}

impl Arg {
    pub fn new(name: &str, kind: &'static str, raw: u64, text: String) -> Arg {
        Arg { name: name.to_string(), kind, raw, text, ..Arg::default() }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Call {
    /// Ring-buffer time of the event (the instance's trace_clock: local).
    pub ts_ns: u64,
    pub cpu: u32,
    pub pid: i32,
    pub comm: String,
    pub target: String,
    /// Address of the call instruction, hex.
    pub site: String,
    /// `symbol+0xoff [module]`, or null when kallsyms hides addresses.
    pub site_symbol: Option<String>,
    pub callee: String,
    /// Index in hp_core::catalogue::MEMORY.
    pub func: u32,
    pub args: Vec<Arg>,
    /// The six argument registers, rdi..r9, as they were.
    pub regs: [u64; 6],
    pub returned: bool,
    /// Null when `returned` is false (a void function).
    pub ret: Option<u64>,
    /// A callee outside the catalogue that returned: rdx after the call (the
    /// high half of a two-register result). Absent for catalogue calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ret2: Option<u64>,
    pub ret_text: Option<String>,
    /// A callee typed from BTF: its C declaration. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prototype: Option<String>,
    pub start_ns: u64,
    /// Null when `returned` is false.
    pub duration_ns: Option<u64>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CpuDrops {
    pub cpu: u32,
    pub overrun: u64,
    pub dropped_events: u64,
}

/// Ring-buffer losses grew: totals since the trace began.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Drop {
    /// Seconds since the trace began.
    pub elapsed_s: f64,
    /// overrun + dropped_events, over all CPUs.
    pub total: u64,
    /// How much `total` grew since the previous `drop` object.
    pub new: u64,
    pub per_cpu: Vec<CpuDrops>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct FunctionSummary {
    pub target: String,
    pub function: String,
    /// Events of this function hpctl read from its instance.
    pub received: u64,
    /// Events hp_patcher wrote (its `events` counter, end minus start) that
    /// hpctl did not receive: lost in the ring buffer. Negative only if
    /// someone else's tracing or a detach muddled the counters.
    pub ring_dropped: i64,
    /// Calls that became no event (hp_patcher's `dropped`, end minus start).
    pub module_dropped: u64,
    /// hp_patcher's `events`, end minus start.
    pub module_events: u64,
    /// hp_patcher's `hits`, end minus start.
    pub hits: u64,
    /// hp_patcher's `missed`, end minus start.
    pub missed: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    pub received: u64,
    pub ring_dropped: i64,
    pub module_dropped: u64,
    pub module_events: u64,
    pub hits: u64,
    pub missed: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    pub elapsed_s: f64,
    /// Every hp_call event read, shown or filtered out.
    pub received: u64,
    /// Of those, how many the module/function filter hid.
    pub filtered_out: u64,
    /// The ring buffer's own count: overrun + dropped events over all CPUs.
    pub ring_dropped: u64,
    pub overrun: u64,
    pub dropped_events: u64,
    /// Pages or records hpctl could not parse (0 unless something is wrong).
    pub bad_pages: u64,
    pub functions: Vec<FunctionSummary>,
    pub totals: Totals,
}

#[derive(Serialize)]
pub struct TargetJson<'a> {
    pub name: &'a str,
    pub state: &'a str,
    pub sink: &'a str,
    pub follow: bool,
    pub sites: u64,
    pub armed: u64,
    pub hits: u64,
}

impl<'a> From<&'a Target> for TargetJson<'a> {
    fn from(t: &'a Target) -> Self {
        TargetJson {
            name: &t.name,
            state: &t.state,
            sink: &t.sink,
            follow: t.follow,
            sites: t.sites,
            armed: t.armed,
            hits: t.hits,
        }
    }
}

#[derive(Serialize)]
pub struct FuncJson<'a> {
    pub module: &'a str,
    pub name: &'a str,
    pub hits: u64,
    pub inflight: u64,
    pub events: u64,
    pub dropped: u64,
    pub missed: u64,
}

impl<'a> From<&'a Func> for FuncJson<'a> {
    fn from(f: &'a Func) -> Self {
        FuncJson {
            module: &f.module,
            name: &f.name,
            hits: f.hits,
            inflight: f.inflight,
            events: f.events,
            dropped: f.dropped,
            missed: f.missed,
        }
    }
}

#[derive(Serialize)]
pub struct SiteJson<'a> {
    pub module: &'a str,
    pub addr: &'a str,
    pub caller: &'a str,
    pub callee: &'a str,
    pub kind: &'a str,
    pub state: &'a str,
    pub hits: u64,
}

impl<'a> From<&'a Site> for SiteJson<'a> {
    fn from(s: &'a Site) -> Self {
        SiteJson {
            module: &s.module,
            addr: &s.addr,
            caller: &s.caller,
            callee: &s.callee,
            kind: &s.kind,
            state: &s.state,
            hits: s.hits,
        }
    }
}

/// `callees --json`: the module's `callee` record and BTF's verdict.
#[derive(Serialize)]
pub struct CalleeJson<'a> {
    pub module: &'a str,
    pub name: &'a str,
    pub sites: u64,
    pub tails: u64,
    pub static_call_sites: u64,
    /// `interceptable` when the module and BTF both accept it, else `refused`.
    pub state: &'static str,
    /// The module's reason if it refuses, else BTF's.
    pub reason: Option<&'a str>,
    /// `kernel` or `btf`, when refused.
    pub refused_by: Option<&'static str>,
    /// The module's own `reason=`.
    pub kernel_reason: Option<&'a str>,
    /// BTF's refusal, whatever the module said.
    pub btf_reason: Option<&'static str>,
    /// The SPEC an attach sends (`"sxx"`, `""` for no argument), when interceptable.
    pub spec: Option<String>,
    /// The C declaration, from BTF.
    pub prototype: Option<String>,
    /// Which BTF had it: `vmlinux` or a module.
    pub prototype_btf: Option<&'a str>,
}

impl<'a> CalleeJson<'a> {
    pub fn new(module: &'a str, j: &'a Judged) -> Self {
        CalleeJson {
            module,
            name: &j.callee.name,
            sites: j.callee.sites,
            tails: j.callee.tails,
            static_call_sites: j.callee.static_call_sites,
            state: j.state(),
            reason: j.reason(),
            refused_by: j.refused_by(),
            kernel_reason: j.kernel_reason(),
            btf_reason: j.btf_refusal.map(|r| r.word()),
            spec: j.spec(),
            prototype: j.prototype.as_ref().map(|p| p.declaration()),
            prototype_btf: j.prototype.as_ref().map(|p| p.btf.as_str()),
        }
    }
}

pub fn callee(module: &str, j: &Judged) -> String {
    line("callee", &CalleeJson::new(module, j))
}

pub fn target(t: &Target) -> String {
    line("target", &TargetJson::from(t))
}
pub fn func(f: &Func) -> String {
    line("func", &FuncJson::from(f))
}
pub fn site(s: &Site) -> String {
    line("site", &SiteJson::from(s))
}
pub fn call(c: &Call) -> String {
    line("call", c)
}
pub fn drop(d: &Drop) -> String {
    line("drop", d)
}
pub fn summary(s: &Summary) -> String {
    line("summary", s)
}
