//! A bump arena for the one allocation hp_patcher cannot make fallible:
//! iced-x86 builds its decoder tables on first use, with allocations that
//! panic on failure and are never freed.
//!
//! The module reserves `DECODER_TABLES_BYTES` up front (a failure there is a
//! plain -ENOMEM), builds the tables into it once at load, and frees it whole
//! at unload. The host test `tests/decoder_tables.rs` builds the tables the
//! same way and fails if they no longer fit, so the arena cannot run out.

use core::alloc::Layout;

/// What iced-x86 1.22's decoder tables take in this arena, measured by
/// `tests/decoder_tables.rs` (367688 bytes), with a margin of 16%.
pub const DECODER_TABLES_BYTES: usize = 416 << 10;

/// Hands out `[start, end)` front to back; frees nothing.
#[derive(Debug)]
pub struct Bump {
    next: usize,
    end: usize,
}

impl Bump {
    pub const fn new(start: usize, len: usize) -> Self {
        Bump { next: start, end: start + len }
    }

    /// The address of a block for `layout`, or `None` when it does not fit.
    pub fn alloc(&mut self, layout: Layout) -> Option<usize> {
        let start = self.next.checked_add(layout.align() - 1)? & !(layout.align() - 1);
        let end = start.checked_add(layout.size())?;
        if end > self.end {
            return None;
        }
        self.next = end;
        Some(start)
    }

    pub fn used_from(&self, start: usize) -> usize {
        self.next - start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_and_refuses_what_does_not_fit() {
        let mut b = Bump::new(0x1001, 64);
        assert_eq!(b.alloc(Layout::from_size_align(8, 8).unwrap()), Some(0x1008));
        assert_eq!(b.alloc(Layout::from_size_align(1, 1).unwrap()), Some(0x1010));
        assert_eq!(b.alloc(Layout::from_size_align(64, 16).unwrap()), None);
        assert_eq!(b.alloc(Layout::from_size_align(32, 16).unwrap()), Some(0x1020));
        assert_eq!(b.used_from(0x1001), 0x3f);
    }
}
