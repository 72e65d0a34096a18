//! A `.ko`'s executable sections laid out as the loader lays them out, and
//! the tables (`.altinstructions`, `.return_sites`, ...) that point into them.

use std::collections::HashMap;

use anyhow::{bail, Result};
use object::{
    Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget, SectionFlags, SectionIndex, SymbolSection,
};

pub const R_X86_64_64: u32 = 1;
pub const R_X86_64_PC32: u32 = 2;
pub const R_X86_64_PLT32: u32 = 4;
const SHF_ALLOC: u64 = 0x2;
const SHF_EXECINSTR: u64 = 0x4;

/// Where the resident text is laid out, and its init text: made-up
/// addresses, as a loaded module's would be.
pub const MODULE_BASE: u64 = 0xffff_ffff_c000_0000;
const INIT_BASE: u64 = 0xffff_ffff_d000_0000;

/// The resident text as the loader lays it out, and where each section went.
pub struct Layout {
    pub text: Vec<u8>,
    /// Resident (MOD_TEXT) sections and init text sections: their address.
    pub base: HashMap<SectionIndex, u64>,
    /// In section header order, as the loader lays them out.
    pub resident: Vec<SectionIndex>,
    pub names: HashMap<SectionIndex, String>,
}

impl Layout {
    pub fn new(file: &object::File<'_>, module_unload: bool) -> Result<Layout> {
        let mut text = Vec::new();
        let mut init_len = 0u64;
        let mut base = HashMap::new();
        let mut resident = Vec::new();
        let mut names = HashMap::new();
        for section in file.sections() {
            let SectionFlags::Elf { sh_flags } = section.flags() else { continue };
            if sh_flags & (SHF_ALLOC | SHF_EXECINSTR) != SHF_ALLOC | SHF_EXECINSTR {
                continue;
            }
            let name = section.name()?.to_string();
            let align = section.align().max(1);
            // module_init_layout_section: .init*, and .exit* without MODULE_UNLOAD.
            let is_init = name.starts_with(".init") || (!module_unload && name.starts_with(".exit"));
            if is_init {
                init_len = init_len.next_multiple_of(align);
                base.insert(section.index(), INIT_BASE + init_len);
                init_len += section.size();
            } else {
                text.resize(text.len().next_multiple_of(align as usize), 0xcc);
                base.insert(section.index(), MODULE_BASE + text.len() as u64);
                text.extend_from_slice(section.data()?);
                resident.push(section.index());
            }
            names.insert(section.index(), name);
        }
        Ok(Layout { text, base, resident, names })
    }

    pub fn text_end(&self) -> u64 {
        MODULE_BASE + self.text.len() as u64
    }

    /// A defined symbol's address, if it is in laid-out text.
    pub fn symbol_addr(&self, sym: &object::Symbol<'_, '_>) -> Option<u64> {
        match sym.section() {
            SymbolSection::Section(i) => Some(self.base.get(&i)? + sym.address()),
            _ => None,
        }
    }

    pub fn is_resident(&self, addr: u64) -> bool {
        (MODULE_BASE..self.text_end()).contains(&addr)
    }
}

/// The addresses a table section's relocations point at, one per `stride`
/// bytes at `field` within each entry: `.return_sites` and the like hold
/// `site - &entry` (PC32 to `.text + off`), `__mcount_loc` the address (64).
pub fn table_sites(
    file: &object::File<'_>,
    layout: &Layout,
    section: &str,
    stride: u64,
    field: u64,
) -> Result<Vec<u64>> {
    let Some(section) = file.section_by_name(section) else { return Ok(Vec::new()) };
    let mut sites = Vec::new();
    for (offset, reloc) in section.relocations() {
        if offset % stride != field {
            continue;
        }
        let RelocationFlags::Elf { r_type } = reloc.flags() else { continue };
        if r_type != R_X86_64_PC32 && r_type != R_X86_64_64 {
            continue;
        }
        let RelocationTarget::Symbol(sym) = reloc.target() else { continue };
        if let Some(addr) = layout.symbol_addr(&file.symbol_by_index(sym)?) {
            sites.push(addr.wrapping_add(reloc.addend() as u64));
        }
    }
    Ok(sites)
}

/// One `.altinstructions` entry.
pub struct AltEntry {
    pub instr: u64,
    pub instr_len: u64,
    pub repl: u64,
    pub repl_len: u64,
    pub bit: u32,
    pub not: bool,
    pub direct_call: bool,
}

/// `.altinstructions`: 14-byte entries from 6.8 (cpuid:16, flags:16 with
/// ALT_FLAG_NOT 1 and ALT_FLAG_DIRECT_CALL 2), 12-byte ones before (u16
/// cpuid, bit 15 ALTINSTR_FLAG_INV), both followed by instrlen and
/// replacementlen (arch/x86/include/asm/alternative.h of each release).
pub fn alternatives(file: &object::File<'_>, layout: &Layout) -> Result<Vec<AltEntry>> {
    let Some(section) = file.section_by_name(".altinstructions") else { return Ok(Vec::new()) };
    let data = section.data()?;
    let mut relocs: Vec<(u64, object::Relocation)> = section.relocations().collect();
    relocs.sort_by_key(|r| r.0);
    let stride = match relocs.get(2) {
        Some(r) => r.0 - relocs[0].0,
        None => data.len() as u64,
    };
    if stride != 12 && stride != 14 {
        bail!(".altinstructions entries of {stride} bytes: neither 6.1's 12 nor 6.12's 14");
    }
    let target = |offset: u64| -> Result<Option<u64>> {
        let Some((_, r)) = relocs.iter().find(|r| r.0 == offset) else { return Ok(None) };
        let RelocationTarget::Symbol(sym) = r.target() else { return Ok(None) };
        Ok(layout.symbol_addr(&file.symbol_by_index(sym)?).map(|a| a.wrapping_add(r.addend() as u64)))
    };
    let mut entries = Vec::new();
    for start in (0..data.len() as u64).step_by(stride as usize) {
        let e = &data[start as usize..(start + stride) as usize];
        // An entry for init text (not laid out as resident) is no concern here.
        let (Some(instr), Some(repl)) = (target(start)?, target(start + 4)?) else { continue };
        let cpuid = u16::from_le_bytes([e[8], e[9]]);
        let (bit, not, direct_call, lens) = if stride == 14 {
            let flags = u16::from_le_bytes([e[10], e[11]]);
            (cpuid as u32, flags & 1 != 0, flags & 2 != 0, &e[12..14])
        } else {
            ((cpuid & 0x7fff) as u32, cpuid & 0x8000 != 0, false, &e[10..12])
        };
        entries.push(AltEntry {
            instr,
            instr_len: lens[0] as u64,
            repl,
            repl_len: lens[1] as u64,
            bit,
            not,
            direct_call,
        });
    }
    Ok(entries)
}
