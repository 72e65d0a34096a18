//! `hpctl leaks`: the leak checker's records (`leaks`, `leak`,
//! `leak-stack`, `stack`, `unknown-free`, docs/control.md) as a table or
//! JSON lines.

use std::collections::HashMap;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::json;
use crate::records::Record;

/// One target's `leaks` header.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub module: String,
    /// `since_load` (a true leak report at unload) or `since_attach`.
    pub mode: String,
    pub outstanding: u64,
    pub bytes: u64,
    pub slots: u64,
    /// Allocations the table had no room for: not tracked, so not reported.
    pub overflowed: u64,
    /// Addresses allocated again while still tracked: a free went unseen.
    pub replaced: u64,
    pub unknown_frees: u64,
    /// Sites that free but kprobes refused: what they free stays outstanding.
    pub unwatched_free_sites: u64,
    /// Allocations whose stack found no room: counted in their site only.
    pub stacks_overflowed: u64,
    /// Frees whose allocating site found no room in the `freed` counts.
    pub frees_overflowed: u64,
}

/// Outstanding objects of one allocating site.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Leak {
    pub module: String,
    pub caller: String,
    pub callee: String,
    pub count: u64,
    pub bytes: u64,
    pub oldest_ms: u64,
    /// The site's objects by allocation stack, most objects first.
    pub stacks: Vec<LeakStack>,
}

/// Outstanding objects of one site allocated through one stack.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LeakStack {
    pub count: u64,
    pub bytes: u64,
    pub oldest_ms: u64,
    /// Innermost first: the site's own function, then its callers.
    pub frames: Vec<String>,
}

/// Frees at one site of objects the checker had not seen allocated.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct UnknownFree {
    pub module: String,
    pub caller: String,
    pub callee: String,
    pub count: u64,
}

/// Who freed one allocating site's objects: the module at its own sites,
/// or the kernel (seen only with `--kernel-frees`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Freed {
    pub module: String,
    pub caller: String,
    pub callee: String,
    pub by_module: u64,
    pub by_kernel: u64,
}

/// What watching the kernel's frees cost: every call of the watched free
/// functions, by any caller, paid a probe; `timed` of them were timed.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct KernelFreesCost {
    pub module: String,
    pub functions: u64,
    pub calls: u64,
    pub timed: u64,
    pub timed_ns: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub summaries: Vec<Summary>,
    pub leaks: Vec<Leak>,
    pub unknown_frees: Vec<UnknownFree>,
    pub freed: Vec<Freed>,
    pub kernel_frees: Vec<KernelFreesCost>,
}

impl Report {
    pub fn from_records(records: &[Record]) -> Result<Report> {
        let mut report = Report::default();
        // `stack` records come after the `leak-stack` records that use them.
        let mut frames: HashMap<(String, u64), Vec<(u64, String)>> = HashMap::new();
        for r in records.iter().filter(|r| r.kind == "stack") {
            let key = (r.get("module")?.to_string(), r.num("id")?);
            frames.entry(key).or_default().push((r.num("frame")?, r.get("at")?.to_string()));
        }
        for r in records {
            match r.kind.as_str() {
                "leaks" => report.summaries.push(Summary {
                    module: r.get("module")?.into(),
                    mode: r.get("mode")?.into(),
                    outstanding: r.num("outstanding")?,
                    bytes: r.num("bytes")?,
                    slots: r.num("slots")?,
                    overflowed: r.num("overflowed")?,
                    replaced: r.num("replaced")?,
                    unknown_frees: r.num("unknown_frees")?,
                    unwatched_free_sites: r.num("unwatched_free_sites")?,
                    stacks_overflowed: r.num("stacks_overflowed")?,
                    frees_overflowed: r.num("frees_overflowed")?,
                }),
                "leak" => report.leaks.push(Leak {
                    module: r.get("module")?.into(),
                    caller: r.get("caller")?.into(),
                    callee: r.get("callee")?.into(),
                    count: r.num("count")?,
                    bytes: r.num("bytes")?,
                    oldest_ms: r.num("oldest_ms")?,
                    stacks: Vec::new(),
                }),
                "leak-stack" => {
                    let (module, caller) = (r.get("module")?, r.get("caller")?);
                    let leak = report
                        .leaks
                        .iter_mut()
                        .rfind(|l| l.module == module && l.caller == caller)
                        .with_context(|| format!("a leak-stack record before its site's leak record: {caller}"))?;
                    let mut at = frames.get(&(module.to_string(), r.num("stack")?)).cloned().unwrap_or_default();
                    at.sort_by_key(|(depth, _)| *depth);
                    leak.stacks.push(LeakStack {
                        count: r.num("count")?,
                        bytes: r.num("bytes")?,
                        oldest_ms: r.num("oldest_ms")?,
                        frames: at.into_iter().map(|(_, f)| f).collect(),
                    });
                    leak.stacks.sort_by_key(|k| std::cmp::Reverse(k.count));
                }
                "unknown-free" => report.unknown_frees.push(UnknownFree {
                    module: r.get("module")?.into(),
                    caller: r.get("caller")?.into(),
                    callee: r.get("callee")?.into(),
                    count: r.num("count")?,
                }),
                "freed" => report.freed.push(Freed {
                    module: r.get("module")?.into(),
                    caller: r.get("caller")?.into(),
                    callee: r.get("callee")?.into(),
                    by_module: r.num("by_module")?,
                    by_kernel: r.num("by_kernel")?,
                }),
                "kernel-frees" => report.kernel_frees.push(KernelFreesCost {
                    module: r.get("module")?.into(),
                    functions: r.num("functions")?,
                    calls: r.num("calls")?,
                    timed: r.num("timed")?,
                    timed_ns: r.num("timed_ns")?,
                }),
                _ => {}
            }
        }
        Ok(report)
    }

    pub fn json_lines(&self) -> Vec<String> {
        let summaries = self.summaries.iter().map(|s| json::line("leaks", s));
        let leaks = self.leaks.iter().map(|l| json::line("leak", l));
        let frees = self.unknown_frees.iter().map(|u| json::line("unknown_free", u));
        let freed = self.freed.iter().map(|k| json::line("freed", k));
        let cost = self.kernel_frees.iter().map(|k| json::line("kernel_frees", k));
        summaries.chain(leaks).chain(frees).chain(freed).chain(cost).collect()
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        if self.summaries.is_empty() {
            out.push_str("no target checks leaks (attach with --leaks)\n");
        }
        for s in &self.summaries {
            let what = if s.mode == "since_load" { "not freed since its load" } else { "outstanding since the attach" };
            out.push_str(&format!("{}: {} objects, {} bytes, {what}\n", s.module, s.outstanding, s.bytes));
            if s.overflowed > 0 {
                out.push_str(&format!("  {} allocations found no room in the table ({} objects): not tracked\n", s.overflowed, s.slots));
            }
            if s.unwatched_free_sites > 0 {
                out.push_str(&format!(
                    "  {} sites that free could not be probed: what they free shows as outstanding\n",
                    s.unwatched_free_sites
                ));
            }
            if s.stacks_overflowed > 0 {
                out.push_str(&format!("  {} allocations found no room for their stack: counted by site only\n", s.stacks_overflowed));
            }
            if s.replaced > 0 {
                out.push_str(&format!("  {} addresses came back while still tracked: their frees went unseen\n", s.replaced));
            }
            let leaks: Vec<&Leak> = self.leaks.iter().filter(|l| l.module == s.module).collect();
            if !leaks.is_empty() {
                out.push_str(&format!("  {:<44} {:<28} {:>7} {:>10} {:>10}\n", "SITE", "CALLEE", "COUNT", "BYTES", "OLDEST_MS"));
                for l in leaks {
                    out.push_str(&format!("  {:<44} {:<28} {:>7} {:>10} {:>10}\n", l.caller, l.callee, l.count, l.bytes, l.oldest_ms));
                    for k in &l.stacks {
                        out.push_str(&format!("    {} objects, {} bytes, allocated from:\n", k.count, k.bytes));
                        for f in &k.frames {
                            out.push_str(&format!("      {f}\n"));
                        }
                    }
                }
            }
            // Who freed what: shown when the kernel's frees were watched.
            let freed: Vec<&Freed> = self.freed.iter().filter(|k| k.module == s.module).collect();
            if self.kernel_frees.iter().any(|c| c.module == s.module) && !freed.is_empty() {
                out.push_str(&format!(
                    "  freed, by allocating site (by the kernel: handed over, not leaks):\n  {:<44} {:<28} {:>9} {:>9}\n",
                    "SITE", "CALLEE", "BY_MODULE", "BY_KERNEL"
                ));
                for k in freed {
                    out.push_str(&format!("  {:<44} {:<28} {:>9} {:>9}\n", k.caller, k.callee, k.by_module, k.by_kernel));
                }
            }
            for c in self.kernel_frees.iter().filter(|c| c.module == s.module) {
                let mean = c.timed_ns.checked_div(c.timed).map_or_else(|| "not timed yet".into(), |ns| format!("{ns} ns"));
                out.push_str(&format!(
                    "  watching the kernel's frees ({} functions) cost {} calls by any caller a lookup each: {mean} per call (mean of {} timed), plus the probe\n",
                    c.functions, c.calls, c.timed
                ));
            }
            let frees: Vec<&UnknownFree> = self.unknown_frees.iter().filter(|u| u.module == s.module).collect();
            if !frees.is_empty() {
                out.push_str("  unknown frees (allocated before the attach, by someone else, or a bad free):\n");
                for u in frees {
                    out.push_str(&format!("  {:<44} {:<28} {:>7}\n", u.caller, u.callee, u.count));
                }
            }
        }
        out
    }
}

/// `--pair ALLOC:FREE[@N]`: a module's own allocator and free, for the
/// leak checker: ALLOC's result is a new object, FREE's argument N
/// (default 0) the object it frees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    pub alloc: String,
    pub free: String,
    pub object: u8,
}

impl Pair {
    pub fn parse(text: &str) -> Result<Pair, String> {
        let bad = || format!("--pair {text}: ALLOC:FREE or ALLOC:FREE@N (N from 0 to 5, the argument freed)");
        let (alloc, free) = text.split_once(':').ok_or_else(bad)?;
        let (free, object) = match free.split_once('@') {
            Some((free, n)) => (free, n.parse::<u8>().ok().filter(|&n| n <= 5).ok_or_else(bad)?),
            None => (free, 0),
        };
        if !hp_core::proto::is_symbol_name(alloc) || !hp_core::proto::is_symbol_name(free) {
            return Err(bad());
        }
        Ok(Pair { alloc: alloc.into(), free: free.into(), object })
    }

    /// The two `fn=` items, from each function's item as typed for
    /// `--fn` (`name:SPEC`).
    pub fn items(&self, alloc_item: &str, free_item: &str) -> [String; 2] {
        [format!("{alloc_item}+alloc"), format!("{free_item}+free{}", self.object)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse_and_become_fn_items() {
        let p = Pair::parse("my_get:my_put@1").unwrap();
        assert_eq!(p, Pair { alloc: "my_get".into(), free: "my_put".into(), object: 1 });
        assert_eq!(p.items("my_get:x", "my_put:xx"), ["my_get:x+alloc".to_string(), "my_put:xx+free1".into()]);
        assert_eq!(Pair::parse("a:b").unwrap().object, 0);
        for bad in ["a", "a:b@6", "a:b@x", "a b:c", ":b"] {
            assert!(Pair::parse(bad).is_err(), "{bad}");
        }
    }
    use crate::records::parse_reply;

    #[test]
    fn the_report_reads_back_and_prints() {
        let reply = "leaks module=cr_target mode=since_load outstanding=3 bytes=600 slots=16384 overflowed=0 replaced=0 unknown_frees=2 unwatched_free_sites=0 stacks_overflowed=0 frees_overflowed=0 complete=1\n\
            leak module=cr_target caller=cr_leak+0x1c/0x40 callee=__kmalloc_noprof count=3 bytes=600 oldest_ms=12\n\
            leak-stack module=cr_target caller=cr_leak+0x1c/0x40 stack=4 count=1 bytes=200 oldest_ms=12\n\
            leak-stack module=cr_target caller=cr_leak+0x1c/0x40 stack=2 count=2 bytes=400 oldest_ms=10\n\
            stack module=cr_target id=2 frame=1 at=cr_leak_write+0x30/0x80\n\
            stack module=cr_target id=2 frame=0 at=cr_leak+0x21/0x40\n\
            stack module=cr_target id=4 frame=0 at=cr_leak+0x21/0x40\n\
            unknown-free module=cr_target caller=cr_hold_release+0x22/0x60 callee=kfree count=2\n\
            freed module=cr_target caller=cr_handed+0x10/0x40 callee=__kmalloc_noprof by_module=1 by_kernel=4\n\
            kernel-frees module=cr_target functions=5 calls=12800 timed=200 timed_ns=40000\n";
        let report = Report::from_records(&parse_reply(reply).unwrap()).unwrap();
        assert_eq!(report.leaks[0].count, 3);
        let stacks = &report.leaks[0].stacks;
        assert_eq!(stacks.len(), 2);
        assert_eq!((stacks[0].count, stacks[0].frames.clone()), (2, vec!["cr_leak+0x21/0x40".to_string(), "cr_leak_write+0x30/0x80".into()]));
        assert_eq!((stacks[1].count, stacks[1].frames.len()), (1, 1));
        assert_eq!(report.unknown_frees[0].count, 2);
        let table = report.table();
        assert!(table.contains("3 objects, 600 bytes, not freed since its load"), "{table}");
        assert!(table.contains("cr_hold_release+0x22/0x60"));
        assert!(table.contains("    2 objects, 400 bytes, allocated from:\n      cr_leak+0x21/0x40\n      cr_leak_write+0x30/0x80\n"), "{table}");
        assert!(table.contains("freed, by allocating site"), "{table}");
        assert!(table.contains("__kmalloc_noprof                     1         4"), "{table}");
        assert!(table.contains("cost 12800 calls by any caller a lookup each: 200 ns per call (mean of 200 timed)"), "{table}");
        let json = report.json_lines();
        assert_eq!(json.len(), 5);
        assert!(json[4].starts_with(r#"{"schema":1,"type":"kernel_frees","module":"cr_target","functions":5,"calls":12800"#), "{}", json[4]);
        assert!(json[1].starts_with(r#"{"schema":1,"type":"leak","module":"cr_target""#), "{}", json[1]);
        assert!(json[1].contains(r#""stacks":[{"count":2,"bytes":400,"oldest_ms":10,"frames":["cr_leak+0x21/0x40","cr_leak_write+0x30/0x80"]}"#), "{}", json[1]);
    }
}
