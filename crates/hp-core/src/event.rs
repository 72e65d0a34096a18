//! Text of one intercepted call, as it goes to the kernel log.
//!
//! The format is `name(arg=value, ...) = ret`; the C layer appends the call
//! site, CPU and task. Everything here writes into a caller's buffer: the
//! replacement runs in the target's context, where allocating is not allowed.

use core::fmt::{self, Write};

use crate::catalogue::{Function, KernelConfig, Kind};
use crate::gfp::{write_gfp, GfpName};
use crate::proto::Spec;

/// Register arguments in System V order: rdi, rsi, rdx, rcx, r8, r9.
pub type RegisterArgs = [u64; 6];

/// How pointers are written: the kernel module hashes them as `%p` does,
/// unless asked for raw values.
pub type PointerFormat<'a> = &'a dyn Fn(&mut dyn Write, u64) -> fmt::Result;

/// Pointers as they are, in hex.
pub fn raw_pointer(w: &mut dyn Write, value: u64) -> fmt::Result {
    write!(w, "{value:#x}")
}

fn write_value(w: &mut impl Write, kind: Kind, value: u64, gfp: &[GfpName<'_>], ptr: PointerFormat<'_>) -> fmt::Result {
    match kind {
        Kind::Size => write!(w, "{value}"),
        Kind::Gfp => write_gfp(w, value & 0xffff_ffff, gfp),
        Kind::Node => write!(w, "{}", value as u32 as i32),
        Kind::Ptr | Kind::CodePtr => ptr(w, value),
        Kind::Void => Ok(()),
    }
}

/// Writes `name(arg=value, ...)`, then ` = ret` unless the function is void.
pub fn write_call(
    w: &mut impl Write,
    func: &Function,
    config: KernelConfig,
    args: &RegisterArgs,
    ret: u64,
    gfp: &[GfpName<'_>],
    ptr: PointerFormat<'_>,
) -> fmt::Result {
    w.write_str(func.name)?;
    w.write_char('(')?;
    for (i, (arg, &value)) in func.args_for(config).zip(args.iter()).enumerate() {
        if i > 0 {
            w.write_str(", ")?;
        }
        write!(w, "{}=", arg.name)?;
        write_value(w, arg.kind, value, gfp, ptr)?;
    }
    w.write_char(')')?;
    if func.ret != Kind::Void {
        w.write_str(" = ")?;
        write_value(w, func.ret, ret, gfp, ptr)?;
    }
    Ok(())
}

/// A `fmt::Write` over a fixed buffer that truncates instead of failing, and
/// always leaves room for a terminating NUL for the C side.
pub struct LineBuf<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Default for LineBuf<N> {
    fn default() -> Self {
        Self { bytes: [0; N], len: 0 }
    }
}

impl<const N: usize> LineBuf<N> {
    pub fn as_str(&self) -> &str {
        // Only whole UTF-8 sequences are ever copied in (see write_str).
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
    /// The text's length in bytes, without looking at it.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The text's address as a C string: the bytes past the text are never
    /// written (text is only appended), so they are still the default NULs.
    pub fn as_c_ptr(&self) -> *const u8 {
        debug_assert_eq!(self.bytes[self.len], 0);
        self.bytes.as_ptr()
    }

    /// The text followed by a NUL byte.
    /// The text, its NUL and the NULs after it, up to a multiple of 8
    /// bytes: what the trace event copies a word at a time.
    pub fn c_words(&self) -> &[u8] {
        const { assert!(N.is_multiple_of(8)) };
        &self.bytes[..(self.len + 1).next_multiple_of(8)]
    }

    pub fn as_c_bytes(&mut self) -> &[u8] {
        self.bytes[self.len] = 0;
        &self.bytes[..=self.len]
    }
}

impl<const N: usize> Write for LineBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = N - 1 - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// -4095..-1: an errno, as the kernel's IS_ERR_VALUE sees it.
const MAX_ERRNO: u64 = 4095;

/// How wide the kernel's registers are: the module's own width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterWidth {
    Bits64,
    Bits32,
}

impl RegisterWidth {
    pub const NATIVE: RegisterWidth =
        if cfg!(target_pointer_width = "32") { RegisterWidth::Bits32 } else { RegisterWidth::Bits64 };
}

/// A register value: an errno in signed decimal, a value that could be a
/// kernel address through `ptr` (hashed like `%p` in the kernel log),
/// anything else in hex. On x86_64 the kernel half is from 0xff00.. (4 or 5
/// paging levels). On i386 a 32-bit register arrives zero-extended, and the
/// kernel may start as low as 0x40000000 (VMSPLIT_1G; Debian's 686-pae has
/// 0xc0000000): everything from there is hashed, so that no kernel address
/// is printed whatever the split, at the cost of hashing some large numbers.
fn write_register(w: &mut impl Write, value: u64, ptr: PointerFormat<'_>) -> fmt::Result {
    write_register_of(RegisterWidth::NATIVE, w, value, ptr)
}

fn write_register_of(width: RegisterWidth, w: &mut impl Write, value: u64, ptr: PointerFormat<'_>) -> fmt::Result {
    let (errno_from, kernel_from) = match width {
        RegisterWidth::Bits64 => (MAX_ERRNO.wrapping_neg(), 0xff00_0000_0000_0000),
        RegisterWidth::Bits32 => ((MAX_ERRNO as u32).wrapping_neg() as u64, 0x4000_0000),
    };
    if value >= errno_from {
        match width {
            RegisterWidth::Bits64 => write!(w, "{}", value as i64),
            RegisterWidth::Bits32 => write!(w, "{}", value as u32 as i32),
        }
    } else if value >= kernel_from {
        ptr(w, value)
    } else {
        write!(w, "{value:#x}")
    }
}

/// Writes a call to a function outside the catalogue: `name(a0, "s1", ...)`
/// with as many arguments as `spec` gives (six for raw), strings from the
/// event encoding, then ` = ret` (` = ret:ret2` when rdx is set) if it
/// returned to us. Types beyond SPEC's are hpctl's to print, from BTF.
pub fn write_any_call(
    w: &mut impl Write,
    name: &str,
    spec: Spec,
    args: &RegisterArgs,
    result: Option<(u64, u64)>,
    strings: &[u8],
    ptr: PointerFormat<'_>,
) -> fmt::Result {
    w.write_str(name)?;
    w.write_char('(')?;
    let mask = spec.string_mask();
    let mut texts = crate::proto::strings::decode(strings);
    for (i, &value) in args.iter().take(spec.arity()).enumerate() {
        if i > 0 {
            w.write_str(", ")?;
        }
        if mask & (1 << i) == 0 {
            write_register(w, value, ptr)?;
            continue;
        }
        match texts.next() {
            Some(Some((bytes, truncated))) => {
                w.write_char('"')?;
                for &b in bytes {
                    match b {
                        b'"' | b'\\' => write!(w, "\\{}", b as char)?,
                        0x20..=0x7e => w.write_char(b as char)?,
                        _ => write!(w, "\\x{b:02x}")?,
                    }
                }
                w.write_char('"')?;
                if truncated {
                    w.write_str("...")?;
                }
            }
            _ => write_register(w, value, ptr)?,
        }
    }
    w.write_char(')')?;
    if let Some((ret, ret2)) = result {
        w.write_str(" = ")?;
        write_register(w, ret, ptr)?;
        if ret2 != 0 {
            w.write_char(':')?;
            write_register(w, ret2, ptr)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{index_of, MEMORY};
    use crate::gfp::tests::GFP_6_12;

    fn line(name: &str, args: RegisterArgs, ret: u64, slab_buckets: bool) -> LineBuf<256> {
        let mut buf = LineBuf::default();
        let func = &MEMORY[index_of(name).unwrap()];
        write_call(&mut buf, func, KernelConfig { slab_buckets }, &args, ret, GFP_6_12, &raw_pointer).unwrap();
        buf
    }

    #[test]
    fn allocation_with_flags_and_result() {
        let b = line("__kmalloc_noprof", [128, 0xcc0 | 0x100, 0, 0, 0, 0], 0xffff_8880_0123_4000, false);
        assert_eq!(b.as_str(), "__kmalloc_noprof(size=128, flags=GFP_KERNEL|__GFP_ZERO) = 0xffff888001234000");
    }

    #[test]
    fn node_is_signed_and_buckets_follow_config() {
        let args = [64, 0, 0xcc0, 0xffff_ffff, 0, 0];
        let b = line("__kmalloc_node_noprof", args, 0, true);
        assert_eq!(b.as_str(), "__kmalloc_node_noprof(size=64, b=0x0, flags=GFP_KERNEL, node=-1) = 0x0");
        let b = line("__kmalloc_node_noprof", [64, 0xcc0, 0xffff_ffff, 0, 0, 0], 0, false);
        assert_eq!(b.as_str(), "__kmalloc_node_noprof(size=64, flags=GFP_KERNEL, node=-1) = 0x0");
    }

    #[test]
    fn void_functions_have_no_result() {
        let b = line("kfree", [0xffff_8880_0000_1000, 7, 7, 7, 7, 7], 0xdead, false);
        assert_eq!(b.as_str(), "kfree(object=0xffff888000001000)");
    }

    #[test]
    fn long_lines_are_truncated_with_room_for_nul() {
        let mut b = LineBuf::<8>::default();
        write!(b, "0123456789").unwrap();
        assert_eq!(b.as_str(), "0123456");
        assert_eq!(b.as_c_bytes(), b"0123456\0");
    }

    #[test]
    fn names_in_whole_words() {
        let mut b = LineBuf::<64>::default();
        assert_eq!(b.c_words(), &[0u8; 8]);
        write!(b, "cr_target").unwrap();
        assert_eq!(b.c_words(), b"cr_target\0\0\0\0\0\0\0");
        let mut full = LineBuf::<64>::default();
        write!(full, "{}", "x".repeat(100)).unwrap();
        assert_eq!(full.c_words().len(), 64);
        assert_eq!(full.c_words()[63], 0);
    }

    #[test]
    fn pointers_go_through_the_given_format() {
        let mut buf = LineBuf::<128>::default();
        let func = &MEMORY[index_of("__kmalloc_cache_noprof").unwrap()];
        let hashed = |w: &mut dyn Write, v: u64| write!(w, "h{:08x}", v as u32 ^ 0x5a5a_5a5a);
        write_call(&mut buf, func, KernelConfig::default(), &[0x10, 0xcc0, 64, 0, 0, 0], 0x20, GFP_6_12, &hashed)
            .unwrap();
        assert_eq!(buf.as_str(), "__kmalloc_cache_noprof(s=h5a5a5a4a, gfpflags=GFP_KERNEL, size=64) = h5a5a5a7a");
    }

    #[test]
    fn any_call_shows_strings_and_hides_kernel_addresses() {
        let mut text = [0u8; crate::proto::strings::CAPACITY];
        let mut used = 0;
        crate::proto::strings::encode(&mut text, &mut used, Some(b"12\"x\n\0"));
        let hashed = |w: &mut dyn Write, _v: u64| w.write_str("(hashed)");
        let mut buf = LineBuf::<256>::default();
        let spec = Spec::parse("sxx").unwrap();
        let args = [0xffff_8880_0000_1000, 10, 0xff1f_c33c_3552_1180, 0, 0, 0];
        write_any_call(&mut buf, "kstrtoint", spec, &args, Some((0, 0)), &text[..used], &hashed).unwrap();
        assert_eq!(buf.as_str(), "kstrtoint(\"12\\\"x\\x0a\", 0xa, (hashed)) = 0x0");
        let mut buf = LineBuf::<256>::default();
        write_any_call(&mut buf, "f", Spec::Raw, &[1, 2, 3, 4, 5, 6], Some((-22i64 as u64, 7)), &[], &hashed).unwrap();
        assert_eq!(buf.as_str(), "f(0x1, 0x2, 0x3, 0x4, 0x5, 0x6) = -22:0x7");
    }

    #[test]
    fn registers_of_a_32_bit_kernel_hide_its_addresses() {
        let hashed: &dyn Fn(&mut dyn Write, u64) -> fmt::Result = &|w, _| w.write_str("<hashed>");
        let text = |width, value| {
            let mut buf = LineBuf::<64>::default();
            write_register_of(width, &mut buf, value, hashed).unwrap();
            buf
        };
        // A 686-pae kernel address, zero-extended: hashed, not printed.
        assert_eq!(text(RegisterWidth::Bits32, 0xc12a_3000).as_str(), "<hashed>");
        assert_eq!(text(RegisterWidth::Bits32, 0xffff_fff2).as_str(), "-14");
        assert_eq!(text(RegisterWidth::Bits32, 0x1234).as_str(), "0x1234");
        // The same values from a 64-bit kernel are plain numbers.
        assert_eq!(text(RegisterWidth::Bits64, 0xc12a_3000).as_str(), "0xc12a3000");
        assert_eq!(text(RegisterWidth::Bits64, 0xffff_8880_0000_1000).as_str(), "<hashed>");
        assert_eq!(text(RegisterWidth::Bits64, (-14i64) as u64).as_str(), "-14");
    }
}
