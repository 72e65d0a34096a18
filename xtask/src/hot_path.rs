//! No shared write on the hot path. Everything of ours an intercepted call
//! runs, in any sink, counts per CPU: it must hold no `lock`-prefixed
//! instruction and no `xchg` with memory (which locks without a prefix), so
//! that no cache line is fought over between CPUs. Read from the built
//! module's own bytes at every build, so that this stays true.
//!
//! What is read: the pre-handler and the trampolines; the Rust hooks and
//! every function of ours they reach through direct calls; the C services
//! they call. Left out, because they exist to share: the fault rules'
//! decision (a rule's counters are the target's) and the leak checker's
//! table of outstanding objects, both out of line and reached only where a
//! rule or `leaks` asks for them.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind};
use object::{Object, ObjectSection, ObjectSymbol};

use crate::kernel::Arch;
use crate::stack::{StackInfo, HOT_ENTRIES};

/// The C and assembly a call runs of ours, besides kprobes' own code.
const C_HOT: &[&str] = &[
    "hp_pre_handler",
    "hp_trampoline",
    "hp_trampoline_jump",
    "hp_fail_return",
    "hp_c_now_ns",
    "hp_c_trace_enabled",
    "hp_c_trace_call",
    "hp_c_log_window",
    "hp_c_emit_call",
    "hp_c_format_ptr",
    "hp_c_read_string",
];

/// Reached from the hooks, shared by design (see the module's comment).
const SHARED_ON_PURPOSE: &[&str] = &["16injected_failure", "10track_free", "12track_result", "9panicking"];

pub fn check(ko: &Path, arch: Arch) -> Result<()> {
    let data = std::fs::read(ko)?;
    let file = object::File::parse(&*data)?;
    let bitness = if arch == Arch::I386 { 32 } else { 64 };
    let mut graph = StackInfo::default();
    graph.add_object(ko)?;
    let mut names: Vec<String> = C_HOT.iter().map(|s| s.to_string()).collect();
    names.extend(reached_rust(&graph));
    let mut checked = 0;
    let mut bytes = 0;
    for name in &names {
        let symbol = file
            .symbols()
            .find(|s| s.name() == Ok(name) && s.is_definition())
            .with_context(|| format!("{}: no {name}", ko.display()))?;
        let section = file.section_by_index(symbol.section_index().context("undefined")?)?;
        let start = (symbol.address() - section.address()) as usize;
        let code = section.data()?.get(start..start + symbol.size() as usize).context("symbol past its section")?;
        let locked = locked_instructions(code, bitness);
        if !locked.is_empty() {
            bail!("{}: {name} is on the hot path and must take no lock, but has: {}", ko.display(), locked.join(", "));
        }
        checked += 1;
        bytes += code.len();
    }
    println!("hot path: {checked} functions ({bytes} bytes: {}, the hooks and all they call) have no locked instruction", C_HOT[..3].join(", "));
    Ok(())
}

/// The Rust hooks and every Rust function they reach through direct calls,
/// but for those shared on purpose.
fn reached_rust(graph: &StackInfo) -> Vec<String> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut todo: Vec<String> = HOT_ENTRIES.iter().map(|s| s.to_string()).collect();
    while let Some(f) = todo.pop() {
        if SHARED_ON_PURPOSE.iter().any(|s| f.contains(s)) || !seen.insert(f.clone()) {
            continue;
        }
        todo.extend(graph.calls.get(&f).into_iter().flatten().filter(|c| c.starts_with("_R")).cloned());
    }
    let mut reached: Vec<String> = seen.into_iter().collect();
    reached.sort();
    reached
}

/// Each `lock`-prefixed instruction, and each `xchg` with a memory operand.
fn locked_instructions(code: &[u8], bitness: u32) -> Vec<String> {
    let mut found = Vec::new();
    for instr in Decoder::new(bitness, code, DecoderOptions::NONE).iter() {
        let xchg_memory = instr.mnemonic() == Mnemonic::Xchg
            && (0..instr.op_count()).any(|i| instr.op_kind(i) == OpKind::Memory);
        if instr.has_lock_prefix() || xchg_memory {
            let lock = if instr.has_lock_prefix() { "lock " } else { "" };
            found.push(format!("+{:#x} {lock}{:?}", instr.ip(), instr.mnemonic()));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::locked_instructions;

    #[test]
    fn finds_lock_prefixes_and_xchg_with_memory_only() {
        // incq %gs:(%rax); lock incq (%rdi); xchg %rax,(%rdi); xchg %rax,%rdx; ret
        let code = [0x65, 0x48, 0xff, 0x00, 0xf0, 0x48, 0xff, 0x07, 0x48, 0x87, 0x07, 0x48, 0x87, 0xc2, 0xc3];
        let found = locked_instructions(&code, 64);
        assert_eq!(found, ["+0x4 lock Inc", "+0x8 Xchg"]);
    }
}
