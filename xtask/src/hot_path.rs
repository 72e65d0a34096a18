//! The counting-only path takes no lock. When nothing at a site needs the
//! trampoline (sink none, no fault rule, no leak checking), all of ours a
//! call runs is `hp_pre_handler`: it must hold no `lock`-prefixed
//! instruction and no `xchg` with memory (which locks without a prefix), so
//! that no cache line is fought over between CPUs. Read from the built
//! module's own bytes at every build, so that this stays true.

use std::path::Path;

use anyhow::{bail, Context, Result};
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind};
use object::{Object, ObjectSection, ObjectSymbol};

use crate::kernel::Arch;

/// What a counting-only call runs of ours, besides kprobes' own code.
const LOCK_FREE: &[&str] = &["hp_pre_handler"];

pub fn check(ko: &Path, arch: Arch) -> Result<()> {
    let data = std::fs::read(ko)?;
    let file = object::File::parse(&*data)?;
    let bitness = if arch == Arch::I386 { 32 } else { 64 };
    for name in LOCK_FREE {
        let symbol = file.symbols().find(|s| s.name() == Ok(name)).with_context(|| format!("{}: no {name}", ko.display()))?;
        let section = file.section_by_index(symbol.section_index().context("undefined")?)?;
        let start = (symbol.address() - section.address()) as usize;
        let code = section.data()?.get(start..start + symbol.size() as usize).context("symbol past its section")?;
        let locked = locked_instructions(code, bitness);
        if !locked.is_empty() {
            bail!("{}: {name} must take no lock (the counting-only path), but has: {}", ko.display(), locked.join(", "));
        }
        println!("hot path: {name} ({} bytes) has no locked instruction", code.len());
    }
    Ok(())
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
