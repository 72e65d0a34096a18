//! Where the disturbed-decoding test puts someone else's kprobe: an
//! instruction of cr_target's `cr_round`, 5 bytes or longer (so that an
//! optimized probe's jump replaces it alone), before a call into the
//! catalogue. Found by decoding the built cr_target.ko, so that it follows
//! the compiler. Several, best first: whether kprobes optimizes a given
//! instruction differs between kernels, and the test takes the first it does.

use std::path::Path;

use anyhow::{bail, Context, Result};
use hp_core::catalogue::index_of;
use iced_x86::{Decoder, DecoderOptions, FlowControl};
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};

/// `cr_round+0x<offset>` lines, as kprobe_events takes them.
pub fn in_cr_round(cr_target_ko: &Path) -> Result<String> {
    let data = std::fs::read(cr_target_ko)?;
    let file = object::File::parse(&*data)?;
    let func = file.symbols().find(|s| s.name() == Ok("cr_round")).context("cr_target.ko has no cr_round")?;
    let section = file.section_by_index(func.section_index().context("cr_round has no section")?)?;
    let start = func.address() - section.address();
    let bytes = &section.data()?[start as usize..(start + func.size()) as usize];
    let catalogue_calls: Vec<u64> = section
        .relocations()
        .filter(|(_, r)| match r.target() {
            RelocationTarget::Symbol(i) => {
                file.symbol_by_index(i).and_then(|s| s.name().map(|n| index_of(n).is_some())).unwrap_or(false)
            }
            _ => false,
        })
        .filter(|(offset, _)| *offset > start && *offset < start + func.size())
        .map(|(offset, _)| offset - 1 - start)
        .collect();
    let mut decoder = Decoder::with_ip(if file.is_64() { 64 } else { 32 }, bytes, 0, DecoderOptions::NONE);
    let (mut last_long, mut found) = (None, Vec::new());
    while decoder.can_decode() {
        let insn = decoder.decode();
        if catalogue_calls.contains(&insn.ip()) {
            found.extend(last_long.take());
        }
        let plain = insn.flow_control() == FlowControl::Next;
        // Past the entry (ftrace's call and the first instructions are special
        // to kprobes); RIP-relative and locked ones last, as kprobes may
        // decline to optimize them.
        if plain && insn.len() >= 5 && insn.ip() >= 16 {
            last_long = Some((insn.is_ip_rel_memory_operand() || insn.has_lock_prefix(), insn.ip()));
        }
    }
    found.sort();
    if found.is_empty() {
        bail!("no instruction of 5 bytes or more before a catalogue call in cr_round");
    }
    Ok(found.iter().map(|(_, offset)| format!("cr_round+{offset:#x}\n")).collect())
}

/// How many call sites (`call rel32`) and tail calls (`jmp rel32`) of
/// catalogue functions the built cr_target.ko has in the text that stays
/// after init, from its relocations: what an attach to the live module
/// finds. Counted here, because the number follows the compiler (gcc-14
/// for 7.x lays out more of them than gcc-12 does).
pub fn cr_target_sites(cr_target_ko: &Path) -> Result<(usize, usize)> {
    let data = std::fs::read(cr_target_ko)?;
    let file = object::File::parse(&*data)?;
    let (mut calls, mut tails) = (0, 0);
    for section in file.sections() {
        let name = section.name()?;
        if section.kind() != object::SectionKind::Text || name.starts_with(".init") {
            continue;
        }
        let bytes = section.data()?;
        for (offset, reloc) in section.relocations() {
            let RelocationTarget::Symbol(i) = reloc.target() else { continue };
            let callee = file.symbol_by_index(i)?;
            if !callee.is_undefined() || index_of(callee.name()?).is_none() {
                continue;
            }
            match offset.checked_sub(1).and_then(|at| bytes.get(at as usize)) {
                Some(0xe8) => calls += 1,
                Some(0xe9) => tails += 1,
                _ => {}
            }
        }
    }
    Ok((calls + tails, tails))
}
