//! The leak checker's table: the objects a watched module allocated and has
//! not freed, keyed by address.
//!
//! Its memory is the caller's, sized once at attach: nothing here allocates.
//! Every operation is lock-free (open addressing, linear probing, one
//! compare-and-swap to claim a slot), so the hot path may run in any
//! context, hard IRQ included, on any CPU. A full table counts what it could
//! not record ([`Table::overflowed`]) instead of losing it silently.
//!
//! An object's fields are written after its slot is claimed and before the
//! allocation returns to the module, so the module's own free of it (which
//! can only come after) finds them whole. A report that reads the table
//! while calls run may see a slot being filled; it takes what it sees.

use core::sync::atomic::{AtomicU64, Ordering};

/// A slot never used: a probe for an address stops here.
const EMPTY: u64 = 0;
/// A slot whose object was freed: reusable, but a probe goes past it.
const FREED: u64 = 1;

/// One slot. Its address is the key; 0 and 1 are never object addresses.
#[derive(Debug, Default)]
pub struct Slot {
    address: AtomicU64,
    /// The allocating site's index in the attachment's site list.
    site: AtomicU64,
    size: AtomicU64,
    /// When it was allocated (ns, the caller's clock).
    since: AtomicU64,
}

/// One outstanding object, as a report sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Object {
    pub address: u64,
    pub site: u64,
    pub size: u64,
    pub since: u64,
}

/// What an allocation did to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    Added,
    /// The address was still recorded: its free went unseen (a free by the
    /// kernel, or by a path we do not watch). The old record is replaced.
    Replaced,
    /// No free slot: counted in `overflowed`.
    Full,
}

/// The table over caller-provided slots.
pub struct Table<'a> {
    slots: &'a [Slot],
    overflowed: AtomicU64,
    replaced: AtomicU64,
}

impl<'a> Table<'a> {
    pub fn new(slots: &'a [Slot]) -> Table<'a> {
        Table { slots, overflowed: AtomicU64::new(0), replaced: AtomicU64::new(0) }
    }

    /// Allocations that found no free slot.
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Allocations of an address still recorded (its free went unseen).
    pub fn replaced(&self) -> u64 {
        self.replaced.load(Ordering::Relaxed)
    }

    fn start(&self, address: u64) -> usize {
        // Fibonacci hashing: slab addresses share their low bits.
        (address.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 17) as usize % self.slots.len().max(1)
    }

    /// Records an object the module allocated. NULL and error pointers are
    /// not objects: the caller leaves them out.
    pub fn allocated(&self, object: Object) -> Recorded {
        if self.slots.is_empty() || object.address <= FREED {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            return Recorded::Full;
        }
        'retry: loop {
            let mut reusable = None;
            let start = self.start(object.address);
            for step in 0..self.slots.len() {
                let index = (start + step) % self.slots.len();
                match self.slots[index].address.load(Ordering::Acquire) {
                    a if a == object.address => {
                        self.fill(index, object);
                        self.replaced.fetch_add(1, Ordering::Relaxed);
                        return Recorded::Replaced;
                    }
                    FREED if reusable.is_none() => reusable = Some((index, FREED)),
                    EMPTY => {
                        let (index, was) = reusable.unwrap_or((index, EMPTY));
                        if self.claim(index, was, object.address) {
                            self.fill(index, object);
                            return Recorded::Added;
                        }
                        continue 'retry;
                    }
                    _ => {}
                }
            }
            if let Some((index, was)) = reusable {
                if self.claim(index, was, object.address) {
                    self.fill(index, object);
                    return Recorded::Added;
                }
                continue 'retry;
            }
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            return Recorded::Full;
        }
    }

    /// Forgets an object the module freed, and returns its record; None is
    /// an unknown free (allocated before the attach, by someone else, or a
    /// bad free).
    pub fn freed(&self, address: u64) -> Option<Object> {
        if self.slots.is_empty() || address <= FREED {
            return None;
        }
        let start = self.start(address);
        for step in 0..self.slots.len() {
            let slot = &self.slots[(start + step) % self.slots.len()];
            match slot.address.load(Ordering::Acquire) {
                EMPTY => return None,
                a if a == address => {
                    let object = Object {
                        address,
                        site: slot.site.load(Ordering::Relaxed),
                        size: slot.size.load(Ordering::Relaxed),
                        since: slot.since.load(Ordering::Relaxed),
                    };
                    // Only one free of an address can win; a double free
                    // finds nothing the second time.
                    return slot
                        .address
                        .compare_exchange(address, FREED, Ordering::AcqRel, Ordering::Relaxed)
                        .ok()
                        .map(|_| object);
                }
                _ => {}
            }
        }
        None
    }

    /// The objects outstanding now.
    pub fn outstanding(&self) -> impl Iterator<Item = Object> + '_ {
        self.slots.iter().filter_map(|slot| {
            let address = slot.address.load(Ordering::Acquire);
            (address > FREED).then(|| Object {
                address,
                site: slot.site.load(Ordering::Relaxed),
                size: slot.size.load(Ordering::Relaxed),
                since: slot.since.load(Ordering::Relaxed),
            })
        })
    }

    fn claim(&self, index: usize, was: u64, address: u64) -> bool {
        self.slots[index].address.compare_exchange(was, address, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    fn fill(&self, index: usize, object: Object) {
        let slot = &self.slots[index];
        slot.site.store(object.site, Ordering::Relaxed);
        slot.size.store(object.size, Ordering::Relaxed);
        slot.since.store(object.since, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn slots(n: usize) -> Vec<Slot> {
        (0..n).map(|_| Slot::default()).collect()
    }

    fn object(address: u64, site: u64) -> Object {
        Object { address, site, size: 64, since: address }
    }

    #[test]
    fn what_is_not_freed_is_outstanding() {
        let slots = slots(64);
        let table = Table::new(&slots);
        for a in 1..=10u64 {
            assert_eq!(table.allocated(object(0xffff_8880_0000_0000 + a * 64, a % 3)), Recorded::Added);
        }
        for a in 1..=7u64 {
            assert_eq!(table.freed(0xffff_8880_0000_0000 + a * 64).map(|o| o.site), Some(a % 3));
        }
        let mut left: Vec<u64> = table.outstanding().map(|o| o.address - 0xffff_8880_0000_0000).collect();
        left.sort();
        assert_eq!(left, [8 * 64, 9 * 64, 10 * 64]);
    }

    #[test]
    fn unknown_and_double_frees_find_nothing() {
        let slots = slots(8);
        let table = Table::new(&slots);
        assert_eq!(table.freed(0x1000), None, "allocated before the attach");
        table.allocated(object(0x2000, 1));
        assert!(table.freed(0x2000).is_some());
        assert_eq!(table.freed(0x2000), None, "a double free");
        assert_eq!(table.freed(0), None);
    }

    #[test]
    fn a_full_table_counts_what_it_could_not_record() {
        let slots = slots(4);
        let table = Table::new(&slots);
        for a in 0..6u64 {
            table.allocated(object(0x1000 + a * 16, 0));
        }
        assert_eq!(table.outstanding().count(), 4);
        assert_eq!(table.overflowed(), 2);
        // A free makes room again.
        assert!(table.freed(0x1000).is_some());
        assert_eq!(table.allocated(object(0x9000, 0)), Recorded::Added);
    }

    #[test]
    fn an_address_reused_unseen_replaces_its_record() {
        let slots = slots(8);
        let table = Table::new(&slots);
        table.allocated(object(0x4000, 1));
        assert_eq!(table.allocated(object(0x4000, 2)), Recorded::Replaced);
        assert_eq!(table.replaced(), 1);
        assert_eq!(table.outstanding().map(|o| o.site).collect::<Vec<_>>(), [2]);
    }

    /// Allocations on some CPUs, frees on others (frees in hard IRQ come
    /// from any CPU): after every object is freed the table is empty, and
    /// no free was lost.
    #[test]
    fn concurrent_allocations_and_frees_balance() {
        let slots = slots(4096);
        let table = Table::new(&slots);
        let lost = AtomicU64::new(0);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (table, lost) = (&table, &lost);
                s.spawn(move || {
                    for round in 0..2000u64 {
                        let a = 0x10_0000 + (t * 1_000_000 + round) * 32;
                        assert_eq!(table.allocated(object(a, t)), Recorded::Added);
                        if table.freed(a).is_none() {
                            lost.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(lost.load(Ordering::Relaxed), 0);
        assert_eq!(table.outstanding().count(), 0);
        assert_eq!(table.overflowed(), 0);
    }
}
