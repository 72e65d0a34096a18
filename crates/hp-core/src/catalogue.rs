//! The functions hp_patcher knows how to intercept, with their arguments
//! described well enough to log them by name.
//!
//! The table is data only; `Selection` and `select` hold the rules for the
//! `functions=` parameter. Names are the symbols a compiled module calls:
//! Linux 6.12's first (the `_noprof` names came with memory allocation
//! profiling in 6.10), then Linux 6.1's. The build keeps only the names the
//! kernel at hand exports, so each kernel sees its own set.

use core::fmt;

use crate::event::RegisterArgs;
use crate::proto::{is_symbol_name, Wanted};
use alloc::vec::Vec;

/// How an argument or a return value is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A byte count, printed in decimal.
    Size,
    /// A `gfp_t`, printed as flag names.
    Gfp,
    /// A NUMA node id, printed as a signed decimal (-1 is NUMA_NO_NODE).
    Node,
    /// Any pointer, printed in hex.
    Ptr,
    /// A code address, printed in hex.
    CodePtr,
    /// Nothing: a `void` return.
    Void,
}

/// One register argument.
#[derive(Clone, Copy, Debug)]
pub struct Arg {
    pub name: &'static str,
    pub kind: Kind,
    /// Present only when the kernel is built with CONFIG_SLAB_BUCKETS
    /// (`DECL_BUCKET_PARAMS` adds a `kmem_buckets *` after the size).
    pub only_with_slab_buckets: bool,
}

/// One interceptable function.
#[derive(Clone, Copy, Debug)]
pub struct Function {
    pub name: &'static str,
    pub args: &'static [Arg],
    pub ret: Kind,
}

/// Facts about the running kernel's build that change argument layouts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelConfig {
    pub slab_buckets: bool,
}

impl Function {
    /// The arguments as the running kernel passes them, in register order.
    pub fn args_for(&self, config: KernelConfig) -> impl Iterator<Item = &'static Arg> {
        self.args.iter().filter(move |a| config.slab_buckets || !a.only_with_slab_buckets)
    }

    /// Whether its arguments on a kernel with `config` are, in order, the
    /// parameters the kernel's BTF names (`params`): what the build uses to
    /// pick, among entries of one symbol, the layout of the kernel at hand.
    pub fn matches_params(&self, config: KernelConfig, params: &[&str]) -> bool {
        self.args_for(config).map(|a| a.name).eq(params.iter().copied())
    }

    /// The register index of its first argument of `kind` on this kernel:
    /// where a fault rule finds a call's size or gfp flags.
    pub fn first_of(&self, config: KernelConfig, kind: Kind) -> Option<usize> {
        self.args_for(config).position(|a| a.kind == kind)
    }

    /// How many arguments it takes on this kernel; each fits one register
    /// on both x86_64 and i386.
    pub fn arity(&self, config: KernelConfig) -> usize {
        self.args_for(config).count()
    }
}

/// Arguments that i386's `-mregparm=3` passes in registers (eax, edx, ecx);
/// the rest are 4-byte words on the stack, which a forwarded call must copy.
pub const I386_REGISTER_ARGS: usize = 3;

/// Stack words a call with `arity` one-word arguments passes on i386.
pub fn i386_stack_words(arity: usize) -> usize {
    arity.saturating_sub(I386_REGISTER_ARGS)
}

const fn arg(name: &'static str, kind: Kind) -> Arg {
    Arg { name, kind, only_with_slab_buckets: false }
}

const BUCKETS: Arg = Arg { name: "b", kind: Kind::Ptr, only_with_slab_buckets: true };
const SIZE: Arg = arg("size", Kind::Size);
const FLAGS: Arg = arg("flags", Kind::Gfp);
const NODE: Arg = arg("node", Kind::Node);
const CACHE: Arg = arg("s", Kind::Ptr);
/// kmem_cache_*'s gfp argument, named as mm/slub.c names it.
const CACHE_FLAGS: Arg = arg("gfpflags", Kind::Gfp);
const REALLOC_OBJ: Arg = arg("p", Kind::Ptr);
const ALIGN: Arg = arg("align", Kind::Size);

const fn f(name: &'static str, args: &'static [Arg], ret: Kind) -> Function {
    Function { name, args, ret }
}

/// The memory catalogue. Order is the index used everywhere else; at most 64
/// entries so that a selection fits in a `u64`. A symbol whose arguments
/// changed between kernels has one entry per layout; the build arms, of
/// those, the one whose arguments the kernel's BTF names (xtask build.rs).
pub const MEMORY: &[Function] = &[
    f("__kmalloc_noprof", &[SIZE, FLAGS], Kind::Ptr),
    f("__kmalloc_node_noprof", &[SIZE, BUCKETS, FLAGS, NODE], Kind::Ptr),
    f("__kmalloc_cache_noprof", &[CACHE, CACHE_FLAGS, SIZE], Kind::Ptr),
    f("__kmalloc_cache_node_noprof", &[CACHE, CACHE_FLAGS, NODE, SIZE], Kind::Ptr),
    f("__kmalloc_large_noprof", &[SIZE, FLAGS], Kind::Ptr),
    f("__kmalloc_large_node_noprof", &[SIZE, FLAGS, NODE], Kind::Ptr),
    f("__kmalloc_node_track_caller_noprof", &[SIZE, BUCKETS, FLAGS, NODE, arg("caller", Kind::CodePtr)], Kind::Ptr),
    f("kmem_cache_alloc_noprof", &[CACHE, CACHE_FLAGS], Kind::Ptr),
    f("kmem_cache_alloc_lru_noprof", &[CACHE, arg("lru", Kind::Ptr), CACHE_FLAGS], Kind::Ptr),
    f("kmem_cache_alloc_node_noprof", &[CACHE, CACHE_FLAGS, NODE], Kind::Ptr),
    f("kmem_cache_free", &[CACHE, arg("x", Kind::Ptr)], Kind::Void),
    f("kfree", &[arg("object", Kind::Ptr)], Kind::Void),
    f("kvfree", &[arg("addr", Kind::Ptr)], Kind::Void),
    f("kfree_sensitive", &[arg("p", Kind::Ptr)], Kind::Void),
    f("krealloc_noprof", &[REALLOC_OBJ, arg("new_size", Kind::Size), FLAGS], Kind::Ptr),
    f("vmalloc_noprof", &[SIZE], Kind::Ptr),
    f("vzalloc_noprof", &[SIZE], Kind::Ptr),
    f("__vmalloc_noprof", &[SIZE, arg("gfp_mask", Kind::Gfp)], Kind::Ptr),
    f("vfree", &[arg("addr", Kind::Ptr)], Kind::Void),
    f("__kvmalloc_node_noprof", &[SIZE, BUCKETS, FLAGS, NODE], Kind::Ptr),
    f("kmemdup_noprof", &[arg("p", Kind::Ptr), SIZE, arg("gfp", Kind::Gfp)], Kind::Ptr),
    f("kstrdup", &[arg("s", Kind::Ptr), arg("gfp", Kind::Gfp)], Kind::Ptr),
    // kfree_rcu()/kvfree_rcu(): the object is freed a grace period later,
    // by the kernel, but the module gave it up here.
    f("kvfree_call_rcu", &[arg("head", Kind::Ptr), arg("ptr", Kind::Ptr)], Kind::Void),
    // Linux 6.1 (Debian 12's first kernel): same roles, older names.
    f("__kmalloc", &[SIZE, FLAGS], Kind::Ptr),
    f("__kmalloc_node", &[SIZE, FLAGS, NODE], Kind::Ptr),
    f("kmalloc_trace", &[CACHE, CACHE_FLAGS, SIZE], Kind::Ptr),
    f("kmalloc_node_trace", &[CACHE, CACHE_FLAGS, NODE, SIZE], Kind::Ptr),
    f("kmalloc_large", &[SIZE, FLAGS], Kind::Ptr),
    f("kmalloc_large_node", &[SIZE, FLAGS, NODE], Kind::Ptr),
    f("__kmalloc_node_track_caller", &[SIZE, FLAGS, NODE, arg("caller", Kind::CodePtr)], Kind::Ptr),
    f("kmem_cache_alloc", &[CACHE, CACHE_FLAGS], Kind::Ptr),
    f("kmem_cache_alloc_lru", &[CACHE, arg("lru", Kind::Ptr), CACHE_FLAGS], Kind::Ptr),
    f("kmem_cache_alloc_node", &[CACHE, CACHE_FLAGS, NODE], Kind::Ptr),
    f("krealloc", &[REALLOC_OBJ, arg("new_size", Kind::Size), FLAGS], Kind::Ptr),
    f("vmalloc", &[SIZE], Kind::Ptr),
    f("vzalloc", &[SIZE], Kind::Ptr),
    f("__vmalloc", &[SIZE, arg("gfp_mask", Kind::Gfp)], Kind::Ptr),
    f("kvmalloc_node", &[SIZE, FLAGS, NODE], Kind::Ptr),
    f("kmemdup", &[arg("p", Kind::Ptr), SIZE, arg("gfp", Kind::Gfp)], Kind::Ptr),
    // 6.1's kfree_rcu passes the rcu_head inside the object and, as `func`,
    // the head's offset in it; kvfree_rcu(p) passes a NULL head and p.
    f("kvfree_call_rcu", &[arg("head", Kind::Ptr), arg("func", Kind::Ptr)], Kind::Void),
    // Linux 7.x: krealloc and kvrealloc take an alignment and a node, and
    // __kvmalloc_node an alignment before the flags.
    f("krealloc_node_align_noprof", &[REALLOC_OBJ, arg("new_size", Kind::Size), ALIGN, FLAGS, arg("nid", Kind::Node)], Kind::Ptr),
    f("kvrealloc_node_align_noprof", &[arg("p", Kind::Ptr), SIZE, ALIGN, FLAGS, arg("nid", Kind::Node)], Kind::Ptr),
    f("__kvmalloc_node_noprof", &[SIZE, BUCKETS, ALIGN, FLAGS, NODE], Kind::Ptr),
];

/// Where one argument of a `_track_caller` call comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The intercepted call's argument of this name.
    Arg(&'static str),
    /// A constant the intercepted function itself would have passed.
    Const(u64),
    /// The return address of the intercepted call: the target's site.
    Caller,
}

/// `NUMA_NO_NODE` as an `int` in a register.
const NO_NODE: Source = Source::Const(-1i64 as u64);

/// A function whose whole body is a call to its `_track_caller` form with
/// `_RET_IP_` as the caller: calling that form with the target's return
/// address makes the same allocation, and the kernel's own accounting
/// (`kmem:kmalloc`'s call_site, SLUB's alloc tracking) names the target
/// instead of our trampoline. Only exact equivalences belong here (checked
/// against mm/slub.c of 6.12 and mm/slab_common.c of 6.1).
#[derive(Clone, Copy, Debug)]
pub struct TrackCaller {
    pub function: &'static str,
    pub via: &'static str,
    /// One per argument of `via`, in its declared order (bucket argument
    /// included: it is dropped with `via`'s own when the kernel lacks buckets).
    pub sources: &'static [Source],
}

pub const TRACK_CALLER: &[TrackCaller] = &[
    TrackCaller {
        function: "__kmalloc_noprof",
        via: "__kmalloc_node_track_caller_noprof",
        sources: &[Source::Arg("size"), Source::Const(0), Source::Arg("flags"), NO_NODE, Source::Caller],
    },
    TrackCaller {
        function: "__kmalloc_node_noprof",
        via: "__kmalloc_node_track_caller_noprof",
        sources: &[Source::Arg("size"), Source::Arg("b"), Source::Arg("flags"), Source::Arg("node"), Source::Caller],
    },
    TrackCaller {
        function: "__kmalloc",
        via: "__kmalloc_node_track_caller",
        sources: &[Source::Arg("size"), Source::Arg("flags"), NO_NODE, Source::Caller],
    },
    TrackCaller {
        function: "__kmalloc_node",
        via: "__kmalloc_node_track_caller",
        sources: &[Source::Arg("size"), Source::Arg("flags"), Source::Arg("node"), Source::Caller],
    },
];

/// The `_track_caller` form of catalogue function `func`, if it has one.
pub fn track_caller(func: usize) -> Option<&'static TrackCaller> {
    TRACK_CALLER.iter().find(|t| t.function == MEMORY[func].name)
}

impl TrackCaller {
    /// Where each register argument of `via` comes from on this kernel,
    /// resolved once at attach so that a call only copies.
    pub fn resolve(&self, config: KernelConfig) -> CallerArgs {
        let own = &MEMORY[index_of(self.function).unwrap_or(0)];
        let via = &MEMORY[index_of(self.via).unwrap_or(0)];
        let mut slots = [Slot::Const(0); 6];
        let sources =
            via.args.iter().zip(self.sources).filter(|(a, _)| config.slab_buckets || !a.only_with_slab_buckets);
        for (slot, (_, source)) in slots.iter_mut().zip(sources) {
            *slot = match *source {
                Source::Arg(name) => {
                    own.args_for(config).position(|a| a.name == name).map_or(Slot::Const(0), Slot::Arg)
                }
                Source::Const(value) => Slot::Const(value),
                Source::Caller => Slot::Caller,
            };
        }
        CallerArgs(slots)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Arg(usize),
    Const(u64),
    Caller,
}

/// The register arguments of a `_track_caller` call, slot by slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallerArgs([Slot; 6]);

impl CallerArgs {
    /// The arguments for the `_track_caller` form, from the intercepted call's.
    pub fn build(&self, args: &RegisterArgs, caller: u64) -> RegisterArgs {
        self.0.map(|slot| match slot {
            Slot::Arg(i) => args.get(i).copied().unwrap_or(0),
            Slot::Const(value) => value,
            Slot::Caller => caller,
        })
    }
}

/// Index of a catalogue function by its symbol name.
pub fn index_of(name: &str) -> Option<usize> {
    MEMORY.iter().position(|f| f.name == name)
}

/// A set of catalogue indices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Selection(u64);

impl Selection {
    pub fn contains(self, index: usize) -> bool {
        index < 64 && self.0 & (1 << index) != 0
    }
    pub fn insert(&mut self, index: usize) {
        self.0 |= 1 << index;
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..MEMORY.len()).filter(move |&i| self.contains(i))
    }
}

/// Why a `functions=` list was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectError<'a> {
    /// Not a symbol name (or a SPEC that does not parse).
    BadName(&'a str),
    /// In the catalogue, but this kernel lacks it or does not export it.
    Unavailable(&'a str),
    /// A pair's role (`+alloc`, `+free`) on a catalogue function, whose
    /// role is the catalogue's.
    CatalogueRole(&'a str),
    /// More names than one attachment takes.
    TooMany,
    OutOfMemory,
    /// The list names nothing, or nothing in the default set is available.
    Empty,
}

/// Most functions outside the catalogue one attachment takes.
pub const MAX_CALLEES: usize = 32;

impl fmt::Display for SelectError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelectError::BadName(name) => write!(
                f,
                "'{name}' is not a function name or name:SPEC (SPEC: x value, s string, S struct, final . variadic)"
            ),
            SelectError::CatalogueRole(name) => {
                write!(f, "'{name}' is in the memory catalogue, which knows what it allocates or frees: no +role")
            }
            SelectError::Unavailable(name) => {
                write!(f, "function '{name}' is not exported by this kernel")
            }
            SelectError::TooMany => write!(f, "more than {MAX_CALLEES} functions outside the memory set"),
            SelectError::OutOfMemory => write!(f, "out of memory"),
            SelectError::Empty => write!(f, "no function selected"),
        }
    }
}

/// What a `functions=` list asks for: catalogue functions (with their
/// hand-written semantics) and any other callees, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Choice<'a> {
    pub memory: Selection,
    pub callees: Vec<Wanted<'a>>,
}

impl<'a> Choice<'a> {
    pub fn callees(&self) -> impl Iterator<Item = &Wanted<'a>> {
        self.callees.iter()
    }
}

/// Parses the comma-separated `functions=` parameter. An empty list means
/// every available catalogue function (the memory set). A catalogue name
/// without SPEC is that catalogue function, and must be available; any other
/// name (or one with SPEC) is a callee the module must be found to call.
pub fn select(list: &str, available: impl Fn(usize) -> bool) -> Result<Choice<'_>, SelectError<'_>> {
    let mut choice = Choice::default();
    let mut named_any = false;
    for item in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        named_any = true;
        let wanted = Wanted::parse(item).map_err(|_| SelectError::BadName(item))?;
        if !is_symbol_name(wanted.name) {
            return Err(SelectError::BadName(item));
        }
        // A symbol with one entry per layout: the kernel has one of them.
        let entries = || MEMORY.iter().enumerate().filter(|(_, f)| f.name == wanted.name).map(|(i, _)| i);
        match entries().next().filter(|_| wanted.spec.is_none()) {
            Some(_) if wanted.role.is_some() => return Err(SelectError::CatalogueRole(wanted.name)),
            Some(_) if !entries().any(&available) => return Err(SelectError::Unavailable(wanted.name)),
            Some(_) => entries().filter(|&i| available(i)).for_each(|i| choice.memory.insert(i)),
            None => {
                if choice.callees().any(|w| w.name == wanted.name) {
                    continue;
                }
                if choice.callees.len() == MAX_CALLEES {
                    return Err(SelectError::TooMany);
                }
                choice.callees.try_reserve(1).map_err(|_| SelectError::OutOfMemory)?;
                choice.callees.push(wanted);
            }
        }
    }
    if !named_any {
        (0..MEMORY.len()).filter(|&i| available(i)).for_each(|i| choice.memory.insert(i));
    }
    if choice.memory.is_empty() && choice.callees.is_empty() {
        return Err(SelectError::Empty);
    }
    Ok(choice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i386_stack_words_follow_arity() {
        let config = KernelConfig::default();
        let by_name = |n: &str| &MEMORY[index_of(n).unwrap()];
        assert_eq!(by_name("kfree").arity(config), 1);
        assert_eq!(i386_stack_words(by_name("kfree").arity(config)), 0);
        // 6.1's kmalloc_node_trace(s, flags, node, size): size on the stack.
        assert_eq!(i386_stack_words(by_name("kmalloc_node_trace").arity(config)), 1);
        // The _track_caller form kmalloc goes through takes the caller 4th.
        assert_eq!(i386_stack_words(by_name("__kmalloc_node_track_caller").arity(config)), 1);
    }
    extern crate std;
    use std::string::ToString;

    #[test]
    fn catalogue_fits_a_selection_and_layouts_of_a_name_differ() {
        assert!(MEMORY.len() <= 64);
        for (i, f) in MEMORY.iter().enumerate() {
            assert!(f.args.len() <= 6, "{} has more than 6 register args", f.name);
            for g in &MEMORY[..i] {
                let names = |f: &Function| f.args.iter().map(|a| a.name).collect::<std::vec::Vec<_>>();
                assert!(g.name != f.name || names(g) != names(f), "{} twice with one layout", f.name);
            }
        }
    }

    #[test]
    fn a_symbol_with_two_layouts_selects_the_kernels() {
        let layouts: std::vec::Vec<usize> =
            MEMORY.iter().enumerate().filter(|(_, f)| f.name == "__kvmalloc_node_noprof").map(|(i, _)| i).collect();
        assert_eq!(layouts.len(), 2);
        let seven = layouts[1];
        let config = KernelConfig { slab_buckets: true };
        assert!(MEMORY[seven].matches_params(config, &["size", "b", "align", "flags", "node"]));
        assert!(!MEMORY[layouts[0]].matches_params(config, &["size", "b", "align", "flags", "node"]));
        let choice = select("__kvmalloc_node_noprof", |i| i == seven).unwrap();
        assert!(choice.memory.contains(seven) && !choice.memory.contains(layouts[0]));
        assert_eq!(select("__kvmalloc_node_noprof", |_| false).unwrap_err(), SelectError::Unavailable("__kvmalloc_node_noprof"));
    }

    #[test]
    fn buckets_argument_depends_on_config() {
        let f = &MEMORY[index_of("__kmalloc_node_noprof").unwrap()];
        let with: std::vec::Vec<_> = f.args_for(KernelConfig { slab_buckets: true }).map(|a| a.name).collect();
        let without: std::vec::Vec<_> = f.args_for(KernelConfig { slab_buckets: false }).map(|a| a.name).collect();
        assert_eq!(with, ["size", "b", "flags", "node"]);
        assert_eq!(without, ["size", "flags", "node"]);
    }

    #[test]
    fn empty_list_selects_every_available_function() {
        let kfree = index_of("kfree").unwrap();
        let sel = select("", |i| i != kfree).unwrap().memory;
        assert!(!sel.contains(kfree));
        assert_eq!(sel.iter().count(), MEMORY.len() - 1);
    }

    #[test]
    fn explicit_names_are_checked() {
        let sel = select(" kfree, vfree ", |_| true).unwrap().memory;
        assert_eq!(sel.iter().map(|i| MEMORY[i].name).collect::<std::vec::Vec<_>>(), ["kfree", "vfree"]);
        let kfree = index_of("kfree").unwrap();
        assert_eq!(select("kfree", |i| i != kfree), Err(SelectError::Unavailable("kfree")));
        assert_eq!(select(",,", |_| false), Err(SelectError::Empty));
    }

    #[test]
    fn other_names_are_callees_with_or_without_spec() {
        let c = select("kfree,mutex_lock,kstrtoint:sxx,kfree:x", |_| true).unwrap();
        assert_eq!(c.memory.iter().map(|i| MEMORY[i].name).collect::<std::vec::Vec<_>>(), ["kfree"]);
        let names: std::vec::Vec<_> = c.callees().map(|w| (w.name, w.spec.map(|s| s.to_string()))).collect();
        assert_eq!(
            names,
            [("mutex_lock", None), ("kstrtoint", Some("sxx".to_string())), ("kfree", Some("x".to_string()))]
        );
        assert_eq!(select("kfree,;;%%", |_| true), Err(SelectError::BadName(";;%%")));
        assert_eq!(select("f:q", |_| true), Err(SelectError::BadName("f:q")));
        assert_eq!(select("kfree+free", |_| true), Err(SelectError::CatalogueRole("kfree")));
        assert_eq!(select("my_put+free9", |_| true), Err(SelectError::BadName("my_put+free9")));
        let pair = select("my_get:x+alloc,my_put:x+free", |_| true).unwrap();
        assert_eq!(pair.callees().map(|w| (w.name, w.role)).collect::<Vec<_>>().len(), 2);
        let many: std::string::String = (0..=MAX_CALLEES).map(|i| std::format!("f{i},")).collect();
        assert_eq!(select(&many, |_| true), Err(SelectError::TooMany));
    }

    #[test]
    fn track_caller_forms_are_in_the_catalogue_and_take_every_argument() {
        for t in TRACK_CALLER {
            let func = &MEMORY[index_of(t.function).unwrap()];
            let via = &MEMORY[index_of(t.via).unwrap()];
            assert_eq!(via.args.len(), t.sources.len(), "{}", t.via);
            assert_eq!(via.args.last().unwrap().kind, Kind::CodePtr, "{}: the caller comes last", t.via);
            for s in t.sources {
                if let Source::Arg(name) = s {
                    assert!(func.args.iter().any(|a| a.name == *name), "{}: no argument {name}", t.function);
                }
            }
        }
    }

    #[test]
    fn kmalloc_becomes_track_caller_with_the_site() {
        let kmalloc = index_of("__kmalloc_noprof").unwrap();
        let t = track_caller(kmalloc).unwrap();
        let no_buckets = KernelConfig { slab_buckets: false };
        let args = [100, 0xcc0, 9, 9, 9, 9];
        assert_eq!(t.resolve(no_buckets).build(&args, 0xc0de), [100, 0xcc0, u64::MAX, 0xc0de, 0, 0]);
        let buckets = KernelConfig { slab_buckets: true };
        assert_eq!(t.resolve(buckets).build(&args, 0xc0de), [100, 0, 0xcc0, u64::MAX, 0xc0de, 0]);
        let node = track_caller(index_of("__kmalloc_node_noprof").unwrap()).unwrap();
        assert_eq!(node.resolve(buckets).build(&[64, 0xb, 0xcc0, 1, 9, 9], 0xc0de), [64, 0xb, 0xcc0, 1, 0xc0de, 0]);
        assert!(track_caller(index_of("__kmalloc_cache_noprof").unwrap()).is_none());
    }
}
