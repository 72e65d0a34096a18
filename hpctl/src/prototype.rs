//! A function's prototype as hpctl uses it for callees outside the memory
//! catalogue: the C types of its parameters and result (read from BTF by
//! `btf.rs`), the SPEC the module is sent (`fn=name:SPEC`, docs/control.md),
//! the refusals BTF alone can tell, and the typed text of one call's values.
//!
//! The model is plain data so that tests can build prototypes by hand.

use std::fmt::Write;

use hp_core::gfp::{write_gfp_from, GfpName};
use hp_core::proto::{Refusal, Spec, REGISTER_ARGS};

/// A struct returned by value in rax:rdx (System V: at most two eightbytes
/// of INTEGER class); a larger one is returned through a hidden pointer in
/// rdi, which shifts every argument.
pub const MAX_REGISTER_RETURN: u32 = 16;

/// What a type is, as far as passing and printing a value goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    Void,
    Int {
        bytes: u32,
        signed: bool,
    },
    Bool,
    Enum {
        bytes: u32,
        signed: bool,
        /// Enumerators: name and value (the bits of the value, sign-extended to 64).
        values: Vec<(String, u64)>,
    },
    Ptr {
        /// Points to plain `char` (const or not): a C string, SPEC `s`.
        to_char: bool,
    },
    /// A struct or union.
    Aggregate {
        union: bool,
        bytes: u32,
        fields: Vec<Field>,
        /// Every member at an offset its alignment allows, no float: what
        /// System V passes in integer registers when it is small enough.
        natural: bool,
    },
    Float {
        bytes: u32,
    },
    /// Anything else (an array, a function, a type BTF could not resolve).
    Other {
        bytes: u32,
    },
}

impl Shape {
    pub fn size(&self) -> u32 {
        match self {
            Shape::Void => 0,
            Shape::Bool => 1,
            Shape::Ptr { .. } => 8,
            Shape::Int { bytes, .. }
            | Shape::Enum { bytes, .. }
            | Shape::Aggregate { bytes, .. }
            | Shape::Float { bytes }
            | Shape::Other { bytes } => *bytes,
        }
    }

    /// Alignment as the System V ABI has it for these kinds.
    pub fn align(&self) -> u32 {
        match self {
            Shape::Aggregate { fields, .. } => fields.iter().map(|f| f.ty.shape.align()).max().unwrap_or(1),
            other => other.size().clamp(1, 16),
        }
    }
}

/// One member of a struct or union.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// Empty for an anonymous struct or union member.
    pub name: String,
    pub bit_offset: u32,
    /// `Some(width)` for a bitfield.
    pub bits: Option<u32>,
    pub ty: CType,
}

/// A C type: how C spells it, the typedef it was reached through, and its shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CType {
    /// `const char *`, `gfp_t`, `struct inode *`, `unsigned int`.
    pub text: String,
    /// The outermost typedef name (`gfp_t`, `size_t`, `bool`...), if any.
    pub typedef: Option<String>,
    pub shape: Shape,
}

impl CType {
    pub fn new(text: &str, shape: Shape) -> CType {
        CType { text: text.to_string(), typedef: None, shape }
    }

    pub fn void() -> CType {
        CType::new("void", Shape::Void)
    }

    pub fn is_void(&self) -> bool {
        self.shape == Shape::Void
    }

    /// Its SPEC letter as a parameter: `S` for what takes more than one
    /// register or none (a struct or union, a 128-bit integer, a float
    /// passed in an SSE register), `s` for a C string, else `x`.
    pub fn letter(&self) -> char {
        match &self.shape {
            Shape::Aggregate { .. } | Shape::Float { .. } => 'S',
            Shape::Int { bytes, .. } if *bytes > 8 => 'S',
            Shape::Ptr { to_char: true } => 's',
            _ => 'x',
        }
    }

    /// What a value of this type is called in JSON `args[].kind`.
    pub fn kind(&self) -> &'static str {
        if self.has_typedef("gfp_t") {
            return "gfp";
        }
        if self.has_typedef("size_t") {
            return "size";
        }
        match &self.shape {
            Shape::Int { signed: true, .. } => "int",
            Shape::Int { signed: false, .. } => "uint",
            Shape::Bool => "bool",
            Shape::Enum { .. } => "enum",
            Shape::Ptr { to_char: true } => "string",
            Shape::Ptr { .. } => "ptr",
            Shape::Aggregate { .. } => "struct",
            Shape::Void => "void",
            Shape::Float { .. } | Shape::Other { .. } => "raw",
        }
    }

    fn has_typedef(&self, name: &str) -> bool {
        self.typedef.as_deref() == Some(name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// Empty when BTF has no name for it.
    pub name: String,
    pub ty: CType,
}

/// Why hpctl will not attach a callee, from its prototype (or its lack of one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BtfRefusal {
    /// The rule SPEC states, which the module applies too.
    Spec(Refusal),
    /// Neither vmlinux's BTF nor a module's has it: `--raw` only.
    NoPrototype,
}

impl BtfRefusal {
    pub fn word(self) -> &'static str {
        match self {
            BtfRefusal::Spec(r) => r.word(),
            BtfRefusal::NoPrototype => "no_prototype",
        }
    }

    pub fn explain(self) -> String {
        match self {
            BtfRefusal::Spec(Refusal::Aggregate) => {
                "a struct or union passed by value, or returned by value in more than two registers".to_string()
            }
            BtfRefusal::Spec(r) => r.to_string(),
            BtfRefusal::NoPrototype => "no prototype in vmlinux's or any module's BTF".to_string(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prototype {
    pub name: String,
    /// Where BTF had it: `vmlinux` or a module's name.
    pub btf: String,
    pub ret: CType,
    pub params: Vec<Param>,
    pub variadic: bool,
}

impl Prototype {
    pub fn arity(&self) -> usize {
        self.params.len()
    }

    /// SPEC letters, one per parameter, and a final `.` when variadic.
    pub fn spec_letters(&self) -> String {
        let mut s: String = self.params.iter().map(|p| p.ty.letter()).collect();
        if self.variadic {
            s.push('.');
        }
        s
    }

    /// The result does not fit rax:rdx (or is not of integer class): the
    /// caller passes a hidden pointer in rdi and every argument moves.
    pub fn returns_in_memory(&self) -> bool {
        match &self.ret.shape {
            Shape::Aggregate { bytes, natural, .. } => *bytes > MAX_REGISTER_RETURN || !natural,
            Shape::Int { bytes, .. } => *bytes > MAX_REGISTER_RETURN,
            Shape::Other { bytes } => *bytes > 8,
            _ => false,
        }
    }

    /// The module's own SPEC rule (variadic, then struct by value, then more
    /// than 6 arguments), plus a result returned through memory.
    pub fn refusal(&self) -> Option<Refusal> {
        let letters = self.spec_letters();
        if self.variadic {
            Some(Refusal::Variadic)
        } else if letters.contains('S') || self.returns_in_memory() {
            Some(Refusal::Aggregate)
        } else if self.arity() > REGISTER_ARGS {
            Some(Refusal::TooManyArgs(self.arity().min(u8::MAX as usize) as u8))
        } else {
            None
        }
    }

    /// The SPEC to send, unless refused.
    pub fn spec(&self) -> Result<Spec, Refusal> {
        if let Some(r) = self.refusal() {
            return Err(r);
        }
        Spec::parse(&self.spec_letters()).map_err(|_| Refusal::TooManyArgs(self.arity() as u8))
    }

    /// `int kstrtoint(const char *s, unsigned int base, int *res)`.
    pub fn declaration(&self) -> String {
        format!("{}{}{}", declarator_prefix(&self.ret.text), self.name, self.parameter_list())
    }

    /// Without the name: `int (const char *s, unsigned int base, int *res)`.
    pub fn signature(&self) -> String {
        format!("{}{}", declarator_prefix(&self.ret.text), self.parameter_list())
    }

    /// `(const char *s, unsigned int base, int *res)`.
    pub fn parameter_list(&self) -> String {
        let mut items: Vec<String> = self.params.iter().map(|p| declare(&p.ty.text, &p.name)).collect();
        if self.variadic {
            items.push("...".to_string());
        }
        if items.is_empty() {
            items.push("void".to_string());
        }
        format!("({})", items.join(", "))
    }
}

/// A parameter declaration: `const char *s`, `int (*fn)(void *)`, `int`.
fn declare(text: &str, name: &str) -> String {
    if name.is_empty() {
        return text.to_string();
    }
    if let Some(at) = text.find("(*") {
        // A function pointer: the name goes inside its parentheses.
        let close = at + text[at..].find(')').unwrap_or(1);
        return format!("{}{name}{}", &text[..close], &text[close..]);
    }
    format!("{}{name}", declarator_prefix(text))
}

/// `int ` before a name, `char *` with no space after the star.
fn declarator_prefix(text: &str) -> String {
    if text.ends_with('*') {
        text.to_string()
    } else {
        format!("{text} ")
    }
}

/// Sign- or zero-extends the low `bytes` of a register.
pub fn extend(raw: u64, bytes: u32, signed: bool) -> u64 {
    if bytes == 0 || bytes >= 8 {
        return raw;
    }
    let bits = bytes * 8;
    let low = raw & ((1u64 << bits) - 1);
    if signed && low >> (bits - 1) != 0 {
        low | !((1u64 << bits) - 1)
    } else {
        low
    }
}

/// A gfp_t value by the running kernel's names (`info`'s gfp records).
pub fn write_gfp_names(s: &mut String, raw: u64, names: &[(u64, String)]) {
    let table = names.iter().map(|(mask, name)| GfpName { mask: *mask, name });
    write_gfp_from(s, raw & 0xffff_ffff, table).expect("writing to a String");
}

/// The values of one call as text, with what the running kernel says of gfp flags.
pub struct ValueFormat<'a> {
    pub gfp: &'a [(u64, String)],
}

impl ValueFormat<'_> {
    /// One register-sized value of type `ty`.
    pub fn scalar(&self, ty: &CType, raw: u64) -> String {
        if ty.has_typedef("gfp_t") {
            let mut s = String::new();
            write_gfp_names(&mut s, raw, self.gfp);
            return s;
        }
        match &ty.shape {
            Shape::Int { bytes, signed: true } => (extend(raw, *bytes, true) as i64).to_string(),
            Shape::Int { bytes, signed: false } => extend(raw, *bytes, false).to_string(),
            Shape::Bool => match raw & 0xff {
                0 => "false".to_string(),
                1 => "true".to_string(),
                other => other.to_string(),
            },
            Shape::Enum { bytes, signed, values } => {
                let v = extend(raw, *bytes, *signed);
                match values.iter().find(|(_, value)| extend(*value, *bytes, *signed) == v) {
                    Some((name, _)) => name.clone(),
                    None if *signed => (v as i64).to_string(),
                    None => v.to_string(),
                }
            }
            _ => format!("{raw:#x}"),
        }
    }

    /// A struct or union from its bytes (little endian): `{sec=1, nsec=2}`.
    pub fn aggregate(&self, ty: &CType, bytes: &[u8]) -> String {
        let Shape::Aggregate { fields, .. } = &ty.shape else { return self.scalar(ty, read_le(bytes, 0, 8)) };
        let mut s = String::from("{");
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            if !f.name.is_empty() {
                let _ = write!(s, "{}=", f.name);
            }
            let offset = (f.bit_offset / 8) as usize;
            let text = match (&f.ty.shape, f.bits) {
                (shape, Some(width)) if f.bit_offset + width <= 128 && (1..=64).contains(&width) => {
                    let mut word = [0u8; 16];
                    let n = bytes.len().min(16);
                    word[..n].copy_from_slice(&bytes[..n]);
                    let mask = if width == 64 { u64::MAX } else { (1u64 << width) - 1 };
                    let mut value = (u128::from_le_bytes(word) >> f.bit_offset) as u64 & mask;
                    let signed = matches!(shape, Shape::Int { signed: true, .. } | Shape::Enum { signed: true, .. });
                    if signed && width < 64 && value >> (width - 1) != 0 {
                        value |= !mask;
                    }
                    self.scalar(&f.ty, value)
                }
                (Shape::Aggregate { bytes: size, .. }, None) => {
                    let end = (offset + *size as usize).min(bytes.len());
                    self.aggregate(&f.ty, bytes.get(offset..end).unwrap_or_default())
                }
                (shape, None) if (1..=8).contains(&shape.size()) => {
                    self.scalar(&f.ty, read_le(bytes, offset, shape.size() as usize))
                }
                _ => "?".to_string(),
            };
            s.push_str(&text);
        }
        s.push('}');
        s
    }

    /// The result: nothing for `void`, a small struct from rax:rdx.
    pub fn result(&self, ty: &CType, rax: u64, rdx: u64) -> Option<String> {
        match &ty.shape {
            Shape::Void => None,
            Shape::Aggregate { .. } => {
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&rax.to_le_bytes());
                bytes[8..].copy_from_slice(&rdx.to_le_bytes());
                let size = (ty.shape.size() as usize).min(16);
                Some(self.aggregate(ty, &bytes[..size]))
            }
            _ => Some(self.scalar(ty, rax)),
        }
    }
}

/// Up to 8 little-endian bytes at `offset`, missing bytes as zero.
fn read_le(bytes: &[u8], offset: usize, len: usize) -> u64 {
    let mut le = [0u8; 8];
    for (i, b) in le.iter_mut().enumerate().take(len.min(8)) {
        *b = bytes.get(offset + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(le)
}

/// A string argument as the event carries it (hp_core::proto::strings):
/// quoted with C escapes, `...` after a cut one.
pub fn quote(bytes: &[u8], truncated: bool) -> String {
    let mut s = String::from("\"");
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                s.push('\\');
                s.push(b as char);
            }
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s.push('"');
    if truncated {
        s.push_str("...");
    }
    s
}

/// A string argument the module could not read: NULL, or an address it
/// could not copy from.
pub fn unreadable(raw: u64) -> String {
    if raw == 0 {
        "NULL".to_string()
    } else {
        format!("{raw:#x} (unreadable)")
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn int(text: &str, bytes: u32, signed: bool) -> CType {
        CType::new(text, Shape::Int { bytes, signed })
    }

    pub fn typedef(name: &str, mut ty: CType) -> CType {
        ty.text = name.to_string();
        ty.typedef = Some(name.to_string());
        ty
    }

    pub fn ptr(text: &str) -> CType {
        CType::new(text, Shape::Ptr { to_char: false })
    }

    pub fn string() -> CType {
        CType::new("const char *", Shape::Ptr { to_char: true })
    }

    pub fn timespec64() -> CType {
        let ll = typedef("time64_t", int("long long int", 8, true));
        let field = |name: &str, bit_offset, ty: CType| Field { name: name.to_string(), bit_offset, bits: None, ty };
        CType::new(
            "struct timespec64",
            Shape::Aggregate {
                union: false,
                bytes: 16,
                fields: vec![field("tv_sec", 0, ll), field("tv_nsec", 64, int("long int", 8, true))],
                natural: true,
            },
        )
    }

    pub fn proto(name: &str, ret: CType, params: &[(&str, CType)], variadic: bool) -> Prototype {
        Prototype {
            name: name.to_string(),
            btf: "vmlinux".to_string(),
            ret,
            params: params.iter().map(|(n, t)| Param { name: n.to_string(), ty: t.clone() }).collect(),
            variadic,
        }
    }

    #[test]
    fn spec_letters_and_refusals() {
        let uint = int("unsigned int", 4, false);
        let kstrtoint = proto(
            "kstrtoint",
            int("int", 4, true),
            &[("s", string()), ("base", uint.clone()), ("res", ptr("int *"))],
            false,
        );
        assert_eq!(kstrtoint.spec_letters(), "sxx");
        assert_eq!(kstrtoint.spec().unwrap().to_string(), "sxx");
        assert_eq!(kstrtoint.declaration(), "int kstrtoint(const char *s, unsigned int base, int *res)");

        let printk = proto("_printk", int("int", 4, true), &[("fmt", string())], true);
        assert_eq!((printk.spec_letters().as_str(), printk.refusal()), ("s.", Some(Refusal::Variadic)));
        assert_eq!(printk.declaration(), "int _printk(const char *fmt, ...)");

        let seven: Vec<(&str, CType)> =
            ["a", "b", "c", "d", "e", "f", "g"].iter().map(|n| (*n, uint.clone())).collect();
        let wide = proto("wide", CType::void(), &seven, false);
        assert_eq!(wide.refusal(), Some(Refusal::TooManyArgs(7)));
        let nine: Vec<(&str, CType)> = (0..9).map(|_| ("", uint.clone())).collect();
        assert_eq!(proto("nine", CType::void(), &nine, false).spec(), Err(Refusal::TooManyArgs(9)));

        let by_value = proto("set_ts", CType::void(), &[("ts", timespec64()), ("p", ptr("void *"))], false);
        assert_eq!((by_value.spec_letters().as_str(), by_value.refusal()), ("Sx", Some(Refusal::Aggregate)));
        // Variadic is said first, as the module does.
        let both = proto("both", CType::void(), &[("ts", timespec64())], true);
        assert_eq!(both.refusal(), Some(Refusal::Variadic));

        // A 16-byte struct comes back in rax:rdx: fine.
        let ns = proto("ns_to_timespec64", timespec64(), &[("nsec", int("long long int", 8, true))], false);
        assert_eq!(ns.spec().unwrap().to_string(), "x");
        // A larger one through a hidden pointer: refused.
        let mut big = timespec64();
        if let Shape::Aggregate { bytes, .. } = &mut big.shape {
            *bytes = 24;
        }
        assert_eq!(proto("big", big, &[], false).refusal(), Some(Refusal::Aggregate));
        // No argument at all is a SPEC too (`name:`).
        let none = proto("schedule", CType::void(), &[], false);
        assert_eq!(
            (none.spec().unwrap().to_string().as_str(), none.declaration().as_str()),
            ("", "void schedule(void)")
        );
        let fnptr = CType::new("int (*)(void *)", Shape::Ptr { to_char: false });
        let kthread = proto("k", ptr("struct task_struct *"), &[("threadfn", fnptr), ("", ptr("void *"))], true);
        assert_eq!(kthread.declaration(), "struct task_struct *k(int (*threadfn)(void *), void *, ...)");
        let i128 = proto("w", CType::void(), &[("v", int("__int128", 16, true))], false);
        assert_eq!(i128.refusal(), Some(Refusal::Aggregate));
    }

    #[test]
    fn the_module_agrees_with_every_spec_hpctl_sends() {
        for letters in ["", "x", "sxx", "xxxxxx", "sssss"] {
            let spec = Spec::parse(letters).unwrap();
            assert_eq!(spec.refusal(), None, "{letters}");
        }
        for (letters, want) in
            [("Sx", Refusal::Aggregate), ("s.", Refusal::Variadic), ("xxxxxxx", Refusal::TooManyArgs(7))]
        {
            assert_eq!(Spec::parse(letters).unwrap().refusal(), Some(want));
        }
    }

    #[test]
    fn values_by_type() {
        let f = ValueFormat { gfp: &[(0xcc0, "GFP_KERNEL".to_string()), (0x100, "__GFP_ZERO".to_string())] };
        assert_eq!(f.scalar(&int("int", 4, true), 0xffff_ffea), "-22");
        assert_eq!(f.scalar(&int("int", 4, true), 0x1234_5678_ffff_ffff), "-1");
        assert_eq!(f.scalar(&int("unsigned int", 4, false), 0xdead_0000_0000_000a), "10");
        assert_eq!(f.scalar(&int("long int", 8, true), u64::MAX), "-1");
        assert_eq!(f.scalar(&int("short unsigned int", 2, false), 0x1_ffff), "65535");
        assert_eq!(f.scalar(&typedef("size_t", int("long unsigned int", 8, false)), 4096), "4096");
        assert_eq!(f.scalar(&typedef("gfp_t", int("unsigned int", 4, false)), 0xddc0), "GFP_KERNEL|__GFP_ZERO|0xd000");
        let bool_ = typedef("bool", CType::new("_Bool", Shape::Bool));
        assert_eq!(
            (f.scalar(&bool_, 1), f.scalar(&bool_, 0xff00), f.scalar(&bool_, 2)),
            ("true".into(), "false".into(), "2".into())
        );
        assert_eq!(f.scalar(&ptr("struct inode *"), 0xffff_8880_0000_1000), "0xffff888000001000");
        let values = vec![("READ".to_string(), 0), ("WRITE".to_string(), 1), ("NEG".to_string(), u64::MAX)];
        let e = CType::new("enum dir", Shape::Enum { bytes: 4, signed: true, values });
        assert_eq!(f.scalar(&e, 1), "WRITE");
        assert_eq!(f.scalar(&e, 0xffff_ffff), "NEG");
        assert_eq!(f.scalar(&e, 7), "7");
        assert_eq!(f.scalar(&e, 0xffff_fffe), "-2");
        let u = CType::new("enum u", Shape::Enum { bytes: 4, signed: false, values: vec![] });
        assert_eq!(f.scalar(&u, 0xffff_fffe), "4294967294");
        assert_eq!(f.scalar(&CType::new("double", Shape::Float { bytes: 8 }), 0x10), "0x10");
    }

    #[test]
    fn results() {
        let f = ValueFormat { gfp: &[] };
        assert_eq!(f.result(&CType::void(), 5, 6), None);
        assert_eq!(f.result(&int("int", 4, true), 0xffff_fff4, 9).as_deref(), Some("-12"));
        assert_eq!(f.result(&timespec64(), 3, 500).as_deref(), Some("{tv_sec=3, tv_nsec=500}"));
        // A small struct with a bitfield and a nested one, in rax only.
        let field = |name: &str, bit_offset, bits, ty| Field { name: name.to_string(), bit_offset, bits, ty };
        let inner = CType::new(
            "struct in",
            Shape::Aggregate {
                union: false,
                bytes: 2,
                fields: vec![
                    field("a", 0, None, int("unsigned char", 1, false)),
                    field("b", 8, None, int("signed char", 1, true)),
                ],
                natural: true,
            },
        );
        let outer = CType::new(
            "struct out",
            Shape::Aggregate {
                union: false,
                bytes: 8,
                fields: vec![
                    field("flag", 0, Some(1), int("unsigned int", 4, false)),
                    field("mode", 1, Some(3), int("unsigned int", 4, false)),
                    field("", 32, None, inner),
                ],
                natural: true,
            },
        );
        assert_eq!(f.result(&outer, 0x0000_ff07_0000_000b, 0).as_deref(), Some("{flag=1, mode=5, {a=7, b=-1}}"));
    }

    #[test]
    fn strings_are_quoted() {
        assert_eq!(quote(b"cr_target", false), "\"cr_target\"");
        assert_eq!(quote(b"a\"b\\c\n\x01", true), "\"a\\\"b\\\\c\\n\\x01\"...");
        assert_eq!(unreadable(0), "NULL");
        assert_eq!(unreadable(0x10), "0x10 (unreadable)");
    }

    #[test]
    fn json_kinds() {
        assert_eq!(typedef("gfp_t", int("unsigned int", 4, false)).kind(), "gfp");
        assert_eq!(typedef("size_t", int("long unsigned int", 8, false)).kind(), "size");
        assert_eq!(typedef("ssize_t", int("long int", 8, true)).kind(), "int");
        assert_eq!(string().kind(), "string");
        assert_eq!(ptr("void *").kind(), "ptr");
        assert_eq!(timespec64().kind(), "struct");
    }
}
