//! The functions outside a module that it calls: named through kallsyms
//! (address to name, never name to address) and judged by the rules the
//! module can check in the code itself (`hp_core::proto::Refusal`).

use alloc::collections::TryReserveError;
use alloc::vec::Vec;
use core::fmt::Write;

use hp_core::proto::Refusal;
use hp_core::sites::{self, FunctionRange, Outgoing};

use crate::control::Reply;
use crate::ffi::{self, AttachRequest};
use crate::log::error;
use crate::session::CalleeName;

pub struct Callee {
    pub dest: u64,
    /// The symbol at `dest`, or `sym+0xoff` when `dest` is inside one.
    pub name: CalleeName,
    pub found: Outgoing,
    pub refusal: Option<Refusal>,
}

/// What the kernel marks in the target (static-call sites, WARN and BUG
/// traps), each sorted for binary search.
pub struct Marks {
    static_call_sites: Vec<u64>,
    bug_traps: Vec<u64>,
}

impl Marks {
    pub fn of(req: &AttachRequest) -> Result<Marks, TryReserveError> {
        Ok(Marks {
            static_call_sites: sorted(req.static_call_sites, req.num_static_call_sites)?,
            bug_traps: sorted(req.bug_traps, req.num_bug_traps)?,
        })
    }

    pub fn kernel(&self) -> sites::KernelMarks<'_> {
        sites::KernelMarks { static_call_sites: &self.static_call_sites, bug_traps: &self.bug_traps }
    }

}

/// The kernel's static-call sites in the target, sorted for binary search.
pub fn sorted_static_call_sites(req: &AttachRequest) -> Result<Vec<u64>, TryReserveError> {
    sorted(req.static_call_sites, req.num_static_call_sites)
}

/// A copy of C's array of `n` addresses, sorted.
fn sorted(addrs: *const u64, n: u64) -> Result<Vec<u64>, TryReserveError> {
    let mut sorted = Vec::new();
    if n > 0 && !addrs.is_null() {
        // SAFETY: C gives an array of that many addresses, alive for the call.
        let given = unsafe { core::slice::from_raw_parts(addrs, n as usize) };
        sorted.try_reserve_exact(given.len())?;
        sorted.extend_from_slice(given);
        sorted.sort_unstable();
    }
    Ok(sorted)
}

/// Every callee of the text, named and judged, by destination.
#[inline(never)] // keeps its frame out of the planner's
pub fn list(text: &[u8], base: u64, ranges: &[FunctionRange], marks: &Marks) -> Result<Vec<Callee>, i32> {
    let oom = |_| {
        crate::log::error_static(c"out of memory while listing callees");
        ffi::ENOMEM
    };
    let found = sites::outgoing(text, base, sites::Mode::NATIVE, ranges, marks.kernel()).map_err(oom)?;
    let mut callees = Vec::new();
    callees.try_reserve_exact(found.len()).map_err(oom)?;
    for o in found {
        let (name, at_start) = symbol_at(o.dest);
        let refusal = if !at_start {
            Some(Refusal::NotFunctionStart)
        } else if name.as_str().starts_with("__SCT__") {
            Some(Refusal::StaticCall)
        } else if o.static_call_sites == o.calls + o.tails {
            Some(Refusal::OnlyStaticCallSites)
        } else if o.noreturn_sites > 0 {
            Some(Refusal::NoReturn)
        // SAFETY: asks ftrace about an address; process context, hp_lock held.
        } else if !unsafe { ffi::hp_c_is_traceable(o.dest as usize) } {
            Some(Refusal::NoFtrace)
        } else {
            None
        };
        callees.push(Callee { dest: o.dest, name, found: o, refusal });
    }
    Ok(callees)
}

/// `sym` and true for the start of a symbol; `sym+0xoff` and false inside
/// one; "unknown" for an address kallsyms does not know.
#[inline(never)] // its buffer stays out of list's frame
fn symbol_at(addr: u64) -> (CalleeName, bool) {
    let mut buf = [0u8; 160];
    // SAFETY: buf is writable for its length; C writes at most len-1 bytes.
    let len = unsafe { ffi::hp_c_format_symbol(addr as usize, buf.as_mut_ptr().cast(), buf.len() as u32) } as usize;
    let text = core::str::from_utf8(&buf[..len.min(buf.len())]).unwrap_or("");
    let mut name = CalleeName::default();
    // "sym+0xoff/0xsize"; a bare number when kallsyms knows nothing.
    let Some((sym, rest)) = text.split_once('+') else {
        let _ = name.write_str("unknown");
        return (name, false);
    };
    let offset = rest.split('/').next().unwrap_or("");
    let at_start = offset == "0x0";
    let _ = if at_start { name.write_str(sym) } else { write!(name, "{sym}+{offset}") };
    (name, at_start)
}

/// `callee` lines for the module the request describes.
pub fn reply(req: &AttachRequest, r: &mut Reply, text: &[u8], ranges: &[FunctionRange]) -> Result<(), i32> {
    let marks = Marks::of(req).map_err(|_| {
        error!("out of memory while listing callees");
        ffi::ENOMEM
    })?;
    let callees = list(text, req.text_base, ranges, &marks)?;
    // By name, through indices: sorting the records would take a large frame.
    let mut order: Vec<u32> = Vec::new();
    order.try_reserve_exact(callees.len()).map_err(|_| ffi::ENOMEM)?;
    order.extend(0..callees.len() as u32);
    order.sort_unstable_by(|&a, &b| callees[a as usize].name.as_str().cmp(callees[b as usize].name.as_str()));
    for c in order.iter().map(|&i| &callees[i as usize]) {
        let o = c.found;
        let _ = write!(
            r,
            "callee name={} sites={} tails={} static_call_sites={} ",
            c.name.as_str(),
            o.calls,
            o.tails,
            o.static_call_sites
        );
        let _ = match c.refusal {
            None => writeln!(r, "state=interceptable"),
            Some(why) => writeln!(r, "state=refused reason={}", why.word()),
        };
    }
    Ok(())
}
