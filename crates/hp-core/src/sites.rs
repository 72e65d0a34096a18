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
    pub const INSTRUCTION_LEN: u64 = 5;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Site {
    pub addr: u64,
    pub func: usize,
    pub kind: SiteKind,
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
    pub functions_decoded: usize,
    pub bytes_decoded: u64,
}

fn resolve(targets: &[Target], dest: u64) -> Option<usize> {
    targets.iter().find(|t| dest <= t.addr && dest >= t.addr.saturating_sub(CALL_THUNK_PADDING)).map(|t| t.func)
}

/// Decodes each function of `text` (which starts at `text_base`) and finds
/// every direct call or jump into `targets`.
pub fn discover(
    text: &[u8],
    text_base: u64,
    functions: &[FunctionRange],
    targets: &[Target],
) -> Result<Discovery, TryReserveError> {
    let mut found = Discovery::default();
    let text_end = text_base + text.len() as u64;
    for range in functions {
        if range.start < text_base || range.end > text_end || range.start >= range.end {
            continue;
        }
        let bytes = &text[(range.start - text_base) as usize..(range.end - text_base) as usize];
        scan_function(bytes, range.start, targets, &mut found)?;
        found.functions_decoded += 1;
        found.bytes_decoded += bytes.len() as u64;
    }
    Ok(found)
}

fn scan_function(bytes: &[u8], start: u64, targets: &[Target], found: &mut Discovery) -> Result<(), TryReserveError> {
    let mut decoder = Decoder::with_ip(64, bytes, start, DecoderOptions::NONE);
    while decoder.can_decode() {
        let position = decoder.position();
        let insn = decoder.decode();
        let addr = insn.ip();
        let kind = match insn.code() {
            Code::Call_rel32_64 => SiteKind::Call,
            Code::Jmp_rel32_64 => SiteKind::TailJump,
            Code::Int3 => {
                if let Some(func) = probed_site_target(bytes, position, addr, targets) {
                    try_push(&mut found.foreign_probes, Site { addr, func, kind: SiteKind::Call })?;
                    // Skip what was the rest of the probed instruction.
                    let next = position + SiteKind::INSTRUCTION_LEN as usize;
                    if decoder.set_position(next).is_err() {
                        break;
                    }
                    decoder.set_ip(addr + SiteKind::INSTRUCTION_LEN);
                }
                continue;
            }
            _ if is_jcc_rel32(bytes, position, insn.len()) => {
                if let Some(func) = resolve(targets, insn.near_branch_target()) {
                    try_push(&mut found.conditional_jumps, Site { addr, func, kind: SiteKind::TailJump })?;
                }
                continue;
            }
            _ => continue,
        };
        if let Some(func) = resolve(targets, insn.near_branch_target()) {
            try_push(&mut found.sites, Site { addr, func, kind })?;
        }
    }
    Ok(())
}

/// `0f 8x rel32`: the only conditional jump that reaches outside the module.
fn is_jcc_rel32(bytes: &[u8], position: usize, len: usize) -> bool {
    len == 6 && bytes[position] == 0x0f && bytes[position + 1] & 0xf0 == 0x80
}

/// If the `int3` at `position` replaced the opcode of a 5-byte call or jump
/// into a target, which target.
fn probed_site_target(bytes: &[u8], position: usize, addr: u64, targets: &[Target]) -> Option<usize> {
    let rel: [u8; 4] = bytes.get(position + 1..position + 5)?.try_into().ok()?;
    let dest = addr.wrapping_add(SiteKind::INSTRUCTION_LEN).wrapping_add(i32::from_le_bytes(rel) as i64 as u64);
    resolve(targets, dest)
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

    fn discover_all(text: &[u8], symbols: &[Symbol]) -> Discovery {
        let ranges = function_ranges(symbols.iter().copied(), TEXT, TEXT + text.len() as u64).unwrap();
        discover(text, TEXT, &ranges, TARGETS).unwrap()
    }

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
        let d = discover(&text, TEXT, &ranges, TARGETS).unwrap();
        assert!(d.sites.is_empty());
        assert_eq!(d.bytes_decoded, 4);
    }
}
