//! What hp_patcher knows of a function outside the memory catalogue: the
//! `fn=name:SPEC` form, the rules that refuse a callee, and how string
//! arguments travel in an event.
//!
//! User space (hpctl, from BTF) says what it knows in SPEC; the module needs
//! no more than that to record a call and to refuse one. The module must stay
//! safe when SPEC is missing or wrong, which is why the trampoline also
//! forwards `STACK_WORDS` words of stack arguments and strings are read with a
//! nofault copy: a wrong SPEC gives a wrong record, never a crash.

use core::fmt;

/// Arguments the trampoline passes in registers (System V: rdi, rsi, rdx,
/// rcx, r8, r9).
pub const REGISTER_ARGS: usize = 6;

/// Words above the return address the trampoline copies for the real call:
/// stack-passed arguments of a callee whose SPEC was missing or wrong.
pub const STACK_WORDS: usize = 8;

/// Longest callee name (KSYM_NAME_LEN is 512, but no exported function
/// comes near this; a longer one is refused).
pub const MAX_NAME: usize = 63;

/// A kernel symbol name as `fn=` accepts it: what C identifiers and the
/// compiler's `.cold`/`.isra` suffixes are made of.
pub fn is_symbol_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// Most bytes of one string argument an event carries.
pub const MAX_STRING: usize = 32;

/// One argument as SPEC describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgSpec {
    /// `x`: anything that fits a register (integer, pointer, enum, bool).
    Value,
    /// `s`: a `const char *` whose bytes the event carries.
    Str,
    /// `S`: a struct or union passed by value.
    Aggregate,
}

impl ArgSpec {
    fn letter(self) -> char {
        match self {
            ArgSpec::Value => 'x',
            ArgSpec::Str => 's',
            ArgSpec::Aggregate => 'S',
        }
    }
}

/// A function's shape: `fn=name:SPEC`, SPEC being one letter per argument
/// and a final `.` for variadic. No SPEC (`fn=name`) is `Raw`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spec {
    /// No prototype known: six registers are recorded as they are.
    Raw,
    Typed(Proto),
}

/// Up to 8 arguments are kept so that "too many" can be said precisely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proto {
    args: [ArgSpec; Proto::MAX_SPEC],
    len: u8,
    variadic: bool,
}

/// Why a callee is not intercepted. The module decides the first five from
/// the code; SPEC gives the last three. `word()` is the reply's `reason=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The destination is not the start of a symbol.
    NotFunctionStart,
    /// A `__SCT__` static-call trampoline: the kernel rewrites its callers.
    StaticCall,
    /// No ftrace entry: assembly or noinstr code, with no promise of the C
    /// calling convention (`__get_user_*`, thunks, `__fentry__`...).
    NoFtrace,
    /// A call to it is followed by `ud2`, `int3` or the function's end: the
    /// compiler knows it does not return.
    NoReturn,
    /// Every site of it is a static-call site, rewritten by the kernel.
    OnlyStaticCallSites,
    TooManyArgs(u8),
    Aggregate,
    Variadic,
}

impl Refusal {
    pub fn word(self) -> &'static str {
        match self {
            Refusal::NotFunctionStart => "not_function_start",
            Refusal::StaticCall => "static_call",
            Refusal::NoFtrace => "no_ftrace",
            Refusal::NoReturn => "noreturn",
            Refusal::OnlyStaticCallSites => "static_call_sites",
            Refusal::TooManyArgs(_) => "too_many_args",
            Refusal::Aggregate => "struct_by_value",
            Refusal::Variadic => "variadic",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotFunctionStart => write!(f, "the destination is not the start of a function"),
            Refusal::StaticCall => write!(f, "a static-call trampoline: the kernel rewrites the calls to it"),
            Refusal::NoFtrace => {
                write!(f, "ftrace cannot trace it (assembly or noinstr): no promise of the C calling convention")
            }
            Refusal::NoReturn => write!(f, "it does not return (a call to it ends in ud2, int3 or the function's end)"),
            Refusal::OnlyStaticCallSites => write!(f, "every call to it is a static-call site the kernel rewrites"),
            Refusal::TooManyArgs(n) => write!(f, "{n} arguments: only {REGISTER_ARGS} travel in registers"),
            Refusal::Aggregate => write!(f, "a struct or union passed by value"),
            Refusal::Variadic => write!(f, "variadic"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecError {
    BadLetter(u8),
    TooLong,
    /// A `+` suffix that is not `alloc`, `free` or `free0` to `free5`.
    BadPairRole,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::BadLetter(b) => {
                write!(f, "'{}' is not an argument letter (x value, s string, S struct, final . variadic)", *b as char)
            }
            SpecError::TooLong => write!(f, "more than {} arguments described", Proto::MAX_SPEC),
            SpecError::BadPairRole => {
                write!(f, "a role is +alloc (the result is a new object) or +free, +free0 to +free5 (the argument freed)")
            }
        }
    }
}

impl Proto {
    pub const MAX_SPEC: usize = 8;

    pub fn new(args: &[ArgSpec], variadic: bool) -> Result<Proto, SpecError> {
        if args.len() > Self::MAX_SPEC {
            return Err(SpecError::TooLong);
        }
        let mut p = Proto { args: [ArgSpec::Value; Self::MAX_SPEC], len: args.len() as u8, variadic };
        p.args[..args.len()].copy_from_slice(args);
        Ok(p)
    }

    pub fn args(&self) -> &[ArgSpec] {
        &self.args[..self.len as usize]
    }

    pub fn is_variadic(&self) -> bool {
        self.variadic
    }

    /// Bit i set: register argument i is a string.
    pub fn string_mask(&self) -> u8 {
        self.args()
            .iter()
            .take(REGISTER_ARGS)
            .enumerate()
            .filter(|(_, a)| **a == ArgSpec::Str)
            .fold(0, |m, (i, _)| m | 1 << i)
    }

    /// The rule SPEC alone decides. Variadic first: its fixed part may look fine.
    pub fn refusal(&self) -> Option<Refusal> {
        if self.variadic {
            Some(Refusal::Variadic)
        } else if self.args().contains(&ArgSpec::Aggregate) {
            Some(Refusal::Aggregate)
        } else if self.args().len() > REGISTER_ARGS {
            Some(Refusal::TooManyArgs(self.len))
        } else {
            None
        }
    }
}

impl Spec {
    /// Parses SPEC, the part after `name:`. Longer lists than MAX_SPEC are
    /// still refused precisely: they cannot be intercepted anyway.
    pub fn parse(spec: &str) -> Result<Spec, SpecError> {
        let (letters, variadic) = match spec.strip_suffix('.') {
            Some(rest) => (rest, true),
            None => (spec, false),
        };
        let mut args = [ArgSpec::Value; Proto::MAX_SPEC];
        let mut n = 0;
        for b in letters.bytes() {
            let a = match b {
                b'x' => ArgSpec::Value,
                b's' => ArgSpec::Str,
                b'S' => ArgSpec::Aggregate,
                _ => return Err(SpecError::BadLetter(b)),
            };
            *args.get_mut(n).ok_or(SpecError::TooLong)? = a;
            n += 1;
        }
        Proto::new(&args[..n], variadic).map(Spec::Typed)
    }

    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Spec::Raw => None,
            Spec::Typed(p) => p.refusal(),
        }
    }

    /// Register arguments worth recording.
    pub fn arity(&self) -> usize {
        match self {
            Spec::Raw => REGISTER_ARGS,
            Spec::Typed(p) => p.args().len().min(REGISTER_ARGS),
        }
    }

    pub fn string_mask(&self) -> u8 {
        match self {
            Spec::Raw => 0,
            Spec::Typed(p) => p.string_mask(),
        }
    }
}

/// What a user's allocator/free pair (`hpctl attach --pair`) makes of a
/// callee for the leak checker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairRole {
    /// Its result is a new object (NULL and error pointers are none).
    Allocates,
    /// It frees the object in this register argument.
    Frees(u8),
}

impl PairRole {
    fn parse(word: &str) -> Result<PairRole, SpecError> {
        match word {
            "alloc" => Ok(PairRole::Allocates),
            "free" => Ok(PairRole::Frees(0)),
            _ => match word.strip_prefix("free").map(str::as_bytes) {
                Some(&[d @ b'0'..=b'5']) => Ok(PairRole::Frees(d - b'0')),
                _ => Err(SpecError::BadPairRole),
            },
        }
    }
}

impl fmt::Display for PairRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PairRole::Allocates => write!(f, "alloc"),
            PairRole::Frees(k) => write!(f, "free{k}"),
        }
    }
}

/// `name`, `name:SPEC`, and either with `+ROLE` (a pair's role), as in `fn=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wanted<'a> {
    pub name: &'a str,
    /// `None`: no `:SPEC` was given.
    pub spec: Option<Spec>,
    pub role: Option<PairRole>,
}

impl<'a> Wanted<'a> {
    pub fn parse(item: &'a str) -> Result<Wanted<'a>, SpecError> {
        let (item, role) = match item.split_once('+') {
            Some((item, role)) => (item, Some(PairRole::parse(role)?)),
            None => (item, None),
        };
        match item.split_once(':') {
            None => Ok(Wanted { name: item, spec: None, role }),
            Some((name, spec)) => Ok(Wanted { name, spec: Some(Spec::parse(spec)?), role }),
        }
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Spec::Raw => Ok(()),
            Spec::Typed(p) => {
                for a in p.args() {
                    write!(f, "{}", a.letter())?;
                }
                if p.variadic {
                    write!(f, ".")?;
                }
                Ok(())
            }
        }
    }
}

/// The event's `strings` field: for each string argument in order, one
/// header byte then its bytes. Header 0..=32: that many bytes, the whole
/// string. `TRUNCATED`: the first 32 bytes of a longer string. `UNREADABLE`:
/// NULL or an address that could not be read (no bytes follow).
pub mod strings {
    use super::MAX_STRING;

    pub const TRUNCATED: u8 = 0x80 | MAX_STRING as u8;
    pub const UNREADABLE: u8 = 0xff;
    /// Room for six strings.
    pub const CAPACITY: usize = super::REGISTER_ARGS * (1 + MAX_STRING);

    /// One string, as read: `bytes` is what a nofault copy of up to
    /// MAX_STRING + 1 bytes gave (None: unreadable).
    pub fn encode(out: &mut [u8], used: &mut usize, bytes: Option<&[u8]>) {
        let Some(room) = out.get_mut(*used..) else { return };
        if room.is_empty() {
            return;
        }
        match bytes {
            None => {
                room[0] = UNREADABLE;
                *used += 1;
            }
            Some(b) => {
                let whole = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                let len = whole.min(MAX_STRING).min(room.len() - 1);
                room[0] = if len < whole { TRUNCATED } else { len as u8 };
                room[1..=len].copy_from_slice(&b[..len]);
                *used += 1 + len;
            }
        }
    }

    /// What `encode` wrote: per string, `None` (unreadable) or its bytes and
    /// whether it was cut.
    pub fn decode(mut data: &[u8]) -> impl Iterator<Item = Option<(&[u8], bool)>> {
        core::iter::from_fn(move || {
            let (&header, rest) = data.split_first()?;
            if header == UNREADABLE {
                data = rest;
                return Some(None);
            }
            let truncated = header & 0x80 != 0;
            let len = ((header & 0x7f) as usize).min(rest.len());
            let (s, rest) = rest.split_at(len);
            data = rest;
            Some(Some((s, truncated)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;
    use std::vec::Vec;

    #[test]
    fn spec_round_trips() {
        for s in ["", "x", "sxx", "xsxSx", "s.", "xxxxxxxx"] {
            assert_eq!(Spec::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(Spec::parse("xxxxxxxxx"), Err(SpecError::TooLong));
        assert_eq!(Spec::parse("xq"), Err(SpecError::BadLetter(b'q')));
    }

    #[test]
    fn refusals_from_spec() {
        assert_eq!(Spec::parse("s.").unwrap().refusal(), Some(Refusal::Variadic));
        assert_eq!(Spec::parse("xS").unwrap().refusal(), Some(Refusal::Aggregate));
        assert_eq!(Spec::parse("xxxxxxx").unwrap().refusal(), Some(Refusal::TooManyArgs(7)));
        assert_eq!(Spec::parse("xxxxxx").unwrap().refusal(), None);
        assert_eq!(Spec::Raw.refusal(), None);
    }

    #[test]
    fn string_mask_marks_string_arguments() {
        assert_eq!(Spec::parse("sxs").unwrap().string_mask(), 0b101);
        assert_eq!(Spec::parse("").unwrap().arity(), 0);
        assert_eq!(Spec::Raw.arity(), 6);
    }

    #[test]
    fn wanted_splits_name_and_spec() {
        assert_eq!(Wanted::parse("kfree").unwrap(), Wanted { name: "kfree", spec: None, role: None });
        let w = Wanted::parse("kstrtoint:sxx").unwrap();
        assert_eq!((w.name, w.spec.unwrap().to_string()), ("kstrtoint", "sxx".to_string()));
        let w = Wanted::parse("my_get:x+alloc").unwrap();
        assert_eq!((w.name, w.role), ("my_get", Some(PairRole::Allocates)));
        assert_eq!(Wanted::parse("my_put:xx+free1").unwrap().role, Some(PairRole::Frees(1)));
        assert_eq!(Wanted::parse("my_put+free").unwrap().role, Some(PairRole::Frees(0)));
        for bad in ["my_put+free6", "my_put+frees", "my_put+", "my_get:x+alloc+alloc"] {
            assert_eq!(Wanted::parse(bad), Err(SpecError::BadPairRole), "{bad}");
        }
    }

    #[test]
    fn strings_encode_and_decode() {
        let mut buf = [0u8; strings::CAPACITY];
        let mut used = 0;
        strings::encode(&mut buf, &mut used, Some(b"hello\0junk"));
        strings::encode(&mut buf, &mut used, None);
        let long = [b'a'; 40];
        strings::encode(&mut buf, &mut used, Some(&long));
        strings::encode(&mut buf, &mut used, Some(b""));
        let got: Vec<_> = strings::decode(&buf[..used]).collect();
        assert_eq!(got, [Some((&b"hello"[..], false)), None, Some((&long[..32], true)), Some((&b""[..], false))]);
    }

    #[test]
    fn strings_never_overflow() {
        let mut buf = [0u8; 10];
        let mut used = 0;
        for _ in 0..5 {
            strings::encode(&mut buf, &mut used, Some(b"abcdefghijk\0"));
        }
        assert!(used <= buf.len());
        let got: Vec<_> = strings::decode(&buf[..used]).collect();
        assert_eq!(got[0], Some((&b"abcdefghi"[..], true)));
    }
}
