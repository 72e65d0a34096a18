//! The leak checker's table: the objects a watched module allocated and has
//! not freed, keyed by address.
//!
//! Its memory is allocated once, when the target is attached: nothing on
//! the hot path allocates. Every operation is lock-free (open addressing,
//! linear probing, one compare-and-swap to claim a slot), so the hot path
//! may run in any context, hard IRQ included, on any CPU. A probe looks at
//! most [`MAX_PROBE`] slots, so no call pays for a crowded table more than
//! that; an object that finds no slot within them is counted
//! ([`Table::overflowed`]) instead of lost silently.
//!
//! An object's fields are written after its slot is claimed and before the
//! allocation returns to the module, so the module's own free of it (which
//! can only come after) finds them whole. A report that reads the table
//! while calls run may see a slot being filled; it takes what it sees.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::catalogue::{Function, KernelConfig, Kind};

/// Slots a lookup visits at most, from the address's own.
pub const MAX_PROBE: usize = 64;

/// Where an allocation's size comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// The argument at this register index.
    Arg(usize),
    /// The object size of the kmem_cache at this register index.
    CacheOf(usize),
    /// Not known cheaply (kstrdup's is the string's).
    Unknown,
}

/// What a catalogue function does to the objects the checker tracks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Returns a new object, NULL on failure. `resizes`: the index of the
    /// object a krealloc frees when it returns another.
    Allocates { size: Size, resizes: Option<usize> },
    /// Frees the object in this argument.
    Frees { object: usize },
    /// Linux 6.1's `kvfree_call_rcu(head, func)`: the object is `func`
    /// when `head` is NULL, else `head - func` (`func` is the rcu_head's
    /// offset in the object).
    FreesByHead { head: usize, offset: usize },
}

impl Role {
    /// The object a free with these arguments releases (0: none).
    pub fn freed_object(self, args: &[u64]) -> Option<u64> {
        match self {
            Role::Frees { object } => Some(args[object]),
            Role::FreesByHead { head, offset } => {
                Some(if args[head] == 0 { args[offset] } else { args[head].wrapping_sub(args[offset]) })
            }
            Role::Allocates { .. } => None,
        }
    }

    pub fn is_free(self) -> bool {
        !matches!(self, Role::Allocates { .. })
    }
}

/// The role of a catalogue function on a kernel with `config`.
pub fn role(function: &Function, config: KernelConfig) -> Option<Role> {
    let args = || function.args_for(config);
    match function.ret {
        Kind::Ptr => Some(Role::Allocates {
            size: match function.first_of(config, Kind::Size) {
                Some(k) => Size::Arg(k),
                None if function.name.starts_with("kmem_cache_alloc") => Size::CacheOf(0),
                None => Size::Unknown,
            },
            resizes: if function.name.contains("realloc") { args().position(|a| a.name == "p") } else { None },
        }),
        Kind::Void if function.name == "kvfree_call_rcu" && args().any(|a| a.name == "func") => {
            Some(Role::FreesByHead { head: 0, offset: 1 })
        }
        Kind::Void if function.name.contains("free") => {
            let last_pointer = args().enumerate().filter(|(_, a)| a.kind == Kind::Ptr).last()?;
            Some(Role::Frees { object: last_pointer.0 })
        }
        _ => None,
    }
}

/// A slot never used: a probe for an address stops here.
const EMPTY: u64 = 0;
/// A slot whose object was freed: reusable, but a probe goes past it.
const FREED: u64 = 1;

/// One slot. Its address is the key; 0 and 1 are never object addresses.
/// The key is a word: kernel addresses fit one, and on i386 a u64 would
/// make every compare-and-swap a `cmpxchg8b` loop.
#[derive(Debug, Default)]
pub struct Slot {
    address: AtomicUsize,
    /// The allocating site's index in the attachment's site list.
    site: AtomicU64,
    size: AtomicU64,
    /// When it was allocated (ns, the caller's clock).
    since: AtomicU64,
    /// Its allocation's stack in [`Stacks`], 0 if none.
    stack: AtomicU32,
}

/// One outstanding object, as a report sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Object {
    pub address: u64,
    pub site: u64,
    pub size: u64,
    pub since: u64,
    /// The allocation's stack ([`Stacks::intern`]), 0 if none.
    pub stack: u32,
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

pub struct Table {
    slots: Vec<Slot>,
    overflowed: AtomicU64,
    replaced: AtomicU64,
}

impl Table {
    /// A table of `slots` empty slots; None if memory runs out.
    pub fn new(slots: usize) -> Option<Table> {
        let mut v = Vec::new();
        v.try_reserve_exact(slots).ok()?;
        v.resize_with(slots, Slot::default);
        Some(Table { slots: v, overflowed: AtomicU64::new(0), replaced: AtomicU64::new(0) })
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn probe_len(&self) -> usize {
        self.slots.len().min(MAX_PROBE)
    }

    /// Forgets every object and count: for a new load of a followed target.
    pub fn clear(&self) {
        for slot in &self.slots {
            slot.address.store(EMPTY as usize, Ordering::Relaxed);
        }
        self.overflowed.store(0, Ordering::Relaxed);
        self.replaced.store(0, Ordering::Relaxed);
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
            for step in 0..self.probe_len() {
                let index = (start + step) % self.slots.len();
                match self.slots[index].address.load(Ordering::Acquire) as u64 {
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
        for step in 0..self.probe_len() {
            let slot = &self.slots[(start + step) % self.slots.len()];
            match slot.address.load(Ordering::Acquire) as u64 {
                EMPTY => return None,
                a if a == address => {
                    let object = Object {
                        address,
                        site: slot.site.load(Ordering::Relaxed),
                        size: slot.size.load(Ordering::Relaxed),
                        since: slot.since.load(Ordering::Relaxed),
                        stack: slot.stack.load(Ordering::Relaxed),
                    };
                    // Only one free of an address can win; a double free
                    // finds nothing the second time.
                    return slot
                        .address
                        .compare_exchange(address as usize, FREED as usize, Ordering::AcqRel, Ordering::Relaxed)
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
            let address = slot.address.load(Ordering::Acquire) as u64;
            (address > FREED).then(|| Object {
                address,
                site: slot.site.load(Ordering::Relaxed),
                size: slot.size.load(Ordering::Relaxed),
                since: slot.since.load(Ordering::Relaxed),
                stack: slot.stack.load(Ordering::Relaxed),
            })
        })
    }

    fn claim(&self, index: usize, was: u64, address: u64) -> bool {
        self.slots[index].address.compare_exchange(was as usize, address as usize, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    fn fill(&self, index: usize, object: Object) {
        let slot = &self.slots[index];
        slot.site.store(object.site, Ordering::Relaxed);
        slot.size.store(object.size, Ordering::Relaxed);
        slot.stack.store(object.stack, Ordering::Relaxed);
        slot.since.store(object.since, Ordering::Release);
    }
}

/// A count per site (a site's address is its key), lock-free and bounded
/// like [`Table`]: how many of a site's objects the kernel freed.
pub struct SiteCounts {
    keys: Vec<AtomicU64>,
    counts: Vec<AtomicU64>,
    overflowed: AtomicU64,
}

impl SiteCounts {
    /// Room for `sites` sites; None if memory runs out.
    pub fn new(sites: usize) -> Option<SiteCounts> {
        let (mut keys, mut counts) = (Vec::new(), Vec::new());
        keys.try_reserve_exact(sites).ok()?;
        counts.try_reserve_exact(sites).ok()?;
        keys.resize_with(sites, AtomicU64::default);
        counts.resize_with(sites, AtomicU64::default);
        Some(SiteCounts { keys, counts, overflowed: AtomicU64::new(0) })
    }

    /// Counts one for `site` (never 0).
    pub fn add(&self, site: u64) {
        if site == EMPTY || self.keys.is_empty() {
            return;
        }
        let start = (site.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 17) as usize % self.keys.len();
        for step in 0..self.keys.len().min(MAX_PROBE) {
            let index = (start + step) % self.keys.len();
            let key = &self.keys[index];
            let claimed = match key.load(Ordering::Acquire) {
                k if k == site => true,
                EMPTY => match key.compare_exchange(EMPTY, site, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => true,
                    Err(k) => k == site,
                },
                _ => false,
            };
            if claimed {
                self.counts[index].fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.overflowed.fetch_add(1, Ordering::Relaxed);
    }

    /// The count of `site` (0 if none).
    pub fn get(&self, site: u64) -> u64 {
        self.keys
            .iter()
            .position(|k| k.load(Ordering::Acquire) == site)
            .map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    /// Every site counted, with its count.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.keys.iter().zip(&self.counts).filter_map(|(k, c)| {
            let k = k.load(Ordering::Acquire);
            (k != EMPTY).then(|| (k, c.load(Ordering::Relaxed)))
        })
    }

    /// Counts that found no room.
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Forgets everything; only while nothing counts.
    pub fn clear(&self) {
        for (k, c) in self.keys.iter().zip(&self.counts) {
            k.store(EMPTY, Ordering::Relaxed);
            c.store(0, Ordering::Relaxed);
        }
        self.overflowed.store(0, Ordering::Relaxed);
    }
}

/// Frames kept of an allocation's stack, from its caller up.
pub const STACK_DEPTH: usize = 8;

/// A stack entry being written: a lookup goes past it.
const WRITING: u64 = u64::MAX;

/// One distinct stack. Its hash is the key (never EMPTY or WRITING).
#[derive(Debug, Default)]
struct StackEntry {
    key: AtomicU64,
    frames: [AtomicUsize; STACK_DEPTH],
}

/// The distinct allocation stacks of a leak table, each stored once, so
/// that the table's slots hold a 32-bit id each instead of the frames.
/// Lock-free like [`Table`], bounded the same way, and allocated at attach.
/// Two stacks with the same 64-bit hash share an entry (and a report
/// group): FNV-1a over at most eight code addresses makes that unlikely
/// enough for a report's grouping.
pub struct Stacks {
    entries: Vec<StackEntry>,
    overflowed: AtomicU64,
}

/// Frames of one stack, as `Stacks::get` returns them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Frames {
    frames: [usize; STACK_DEPTH],
    len: usize,
}

impl Frames {
    pub fn as_slice(&self) -> &[usize] {
        &self.frames[..self.len]
    }
}

fn stack_key(frames: &[usize]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &f in frames {
        for b in (f as u64).to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    match h {
        EMPTY | WRITING => 2,
        h => h,
    }
}

impl Stacks {
    /// Room for `entries` distinct stacks; None if memory runs out.
    pub fn new(entries: usize) -> Option<Stacks> {
        let mut v = Vec::new();
        v.try_reserve_exact(entries).ok()?;
        v.resize_with(entries, StackEntry::default);
        Some(Stacks { entries: v, overflowed: AtomicU64::new(0) })
    }

    /// Stacks that found no entry: their objects are reported without one.
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Forgets every stack. Only while nothing records (before an attach
    /// arms its probes).
    pub fn clear(&self) {
        for e in &self.entries {
            e.key.store(EMPTY, Ordering::Relaxed);
        }
        self.overflowed.store(0, Ordering::Relaxed);
    }

    /// The id of `frames` (its first [`STACK_DEPTH`]), stored if new: 1 and
    /// up, or 0 for an empty stack or a full table (counted).
    pub fn intern(&self, frames: &[usize]) -> u32 {
        let frames = &frames[..frames.len().min(STACK_DEPTH)];
        if frames.is_empty() || self.entries.is_empty() {
            return 0;
        }
        let key = stack_key(frames);
        let start = (key % self.entries.len() as u64) as usize;
        for step in 0..self.entries.len().min(MAX_PROBE) {
            let index = (start + step) % self.entries.len();
            let entry = &self.entries[index];
            loop {
                match entry.key.load(Ordering::Acquire) {
                    k if k == key => return index as u32 + 1,
                    EMPTY => {
                        if entry.key.compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed).is_err() {
                            continue; // someone claimed it first: look again
                        }
                        for (slot, f) in entry.frames.iter().zip(frames.iter().copied().chain(core::iter::repeat(0))) {
                            slot.store(f, Ordering::Relaxed);
                        }
                        entry.key.store(key, Ordering::Release);
                        return index as u32 + 1;
                    }
                    // Another stack, or one being written (if it is this
                    // one, it will be stored twice: the report merges them).
                    _ => break,
                }
            }
        }
        self.overflowed.fetch_add(1, Ordering::Relaxed);
        0
    }

    /// The frames of stack `id`, if it is stored whole.
    pub fn get(&self, id: u32) -> Option<Frames> {
        let entry = self.entries.get((id as usize).checked_sub(1)?)?;
        if matches!(entry.key.load(Ordering::Acquire), EMPTY | WRITING) {
            return None;
        }
        let mut out = Frames::default();
        for (o, f) in out.frames.iter_mut().zip(&entry.frames) {
            *o = f.load(Ordering::Relaxed);
        }
        out.len = out.frames.iter().position(|&f| f == 0).unwrap_or(STACK_DEPTH);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn table(n: usize) -> Table {
        Table::new(n).unwrap()
    }

    fn object(address: u64, site: u64) -> Object {
        Object { address, site, size: 64, since: address, stack: 0 }
    }

    #[test]
    fn a_stack_is_stored_once_and_read_back() {
        let stacks = Stacks::new(16).unwrap();
        let a = [0xffff_ffff_c000_1000usize, 0xffff_ffff_8100_0000, 0xffff_ffff_8200_0000];
        let b = [0xffff_ffff_c000_2000usize];
        let id = stacks.intern(&a);
        assert_ne!(id, 0);
        assert_eq!(stacks.intern(&a), id);
        let other = stacks.intern(&b);
        assert!(other != 0 && other != id);
        assert_eq!(stacks.get(id).unwrap().as_slice(), a);
        assert_eq!(stacks.get(other).unwrap().as_slice(), b);
        assert_eq!(stacks.get(0), None);
        assert_eq!(stacks.get(17), None);
        assert_eq!(stacks.intern(&[]), 0);
        // Deeper than STACK_DEPTH: its first frames.
        let deep: Vec<usize> = (1..=20).map(|k| 0xffff_ffff_8000_0000 + k * 16).collect();
        let id = stacks.intern(&deep);
        assert_eq!(stacks.get(id).unwrap().as_slice(), &deep[..STACK_DEPTH]);
    }

    #[test]
    fn site_counts_count_per_site_and_overflow_when_full() {
        let counts = SiteCounts::new(4).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        counts.add(0xffff_ffff_c000_1000);
                        counts.add(0xffff_ffff_c000_2000);
                    }
                });
            }
        });
        assert_eq!(counts.get(0xffff_ffff_c000_1000), 4000);
        assert_eq!(counts.get(0xffff_ffff_c000_2000), 4000);
        for site in 1..=3u64 {
            counts.add(site * 0x10);
        }
        assert_eq!(counts.iter().count(), 4);
        assert_eq!(counts.overflowed(), 1);
        counts.clear();
        assert_eq!((counts.iter().count(), counts.overflowed()), (0, 0));
    }

    #[test]
    fn a_full_stack_table_counts_and_gives_no_id() {
        let stacks = Stacks::new(2).unwrap();
        assert_ne!(stacks.intern(&[0x10]), 0);
        assert_ne!(stacks.intern(&[0x20]), 0);
        assert_eq!(stacks.intern(&[0x30]), 0);
        assert_eq!(stacks.overflowed(), 1);
        stacks.clear();
        assert_eq!(stacks.overflowed(), 0);
        assert_ne!(stacks.intern(&[0x30]), 0);
    }

    #[test]
    fn concurrent_interns_of_one_stack_agree_or_merge() {
        let stacks = Stacks::new(64).unwrap();
        let frames = [0xffff_ffff_c000_1234usize, 0xffff_ffff_8100_4321];
        let ids: Vec<u32> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(|| stacks.intern(&frames))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for id in ids {
            assert_eq!(stacks.get(id).unwrap().as_slice(), frames);
        }
    }

    #[test]
    fn every_catalogue_function_allocates_or_frees() {
        use crate::catalogue::MEMORY;
        let config = KernelConfig::default();
        for f in MEMORY {
            let role = role(f, config).unwrap_or_else(|| panic!("{} has no role", f.name));
            match role {
                Role::Allocates { size, resizes } => {
                    assert_eq!(f.ret, Kind::Ptr);
                    assert_eq!(resizes.is_some(), f.name.contains("realloc"), "{}", f.name);
                    let want = match f.name {
                        n if n.starts_with("kmem_cache_alloc") => Size::CacheOf(0),
                        "kstrdup" => Size::Unknown,
                        _ => Size::Arg(f.first_of(config, Kind::Size).unwrap()),
                    };
                    assert_eq!(size, want, "{}", f.name);
                }
                Role::Frees { object } => assert_eq!(f.args[object].kind, Kind::Ptr),
                Role::FreesByHead { head, offset } => {
                    assert_eq!((f.name, f.args[head].name, f.args[offset].name), ("kvfree_call_rcu", "head", "func"))
                }
            }
        }
        // kfree_rcu(p, rcu) on 6.12 and later: the object is `ptr`; on 6.1,
        // the head minus its offset, or, with no head, `func` itself.
        let rcu = |param: &str| MEMORY.iter().find(|f| f.name == "kvfree_call_rcu" && f.args[1].name == param).unwrap();
        let object = |f, args: &[u64]| role(f, config).unwrap().freed_object(args);
        assert_eq!(object(rcu("ptr"), &[0x1010, 0x1000]), Some(0x1000));
        assert_eq!(object(rcu("func"), &[0x1010, 0x10]), Some(0x1000));
        assert_eq!(object(rcu("func"), &[0, 0x2000]), Some(0x2000));
        let free = MEMORY.iter().find(|f| f.name == "kmem_cache_free").unwrap();
        assert_eq!(role(free, config), Some(Role::Frees { object: 1 }));
        let krealloc = MEMORY.iter().find(|f| f.name == "krealloc_noprof").unwrap();
        assert_eq!(role(krealloc, config), Some(Role::Allocates { size: Size::Arg(1), resizes: Some(0) }));
    }

    #[test]
    fn a_probe_stops_after_max_probe_slots() {
        let table = table(4096);
        // Addresses that all hash to one start: the 65th finds no slot
        // within its reach, and is counted.
        let start = table.start(0x1000);
        let same: Vec<u64> = (1..2_000_000u64).map(|k| 0x1000 + k * 8).filter(|&a| table.start(a) == start).take(MAX_PROBE + 1).collect();
        assert_eq!(same.len(), MAX_PROBE + 1);
        for &a in &same[..MAX_PROBE] {
            assert_eq!(table.allocated(object(a, 0)), Recorded::Added);
        }
        assert_eq!(table.allocated(object(same[MAX_PROBE], 0)), Recorded::Full);
        assert_eq!(table.overflowed(), 1);
        assert!(table.freed(same[MAX_PROBE - 1]).is_some(), "the last one within reach is found");
    }

    #[test]
    fn what_is_not_freed_is_outstanding() {
        let table = table(64);
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
        let table = table(8);
        assert_eq!(table.freed(0x1000), None, "allocated before the attach");
        table.allocated(object(0x2000, 1));
        assert!(table.freed(0x2000).is_some());
        assert_eq!(table.freed(0x2000), None, "a double free");
        assert_eq!(table.freed(0), None);
    }

    #[test]
    fn a_full_table_counts_what_it_could_not_record() {
        let table = table(4);
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
        let table = table(8);
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
        let table = table(4096);
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
