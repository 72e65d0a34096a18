//! The host's ground truth of a module's callees, from its relocations:
//! `cargo xtask callees-truth <release> <module>`.
//!
//! The `callees` verb decodes the live module's resident text and lists every
//! destination outside it of a 5-byte `call rel32` (e8) or `jmp rel32` (e9),
//! with its call and tail-jump sites. Here the same list comes from the `.ko`
//! on disk: every `R_X86_64_PLT32`/`PC32` relocation that fills the
//! displacement of an e8/e9 opcode inside a function of the resident text and
//! names a symbol the module does not define.
//!
//! The live text is not the text on disk: the kernel rewrites some of these
//! instructions while it loads the module. Each such site is put in a class
//! that says what the loader does to it (`Class`), with the kernel source that
//! does it; the guest check (lab/guest/callees_ext4.sh) turns the classes into
//! what it expects to see on the running kernel.
//!
//! What "resident" means is the loader's rule (kernel/module/main.c,
//! `__layout_sections` and `module_init_layout_section`): the SHF_ALLOC |
//! SHF_EXECINSTR sections go to MOD_TEXT unless their name starts with `.init`,
//! or with `.exit` on a kernel without CONFIG_MODULE_UNLOAD (Debian's have it,
//! so `.exit.text` stays). The live verb decodes the ranges of the `STT_FUNC`
//! symbols of that text (the core kallsyms), so a site outside every function
//! (`.altinstr_replacement`, which has no symbols) is not one of its sites.
//! A call to something the module defines in any resident section (another
//! section's function, the `.static_call.text` trampolines of its own
//! tracepoints, `.exit.text`) stays inside that text: no callee for the
//! verb, counted here as a site within the module. Static calls through the
//! module's own keys are such calls before and after load (their function is
//! the module's `__traceiter_*` while no tracer attaches to its tracepoints).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use hp_core::catalogue::{index_of, MEMORY};
use hp_core::sites::{discover, function_ranges, outgoing, FunctionRange, Mode, Options, SiteKind, Symbol, Target};
use iced_x86::{Code, Decoder, DecoderOptions, Instruction};
use object::{
    Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget, SectionFlags, SectionIndex, SymbolIndex,
    SymbolKind, SymbolSection,
};

use crate::kernel::{read_module, Kernel};
use crate::repo_root;

const R_X86_64_64: u32 = 1;
const R_X86_64_PC32: u32 = 2;
const R_X86_64_PLT32: u32 = 4;
const SHF_ALLOC: u64 = 0x2;
const SHF_EXECINSTR: u64 = 0x4;

/// Where the resident text is laid out, and its init text; made-up
/// addresses for what the module does not define.
const MODULE_BASE: u64 = 0xffff_ffff_c000_0000;
const INIT_BASE: u64 = 0xffff_ffff_d000_0000;
const KERNEL_BASE: u64 = 0xffff_ffff_8100_0000;
/// Room per made-up kernel symbol, so that `sym+off` still maps back.
const KERNEL_SPACING: u64 = 0x1_0000;

/// What the loader does to a site before the live module can be decoded.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// Left as compiled: the live list shows it under the callee's address.
    AsIs,
    /// `call __fentry__` listed in `__mcount_loc`: ftrace turns it into a
    /// 5-byte NOP when the module loads (kernel/trace/ftrace.c
    /// `ftrace_module_init` -> `ftrace_process_locs` -> `ftrace_nop_initialize`
    /// -> x86's `ftrace_make_nop`), and only an enabled ftrace_ops makes it a
    /// call again (then to an ftrace trampoline, not `__fentry__`).
    FtraceNop,
    /// `jmp __x86_return_thunk` listed in `.return_sites`: `apply_returns`
    /// (arch/x86/kernel/alternative.c, from `module_finalize` in
    /// arch/x86/kernel/module.c) makes it `ret` when the CPU needs no return
    /// thunk (no X86_FEATURE_RETHUNK), else a `jmp` to the thunk the boot's
    /// mitigation chose (`x86_return_thunk`: `__x86_return_thunk`,
    /// `srso_return_thunk`, `its_return_thunk`, ...). A NULL static-call
    /// trampoline's `jmp __x86_return_thunk` is in the table too
    /// (`__static_call_fixup`), with the same outcome.
    ReturnThunk,
    /// `call`/`jmp __x86_indirect_thunk_<reg>` listed in `.retpoline_sites`:
    /// `apply_retpolines` (arch/x86/kernel/alternative.c, `patch_retpoline`)
    /// leaves it when plain retpolines are the mitigation, else makes it an
    /// indirect `call *%reg` (invisible to the verb), `lfence; call *%reg`,
    /// or, with call depth tracking or ITS, a call to another thunk.
    Retpoline,
    /// A `cs`-prefixed, 6-byte `call`/`jmp` (gcc's -mindirect-branch-cs-prefix
    /// puts one before each call of an r8..r15 retpoline thunk, so that
    /// `patch_retpoline` has room for `lfence; call *%r10`): the verb lists
    /// 5-byte instructions only, and `apply_retpolines` keeps it 6 bytes
    /// long or makes it an indirect call.
    Prefixed,
    /// `call`/`jmp __SCT__<key>` listed in `.static_call_sites`: at load
    /// (kernel/static_call_inline.c `static_call_add_module` ->
    /// `__static_call_init` -> arch/x86/kernel/static_call.c
    /// `arch_static_call_transform`) each site becomes a direct call (jmp) to
    /// the key's current function, a 5-byte NOP when that is NULL (a tail
    /// site: `ret`, or a jump to the return thunk), or `xor %eax,%eax` for
    /// `__static_call_return0`. For the scheduler's keys the function is set
    /// by the preempt mode (kernel/sched/core.c `sched_dynamic_update`).
    StaticCall,
    /// Inside an alternative (`.altinstructions`): `apply_alternatives`
    /// (arch/x86/kernel/alternative.c, from `module_finalize`) copies each
    /// entry's replacement over the original when its CPU feature is present
    /// (or absent, for `ALT_NOT`), in section order, so a later entry for the
    /// same place wins. The site is in the live text only when the condition
    /// holds: the original's sites when no entry applies.
    Alt(Cond),
    /// A replacement's sites (from `.altinstr_replacement`, its displacement
    /// recomputed for the new place): live when that entry applies and no
    /// later one for the same place does.
    AltRepl(Cond),
    /// An `ALT_FLAG_DIRECT_CALL` replacement (6.8+, paravirt's
    /// `ALT_CALL_ALWAYS`) that wins when the condition holds: `alt_replace_call`
    /// makes it a direct call to whatever the `pv_ops` slot holds at boot
    /// (named here by the slot), or a NOP for `nop_func`. On 6.1 the same
    /// comes from `.parainstructions` (`apply_paravirt` -> `paravirt_patch`).
    PvCall(Cond),
    /// In the resident text but outside every function symbol and outside
    /// `.altinstr_replacement`: the live decoder never looks there.
    Undecoded,
    /// A call from resident text into the module's own init text, which is
    /// freed after init.
    IntoInit,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Class::AsIs => f.write_str("as_is"),
            Class::FtraceNop => f.write_str("ftrace_nop"),
            Class::ReturnThunk => f.write_str("return_thunk"),
            Class::Retpoline => f.write_str("retpoline"),
            Class::Prefixed => f.write_str("prefixed"),
            Class::StaticCall => f.write_str("static_call"),
            Class::Alt(c) => write!(f, "alt:{c}"),
            Class::AltRepl(c) => write!(f, "alt_repl:{c}"),
            Class::PvCall(c) => write!(f, "pv_call:{c}"),
            Class::Undecoded => f.write_str("undecoded"),
            Class::IntoInit => f.write_str("into_init"),
        }
    }
}

/// A CPU feature as the guest can test it in /proc/cpuinfo.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Feature {
    /// Shown on the `flags` line under this name.
    Flag(String),
    /// Shown on the `bugs` line under this name.
    Bug(String),
    /// Not shown in /proc/cpuinfo: the macro's name, or the bit number.
    Hidden(String),
}

/// One feature present (or absent).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lit {
    pub feature: Feature,
    pub present: bool,
}

/// A conjunction of literals; `None` is false, an empty one true.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cond(pub Option<Vec<Lit>>);

impl Cond {
    fn and(mut self, lit: Lit) -> Cond {
        if let Some(lits) = &mut self.0 {
            if lits.iter().any(|l| l.feature == lit.feature && l.present != lit.present) {
                return Cond(None);
            }
            if !lits.contains(&lit) {
                lits.push(lit);
                lits.sort();
            }
        }
        self
    }
}

/// `1` (always), `0` (never), or `popcnt&!erms&bug.srso&?X86_FEATURE_FSRS`.
impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("0"),
            Some(lits) if lits.is_empty() => f.write_str("1"),
            Some(lits) => {
                for (i, l) in lits.iter().enumerate() {
                    let sep = if i > 0 { "&" } else { "" };
                    let not = if l.present { "" } else { "!" };
                    match &l.feature {
                        Feature::Flag(n) => write!(f, "{sep}{not}{n}")?,
                        Feature::Bug(n) => write!(f, "{sep}{not}bug.{n}")?,
                        Feature::Hidden(n) => write!(f, "{sep}{not}?{n}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// The kernel's CPU feature bits (arch/x86/include/asm/cpufeatures.h of the
/// release's headers) and how /proc/cpuinfo shows them.
pub struct Features {
    by_bit: HashMap<u32, (String, Option<String>)>,
    ncapints: u32,
}

/// X86_FEATURE_ALWAYS: set on every CPU (alternatives that must always apply).
const ALWAYS: &str = "ALWAYS";
/// X86_FEATURE_XENPV: only a Xen PV guest; the lab's guests run under QEMU.
const XENPV: &str = "XENPV";

impl Features {
    pub fn parse(header: &str) -> Features {
        // Before 6.11 a flag is shown unless its comment starts with "";
        // from then on only when its comment starts with "name".
        let hidden_by_default = !header.contains("/* \"\"");
        let ncapints = header
            .lines()
            .find_map(|l| l.strip_prefix("#define NCAPINTS"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(21);
        let mut by_bit = HashMap::new();
        for line in header.lines() {
            let Some(rest) = line.strip_prefix("#define X86_") else { continue };
            let (is_bug, rest) = match (rest.strip_prefix("FEATURE_"), rest.strip_prefix("BUG_")) {
                (Some(r), _) => (false, r),
                (_, Some(r)) => (true, r),
                _ => continue,
            };
            let Some((name, value)) = rest.split_once(|c: char| c.is_whitespace()) else { continue };
            let (value, comment) = match value.split_once("/*") {
                Some((v, c)) => (v.trim(), c.trim_start()),
                None => (value.trim(), ""),
            };
            let Some(bit) = bit_of(value, is_bug, ncapints) else { continue };
            let shown = if let Some(q) = comment.strip_prefix('"') {
                let quoted = q.split('"').next().unwrap_or("");
                (!quoted.is_empty()).then(|| quoted.to_string())
            } else if hidden_by_default {
                None
            } else {
                Some(name.to_lowercase())
            };
            let prefix = if is_bug { "BUG_" } else { "" };
            by_bit.entry(bit).or_insert((format!("{prefix}{name}"), shown));
        }
        Features { by_bit, ncapints }
    }

    /// From the kernel's build directory, the source tree an `O=` build
    /// links as `source` (the debug kernel), or the unpacked headers' common part.
    fn read(kernel: &Kernel) -> Result<Features> {
        const HEADER: &str = "arch/x86/include/asm/cpufeatures.h";
        let mut candidates = vec![kernel.kdir.join(HEADER), kernel.kdir.join("source").join(HEADER)];
        if let Some(root) = &kernel.root {
            if let Ok(dirs) = std::fs::read_dir(root.join("usr/src")) {
                candidates.extend(dirs.flatten().map(|d| d.path().join(HEADER)));
            }
        }
        match candidates.iter().find(|p| p.exists()) {
            Some(header) => Ok(Features::parse(&std::fs::read_to_string(header)?)),
            None => bail!("no {HEADER} for {}", kernel.release),
        }
    }

    /// The literal "feature `bit` present == `present`", or what the host
    /// knows of it: Some(true/false) when it is decided here.
    fn lit(&self, bit: u32, present: bool) -> std::result::Result<Lit, bool> {
        let Some((name, shown)) = self.by_bit.get(&bit) else {
            return Ok(Lit { feature: Feature::Hidden(format!("bit{bit}")), present });
        };
        if name == ALWAYS {
            return Err(present);
        }
        if name == XENPV {
            return Err(!present);
        }
        let feature = match shown {
            Some(s) if bit >= self.ncapints * 32 => Feature::Bug(s.clone()),
            Some(s) => Feature::Flag(s.clone()),
            None => Feature::Hidden(format!("X86_FEATURE_{name}")),
        };
        Ok(Lit { feature, present })
    }
}

/// `( 3*32+21)` -> 117; `X86_BUG(14)` or `X86_BUG(1*32 + 0)` -> NCAPINTS*32 + n.
fn bit_of(value: &str, is_bug: bool, ncapints: u32) -> Option<u32> {
    let inner = if is_bug { value.strip_prefix("X86_BUG(")?.strip_suffix(')')? } else { value };
    let inner = inner.trim().trim_start_matches('(').trim_end_matches(')');
    let bit = match inner.split_once('+') {
        Some((word, bit)) => {
            let word: u32 = word.split('*').next()?.trim().parse().ok()?;
            word * 32 + bit.trim().parse::<u32>().ok()?
        }
        None => inner.trim().parse().ok()?,
    };
    Some(if is_bug { ncapints * 32 + bit } else { bit })
}

/// Calls and tail jumps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count {
    pub calls: u32,
    pub tails: u32,
}

impl Count {
    fn add(&mut self, is_call: bool) {
        if is_call {
            self.calls += 1;
        } else {
            self.tails += 1;
        }
    }
}

/// A module's callees, by class and name.
pub struct Truth {
    pub module: String,
    pub release: String,
    pub lines: BTreeMap<(Class, String), Count>,
    pub functions: usize,
    pub text_bytes: usize,
    /// Call/jmp sites whose destination is in the module's own resident text.
    pub internal_sites: u32,
    /// Sites of the memory catalogue's functions (what real_modules.rs and
    /// the README count), as hp_core's `discover` found them.
    pub catalogue: Count,
}

impl Truth {
    /// What the module calls as compiled: every class that is a site in a
    /// decoded function of the text on disk, summed per callee.
    pub fn raw(&self) -> BTreeMap<&str, Count> {
        let mut raw: BTreeMap<&str, Count> = BTreeMap::new();
        for ((class, name), c) in &self.lines {
            let in_text = match class {
                Class::AsIs
                | Class::FtraceNop
                | Class::ReturnThunk
                | Class::Retpoline
                | Class::Prefixed
                | Class::StaticCall
                | Class::Alt(_)
                | Class::IntoInit => true,
                Class::AltRepl(_) | Class::PvCall(_) | Class::Undecoded => false,
            };
            if in_text {
                let e = raw.entry(name.as_str()).or_default();
                e.calls += c.calls;
                e.tails += c.tails;
            }
        }
        raw
    }

    pub fn text(&self) -> String {
        let mut out = format!(
            "# {} on {}: every call rel32 (e8) / jmp rel32 (e9) in a function of its resident text\n\
             # to a symbol outside the module, from the .ko's relocations (cargo xtask callees-truth).\n\
             # NAME CALLS TAILS CLASS; CLASS says what the kernel does to those sites at load\n\
             # (xtask/src/callees_truth.rs, Class): as_is, ftrace_nop, return_thunk, retpoline, prefixed,\n\
             # static_call, alt:COND, alt_repl:COND and pv_call:COND (live only when COND holds:\n\
             # /proc/cpuinfo flags, ! absent, bug.X on the bugs line, ?X not shown there,\n\
             # 1 always, 0 never), undecoded, into_init.\n",
            self.module, self.release
        );
        for ((class, name), c) in &self.lines {
            out.push_str(&format!("{name} {} {} {class}\n", c.calls, c.tails));
        }
        out
    }

    pub fn summary(&self) -> String {
        let raw = self.raw();
        let sites: u32 = raw.values().map(|c| c.calls).sum();
        let tails: u32 = raw.values().map(|c| c.tails).sum();
        let mut by_class: BTreeMap<String, (usize, Count)> = BTreeMap::new();
        for ((class, _), c) in &self.lines {
            let key = match class {
                Class::Alt(_) | Class::AltRepl(_) => "alt".to_string(),
                Class::PvCall(_) => "pv_call".to_string(),
                other => other.to_string(),
            };
            let e = by_class.entry(key).or_default();
            e.0 += 1;
            e.1.calls += c.calls;
            e.1.tails += c.tails;
        }
        let classes: Vec<String> =
            by_class.iter().map(|(k, (n, c))| format!("{k} {n} callees {} calls {} tails", c.calls, c.tails)).collect();
        format!(
            "{} on {}: {} functions, {} bytes of resident text; {} callees, {} call sites, {} tail sites \
             ({} sites within the module; catalogue functions {} sites, {} of them tail calls); by class: {}",
            self.module,
            self.release,
            self.functions,
            self.text_bytes,
            raw.len(),
            sites,
            tails,
            self.internal_sites,
            self.catalogue.calls + self.catalogue.tails,
            self.catalogue.tails,
            classes.join("; ")
        )
    }
}

/// The resident text as the loader lays it out, and where each section went.
struct Layout {
    text: Vec<u8>,
    /// Resident (MOD_TEXT) sections and init text sections: their address.
    base: HashMap<SectionIndex, u64>,
    /// In section header order, as the loader lays them out.
    resident: Vec<SectionIndex>,
    names: HashMap<SectionIndex, String>,
}

impl Layout {
    fn new(file: &object::File<'_>, module_unload: bool) -> Result<Layout> {
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

    fn text_end(&self) -> u64 {
        MODULE_BASE + self.text.len() as u64
    }

    /// A defined symbol's address, if it is in laid-out text.
    fn symbol_addr(&self, sym: &object::Symbol<'_, '_>) -> Option<u64> {
        match sym.section() {
            SymbolSection::Section(i) => Some(self.base.get(&i)? + sym.address()),
            _ => None,
        }
    }

    fn is_resident(&self, addr: u64) -> bool {
        (MODULE_BASE..self.text_end()).contains(&addr)
    }
}

/// The addresses a table section's relocations point at, one per `stride`
/// bytes at `field` within each entry: `.return_sites` and the like hold
/// `site - &entry` (PC32 to `.text + off`), `__mcount_loc` the address (64).
fn table_sites(file: &object::File<'_>, layout: &Layout, section: &str, stride: u64, field: u64) -> Result<Vec<u64>> {
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
struct AltEntry {
    instr: u64,
    instr_len: u64,
    repl: u64,
    repl_len: u64,
    bit: u32,
    not: bool,
    direct_call: bool,
}

/// `.altinstructions`: 14-byte entries from 6.8 (cpuid:16, flags:16 with
/// ALT_FLAG_NOT 1 and ALT_FLAG_DIRECT_CALL 2), 12-byte ones before (u16
/// cpuid, bit 15 ALTINSTR_FLAG_INV), both followed by instrlen and
/// replacementlen (arch/x86/include/asm/alternative.h of each release).
fn alternatives(file: &object::File<'_>, layout: &Layout) -> Result<Vec<AltEntry>> {
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

/// A call or jmp rel32 whose displacement a relocation fills.
struct Site {
    addr: u64,
    is_call: bool,
    /// The callee's name (`sym+0xoff` when the relocation points inside it).
    name: String,
    /// Defined by the module, resident: not a callee.
    internal: bool,
    /// After a `cs` prefix: a 6-byte instruction.
    prefixed: bool,
    into_init: bool,
}

pub fn find_module_file(kernel: &Kernel, module: &str) -> Result<PathBuf> {
    crate::guest::find_module(&kernel.modules_dir()?, module)
}

/// Whether the release was built with CONFIG_MODULE_UNLOAD (the build
/// directory's .config, or the image's config file); yes when neither is there.
fn module_unload(kernel: &Kernel) -> bool {
    let mut configs = vec![kernel.kdir.join(".config")];
    if let Some(root) = &kernel.root {
        configs.push(root.join(format!("boot/config-{}", kernel.release)));
    }
    configs
        .iter()
        .find_map(|c| std::fs::read_to_string(c).ok())
        .is_none_or(|c| c.lines().any(|l| l == "CONFIG_MODULE_UNLOAD=y"))
}

/// `module` is an in-tree module's name, or the path of a `.ko` (then named
/// after its file).
pub fn extract(kernel: &Kernel, module: &str) -> Result<Truth> {
    let (path, module) = if module.ends_with(".ko") {
        let name = module.rsplit('/').next().unwrap_or(module).trim_end_matches(".ko").to_string();
        (PathBuf::from(module), name)
    } else {
        (find_module_file(kernel, module)?, module.to_string())
    };
    let module = module.as_str();
    let data = read_module(&path)?;
    let features = Features::read(kernel)?;
    extract_from(&data, module, &kernel.release, module_unload(kernel), &features)
        .with_context(|| format!("{} on {}", path.display(), kernel.release))
}

pub fn extract_from(
    data: &[u8],
    module: &str,
    release: &str,
    module_unload: bool,
    features: &Features,
) -> Result<Truth> {
    let file = object::File::parse(data)?;
    let mut layout = Layout::new(&file, module_unload)?;
    let text_end = layout.text_end();

    // The functions the live verb decodes: named STT_FUNC symbols of the
    // resident text (the core kallsyms), cut as hp-core cuts them.
    let symbols = file.symbols().filter_map(|s| {
        let is_function = s.kind() == SymbolKind::Text && !s.name().unwrap_or("").is_empty();
        let addr = layout.symbol_addr(&s)?;
        Some(Symbol { addr, size: s.size(), is_function })
    });
    let ranges = function_ranges(symbols, MODULE_BASE, text_end).map_err(|_| anyhow::anyhow!("out of memory"))?;
    let in_function = |addr: u64| {
        let i = ranges.partition_point(|r| r.start <= addr);
        i > 0 && addr < ranges[i - 1].end
    };

    // Instruction boundaries: each rel32 call or jmp, by the address of its
    // displacement (its last 4 bytes), with its own address and length.
    let mut branches: HashMap<u64, (u64, usize)> = HashMap::new();
    for r in &ranges {
        let bytes = &layout.text[(r.start - MODULE_BASE) as usize..(r.end - MODULE_BASE) as usize];
        let mut decoder = Decoder::with_ip(64, bytes, r.start, DecoderOptions::NONE);
        let mut insn = Instruction::default();
        while decoder.can_decode() {
            decoder.decode_out(&mut insn);
            if matches!(insn.code(), Code::Call_rel32_64 | Code::Jmp_rel32_64) {
                branches.insert(insn.next_ip() - 4, (insn.ip(), insn.len()));
            }
        }
    }

    // Every call/jmp rel32 relocation of the resident text, relocated as the
    // loader would (outside symbols at made-up kernel addresses) so that the
    // decoder can check them below.
    let mut kernel_addr: HashMap<String, u64> = HashMap::new();
    let mut sites: Vec<Site> = Vec::new();
    let mut altrepl_sites: Vec<Site> = Vec::new();
    let mut undecoded: Vec<Site> = Vec::new();
    let resident = layout.resident.clone();
    for index in resident {
        let section = file.section_by_index(index)?;
        let sbase = layout.base[&index];
        let is_altrepl = layout.names[&index] == ".altinstr_replacement";
        for (offset, reloc) in section.relocations() {
            let RelocationFlags::Elf { r_type } = reloc.flags() else { continue };
            if r_type != R_X86_64_PC32 && r_type != R_X86_64_PLT32 {
                continue;
            }
            let RelocationTarget::Symbol(sym_index) = reloc.target() else { continue };
            let sym = file.symbol_by_index(sym_index)?;
            let place = sbase + offset;
            let at = (place - MODULE_BASE) as usize;
            let (target, name, internal, into_init) = if sym.is_undefined() {
                let name = sym.name()?.to_string();
                let next = KERNEL_BASE + KERNEL_SPACING * kernel_addr.len() as u64;
                (*kernel_addr.entry(name.clone()).or_insert(next), name, false, false)
            } else if let Some(addr) = layout.symbol_addr(&sym) {
                let resident = layout.is_resident(addr);
                (addr, symbol_name(&file, sym_index, &layout)?, resident, !resident)
            } else {
                // Data: a RIP-relative operand, never a call's displacement.
                continue;
            };
            let value = target.wrapping_add(reloc.addend() as u64).wrapping_sub(place) as u32;
            layout.text[at..at + 4].copy_from_slice(&value.to_le_bytes());
            let opcode = if at > 0 { layout.text[at - 1] } else { 0 };
            if opcode != 0xe8 && opcode != 0xe9 {
                continue;
            }
            let name = match reloc.addend() {
                -4 => name,
                a => format!("{name}+{:#x}", a + 4),
            };
            // In a function, the decoder says where the instruction starts:
            // 6 bytes back for a prefixed one. Elsewhere the e8/e9 byte does.
            let (addr, prefixed) = match branches.get(&place) {
                Some(&(ip, len)) => (ip, len != 5),
                None if in_function(place - 1) => {
                    bail!("{name}: an e8/e9 relocation at {:#x} is not a call or jmp the decoder finds", place - 1)
                }
                None => (place - 1, false),
            };
            let site = Site { addr, is_call: opcode == 0xe8, name, internal, into_init, prefixed };
            if in_function(site.addr) {
                sites.push(site);
            } else if is_altrepl {
                altrepl_sites.push(site);
            } else if !site.internal {
                undecoded.push(site);
            }
        }
    }

    // What the loader rewrites, from its tables.
    let mcount: BTreeSet<u64> = table_sites(&file, &layout, "__mcount_loc", 8, 0)?.into_iter().collect();
    let return_sites: BTreeSet<u64> = table_sites(&file, &layout, ".return_sites", 4, 0)?.into_iter().collect();
    let retpoline_sites: BTreeSet<u64> = table_sites(&file, &layout, ".retpoline_sites", 4, 0)?.into_iter().collect();
    // struct static_call_site { s32 addr; s32 key; }
    let static_call_sites: BTreeSet<u64> =
        table_sites(&file, &layout, ".static_call_sites", 8, 0)?.into_iter().collect();
    // 6.1's struct paravirt_patch_site { u8 *instr; u8 type; u8 len; } (16 bytes).
    let para_sites = table_sites(&file, &layout, ".parainstructions", 16, 0)?;
    let alts = alternatives(&file, &layout)?;

    let mut truth = Truth {
        module: module.to_string(),
        release: release.to_string(),
        lines: BTreeMap::new(),
        functions: ranges.len(),
        text_bytes: layout.text.len(),
        internal_sites: 0,
        catalogue: Count::default(),
    };
    let add = |truth: &mut Truth, class: Class, name: &str, is_call: bool| {
        truth.lines.entry((class, name.to_string())).or_default().add(is_call);
    };

    // Alternatives, grouped by the place they patch, in application order.
    let mut groups: BTreeMap<u64, Vec<&AltEntry>> = BTreeMap::new();
    for a in &alts {
        groups.entry(a.instr).or_default().push(a);
    }
    let applies = |a: &AltEntry, yes: bool| features.lit(a.bit, yes != a.not);
    let and = |cond: Cond, lit: std::result::Result<Lit, bool>| match lit {
        Ok(l) => cond.and(l),
        Err(true) => cond,
        Err(false) => Cond(None),
    };
    // Original sites: kept when no entry of their group applies.
    let mut original_cond: Vec<(u64, u64, Cond)> = Vec::new();
    for (&instr, entries) in &groups {
        let len = entries.iter().map(|a| a.instr_len).max().unwrap_or(0);
        let cond = entries.iter().fold(Cond(Some(Vec::new())), |c, a| and(c, applies(a, false)));
        original_cond.push((instr, instr + len, cond));
        // Replacement k: it applies and no later entry does.
        for (k, a) in entries.iter().enumerate() {
            let mut cond = and(Cond(Some(Vec::new())), applies(a, true));
            for later in &entries[k + 1..] {
                cond = and(cond, applies(later, false));
            }
            if a.direct_call {
                // `call *pv_ops+off(%rip)` (ff 15) at the original place.
                let slot = pv_slot(&file, &layout, instr)?;
                add(&mut truth, Class::PvCall(cond), &slot, true);
                continue;
            }
            for s in altrepl_sites.iter().filter(|s| s.addr >= a.repl && s.addr < a.repl + a.repl_len) {
                if !s.internal {
                    add(&mut truth, Class::AltRepl(cond.clone()), &s.name, s.is_call);
                }
            }
        }
    }
    for instr in &para_sites {
        let slot = pv_slot(&file, &layout, *instr)?;
        add(&mut truth, Class::PvCall(Cond(Some(Vec::new()))), &slot, true);
    }

    for s in &sites {
        if s.internal {
            truth.internal_sites += 1;
            continue;
        }
        let alt = original_cond.iter().find(|(start, end, _)| s.addr >= *start && s.addr < *end);
        let class = if s.into_init {
            Class::IntoInit
        } else if s.prefixed {
            Class::Prefixed
        } else if s.name == "__fentry__" && mcount.contains(&s.addr) {
            Class::FtraceNop
        } else if s.name == "__x86_return_thunk" && return_sites.contains(&s.addr) {
            Class::ReturnThunk
        } else if s.name.starts_with("__x86_indirect_thunk_") && retpoline_sites.contains(&s.addr) {
            Class::Retpoline
        } else if static_call_sites.contains(&s.addr) {
            Class::StaticCall
        } else if let Some((_, _, cond)) = alt {
            Class::Alt(cond.clone())
        } else {
            Class::AsIs
        };
        add(&mut truth, class, &s.name, s.is_call);
    }
    for s in &undecoded {
        add(&mut truth, Class::Undecoded, &s.name, s.is_call);
    }

    truth.catalogue = check_by_decoding(&layout, &ranges, &sites, &kernel_addr)?;
    Ok(truth)
}

/// A defined symbol's name; a section symbol's as `section+0xoff` later.
fn symbol_name(file: &object::File<'_>, index: SymbolIndex, layout: &Layout) -> Result<String> {
    let sym = file.symbol_by_index(index)?;
    let name = sym.name()?;
    if !name.is_empty() {
        return Ok(name.to_string());
    }
    Ok(sym.section_index().and_then(|i| layout.names.get(&i).cloned()).unwrap_or_else(|| "?".into()))
}

/// The pv_ops slot an indirect `call *pv_ops+off(%rip)` at `instr` goes
/// through, as `pv_ops+0xoff`; `pv_ops+?` if the relocation is not there.
fn pv_slot(file: &object::File<'_>, layout: &Layout, instr: u64) -> Result<String> {
    for &index in &layout.resident {
        let base = layout.base[&index];
        let section = file.section_by_index(index)?;
        if instr < base || instr >= base + section.size() {
            continue;
        }
        for (offset, reloc) in section.relocations() {
            if base + offset == instr + 2 {
                if let RelocationTarget::Symbol(sym) = reloc.target() {
                    let name = file.symbol_by_index(sym)?.name()?.to_string();
                    return Ok(format!("{name}+{:#x}", reloc.addend() + 4));
                }
            }
        }
    }
    Ok("pv_ops+?".into())
}

/// The relocations' sites against iced-x86's decoding of the relocated text,
/// function by function, as the live verb decodes it (hp_core's `outgoing`):
/// every relocation at an e8/e9 must be a whole 5-byte instruction the
/// decoder reaches, and every call or jmp it finds leaving the text must be
/// one of them.
fn check_by_decoding(
    layout: &Layout,
    ranges: &[FunctionRange],
    sites: &[Site],
    kernel_addr: &HashMap<String, u64>,
) -> Result<Count> {
    let by_addr: BTreeMap<u64, &str> = kernel_addr.iter().map(|(n, &a)| (a, n.as_str())).collect();
    let found = outgoing(&layout.text, MODULE_BASE, Mode::Bits64, ranges, Default::default())
        .map_err(|_| anyhow::anyhow!("out of memory"))?;
    let mut decoded: BTreeMap<String, Count> = BTreeMap::new();
    for o in &found {
        let name = match by_addr.range(..=o.dest).next_back() {
            Some((&a, n)) if o.dest - a < KERNEL_SPACING && o.dest >= KERNEL_BASE => match o.dest - a {
                0 => n.to_string(),
                off => format!("{n}+{off:#x}"),
            },
            // Init text: named by relocation below; compare by address.
            _ => format!("{:#x}", o.dest),
        };
        let e = decoded.entry(name).or_default();
        e.calls += o.calls;
        e.tails += o.tails;
    }
    let mut relocated: BTreeMap<String, Count> = BTreeMap::new();
    for s in sites.iter().filter(|s| !s.internal && !s.prefixed) {
        let key = if s.into_init {
            // The decoder sees an address in init text; so does this key.
            let at = (s.addr + 1 - MODULE_BASE) as usize;
            let rel = i32::from_le_bytes(layout.text[at..at + 4].try_into().unwrap());
            format!("{:#x}", (s.addr + 5).wrapping_add(rel as i64 as u64))
        } else {
            s.name.clone()
        };
        relocated.entry(key).or_default().add(s.is_call);
    }
    // The attach path's own discovery (hp_core's `discover`, as
    // real_modules.rs runs it) on the catalogue functions: the same counts.
    // One target per symbol: its other layouts (catalogue.rs) are the same calls.
    let targets: Vec<Target> = MEMORY
        .iter()
        .enumerate()
        .filter(|(func, f)| index_of(f.name) == Some(*func))
        .filter_map(|(func, f)| kernel_addr.get(f.name).map(|&addr| Target { addr, func }))
        .collect();
    let opts = Options {
        mode: Mode::Bits64,
        call_thunks: true,
        module_space_start: MODULE_BASE,
        module_space_end: 0xffff_ffff_ff00_0000,
    };
    let found =
        discover(&layout.text, MODULE_BASE, ranges, &targets, &opts).map_err(|_| anyhow::anyhow!("out of memory"))?;
    let mut catalogue = Count::default();
    for (func, f) in MEMORY.iter().enumerate().filter(|(func, f)| index_of(f.name) == Some(*func)) {
        let mut by_discover = Count::default();
        for site in found.sites.iter().filter(|s| s.func == func) {
            by_discover.add(site.kind == SiteKind::Call);
        }
        let by_relocations = relocated.get(f.name).copied().unwrap_or_default();
        if by_discover != by_relocations {
            bail!("{}: discover finds {by_discover:?}, the relocations say {by_relocations:?}", f.name);
        }
        catalogue.calls += by_discover.calls;
        catalogue.tails += by_discover.tails;
    }
    if decoded != relocated {
        let diff: Vec<String> = decoded
            .keys()
            .chain(relocated.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|k| decoded.get(*k) != relocated.get(*k))
            .take(8)
            .map(|k| format!("{k}: decoded {:?}, relocations {:?}", decoded.get(k), relocated.get(k)))
            .collect();
        bail!("decoding and relocations disagree: {}", diff.join("; "));
    }
    Ok(catalogue)
}

pub fn truth_path(release: &str, module: &str) -> PathBuf {
    repo_root().join("target/lab").join(release).join(format!("{module}.callees"))
}

/// Extracts and writes `target/lab/<release>/<module>.callees`.
pub fn write(kernel: &Kernel, module: &str) -> Result<(Truth, PathBuf)> {
    let truth = extract(kernel, module)?;
    let path = truth_path(&kernel.release, &truth.module);
    std::fs::create_dir_all(path.parent().unwrap())?;
    std::fs::write(&path, truth.text())?;
    Ok((truth, path))
}

/// `cargo xtask callees-truth <release> <module>`.
pub fn command(release: &str, module: &str) -> Result<()> {
    let kernel = Kernel::release(release)?;
    let (truth, path) = write(&kernel, module)?;
    println!("{}", truth.summary());
    println!("written to {}", path.display());
    Ok(())
}

/// Modules the host check extracts on every tested kernel.
const CHECKED: &[&str] = &["ext4", "xfs", "e1000", "snd-pcm"];

/// The host check (`cargo xtask test`'s host phase, or `cargo xtask
/// callees-truth --check`): the extraction works on each module, the
/// decoder agrees with it (inside `extract`), and what it finds is sane.
pub fn check(kernel: &Kernel) -> Result<()> {
    for module in CHECKED {
        let (truth, path) = write(kernel, module)?;
        println!("{}", truth.summary());
        sanity(&truth).with_context(|| format!("{module} on {} ({})", kernel.release, path.display()))?;
    }
    Ok(())
}

fn sanity(truth: &Truth) -> Result<()> {
    let raw = truth.raw();
    let kmalloc = if truth.release.starts_with("6.1.") { "__kmalloc" } else { "__kmalloc_noprof" };
    // Callees each module is known to have, and a floor under their number
    // (measured: ext4 548 on 6.12 and 544 on 6.1, xfs 403/378, e1000
    // 131/134, snd-pcm 160/150).
    let (min_callees, known): (usize, &[&str]) = match truth.module.as_str() {
        // No memcpy: a KASAN kernel (the debug one) calls __asan_memcpy.
        "ext4" => (450, &["jbd2_journal_start", "jbd2__journal_start", "kfree", kmalloc, "__brelse"]),
        "xfs" => (300, &["kfree", "kvfree", "crc32c", "__wake_up"]),
        "e1000" => (100, &["kfree", "napi_complete_done", "request_threaded_irq", "dma_alloc_attrs"]),
        // No mutex_lock: a lockdep kernel (the debug one) calls mutex_lock_nested.
        "snd-pcm" => (100, &["kfree", "snd_ctl_add", "snd_timer_new"]),
        _ => (1, &[]),
    };
    if raw.len() < min_callees {
        bail!("only {} callees (expected at least {min_callees})", raw.len());
    }
    for name in known.iter().chain(&["__fentry__", "__x86_return_thunk"]) {
        if !raw.contains_key(name) {
            bail!("no call to {name} found");
        }
    }
    // Every `call __fentry__` is in __mcount_loc (ftrace makes each a NOP).
    let fentry = raw["__fentry__"];
    let nopped = truth.lines.get(&(Class::FtraceNop, "__fentry__".into())).copied().unwrap_or_default();
    if fentry != nopped || fentry.tails != 0 {
        bail!("__fentry__: {fentry:?} sites, {nopped:?} of them in __mcount_loc");
    }
    for ((class, name), c) in &truth.lines {
        // A thunk or static call the loader's tables miss would be left as
        // compiled: it would show live, and this would have to model it.
        let special =
            name.starts_with("__SCT__") || name == "__x86_return_thunk" || name.starts_with("__x86_indirect_thunk_");
        if special && *class == Class::AsIs {
            bail!("{name}: {c:?} sites not in the loader's tables");
        }
        // The guest knows what the preempt mode makes of these keys only.
        if *class == Class::StaticCall && !KNOWN_STATIC_CALLS.iter().any(|k| name.strip_prefix("__SCT__") == Some(k)) {
            bail!("{name}: a static call the guest check has no rule for");
        }
        if *class == Class::Prefixed && !name.starts_with("__x86_indirect_thunk_") {
            bail!("{name}: {c:?} prefixed call/jmp sites that are no retpoline thunk's");
        }
        // Sites the live verb cannot see, or whose callee it cannot know.
        let unseen = match class {
            Class::Undecoded | Class::IntoInit => true,
            Class::PvCall(cond) => cond.0.is_some(),
            _ => false,
        };
        if unseen {
            bail!("{name}: {c:?} sites {class}");
        }
    }
    Ok(())
}

/// The static-call keys whose function the preempt mode sets
/// (kernel/sched/core.c `sched_dynamic_update`); the guest check has the table.
/// The static calls callees_lib.sh knows the target of: the scheduler's,
/// per preempt mode, and 7.x's WARN with arguments (each site becomes a ud1).
const KNOWN_STATIC_CALLS: &[&str] =
    &["cond_resched", "might_resched", "preempt_schedule", "preempt_schedule_notrace", "WARN_trap"];

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const OLD_HEADER: &str = "#define NCAPINTS\t\t\t21\n\
        #define X86_FEATURE_REP_GOOD\t\t( 3*32+16) /* REP microcode works well */\n\
        #define X86_FEATURE_ALWAYS\t\t( 3*32+21) /* \"\" Always-present feature */\n\
        #define X86_FEATURE_XENPV\t\t( 8*32+16) /* \"\" Xen paravirtual guest */\n\
        #define X86_FEATURE_RETPOLINE\t\t(11*32+12) /* \"\" Generic Retpoline mitigation */\n\
        #define X86_FEATURE_SSE4_2\t\t( 4*32+20) /* \"sse4_2\" SSE-4.2 */\n\
        #define X86_BUG_SPECTRE_V2\t\tX86_BUG(14) /* CPU is affected by Spectre variant 2 */\n";
    const NEW_HEADER: &str = "#define NCAPINTS\t\t\t22\n\
        #define X86_FEATURE_ERMS\t\t( 9*32+ 9) /* \"erms\" Enhanced REP MOVSB/STOSB */\n\
        #define X86_FEATURE_FSRS\t\t(12*32+11) /* Fast short REP STOSB */\n\
        #define X86_BUG_SRSO\t\t\tX86_BUG(1*32 + 0) /* \"srso\" AMD SRSO bug */\n";

    #[test]
    fn feature_names_as_cpuinfo_shows_them() {
        let old = Features::parse(OLD_HEADER);
        assert_eq!(old.lit(3 * 32 + 16, true), Ok(Lit { feature: Feature::Flag("rep_good".into()), present: true }));
        assert_eq!(old.lit(4 * 32 + 20, false), Ok(Lit { feature: Feature::Flag("sse4_2".into()), present: false }));
        assert_eq!(old.lit(11 * 32 + 12, true).unwrap().feature, Feature::Hidden("X86_FEATURE_RETPOLINE".into()));
        assert_eq!(old.lit(21 * 32 + 14, true).unwrap().feature, Feature::Bug("spectre_v2".into()));
        // Decided here: ALWAYS is set, XENPV is not (no Xen PV guest).
        assert_eq!(old.lit(3 * 32 + 21, true), Err(true));
        assert_eq!(old.lit(8 * 32 + 16, true), Err(false));
        assert_eq!(old.lit(8 * 32 + 16, false), Err(true));
        let new = Features::parse(NEW_HEADER);
        assert_eq!(new.lit(9 * 32 + 9, true).unwrap().feature, Feature::Flag("erms".into()));
        assert_eq!(new.lit(12 * 32 + 11, true).unwrap().feature, Feature::Hidden("X86_FEATURE_FSRS".into()));
        assert_eq!(new.lit(23 * 32, true).unwrap().feature, Feature::Bug("srso".into()));
    }

    #[test]
    fn conditions() {
        let f = |n: &str| Feature::Flag(n.into());
        let t = Cond(Some(Vec::new()));
        assert_eq!(t.to_string(), "1");
        let c = t.and(Lit { feature: f("rep_good"), present: true }).and(Lit { feature: f("erms"), present: false });
        assert_eq!(c.to_string(), "!erms&rep_good");
        assert_eq!(c.clone().and(Lit { feature: f("erms"), present: true }).to_string(), "0");
        let h = c.and(Lit { feature: Feature::Hidden("X86_FEATURE_FSRS".into()), present: false });
        assert_eq!(h.to_string(), "!erms&rep_good&!?X86_FEATURE_FSRS");
    }

    /// lab/guest/callees_lib.sh under the guest's own busybox, on made-up
    /// kallsyms: aliases, the rewrite rules, and the differences it reports.
    fn compare(truth: &str, live: &str, mode: &str) -> Option<Vec<String>> {
        let busybox = Path::new("/bin/busybox");
        if !busybox.exists() {
            eprintln!("no /bin/busybox (the lab's busybox-static): callees_lib.sh not tested");
            return None;
        }
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("callees-lib-{}-{run}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let long = format!("a_{}", "long_name_".repeat(7));
        let kallsyms = format!(
            "ffffffff81000100 T kfree\n\
             ffffffff81000200 T memcpy\n\
             ffffffff81000200 T __memcpy\n\
             ffffffff81000300 T __x86_indirect_thunk_array\n\
             ffffffff81000300 T __x86_indirect_thunk_rax\n\
             ffffffff81000340 T __x86_indirect_thunk_rcx\n\
             ffffffff81000400 T __x86_return_thunk\n\
             ffffffff81000480 T srso_return_thunk\n\
             ffffffff81000500 T __cond_resched\n\
             ffffffff81000600 T preempt_schedule_thunk\n\
             ffffffff81000700 T __static_call_return0\n\
             ffffffff81000800 T __sw_hweight32\n\
             ffffffff810008f0 T fffff_wrap\n\
             ffffffff81000900 T {long}\n\
             ffffffffc0000100 t kfree\t[ext4]\n\
             ffffffffc0100000 T jbd2_journal_start\t[jbd2]\n"
        );
        let files = [("truth", truth), ("live", live), ("kallsyms", kallsyms.as_str())];
        for (name, text) in files {
            std::fs::write(dir.join(name), text.replace("LONG", &long)).unwrap();
        }
        std::fs::write(dir.join("cpuinfo"), "processor\t: 0\nflags\t\t: fpu popcnt rep_good\nbugs\t\t: spectre_v2\n")
            .unwrap();
        let lib = repo_root().join("lab/guest/callees_lib.sh");
        let out = std::process::Command::new(busybox)
            .args(["sh", "-c", &format!(". {}; callees_compare truth live {mode} ext4", lib.display())])
            .env("CALLEES_CPUINFO", "cpuinfo")
            .env("CALLEES_KALLSYMS", "kallsyms")
            .current_dir(&dir)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        Some(text.lines().filter(|l| !l.starts_with("HPINFO")).map(str::to_string).collect())
    }

    const TRUTH: &str = "# comment\n\
        kfree 3 1 as_is\n\
        memcpy 2 0 as_is\n\
        __memcpy 1 0 as_is\n\
        jbd2_journal_start 1 0 as_is\n\
        fffff_wrap+0x20 1 0 as_is\n\
        LONG 1 0 as_is\n\
        __fentry__ 9 0 ftrace_nop\n\
        __x86_indirect_thunk_r10 2 0 prefixed\n\
        __x86_return_thunk 0 7 return_thunk\n\
        __x86_indirect_thunk_rax 4 1 retpoline\n\
        __x86_indirect_thunk_rcx 1 0 retpoline\n\
        __SCT__cond_resched 2 0 static_call\n\
        __SCT__might_resched 3 0 static_call\n\
        __SCT__preempt_schedule 5 0 static_call\n\
        __sw_hweight32 1 0 alt:!popcnt\n\
        kfree 1 0 alt_repl:popcnt&!?X86_FEATURE_FSRS\n\
        pv_ops+0x100 1 0 pv_call:0\n";

    /// The live list on a voluntary kernel with plain retpolines and no
    /// return thunk: kallsyms names memcpy __memcpy, thunk_rax _array, and
    /// the 63-byte name is cut as the module cuts it.
    fn live_voluntary() -> String {
        let long = format!("a_{}", "long_name_".repeat(7));
        format!(
            "callee name=kfree sites=4 tails=1 static_call_sites=0 state=interceptable\n\
             callee name=__memcpy sites=3 tails=0 static_call_sites=0 state=refused reason=no_ftrace\n\
             callee name=jbd2_journal_start sites=1 tails=0 static_call_sites=0 state=interceptable\n\
             callee name=fffff_wrap+0x20 sites=1 tails=0 static_call_sites=0 state=refused reason=not_function_start\n\
             callee name={} sites=1 tails=0 static_call_sites=0 state=interceptable\n\
             callee name=__x86_indirect_thunk_array sites=4 tails=1 static_call_sites=0 state=refused reason=no_ftrace\n\
             callee name=__x86_indirect_thunk_rcx sites=1 tails=0 static_call_sites=0 state=refused reason=no_ftrace\n\
             callee name=__cond_resched sites=5 tails=0 static_call_sites=5 state=refused reason=static_call_sites\n",
            &long[..63]
        )
    }

    #[test]
    fn guest_comparison_agrees_on_a_matching_list() {
        let Some(diff) = compare(TRUTH, &live_voluntary(), "voluntary") else { return };
        assert_eq!(diff, Vec::<String>::new());
        // The same module in full preemption, with the return thunk on and
        // retpolines made indirect calls.
        let live = live_voluntary()
            .lines()
            .filter(|l| !l.contains("thunk") && !l.contains("__cond_resched"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            + "callee name=preempt_schedule_thunk sites=5 tails=0 static_call_sites=5 state=refused reason=static_call_sites\n\
               callee name=srso_return_thunk sites=0 tails=7 static_call_sites=0 state=refused reason=no_ftrace\n";
        let Some(diff) = compare(TRUTH, &live, "full") else { return };
        assert_eq!(diff, Vec::<String>::new());
    }

    #[test]
    fn guest_comparison_reports_each_difference_with_both_lines() {
        let live = live_voluntary()
            .replace("name=kfree sites=4", "name=kfree sites=5")
            .replace(
                "name=__cond_resched sites=5 tails=0 static_call_sites=5",
                "name=__cond_resched sites=5 tails=0 static_call_sites=4",
            )
            .replace("callee name=jbd2_journal_start sites=1 tails=0 static_call_sites=0 state=interceptable\n", "")
            .replace("name=__x86_indirect_thunk_rcx sites=1", "name=__x86_indirect_thunk_rcx sites=2")
            + "callee name=__sw_hweight32 sites=1 tails=0 static_call_sites=0 state=refused reason=no_ftrace\n\
               callee name=__x86_return_thunk sites=0 tails=3 static_call_sites=0 state=refused reason=no_ftrace\n\
               callee name=no_such_fn sites=1 tails=0 static_call_sites=0 state=interceptable\n";
        let Some(mut diff) = compare(TRUTH, &live, "voluntary") else { return };
        diff.sort();
        let want = [
            "EXTRA live: callee name=__sw_hweight32 sites=1 tails=0 static_call_sites=0 state=refused reason=no_ftrace",
            "MISSING truth: __SCT__cond_resched 2 0 static_call -> __cond_resched; __SCT__might_resched 3 0 static_call \
             -> __cond_resched | live: callee name=__cond_resched sites=5 tails=0 static_call_sites=4 state=refused reason=static_call_sites",
            "MISSING truth: __x86_indirect_thunk_rcx 1 0 retpoline | live: callee name=__x86_indirect_thunk_rcx sites=2 tails=0 \
             static_call_sites=0 state=refused reason=no_ftrace",
            "MISSING truth: __x86_return_thunk 0 7 return_thunk (all, or none, to one thunk) | live: callee name=__x86_return_thunk \
             sites=0 tails=3 static_call_sites=0 state=refused reason=no_ftrace",
            "MISSING truth: jbd2_journal_start 1 0 as_is | live: none",
            "MISSING truth: kfree 3 1 as_is; kfree 1 0 alt_repl:popcnt&!?X86_FEATURE_FSRS | live: callee name=kfree sites=5 \
             tails=1 static_call_sites=0 state=interceptable",
            "UNRESOLVED live no_such_fn",
        ];
        assert_eq!(diff, want);
    }
}
