//! Stack use of the Rust object, from the `.stack_sizes` sections rustc
//! writes with `-Z emit-stack-sizes`: every frame must stay under a budget,
//! and the hot path (what runs on the target's stack for each intercepted
//! call) is added up along its direct calls.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Result};
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SymbolKind};

/// Half of the kernel's CONFIG_FRAME_WARN (2048 on Debian): our frames run
/// inside someone else's call chain.
pub const FRAME_BUDGET: u64 = 1024;

/// What the trampoline calls on the target's stack.
pub const HOT_ENTRIES: &[&str] = &["hp_on_entry", "hp_on_exit", "hp_on_jump_through"];

/// Reached from the hot path only through a pointer (`dyn Write`, the
/// pointer format), which relocations do not show: their frames are added.
/// (The line writer is the 256-byte `LineBuf`'s, `Kj100_` in its symbol.)
pub const HOT_INDIRECT: &[&str] = &["14kernel_pointer", "LineBufKj100_ENtNtCs7rbY0wKSuMs_4core3fmt5Write9write_str"];

/// The C layer's hot-path functions, from gcc's -fstack-usage (hp_main.su).
pub const HOT_C: &[&str] = &["hp_c_emit_call", "hp_c_format_ptr", "hp_c_log_window"];

/// Lines like `hp_main.c:93:6:hp_c_emit_call<TAB>48<TAB>static`: frame by function.
pub fn c_frames(su: &str) -> HashMap<String, u64> {
    su.lines()
        .filter_map(|l| {
            let mut fields = l.split('\t');
            let name = fields.next()?.rsplit(':').next()?.to_string();
            Some((name, fields.next()?.parse().ok()?))
        })
        .collect()
}

#[derive(Default)]
pub struct StackInfo {
    /// Frame size by function symbol.
    pub frames: HashMap<String, u64>,
    /// Direct callees by function symbol.
    pub calls: HashMap<String, Vec<String>>,
    /// Bytes of an address (4 on i386): in `.stack_sizes`, and what each call pushes.
    pub word: u64,
}

impl StackInfo {
    pub fn add_object(&mut self, path: &Path) -> Result<()> {
        let data = std::fs::read(path)?;
        let file = object::File::parse(&*data)?;
        self.word = if file.is_64() { 8 } else { 4 };
        let word = self.word as usize;
        // With -Z function-sections, one function per text section; a call
        // to a local function may name the section instead of the function.
        let function_in = |section: object::SectionIndex| {
            file.symbols()
                .find(|s| s.section_index() == Some(section) && s.kind() == SymbolKind::Text && s.is_definition())
                .and_then(|s| s.name().ok().map(str::to_string))
        };
        let symbol_name = |target: RelocationTarget| match target {
            RelocationTarget::Symbol(i) => {
                let sym = file.symbol_by_index(i).ok()?;
                if sym.kind() == SymbolKind::Section {
                    function_in(sym.section_index()?)
                } else {
                    sym.name().ok().map(str::to_string)
                }
            }
            _ => None,
        };
        for section in file.sections() {
            let name = section.name()?;
            if name == ".stack_sizes" || name.starts_with(".stack_sizes.") {
                // Entries: a function address (relocated) then ULEB128 size.
                let bytes = section.data()?;
                let relocs: HashMap<u64, RelocationTarget> =
                    section.relocations().map(|(o, r)| (o, r.target())).collect();
                let mut at = 0usize;
                while at + word < bytes.len() {
                    let func = relocs.get(&(at as u64)).and_then(|t| symbol_name(*t));
                    at += word;
                    let (mut size, mut shift) = (0u64, 0);
                    while let Some(&b) = bytes.get(at) {
                        at += 1;
                        size |= u64::from(b & 0x7f) << shift;
                        shift += 7;
                        if b & 0x80 == 0 {
                            break;
                        }
                    }
                    if let Some(func) = func {
                        self.frames.insert(func, size);
                    }
                }
            } else if name.starts_with(".text") {
                let Some(owner) = function_in(section.index()) else { continue };
                let callees = section.relocations().filter_map(|(_, r)| symbol_name(r.target())).collect();
                self.calls.insert(owner, callees);
            }
        }
        Ok(())
    }

    /// The deepest chain of direct calls from `func`: bytes and the chain.
    /// Each call adds its return address.
    pub fn deepest(&self, func: &str, seen: &mut Vec<String>) -> (u64, Vec<String>) {
        let own = self.frames.get(func).copied().unwrap_or(0);
        let mut best = (0, Vec::new());
        if !seen.iter().any(|s| s == func) {
            seen.push(func.to_string());
            // A panic ends in BUG(): not a path the hot path takes.
            for callee in self.calls.get(func).into_iter().flatten().filter(|c| !c.contains("9panicking")) {
                let (depth, chain) = self.deepest(callee, seen);
                if depth > best.0 {
                    best = (depth, chain);
                }
            }
            seen.pop();
        }
        best.1.insert(0, func.to_string());
        (own + self.word + best.0, best.1)
    }

    /// The largest frame of a function whose symbol contains `part`.
    pub fn frame_of(&self, part: &str) -> u64 {
        self.frames.iter().filter(|(f, _)| f.contains(part)).map(|(_, &s)| s).max().unwrap_or(0)
    }

    /// The largest frames, largest first.
    pub fn largest(&self, n: usize) -> Vec<(&str, u64)> {
        let mut all: Vec<(&str, u64)> = self.frames.iter().map(|(f, &s)| (f.as_str(), s)).collect();
        all.sort_by_key(|&(f, s)| (std::cmp::Reverse(s), f));
        all.truncate(n);
        all
    }

    pub fn check(&self) -> Result<()> {
        let mut over: Vec<(&String, &u64)> = self.frames.iter().filter(|(_, &s)| s > FRAME_BUDGET).collect();
        over.sort_by_key(|(_, &s)| std::cmp::Reverse(s));
        if !over.is_empty() {
            bail!("Rust frames over {FRAME_BUDGET} bytes: {over:?}");
        }
        Ok(())
    }
}
