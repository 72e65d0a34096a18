//! Site discovery on Debian's real in-tree modules, checked on the host
//! against the ground truth their relocation tables give.
//!
//! Each module's code sections are laid out at a made-up base, its calls to
//! kernel functions are relocated to made-up kernel addresses, and then
//! hp-core decodes it function by function exactly as the module does in the
//! guest. Every `call`/`jmp` relocated to a catalogue function must be found,
//! and nothing else.

use std::collections::{BTreeSet, HashMap};

use anyhow::{bail, Result};
use hp_core::catalogue::{index_of, MEMORY};
use hp_core::sites::{discover, function_ranges, Mode, Options, SiteKind, Symbol, Target};
use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget, SectionKind, SymbolKind};

use crate::kernel::{read_module, Kernel};

/// A filesystem, a block driver, sound, a network driver and a big one.
const MODULES: &[&str] = &[
    "fs/ext4/ext4",
    "drivers/block/brd",
    "sound/core/snd-pcm",
    "drivers/net/ethernet/intel/e1000/e1000",
    "fs/xfs/xfs",
];

const MODULE_BASE: u64 = 0xffff_ffff_c000_0000;
const KERNEL_BASE: u64 = 0xffff_ffff_8100_0000;
/// As on Debian's 6.12: call thunks possible; module space as on x86_64.
const OPTIONS: Options = Options {
    mode: Mode::Bits64,
    call_thunks: true,
    module_space_start: 0xffff_ffff_c000_0000,
    module_space_end: 0xffff_ffff_ff00_0000,
};
const R_X86_64_PC32: u32 = 2;
const R_X86_64_PLT32: u32 = 4;

pub fn check(kernel: &Kernel) -> Result<()> {
    for module in MODULES {
        check_module(module, &read_module(&kernel.in_tree_module(module)?)?)?;
    }
    Ok(())
}

fn check_module(name: &str, data: &[u8]) -> Result<()> {
    let file = object::File::parse(data)?;
    // Lay out the code that stays after init, as the loader does.
    let mut base = HashMap::new();
    let mut text = Vec::new();
    for section in file.sections() {
        let sname = section.name()?;
        if section.kind() == SectionKind::Text && !sname.starts_with(".init") {
            while text.len() % 16 != 0 {
                text.push(0xcc);
            }
            base.insert(section.index(), MODULE_BASE + text.len() as u64);
            text.extend_from_slice(section.data()?);
        }
    }
    let text_end = MODULE_BASE + text.len() as u64;

    let mut kernel_addr = HashMap::new();
    let mut expected = BTreeSet::new();
    for section in file.sections() {
        let Some(&sbase) = base.get(&section.index()) else { continue };
        for (offset, reloc) in section.relocations() {
            let RelocationFlags::Elf { r_type } = reloc.flags() else { continue };
            let RelocationTarget::Symbol(sym_index) = reloc.target() else { continue };
            if r_type != R_X86_64_PC32 && r_type != R_X86_64_PLT32 {
                continue;
            }
            let sym = file.symbol_by_index(sym_index)?;
            let target = if sym.is_undefined() {
                let next = KERNEL_BASE + 0x100 * kernel_addr.len() as u64;
                *kernel_addr.entry(sym.name()?.to_string()).or_insert(next)
            } else if let Some(&b) = sym.section_index().and_then(|i| base.get(&i)) {
                b + sym.address()
            } else {
                continue;
            };
            let place = sbase + offset;
            let value = target.wrapping_add(reloc.addend() as u64).wrapping_sub(place) as u32;
            let at = (place - MODULE_BASE) as usize;
            text[at..at + 4].copy_from_slice(&value.to_le_bytes());
            let opcode = text[at - 1];
            if sym.is_undefined() && (opcode == 0xe8 || opcode == 0xe9) {
                if let Some(func) = index_of(sym.name()?) {
                    let kind = if opcode == 0xe8 { SiteKind::Call } else { SiteKind::TailJump };
                    expected.insert((place - 1, func, kind == SiteKind::TailJump));
                }
            }
        }
    }

    // One target per symbol: its other layouts (catalogue.rs) are the same calls.
    let targets: Vec<Target> = MEMORY
        .iter()
        .enumerate()
        .filter(|(func, f)| index_of(f.name) == Some(*func))
        .filter_map(|(func, f)| kernel_addr.get(f.name).map(|&addr| Target { addr, func }))
        .collect();
    let symbols = file.symbols().filter_map(|s| {
        let b = base.get(&s.section_index()?)?;
        Some(Symbol { addr: b + s.address(), size: s.size(), is_function: s.kind() == SymbolKind::Text })
    });
    let ranges = function_ranges(symbols, MODULE_BASE, text_end)?;
    let found = discover(&text, MODULE_BASE, &ranges, &targets, &OPTIONS)?;
    let got: BTreeSet<_> = found.sites.iter().map(|s| (s.addr, s.func, s.kind == SiteKind::TailJump)).collect();

    let tails = got.iter().filter(|s| s.2).count();
    println!(
        "{name}.ko: {} functions, {} bytes decoded; {} sites ({} tail calls), {} conditional; relocations say {}",
        found.functions_decoded,
        found.bytes_decoded,
        got.len(),
        tails,
        found.conditional_jumps.len(),
        expected.len()
    );
    if got != expected {
        let missing: Vec<_> = expected.difference(&got).take(5).collect();
        let extra: Vec<_> = got.difference(&expected).take(5).collect();
        bail!("{name}.ko: site discovery disagrees with relocations: missing {missing:x?}, extra {extra:x?}");
    }
    // Nobody probes a module on disk: every int3 must be compiler padding,
    // and no jump may look like an optimized probe.
    if !found.disturbances.is_empty() || !found.long_branches.is_empty() {
        bail!(
            "{name}.ko: unprobed code reported as disturbed: {:x?}, long branches {:x?}",
            &found.disturbances[..found.disturbances.len().min(5)],
            found.long_branches
        );
    }
    if expected.is_empty() {
        bail!("{name}.ko: no catalogue call at all; the check would prove nothing");
    }
    Ok(())
}
