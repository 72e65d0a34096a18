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
use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget, SymbolIndex, SymbolKind};

use crate::kernel::{read_module, Kernel};
use crate::repo_root;

mod cpu_features;
mod elf_layout;

pub use cpu_features::{Cond, Features, Lit};
use elf_layout::{alternatives, table_sites, AltEntry, Layout, MODULE_BASE, R_X86_64_PC32, R_X86_64_PLT32};

/// Made-up addresses for what the module does not define.
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
