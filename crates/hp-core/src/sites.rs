//! Finding the call sites to redirect in a module's code.
//!
//! The code is decoded function by function, each function from its own
//! start as given by the module's symbol table. A byte that does not belong
//! to an instruction stream (padding, an `int3` from someone else's probe,
//! data) can then only confuse the decoding of the one function it is in.

use alloc::collections::TryReserveError;
use alloc::vec::Vec;
use iced_x86::{Code, Decoder, DecoderOptions};

/// With call-depth tracking the kernel may redirect a call to the
/// accounting thunk placed in the padding just before a function.
pub const CALL_THUNK_PADDING: u64 = 16;

/// One symbol from the module's symbol table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub addr: u64,
    pub size: u64,
    pub is_function: bool,
}

/// A byte range of code to decode as one function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionRange {
    pub start: u64,
    pub end: u64,
}

/// Function ranges inside `[text_start, text_end)`, sorted, each ending at
/// the latest where the next one starts, so that no byte is decoded twice.
/// A symbol of size 0 runs to the next function or the end of the text.
///
/// Allocation failure is an error, not a panic: in the kernel a panic is a crash.
pub fn function_ranges(
    symbols: impl IntoIterator<Item = Symbol>,
    text_start: u64,
    text_end: u64,
) -> Result<Vec<FunctionRange>, TryReserveError> {
    let mut ranges = Vec::new();
    for s in symbols.into_iter().filter(|s| s.is_function && s.addr >= text_start && s.addr < text_end) {
        let end = if s.size == 0 { text_end } else { s.addr.saturating_add(s.size).min(text_end) };
        try_push(&mut ranges, FunctionRange { start: s.addr, end })?;
    }
    ranges.sort_unstable_by_key(|r| (r.start, core::cmp::Reverse(r.end)));
    ranges.dedup_by_key(|r| r.start);
    for i in 1..ranges.len() {
        let next_start = ranges[i].start;
        let prev = &mut ranges[i - 1];
        prev.end = prev.end.min(next_start);
    }
    Ok(ranges)
}

fn try_push<T>(v: &mut Vec<T>, item: T) -> Result<(), TryReserveError> {
    v.try_reserve(1)?;
    v.push(item);
    Ok(())
}

/// A function we intercept, and where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub addr: u64,
    /// Index into the catalogue.
    pub func: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiteKind {
    /// `call rel32`: the replacement must return to the next instruction.
    Call,
    /// `jmp rel32` tail call: the replacement returns to our caller's caller.
    TailJump,
}

impl SiteKind {
    /// The only length we redirect: the pre-handler pushes `addr + 5` as the
    /// return address, which is wrong for a prefixed (longer) instruction.
    pub const INSTRUCTION_LEN: u64 = 5;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Site {
    pub addr: u64,
    pub func: usize,
    pub kind: SiteKind,
}

/// The mode the target's code runs in. Calls and jumps look the same in
/// both (`e8`/`e9` rel32, five bytes); what differs is how the other
/// instructions decode, and so where the next one starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// x86_64.
    #[default]
    Bits64,
    /// 32-bit x86 (i386).
    Bits32,
}

impl Mode {
    /// The mode of the code this crate is compiled into: a module decodes
    /// the kernel it runs in.
    pub const NATIVE: Mode = if cfg!(target_pointer_width = "32") { Mode::Bits32 } else { Mode::Bits64 };

    fn bitness(self) -> u32 {
        match self {
            Mode::Bits64 => 64,
            Mode::Bits32 => 32,
        }
    }
}

/// What the kernel that runs the target does to call sites.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub mode: Mode,
    /// CONFIG_CALL_THUNKS (6.2+ with call padding): a `call func` may have
    /// been patched to `call` the accounting thunk in the padding before
    /// `func`. Without it, only an exact destination counts.
    pub call_thunks: bool,
    /// Where modules (and kprobes' detour buffers) live: a `jmp` there that
    /// leaves the target's own text may be an optimized kprobe of someone else.
    pub module_space_start: u64,
    pub module_space_end: u64,
}

/// Something in a function's bytes that is not what the compiler wrote, or
/// may not be: decoding past it could be out of step with the real code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisturbanceKind {
    /// An `int3` that does not follow an unconditional jump or return, where
    /// the compiler puts them (straight-line-speculation padding): most
    /// likely someone else's kprobe on a longer instruction.
    Int3,
    /// An `int3` where the compiler puts padding. Only a disturbance if
    /// decoding it as a longer, probed instruction reveals a hidden site.
    PaddingInt3,
    /// A `jmp rel32` into module space outside the target's text: an
    /// optimized kprobe's detour, or a tail call into another module.
    ModuleSpaceJump { dest: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disturbance {
    /// Start of the function it is in.
    pub function: u64,
    pub addr: u64,
    pub kind: DisturbanceKind,
    /// Sites found only by decoding past it at other instruction boundaries.
    /// kprobes checks every site's instruction boundary again at
    /// registration (`can_probe`), so a wrong guess is refused, not armed.
    pub recovered_sites: u32,
}

/// What decoding found.
#[derive(Debug, Default)]
pub struct Discovery {
    pub sites: Vec<Site>,
    /// `int3` where a call or jump to a target would be: someone else's kprobe
    /// sits there, and the seed's advice is to leave such sites alone.
    pub foreign_probes: Vec<Site>,
    /// `jcc rel32` straight into a target. Redirecting would mean emulating the
    /// condition; these are reported and not intercepted.
    pub conditional_jumps: Vec<Site>,
    /// A call or jump into a target longer than 5 bytes (prefixed).
    pub long_branches: Vec<Site>,
    pub disturbances: Vec<Disturbance>,
    pub functions_decoded: usize,
    pub bytes_decoded: u64,
}

/// How far past a suspicious instruction the real instruction boundary may
/// be: an x86 instruction is at most 15 bytes long.
const MAX_INSN_LEN: usize = 15;
/// A misaligned decoding falls back in step within a few instructions; this
/// bounds the work if it does not.
const MAX_RESYNC_INSNS: usize = 64;

/// The target a branch to `dest` goes to. An exact match always wins. With
/// call thunks, a call into the 16 bytes before a target is a call to it:
/// the nearest target above `dest`, so the window never reaches across
/// another function's start (with call padding, those 16 bytes belong to
/// the function after them).
fn resolve(targets: &[Target], dest: u64, kind: SiteKind, opts: &Options) -> Option<usize> {
    if let Some(t) = targets.iter().find(|t| t.addr == dest) {
        return Some(t.func);
    }
    if !opts.call_thunks || kind != SiteKind::Call {
        return None;
    }
    targets
        .iter()
        .filter(|t| t.addr > dest && t.addr - dest <= CALL_THUNK_PADDING)
        .min_by_key(|t| t.addr - dest)
        .map(|t| t.func)
}

/// Makes iced-x86 build its decoder tables now. It builds them on first
/// use, with allocations that cannot fail gracefully and are kept for good;
/// the kernel module calls this once, with its allocator on an arena (see
/// `crate::arena`).
pub fn build_decoder_tables() {
    let mut decoder = Decoder::with_ip(64, &[0xe8, 0, 0, 0, 0], 0, DecoderOptions::NONE);
    let _ = decoder.decode();
}

/// Decodes each function of `text` (which starts at `text_base`) and finds
/// every direct call or jump into `targets`.
pub fn discover(
    text: &[u8],
    text_base: u64,
    functions: &[FunctionRange],
    targets: &[Target],
    opts: &Options,
) -> Result<Discovery, TryReserveError> {
    let mut found = Discovery::default();
    let text_end = text_base + text.len() as u64;
    for range in functions {
        if range.start < text_base || range.end > text_end || range.start >= range.end {
            continue;
        }
        let bytes = &text[(range.start - text_base) as usize..(range.end - text_base) as usize];
        let scan = FunctionScan { bytes, start: range.start, text_base, text_end, targets, opts };
        scan.run(&mut found)?;
        found.functions_decoded += 1;
        found.bytes_decoded += bytes.len() as u64;
    }
    Ok(found)
}

/// One function's decoding.
struct FunctionScan<'a> {
    bytes: &'a [u8],
    start: u64,
    text_base: u64,
    text_end: u64,
    targets: &'a [Target],
    opts: &'a Options,
}

/// A place where the real instruction boundary after `position` is unknown:
/// anywhere in `alternatives`.
struct Suspect {
    position: usize,
    kind: DisturbanceKind,
    alternatives: core::ops::Range<usize>,
}

/// What one instruction is to us.
enum Step {
    Site(Site),
    Probed(Site),
    Conditional(Site),
    Long(Site),
    Suspect(DisturbanceKind, core::ops::Range<usize>),
    Other { unconditional: bool },
}

impl Step {
    /// After this, the compiler may put `int3` padding (straight-line
    /// speculation hardening follows every unconditional jump and return).
    fn ends_straight_line(&self) -> bool {
        match self {
            Step::Site(s) | Step::Long(s) => s.kind == SiteKind::TailJump,
            Step::Suspect(kind, _) => *kind != DisturbanceKind::Int3,
            Step::Other { unconditional } => *unconditional,
            Step::Probed(_) | Step::Conditional(_) => false,
        }
    }
}

impl FunctionScan<'_> {
    #[inline(never)] // its decoder stays in its own frame
    fn run(&self, found: &mut Discovery) -> Result<(), TryReserveError> {
        let first_site = found.sites.len();
        let mut suspects = Vec::new();
        let mut decoder = self.decoder();
        self.decode_from(&mut decoder, 0, None, |position, step| {
            match step {
                Step::Site(s) => try_push(&mut found.sites, s)?,
                Step::Probed(s) => try_push(&mut found.foreign_probes, s)?,
                Step::Conditional(s) => try_push(&mut found.conditional_jumps, s)?,
                Step::Long(s) => try_push(&mut found.long_branches, s)?,
                Step::Suspect(kind, alternatives) => try_push(&mut suspects, Suspect { position, kind, alternatives })?,
                Step::Other { .. } => {}
            }
            Ok(true)
        })?;
        if suspects.is_empty() {
            return Ok(());
        }
        // Where the main decoding put instruction boundaries: another
        // decoding that reaches one of them is back in step from there on.
        let mut boundaries = Vec::new();
        boundaries.try_reserve_exact(self.bytes.len().div_ceil(64))?;
        boundaries.resize(self.bytes.len().div_ceil(64), 0u64);
        self.decode_from(&mut decoder, 0, None, |position, _| {
            boundaries[position / 64] |= 1u64 << (position % 64);
            Ok(true)
        })?;
        let is_boundary = |p: usize| boundaries.get(p / 64).is_some_and(|w| w & (1u64 << (p % 64)) != 0);
        for suspect in &suspects {
            let mut recovered = 0u32;
            for alt in suspect.alternatives.clone().filter(|&p| p < self.bytes.len() && !is_boundary(p)) {
                let mut count = 0;
                self.decode_from(&mut decoder, alt, Some(&is_boundary), |_, step| {
                    count += 1;
                    if let Step::Site(s) = step {
                        if !found.sites[first_site..].contains(&s) {
                            try_push(&mut found.sites, s)?;
                            recovered += 1;
                        }
                    }
                    Ok(count < MAX_RESYNC_INSNS)
                })?;
            }
            if suspect.kind != DisturbanceKind::PaddingInt3 || recovered > 0 {
                let addr = self.start + suspect.position as u64;
                let d = Disturbance { function: self.start, addr, kind: suspect.kind, recovered_sites: recovered };
                try_push(&mut found.disturbances, d)?;
            }
        }
        Ok(())
    }

    /// Decodes from `position` and hands each instruction to `visit`, until
    /// the end of the function, `visit` says stop, or (when given) an
    /// instruction boundary of `stop_at` is reached after the first.
    /// One decoder for the function: 464 bytes, so made once, in place (not
    /// inlined, so that it is not built on the stack and then copied).
    #[inline(never)]
    fn decoder(&self) -> Decoder<'_> {
        new_decoder(self.bytes, self.start, self.opts.mode)
    }

    fn decode_from(
        &self,
        decoder: &mut Decoder<'_>,
        position: usize,
        stop_at: Option<&dyn Fn(usize) -> bool>,
        mut visit: impl FnMut(usize, Step) -> Result<bool, TryReserveError>,
    ) -> Result<(), TryReserveError> {
        if decoder.set_position(position).is_err() {
            return Ok(());
        }
        decoder.set_ip(self.start + position as u64);
        let mut after_unconditional = false;
        while decoder.can_decode() {
            let position = decoder.position();
            if stop_at.is_some_and(|stop| stop(position)) {
                break;
            }
            let step = self.classify(decoder, after_unconditional);
            after_unconditional = step.ends_straight_line();
            if !visit(position, step)? {
                break;
            }
        }
        Ok(())
    }

    #[inline(never)] // keeps its locals out of decode_from's frame (see there)
    fn classify(&self, decoder: &mut Decoder<'_>, after_unconditional: bool) -> Step {
        let position = decoder.position();
        let insn = decoder.decode();
        let addr = insn.ip();
        let len = insn.len();
        let kind = match insn.code() {
            Code::Call_rel32_64 | Code::Call_rel32_32 => SiteKind::Call,
            Code::Jmp_rel32_64 | Code::Jmp_rel32_32 => SiteKind::TailJump,
            Code::Int3 => {
                if let Some(func) = self.probed_site_target(position, addr) {
                    // Skip what was the rest of the probed instruction.
                    let next = position + SiteKind::INSTRUCTION_LEN as usize;
                    if decoder.set_position(next.min(self.bytes.len())).is_ok() {
                        decoder.set_ip(addr + SiteKind::INSTRUCTION_LEN);
                    }
                    return Step::Probed(Site { addr, func, kind: SiteKind::Call });
                }
                let kind = if after_unconditional { DisturbanceKind::PaddingInt3 } else { DisturbanceKind::Int3 };
                return Step::Suspect(kind, position + 1..position + 1 + MAX_INSN_LEN);
            }
            Code::Retnq
            | Code::Retnq_imm16
            | Code::Jmp_rel8_64
            | Code::Jmp_rm64
            | Code::Retnd
            | Code::Retnd_imm16
            | Code::Jmp_rel8_32
            | Code::Jmp_rm32
            | Code::Ud2 => {
                return Step::Other { unconditional: true }
            }
            _ if is_jcc_rel32(self.bytes, position, len) => {
                return match resolve(self.targets, insn.near_branch_target(), SiteKind::TailJump, self.opts) {
                    Some(func) => Step::Conditional(Site { addr, func, kind: SiteKind::TailJump }),
                    None => Step::Other { unconditional: false },
                };
            }
            _ => return Step::Other { unconditional: false },
        };
        let dest = insn.near_branch_target();
        match resolve(self.targets, dest, kind, self.opts) {
            Some(func) if len as u64 == SiteKind::INSTRUCTION_LEN => Step::Site(Site { addr, func, kind }),
            Some(func) => Step::Long(Site { addr, func, kind }),
            None if kind == SiteKind::TailJump && self.is_foreign_module_space(dest) => {
                // An optimized probe writes a 5-byte jmp over one or more
                // whole instructions: the next real one starts 5 to 19
                // bytes after it.
                let next = position + len;
                Step::Suspect(DisturbanceKind::ModuleSpaceJump { dest }, next..next + MAX_INSN_LEN)
            }
            None => Step::Other { unconditional: kind == SiteKind::TailJump },
        }
    }

    fn is_foreign_module_space(&self, dest: u64) -> bool {
        let in_own_text = dest >= self.text_base && dest < self.text_end;
        !in_own_text && dest >= self.opts.module_space_start && dest < self.opts.module_space_end
    }

    /// If the `int3` at `position` replaced the opcode of a 5-byte call or
    /// jump into a target, which target.
    fn probed_site_target(&self, position: usize, addr: u64) -> Option<usize> {
        let rel: [u8; 4] = self.bytes.get(position + 1..position + 5)?.try_into().ok()?;
        let dest = addr.wrapping_add(SiteKind::INSTRUCTION_LEN).wrapping_add(i32::from_le_bytes(rel) as i64 as u64);
        resolve(self.targets, dest, SiteKind::Call, self.opts)
    }
}

/// A function outside the module that the module calls or tail-jumps to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outgoing {
    pub dest: u64,
    /// 5-byte `call rel32` sites.
    pub calls: u32,
    /// 5-byte `jmp rel32` sites (tail calls).
    pub tails: u32,
    /// Of those, sites `is_static_call_site` named: the kernel rewrites them.
    pub static_call_sites: u32,
    /// Calls followed by `ud2` or `int3`, or that end their function: the
    /// compiler's own sign that the callee does not return.
    pub noreturn_sites: u32,
}

/// What the kernel knows of a module's instructions that decoding alone
/// cannot tell, each list sorted.
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelMarks<'a> {
    /// Calls the kernel's static_call rewrites.
    pub static_call_sites: &'a [u64],
    /// `ud2`s with a `__bug_table` entry: a WARN (execution goes on after
    /// it) or a BUG, the kernel's own, not the compiler's sign that the
    /// call before it never returns.
    pub bug_traps: &'a [u64],
}

impl KernelMarks<'_> {
    pub fn is_static_call_site(&self, addr: u64) -> bool {
        self.static_call_sites.binary_search(&addr).is_ok()
    }

    pub fn is_bug_trap(&self, addr: u64) -> bool {
        self.bug_traps.binary_search(&addr).is_ok()
    }
}

/// Every destination outside `[text_base, text_base + len)` of a 5-byte
/// `call rel32` or `jmp rel32`, decoded function by function, sorted by
/// destination.
#[inline(never)] // its decoder stays in its own frame
pub fn outgoing(
    text: &[u8],
    text_base: u64,
    mode: Mode,
    functions: &[FunctionRange],
    marks: KernelMarks<'_>,
) -> Result<Vec<Outgoing>, TryReserveError> {
    let text_end = text_base + text.len() as u64;
    // Sorted by destination as it grows: a module has far fewer callees
    // than sites, and sorting here would need a large stack frame.
    let mut merged: Vec<Outgoing> = Vec::new();
    for range in functions {
        if range.start < text_base || range.end > text_end || range.start >= range.end {
            continue;
        }
        let bytes = &text[(range.start - text_base) as usize..(range.end - text_base) as usize];
        outgoing_of_function(bytes, range.start, mode, text_base..text_end, &marks, &mut merged)?;
    }
    Ok(merged)
}

/// One function's share of `outgoing`, merged into `merged`.
#[inline(never)] // its decoder stays in its own frame
fn outgoing_of_function(
    bytes: &[u8],
    start: u64,
    mode: Mode,
    own_text: core::ops::Range<u64>,
    marks: &KernelMarks<'_>,
    merged: &mut Vec<Outgoing>,
) -> Result<(), TryReserveError> {
    let mut decoder = new_decoder(bytes, start, mode);
    while decoder.can_decode() {
        let insn = decoder.decode();
        let is_call = match insn.code() {
            Code::Call_rel32_64 | Code::Call_rel32_32 => true,
            Code::Jmp_rel32_64 | Code::Jmp_rel32_32 => false,
            _ => continue,
        };
        let dest = insn.near_branch_target();
        if insn.len() as u64 != SiteKind::INSTRUCTION_LEN || own_text.contains(&dest) {
            continue;
        }
        let next = decoder.position();
        let ud2 = bytes[next..].starts_with(&[0x0f, 0x0b]) && !marks.is_bug_trap(start + next as u64);
        let noreturn = is_call && (next >= bytes.len() || bytes[next] == 0xcc || ud2);
        let at = match merged.binary_search_by_key(&dest, |o| o.dest) {
            Ok(at) => at,
            Err(at) => {
                merged.try_reserve(1)?;
                merged.insert(at, Outgoing { dest, ..Outgoing::default() });
                at
            }
        };
        let o = &mut merged[at];
        o.calls += is_call as u32;
        o.tails += !is_call as u32;
        o.static_call_sites += marks.is_static_call_site(insn.ip()) as u32;
        o.noreturn_sites += noreturn as u32;
    }
    Ok(())
}

/// Made in place, not on the caller's stack and then copied (464 bytes).
#[inline(never)]
fn new_decoder(bytes: &[u8], ip: u64, mode: Mode) -> Decoder<'_> {
    Decoder::with_ip(mode.bitness(), bytes, ip, DecoderOptions::NONE)
}

/// `0f 8x rel32`: the only conditional jump that reaches outside the module.
fn is_jcc_rel32(bytes: &[u8], position: usize, len: usize) -> bool {
    len == 6 && bytes[position] == 0x0f && bytes[position + 1] & 0xf0 == 0x80
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::code_asm::*;

    const TEXT: u64 = 0xffff_ffff_c000_0000;
    const KMALLOC: u64 = 0xffff_ffff_8123_4560;
    const KFREE: u64 = 0xffff_ffff_8123_9000;
    const OTHER: u64 = 0xffff_ffff_8100_0000;
    const TARGETS: &[Target] = &[Target { addr: KMALLOC, func: 0 }, Target { addr: KFREE, func: 11 }];

    /// Assembles functions back to back at TEXT; returns the bytes and ranges.
    fn build(funcs: &[&dyn Fn(&mut CodeAssembler)]) -> (Vec<u8>, Vec<Symbol>) {
        let mut text = Vec::new();
        let mut symbols = Vec::new();
        for body in funcs {
            let addr = TEXT + text.len() as u64;
            let mut a = CodeAssembler::new(64).unwrap();
            body(&mut a);
            let code = a.assemble(addr).unwrap();
            symbols.push(Symbol { addr, size: code.len() as u64, is_function: true });
            text.extend_from_slice(&code);
            text.extend_from_slice(&[0xcc; 3]); // padding between functions
        }
        (text, symbols)
    }

    const OPTS: Options = Options {
        mode: Mode::Bits64,
        call_thunks: true,
        module_space_start: 0xffff_ffff_c000_0000,
        module_space_end: 0xffff_ffff_ff00_0000,
    };

    fn discover_with(text: &[u8], symbols: &[Symbol], targets: &[Target], opts: &Options) -> Discovery {
        let ranges = function_ranges(symbols.iter().copied(), TEXT, TEXT + text.len() as u64).unwrap();
        discover(text, TEXT, &ranges, targets, opts).unwrap()
    }

    fn discover_all(text: &[u8], symbols: &[Symbol]) -> Discovery {
        discover_with(text, symbols, TARGETS, &OPTS)
    }

    /// `mov rax, imm64` whose last byte, decoded out of step, is `mov eax,
    /// imm32`: it swallows the opcode of a call right after it.
    const SWALLOWING_IMM: u64 = 0xb800_0000_0000_0000;

    #[test]
    fn finds_calls_and_tail_jumps_only_into_targets() {
        let (text, syms) = build(&[
            &|a| {
                a.push(rbx).unwrap();
                a.call(KMALLOC).unwrap();
                a.call(OTHER).unwrap();
                a.pop(rbx).unwrap();
                a.ret().unwrap();
            },
            &|a| {
                a.mov(rdi, rax).unwrap();
                a.jmp(KFREE).unwrap();
            },
        ]);
        let d = discover_all(&text, &syms);
        assert_eq!(d.functions_decoded, 2);
        assert_eq!(d.sites.len(), 2);
        assert_eq!(d.sites[0], Site { addr: TEXT + 1, func: 0, kind: SiteKind::Call });
        assert_eq!(d.sites[1].kind, SiteKind::TailJump);
        assert_eq!(d.sites[1].func, 11);
        assert_eq!(text[(d.sites[1].addr - TEXT) as usize], 0xe9);
    }

    /// i386: `dec eax` (0x48) before a call. Decoded as 64-bit code, 0x48
    /// is a REX prefix and the call a 6-byte one, which is no site.
    #[test]
    fn decodes_32_bit_code_in_32_bit_mode() {
        const TEXT32: u64 = 0xf8a0_0000;
        const KMALLOC32: u64 = 0xc123_4560;
        const KFREE32: u64 = 0xc123_9000;
        let mut a = CodeAssembler::new(32).unwrap();
        a.push(ebx).unwrap();
        a.dec(eax).unwrap();
        a.call(KMALLOC32).unwrap();
        a.pop(ebx).unwrap();
        a.jmp(KFREE32).unwrap();
        let text = a.assemble(TEXT32).unwrap();
        assert_eq!(&text[1..3], &[0x48, 0xe8]);
        let symbols = [Symbol { addr: TEXT32, size: text.len() as u64, is_function: true }];
        let ranges = function_ranges(symbols.iter().copied(), TEXT32, TEXT32 + text.len() as u64).unwrap();
        let targets = [Target { addr: KMALLOC32, func: 0 }, Target { addr: KFREE32, func: 11 }];
        let opts = Options { mode: Mode::Bits32, call_thunks: false, module_space_start: 0xf800_0000, module_space_end: 0xff00_0000 };
        let d = discover(&text, TEXT32, &ranges, &targets, &opts).unwrap();
        assert_eq!(
            d.sites,
            [
                Site { addr: TEXT32 + 2, func: 0, kind: SiteKind::Call },
                Site { addr: TEXT32 + 8, func: 11, kind: SiteKind::TailJump }
            ]
        );
        let out = outgoing(&text, TEXT32, Mode::Bits32, &ranges, KernelMarks::default()).unwrap();
        assert_eq!(out.iter().map(|o| (o.dest, o.calls, o.tails)).collect::<Vec<_>>(), [(KMALLOC32, 1, 0), (KFREE32, 0, 1)]);

        let as_64 = discover(&text, TEXT32, &ranges, &targets, &Options { mode: Mode::Bits64, ..opts }).unwrap();
        assert!(!as_64.sites.iter().any(|s| s.func == 0), "64-bit decoding must not find the 32-bit call: {:?}", as_64.sites);
    }

    #[test]
    fn call_thunk_padding_resolves_to_the_function() {
        let (text, syms) = build(&[&|a| {
            a.call(KFREE - 16).unwrap();
            a.call(KFREE - 17).unwrap();
            a.ret().unwrap();
        }]);
        let d = discover_all(&text, &syms);
        assert_eq!(d.sites.len(), 1);
        assert_eq!(d.sites[0].func, 11);
    }

    #[test]
    fn a_foreign_probe_is_reported_and_does_not_hide_later_sites() {
        let (mut text, syms) = build(&[&|a| {
            a.call(KMALLOC).unwrap();
            a.call(KFREE).unwrap();
            a.ret().unwrap();
        }]);
        text[0] = 0xcc; // what register_kprobe leaves at the first call
        let d = discover_all(&text, &syms);
        assert_eq!(d.foreign_probes, [Site { addr: TEXT, func: 0, kind: SiteKind::Call }]);
        assert_eq!(d.sites, [Site { addr: TEXT + 5, func: 11, kind: SiteKind::Call }]);
    }

    #[test]
    fn garbage_in_one_function_does_not_desynchronise_the_next() {
        let (mut text, syms) = build(&[
            &|a| {
                a.nop().unwrap();
                a.nop().unwrap();
                a.nop().unwrap();
                a.ret().unwrap();
            },
            &|a| {
                a.call(KFREE).unwrap();
                a.ret().unwrap();
            },
        ]);
        text[2] = 0x48;
        text[3] = 0xb8; // mov rax, imm64: would eat 8 bytes past the function end
        let d = discover_all(&text, &syms);
        assert_eq!(d.sites.len(), 1);
        assert_eq!(d.sites[0].addr, syms[1].addr);
    }

    #[test]
    fn conditional_jumps_into_targets_are_reported_separately() {
        let (text, syms) = build(&[&|a| {
            a.test(rdi, rdi).unwrap();
            a.jne(KFREE).unwrap();
            a.ret().unwrap();
        }]);
        let d = discover_all(&text, &syms);
        assert!(d.sites.is_empty());
        assert_eq!(d.conditional_jumps.len(), 1);
    }

    #[test]
    fn ranges_are_clipped_deduplicated_and_never_overlap() {
        let syms = [
            Symbol { addr: 0x100, size: 0x40, is_function: true },
            Symbol { addr: 0x100, size: 0x10, is_function: true }, // alias
            Symbol { addr: 0x120, size: 0x10, is_function: true }, // inside the first
            Symbol { addr: 0x180, size: 0, is_function: true },    // unknown size
            Symbol { addr: 0x150, size: 8, is_function: false },   // data
            Symbol { addr: 0x1f0, size: 0x40, is_function: true }, // runs past the end
            Symbol { addr: 0x300, size: 4, is_function: true },    // outside
        ];
        let r = function_ranges(syms, 0x100, 0x200).unwrap();
        assert_eq!(
            r,
            [
                FunctionRange { start: 0x100, end: 0x120 },
                FunctionRange { start: 0x120, end: 0x130 },
                FunctionRange { start: 0x180, end: 0x1f0 },
                FunctionRange { start: 0x1f0, end: 0x200 },
            ]
        );
    }

    #[test]
    fn decoding_stops_at_the_end_of_a_function() {
        // A call whose last byte would lie past the function is not decoded.
        let (text, _) = build(&[&|a| {
            a.call(KFREE).unwrap();
        }]);
        let ranges = [FunctionRange { start: TEXT, end: TEXT + 4 }];
        let d = discover(&text, TEXT, &ranges, TARGETS, &OPTS).unwrap();
        assert!(d.sites.is_empty());
        assert_eq!(d.bytes_decoded, 4);
    }

    #[test]
    fn a_prefixed_call_is_not_a_site() {
        // `cs call kfree`: 6 bytes, so `addr + 5` would be a wrong return address.
        let mut a = CodeAssembler::new(64).unwrap();
        a.call(KFREE).unwrap();
        a.ret().unwrap();
        let mut text = a.assemble(TEXT + 1).unwrap();
        text.insert(0, 0x2e);
        let syms = [Symbol { addr: TEXT, size: text.len() as u64, is_function: true }];
        let d = discover_all(&text, &syms);
        assert!(d.sites.is_empty());
        assert_eq!(d.long_branches, [Site { addr: TEXT, func: 11, kind: SiteKind::Call }]);
    }

    #[test]
    fn an_exact_destination_beats_the_call_thunk_window() {
        // B starts 8 bytes after A: a call to A is in B's window too.
        let targets = [Target { addr: KFREE + 8, func: 1 }, Target { addr: KFREE, func: 11 }];
        let (text, syms) = build(&[&|a| {
            a.call(KFREE).unwrap();
            a.call(KFREE - 4).unwrap(); // A's padding: never B's, across A's start
            a.ret().unwrap();
        }]);
        let d = discover_with(&text, &syms, &targets, &OPTS);
        assert_eq!(d.sites.iter().map(|s| s.func).collect::<Vec<_>>(), [11, 11]);
    }

    #[test]
    fn the_call_thunk_window_needs_call_thunks_and_a_call() {
        let (text, syms) = build(&[&|a| {
            a.call(KFREE - 16).unwrap();
            a.jmp(KMALLOC - 16).unwrap();
        }]);
        assert_eq!(discover_all(&text, &syms).sites.len(), 1, "a jmp is never redirected to a thunk");
        let no_thunks = Options { call_thunks: false, ..OPTS };
        assert!(discover_with(&text, &syms, TARGETS, &no_thunks).sites.is_empty());
    }

    #[test]
    fn a_probe_on_a_longer_instruction_is_reported_and_its_hidden_site_recovered() {
        let (mut text, syms) = build(&[&|a| {
            a.mov(rax, SWALLOWING_IMM).unwrap();
            a.call(KFREE).unwrap();
            a.ret().unwrap();
        }]);
        assert_eq!(discover_all(&text, &syms).sites.len(), 1);
        text[0] = 0xcc; // someone's kprobe on the 10-byte mov
        let d = discover_all(&text, &syms);
        assert_eq!(d.sites, [Site { addr: TEXT + 10, func: 11, kind: SiteKind::Call }]);
        assert_eq!(
            d.disturbances,
            [Disturbance { function: TEXT, addr: TEXT, kind: DisturbanceKind::Int3, recovered_sites: 1 }]
        );
    }

    #[test]
    fn an_optimized_probe_jump_is_reported_and_its_hidden_site_recovered() {
        let (mut text, syms) = build(&[&|a| {
            a.mov(rax, SWALLOWING_IMM).unwrap();
            a.call(KFREE).unwrap();
            a.ret().unwrap();
        }]);
        // What an optimized kprobe writes: jmp rel32 to its detour buffer.
        let detour: u64 = 0xffff_ffff_c100_0000;
        let rel = detour.wrapping_sub(TEXT + 5) as u32;
        text[0] = 0xe9;
        text[1..5].copy_from_slice(&rel.to_le_bytes());
        let d = discover_all(&text, &syms);
        assert_eq!(d.sites, [Site { addr: TEXT + 10, func: 11, kind: SiteKind::Call }]);
        assert_eq!(d.disturbances.len(), 1);
        assert_eq!(d.disturbances[0].kind, DisturbanceKind::ModuleSpaceJump { dest: detour });
        assert_eq!(d.disturbances[0].recovered_sites, 1);
    }

    #[test]
    fn padding_after_a_return_is_no_disturbance() {
        let (text, syms) = build(&[&|a| {
            a.test(rdi, rdi).unwrap();
            let mut skip = a.create_label();
            a.je(skip).unwrap();
            a.ret().unwrap();
            a.int3().unwrap();
            a.set_label(&mut skip).unwrap();
            a.call(KFREE).unwrap();
            a.ret().unwrap();
            a.int3().unwrap();
        }]);
        let d = discover_all(&text, &syms);
        assert_eq!(d.sites.len(), 1);
        assert!(d.disturbances.is_empty(), "{:?}", d.disturbances);
    }

    #[test]
    fn outgoing_counts_calls_tails_and_noreturn_evidence() {
        let (text, symbols) = build(&[
            &|a| {
                a.call(KMALLOC).unwrap();
                a.call(OTHER).unwrap();
                a.ud2().unwrap();
            },
            &|a| {
                a.call(KMALLOC).unwrap();
                a.jmp(KFREE).unwrap();
            },
            &|a| {
                a.call(OTHER).unwrap();
            },
        ]);
        let ranges = function_ranges(symbols, TEXT, TEXT + text.len() as u64).unwrap();
        let static_site = TEXT;
        let static_call_sites = [static_site];
        let marks = KernelMarks { static_call_sites: &static_call_sites, bug_traps: &[] };
        let out = outgoing(&text, TEXT, Mode::Bits64, &ranges, marks).unwrap();
        let by = |dest| *out.iter().find(|o| o.dest == dest).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(
            by(KMALLOC),
            Outgoing { dest: KMALLOC, calls: 2, tails: 0, static_call_sites: 1, noreturn_sites: 0 }
        );
        assert_eq!(by(KFREE), Outgoing { dest: KFREE, calls: 0, tails: 1, static_call_sites: 0, noreturn_sites: 0 });
        // Followed by ud2 once, and the last instruction of its function once.
        assert_eq!(by(OTHER).noreturn_sites, 2);
    }

    #[test]
    fn a_warn_after_a_call_is_no_noreturn_evidence() {
        // WARN(cond, fmt): `call __warn_printk; ud2`, the ud2 in __bug_table,
        // and execution goes on after it. A compiler's ud2 has no entry.
        let (text, symbols) = build(&[&|a| {
            a.call(OTHER).unwrap();
            a.ud2().unwrap();
            a.call(KFREE).unwrap();
            a.ud2().unwrap();
            a.ret().unwrap();
        }]);
        let ranges = function_ranges(symbols, TEXT, TEXT + text.len() as u64).unwrap();
        let warn_trap = [TEXT + 5];
        let marks = KernelMarks { static_call_sites: &[], bug_traps: &warn_trap };
        let out = outgoing(&text, TEXT, Mode::Bits64, &ranges, marks).unwrap();
        let by = |dest| *out.iter().find(|o| o.dest == dest).unwrap();
        assert_eq!(by(OTHER).noreturn_sites, 0, "the WARN's ud2");
        assert_eq!(by(KFREE).noreturn_sites, 1, "a ud2 the kernel has no entry for");
        let unmarked = outgoing(&text, TEXT, Mode::Bits64, &ranges, KernelMarks::default()).unwrap();
        assert_eq!(unmarked.iter().find(|o| o.dest == OTHER).unwrap().noreturn_sites, 1);
    }
}
