//! Printing `gfp_t` values by name.
//!
//! Bit values differ between kernel versions and configs, so the names and
//! masks come from the kernel the module was built for (the C layer expands
//! the kernel's own `__def_gfpflag_names` table). The table lists compound
//! masks such as `GFP_KERNEL` before single bits, so a greedy pass prints the
//! shortest familiar spelling.

use core::fmt::{self, Write};

#[derive(Clone, Copy, Debug)]
pub struct GfpName<'a> {
    pub mask: u64,
    pub name: &'a str,
}

/// Writes `flags` as `NAME|NAME|0x..`; `0` when no bit is set.
pub fn write_gfp(w: &mut impl Write, flags: u64, table: &[GfpName<'_>]) -> fmt::Result {
    write_gfp_from(w, flags, table.iter().copied())
}

/// As `write_gfp`, from a table in another shape (the names user space
/// reads from the module), without collecting it first.
pub fn write_gfp_from<'a>(w: &mut impl Write, flags: u64, table: impl IntoIterator<Item = GfpName<'a>>) -> fmt::Result {
    if flags == 0 {
        return w.write_str("0");
    }
    let mut rest = flags;
    let mut first = true;
    let mut sep = |w: &mut dyn Write| -> fmt::Result {
        if !core::mem::take(&mut first) {
            w.write_char('|')?;
        }
        Ok(())
    };
    for entry in table {
        if entry.mask != 0 && rest & entry.mask == entry.mask {
            sep(w)?;
            w.write_str(entry.name)?;
            rest &= !entry.mask;
        }
    }
    if rest != 0 {
        sep(w)?;
        write!(w, "{rest:#x}")?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    extern crate std;
    use std::string::String;

    // Values of Linux 6.12 (x86_64, no KASAN_HW_TAGS, no LOCKDEP), in the
    // order of the kernel's table: compounds first, then single bits.
    pub(crate) const GFP_6_12: &[GfpName<'static>] = &[
        GfpName { mask: 0x2800 | 0x40 | 0x80 | 0x100000 | 0x10 | 0x8, name: "GFP_TRANSHUGE" },
        GfpName { mask: 0x400 | 0x800 | 0x40 | 0x80 | 0x100000 | 0x10 | 0x8, name: "GFP_HIGHUSER_MOVABLE" },
        GfpName { mask: 0xc00 | 0x40 | 0x80 | 0x100000 | 0x2, name: "GFP_HIGHUSER" },
        GfpName { mask: 0xc00 | 0x40 | 0x80 | 0x100000, name: "GFP_USER" },
        GfpName { mask: 0xcc0 | 0x400000, name: "GFP_KERNEL_ACCOUNT" },
        GfpName { mask: 0xcc0, name: "GFP_KERNEL" },
        GfpName { mask: 0xc40, name: "GFP_NOFS" },
        GfpName { mask: 0x820, name: "GFP_ATOMIC" },
        GfpName { mask: 0xc00, name: "GFP_NOIO" },
        GfpName { mask: 0x800, name: "GFP_NOWAIT" },
        GfpName { mask: 0x1, name: "GFP_DMA" },
        GfpName { mask: 0x2, name: "__GFP_HIGHMEM" },
        GfpName { mask: 0x4, name: "GFP_DMA32" },
        GfpName { mask: 0x20, name: "__GFP_HIGH" },
        GfpName { mask: 0x40, name: "__GFP_IO" },
        GfpName { mask: 0x80, name: "__GFP_FS" },
        GfpName { mask: 0x2000, name: "__GFP_NOWARN" },
        GfpName { mask: 0x4000, name: "__GFP_RETRY_MAYFAIL" },
        GfpName { mask: 0x8000, name: "__GFP_NOFAIL" },
        GfpName { mask: 0x10000, name: "__GFP_NORETRY" },
        GfpName { mask: 0x40000, name: "__GFP_COMP" },
        GfpName { mask: 0x100, name: "__GFP_ZERO" },
        GfpName { mask: 0x20000, name: "__GFP_MEMALLOC" },
        GfpName { mask: 0x80000, name: "__GFP_NOMEMALLOC" },
        GfpName { mask: 0x400, name: "__GFP_DIRECT_RECLAIM" },
        GfpName { mask: 0x800, name: "__GFP_KSWAPD_RECLAIM" },
    ];

    fn show(flags: u64) -> String {
        let mut s = String::new();
        write_gfp(&mut s, flags, GFP_6_12).unwrap();
        s
    }

    #[test]
    fn compound_names_win_over_bits() {
        assert_eq!(show(0xcc0), "GFP_KERNEL");
        assert_eq!(show(0xcc0 | 0x100), "GFP_KERNEL|__GFP_ZERO");
        assert_eq!(show(0x820), "GFP_ATOMIC");
        assert_eq!(show(0xcc0 | 0x400000), "GFP_KERNEL_ACCOUNT");
    }

    #[test]
    fn unknown_bits_are_printed_in_hex() {
        assert_eq!(show(0), "0");
        assert_eq!(show(0x100 | 0x8000000), "__GFP_ZERO|0x8000000");
        assert_eq!(show(0x8000000), "0x8000000");
    }
}
