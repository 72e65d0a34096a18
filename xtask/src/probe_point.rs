//! Where the disturbed-decoding test puts someone else's kprobe: an
//! instruction of cr_target's `cr_round`, 5 bytes or longer (so that an
//! optimized probe's jump replaces it alone), before a call to kfree. Found
//! by decoding the built cr_target.ko, so that it follows the compiler.

use std::path::Path;

use anyhow::{bail, Context, Result};
use iced_x86::{Decoder, DecoderOptions, FlowControl};
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};

/// `cr_round+0x<offset>`, as kprobe_events takes it.
pub fn in_cr_round(cr_target_ko: &Path) -> Result<String> {
    let data = std::fs::read(cr_target_ko)?;
    let file = object::File::parse(&*data)?;
    let func = file.symbols().find(|s| s.name() == Ok("cr_round")).context("cr_target.ko has no cr_round")?;
    let section = file.section_by_index(func.section_index().context("cr_round has no section")?)?;
    let start = func.address() - section.address();
    let bytes = &section.data()?[start as usize..(start + func.size()) as usize];
    let kfree_calls: Vec<u64> = section
        .relocations()
        .filter(|(_, r)| match r.target() {
            RelocationTarget::Symbol(i) => {
                file.symbol_by_index(i).and_then(|s| s.name().map(|n| n == "kfree")).unwrap_or(false)
            }
            _ => false,
        })
        .filter(|(offset, _)| *offset > start && *offset < start + func.size())
        .map(|(offset, _)| offset - 1 - start)
        .collect();
    let mut decoder = Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE);
    let mut candidate = None;
    while decoder.can_decode() {
        let insn = decoder.decode();
        if kfree_calls.contains(&insn.ip()) && candidate.is_some() {
            break;
        }
        let plain = insn.flow_control() == FlowControl::Next;
        // Past the entry (ftrace's call and the first instructions are special to kprobes).
        if plain && insn.len() >= 5 && insn.ip() >= 16 {
            candidate = Some(insn.ip());
        }
    }
    match candidate {
        Some(offset) => Ok(format!("cr_round+{offset:#x}")),
        None => bail!("no instruction of 5 bytes or more before a kfree call in cr_round"),
    }
}
