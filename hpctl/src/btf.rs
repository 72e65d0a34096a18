//! Function prototypes from the running kernel's BTF: `/sys/kernel/btf/vmlinux`
//! and, split on it, `/sys/kernel/btf/<module>` (btf-rs). A callee is looked
//! up in vmlinux first, then in the module /proc/kallsyms says defines it
//! (ext4 calls jbd2_journal_start, which jbd2 defines), then, when kallsyms
//! does not know the name, in every loaded module's BTF.
//!
//! What comes out is `prototype::Prototype`: C spelling, typedef names kept
//! (gfp_t, size_t, bool), shapes resolved through typedef, const, volatile,
//! restrict and type tags.

use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

use anyhow::{Context, Result};
use btf_rs::{Btf, BtfType, Type};

use crate::prototype::{CType, Field, Param, Prototype, Shape};

pub const SYS_BTF: &str = "/sys/kernel/btf";

/// Deeper type chains than this are taken for a loop (BTF has none, but a
/// corrupt file should not hang hpctl).
const MAX_DEPTH: usize = 24;

/// Where module BTF comes from.
enum Source {
    /// `/sys/kernel/btf/<module>`, and /proc/kallsyms to find the module.
    Sys { dir: PathBuf },
    /// Split BTF a test gave, by module name.
    Given(Vec<(String, Vec<u8>)>),
}

/// vmlinux's BTF, and modules' loaded on first use.
pub struct Btfs {
    vmlinux: Btf,
    source: Source,
    /// `None`: that module's BTF could not be read.
    modules: HashMap<String, Option<Btf>>,
    /// Text symbol -> its module (`None`: vmlinux), from /proc/kallsyms.
    owners: Option<HashMap<String, Option<String>>>,
}

impl Btfs {
    /// The running kernel's: /sys/kernel/btf/vmlinux must exist
    /// (CONFIG_DEBUG_INFO_BTF).
    pub fn load() -> Result<Btfs> {
        let dir = PathBuf::from(SYS_BTF);
        let vmlinux = dir.join("vmlinux");
        let btf = Btf::from_file(&vmlinux).with_context(|| {
            format!("reading {} (a kernel built without CONFIG_DEBUG_INFO_BTF has none)", vmlinux.display())
        })?;
        Ok(Btfs { vmlinux: btf, source: Source::Sys { dir }, modules: HashMap::new(), owners: None })
    }

    /// From raw BTF: vmlinux's, and modules' split BTF by name.
    pub fn from_bytes(vmlinux: &[u8], modules: Vec<(String, Vec<u8>)>) -> Result<Btfs> {
        let btf = Btf::from_bytes(vmlinux).context("parsing vmlinux's BTF")?;
        Ok(Btfs { vmlinux: btf, source: Source::Given(modules), modules: HashMap::new(), owners: None })
    }

    fn module(&mut self, name: &str) -> Option<&Btf> {
        if !self.modules.contains_key(name) {
            let btf = match &self.source {
                Source::Sys { dir } => Btf::from_split_file(dir.join(name), &self.vmlinux).ok(),
                Source::Given(list) => list
                    .iter()
                    .find(|(n, _)| n == name)
                    .and_then(|(_, bytes)| Btf::from_split_bytes(bytes, &self.vmlinux).ok()),
            };
            self.modules.insert(name.to_string(), btf);
        }
        self.modules.get(name).and_then(Option::as_ref)
    }

    /// Modules that have BTF.
    fn module_names(&self) -> Vec<String> {
        match &self.source {
            Source::Sys { dir } => {
                let mut names: Vec<String> = std::fs::read_dir(dir)
                    .map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
                    .unwrap_or_default();
                names.retain(|n| n != "vmlinux");
                names.sort();
                names
            }
            Source::Given(list) => list.iter().map(|(n, _)| n.clone()).collect(),
        }
    }

    /// `Some(Some(m))`: module m defines it; `Some(None)`: vmlinux does;
    /// `None`: kallsyms does not know it (or cannot be read).
    fn owner(&mut self, name: &str) -> Option<Option<String>> {
        if !matches!(self.source, Source::Sys { .. }) {
            return None;
        }
        let owners = self.owners.get_or_insert_with(|| {
            std::fs::read_to_string("/proc/kallsyms").map(|t| text_owners(&t)).unwrap_or_default()
        });
        owners.get(name).cloned()
    }

    /// The prototype of function `name`, from the first BTF that has it.
    pub fn prototype(&mut self, name: &str) -> Option<Prototype> {
        if let Some(p) = find(&self.vmlinux, name, "vmlinux") {
            return Some(p);
        }
        let candidates = match self.owner(name) {
            Some(Some(module)) => vec![module],
            // vmlinux defines it and its BTF does not have it.
            Some(None) => return None,
            None => self.module_names(),
        };
        for module in candidates {
            if let Some(p) = self.module(&module).and_then(|btf| find(btf, name, &module)) {
                return Some(p);
            }
        }
        None
    }
}

/// From /proc/kallsyms: each text symbol's module (`None` for vmlinux).
pub fn text_owners(kallsyms: &str) -> HashMap<String, Option<String>> {
    let mut owners = HashMap::new();
    for line in kallsyms.lines() {
        let mut words = line.split_ascii_whitespace();
        let (Some(_), Some(kind), Some(name)) = (words.next(), words.next(), words.next()) else { continue };
        if !matches!(kind, "t" | "T") {
            continue;
        }
        let module = words.next().and_then(|m| m.strip_prefix('[')?.strip_suffix(']')).map(str::to_string);
        // A name in vmlinux and in a module: vmlinux's is the one modules call.
        match owners.get(name) {
            Some(None) => {}
            _ => {
                owners.insert(name.to_string(), module);
            }
        }
    }
    owners
}

/// The FUNC named `name` in `btf` (a split BTF also searches its base). A
/// global one is preferred over static ones of the same name; different
/// prototypes that remain make it ambiguous (none).
pub fn find(btf: &Btf, name: &str, origin: &str) -> Option<Prototype> {
    let ids = btf.resolve_ids_by_name(name).ok()?;
    let mut funcs: Vec<(bool, Prototype)> = Vec::new();
    for id in ids {
        let Ok(Type::Func(func)) = btf.resolve_type_by_id(id) else { continue };
        let Some(proto_id) = func.get_type_id() else { continue };
        let Some(p) = prototype(btf, name, origin, proto_id) else { continue };
        funcs.push((func.is_global(), p));
    }
    if funcs.iter().any(|(global, _)| *global) {
        funcs.retain(|(global, _)| *global);
    }
    let first = funcs.first()?.1.clone();
    funcs.iter().all(|(_, p)| p.declaration() == first.declaration()).then_some(first)
}

fn prototype(btf: &Btf, name: &str, origin: &str, proto_id: u32) -> Option<Prototype> {
    let Ok(Type::FuncProto(fp)) = btf.resolve_type_by_id(proto_id) else { return None };
    let mut params = Vec::new();
    let mut variadic = false;
    for p in &fp.parameters {
        if p.is_variadic() {
            variadic = true;
            continue;
        }
        let pname = btf.resolve_name(p).unwrap_or_default();
        params.push(Param { name: pname, ty: ctype(btf, p.get_type_id().unwrap_or(0), 0) });
    }
    Some(Prototype {
        name: name.to_string(),
        btf: origin.to_string(),
        ret: ctype(btf, fp.return_type_id(), 0),
        params,
        variadic,
    })
}

fn name_of(btf: &Btf, t: &dyn BtfType) -> String {
    btf.resolve_name(t).unwrap_or_default()
}

/// Type `id` as C spells it and as a shape.
pub fn ctype(btf: &Btf, id: u32, depth: usize) -> CType {
    resolve(btf, id, depth, true)
}

/// `by_value`: the members of a struct or union are resolved too (a value
/// of it is at hand); behind a pointer only its name is (resolving what
/// pointers point to would walk the kernel's whole type graph).
fn resolve(btf: &Btf, id: u32, depth: usize, by_value: bool) -> CType {
    let unknown = || CType::new("?", Shape::Other { bytes: 0 });
    if depth > MAX_DEPTH {
        return unknown();
    }
    let Ok(t) = btf.resolve_type_by_id(id) else { return unknown() };
    let follow = |t: &dyn BtfType, by_value: bool| {
        t.get_type_id().map(|id| resolve(btf, id, depth + 1, by_value)).unwrap_or_else(CType::void)
    };
    let next = |t: &dyn BtfType| follow(t, by_value);
    match &t {
        Type::Void => CType::void(),
        Type::Int(i) => {
            let name = name_of(btf, i);
            let shape = if i.is_bool() || name == "_Bool" {
                Shape::Bool
            } else {
                Shape::Int { bytes: i.size() as u32, signed: i.is_signed() }
            };
            CType::new(&name, shape)
        }
        Type::Float(f) => CType::new(&name_of(btf, f), Shape::Float { bytes: f.size() as u32 }),
        Type::Ptr(p) => {
            let to = follow(p, false);
            let to_char = to.text.trim_start_matches("const ").trim_start_matches("volatile ") == "char"
                && matches!(to.shape, Shape::Int { bytes: 1, .. });
            let text = if matches!(btf.resolve_type_by_id(p.get_type_id().unwrap_or(0)), Ok(Type::FuncProto(_))) {
                // A function pointer: the prototype's text already says `(*)`.
                to.text
            } else if to.text.ends_with('*') {
                format!("{}*", to.text)
            } else {
                format!("{} *", to.text)
            };
            CType { text, typedef: None, shape: Shape::Ptr { to_char } }
        }
        Type::Const(c) | Type::Volatile(c) => {
            let mut inner = next(c);
            let qualifier = if matches!(t, Type::Const(_)) { "const" } else { "volatile" };
            inner.text = if inner.text.ends_with('*') {
                format!("{}{qualifier}", inner.text)
            } else if inner.text.contains("(*)") {
                inner.text.replacen("(*)", &format!("(*{qualifier})"), 1)
            } else {
                format!("{qualifier} {}", inner.text)
            };
            inner
        }
        Type::Restrict(r) => next(r),
        Type::TypeTag(tt) => next(tt),
        Type::Typedef(td) => {
            let mut inner = next(td);
            let name = name_of(btf, td);
            // `bool` is a typedef of _Bool; keep its shape, say its name.
            inner.text = name.clone();
            inner.typedef = Some(name);
            inner
        }
        Type::Enum(e) => {
            // 32-bit values: a signed enum's sign-extended, as registers hold them.
            let value = |v: u32| if e.is_signed() { v as i32 as i64 as u64 } else { u64::from(v) };
            let values = e.members.iter().map(|m| (name_of(btf, m), value(m.val()))).collect();
            CType::new(
                &format!("enum {}", non_empty(name_of(btf, e))),
                Shape::Enum { bytes: e.size() as u32, signed: e.is_signed(), values },
            )
        }
        Type::Enum64(e) => {
            let values = e.members.iter().map(|m| (name_of(btf, m), m.val())).collect();
            CType::new(
                &format!("enum {}", non_empty(name_of(btf, e))),
                Shape::Enum { bytes: e.size() as u32, signed: e.is_signed(), values },
            )
        }
        Type::Struct(s) | Type::Union(s) => {
            let union = matches!(t, Type::Union(_));
            let keyword = if union { "union" } else { "struct" };
            let text = format!("{keyword} {}", non_empty(name_of(btf, s)));
            if !by_value {
                return CType::new(&text, Shape::Other { bytes: s.size() as u32 });
            }
            let mut fields = Vec::new();
            let mut natural = true;
            for m in &s.members {
                let ty = m.get_type_id().map(|id| resolve(btf, id, depth + 1, true)).unwrap_or_else(unknown);
                let bits = m.bitfield_size().filter(|&b| b > 0);
                if bits.is_none() {
                    let align = ty.shape.align().max(1) * 8;
                    natural &= m.bit_offset() % align == 0;
                }
                natural &= !matches!(ty.shape, Shape::Float { .. } | Shape::Other { .. })
                    && !matches!(&ty.shape, Shape::Aggregate { natural: false, .. });
                fields.push(Field { name: name_of(btf, m), bit_offset: m.bit_offset(), bits, ty });
            }
            CType::new(&text, Shape::Aggregate { union, bytes: s.size() as u32, fields, natural })
        }
        Type::Fwd(f) => {
            let keyword = if f.is_union() { "union" } else { "struct" };
            CType::new(&format!("{keyword} {}", non_empty(name_of(btf, f))), Shape::Other { bytes: 0 })
        }
        Type::Array(a) => {
            let elem = next(a);
            let bytes = elem.shape.size().saturating_mul(a.len() as u32);
            CType::new(&format!("{}[{}]", elem.text, a.len()), Shape::Other { bytes })
        }
        Type::FuncProto(fp) => {
            let ret = resolve(btf, fp.return_type_id(), depth + 1, false);
            let params: Vec<String> = fp
                .parameters
                .iter()
                .map(|p| if p.is_variadic() { "...".to_string() } else { follow(p, false).text })
                .collect();
            CType::new(&format!("{} (*)({})", ret.text, params.join(", ")), Shape::Other { bytes: 0 })
        }
        _ => unknown(),
    }
}

fn non_empty(name: String) -> String {
    if name.is_empty() {
        "(anon)".to_string()
    } else {
        name
    }
}

/// The prototypes of a trace, looked up once per callee name. Nothing is
/// read until the first callee that needs one; without BTF every callee
/// prints raw (one warning).
pub struct Prototypes {
    lookup: Lookup,
    cache: HashMap<String, Option<Rc<Prototype>>>,
}

enum Lookup {
    /// Offline (a saved capture): no prototypes.
    None,
    /// /sys/kernel/btf, loaded on first use.
    Live(Option<Result<Btfs, String>>),
    /// Given by a test.
    Fixed(HashMap<String, Prototype>),
}

impl Prototypes {
    pub fn none() -> Prototypes {
        Prototypes { lookup: Lookup::None, cache: HashMap::new() }
    }

    pub fn live() -> Prototypes {
        Prototypes { lookup: Lookup::Live(None), cache: HashMap::new() }
    }

    pub fn fixed(list: Vec<Prototype>) -> Prototypes {
        Prototypes {
            lookup: Lookup::Fixed(list.into_iter().map(|p| (p.name.clone(), p)).collect()),
            cache: HashMap::new(),
        }
    }

    pub fn get(&mut self, name: &str) -> Option<Rc<Prototype>> {
        if !self.cache.contains_key(name) {
            let found = match &mut self.lookup {
                Lookup::None => None,
                Lookup::Fixed(map) => map.get(name).cloned(),
                Lookup::Live(state) => {
                    let btfs = state.get_or_insert_with(|| {
                        Btfs::load().map_err(|e| {
                            let msg = format!("{e:#}");
                            eprintln!("hpctl: no BTF, callees print raw: {msg}");
                            msg
                        })
                    });
                    btfs.as_mut().ok().and_then(|b| b.prototype(name))
                }
            };
            self.cache.insert(name.to_string(), found.map(Rc::new));
        }
        self.cache.get(name).cloned().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_from_kallsyms() {
        let owners = text_owners(
            "ffffffff81000000 T _stext\n\
             ffffffff81234560 T jbd2_journal_start\t[jbd2]\n\
             ffffffffc0a01000 t ext4_foo\t[ext4]\n\
             ffffffffc0a02000 d ext4_data\t[ext4]\n\
             ffffffff81111111 T kfree\n\
             ffffffffc0b00000 t kfree\t[odd]\n",
        );
        assert_eq!(owners.get("jbd2_journal_start"), Some(&Some("jbd2".to_string())));
        assert_eq!(owners.get("_stext"), Some(&None));
        assert_eq!(owners.get("kfree"), Some(&None));
        assert_eq!(owners.get("ext4_data"), None);
    }
}
