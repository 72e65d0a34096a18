//! Callees outside the memory catalogue, as hpctl sees them: the module's
//! `callee` lines joined with what BTF says (`hpctl callees`), and the
//! `fn=` list an attach or plan sends for `--fn` (`name` for a catalogue
//! function, `name:SPEC` for any other, `name` alone with `--raw` when BTF
//! has no prototype).

use std::fmt;

use hp_core::catalogue::index_of;

use crate::prototype::{BtfRefusal, Prototype};
use crate::records::Callee;

/// What BTF gave for one name.
pub enum Lookup<'a> {
    Found(&'a Prototype),
    /// BTF was read and has no such function.
    Missing,
    /// No BTF could be read (the reason).
    NoBtf(&'a str),
    /// Not a name BTF can have (`sym+0xoff`, `unknown`): not asked.
    NotAsked,
}

/// Why an `--fn` name cannot be sent: one line, naming the function.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub name: String,
    /// `variadic`, `struct_by_value`, `too_many_args`, `no_prototype`.
    pub word: &'static str,
    /// What the word means, when it does not say it all.
    pub detail: Option<String>,
    /// The C declaration, when BTF has one.
    pub declaration: Option<String>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cannot be intercepted: {}", self.name, self.word)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        if let Some(declaration) = &self.declaration {
            write!(f, ": {declaration}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refused {}

/// Whether `name` is a memory-catalogue function: sent bare, it keeps its
/// hand-written semantics.
pub fn is_catalogue(name: &str) -> bool {
    index_of(name).is_some()
}

/// The `fn=` item for one `--fn` name that is not in the catalogue.
pub fn fn_item(name: &str, raw: bool, lookup: Lookup<'_>) -> Result<String, Refused> {
    let no_prototype = |detail: String| Refused {
        name: name.to_string(),
        word: BtfRefusal::NoPrototype.word(),
        detail: Some(format!("{detail}; --raw attaches it with its 6 registers recorded raw")),
        declaration: None,
    };
    match lookup {
        Lookup::Found(p) => match p.spec() {
            Ok(spec) => Ok(format!("{name}:{spec}")),
            Err(r) => {
                let why = BtfRefusal::Spec(r);
                let detail = why.explain();
                Err(Refused {
                    name: name.to_string(),
                    word: why.word(),
                    detail: (detail != why.word()).then_some(detail),
                    declaration: Some(p.declaration()),
                })
            }
        },
        Lookup::Missing if raw => Ok(name.to_string()),
        Lookup::Missing => Err(no_prototype(BtfRefusal::NoPrototype.explain())),
        Lookup::NoBtf(_) if raw => Ok(name.to_string()),
        Lookup::NoBtf(why) => Err(no_prototype(format!("no BTF to type it: {why}"))),
        Lookup::NotAsked => Err(no_prototype("not a function's name".to_string())),
    }
}

/// One callee with both verdicts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judged {
    pub callee: Callee,
    pub prototype: Option<Prototype>,
    /// What BTF refuses, whatever the module said.
    pub btf_refusal: Option<BtfRefusal>,
}

impl Judged {
    /// BTF is asked only about real symbol names (not `sym+0xoff`, `unknown`).
    pub fn new(callee: Callee, lookup: Lookup<'_>) -> Judged {
        let (prototype, btf_refusal) = match lookup {
            Lookup::Found(p) => (Some(p.clone()), p.refusal().map(BtfRefusal::Spec)),
            Lookup::Missing | Lookup::NoBtf(_) => (None, Some(BtfRefusal::NoPrototype)),
            Lookup::NotAsked => (None, None),
        };
        Judged { callee, prototype, btf_refusal }
    }

    pub fn kernel_reason(&self) -> Option<&str> {
        self.callee.reason.as_deref()
    }

    /// `interceptable` when the module and BTF both accept it.
    pub fn state(&self) -> &'static str {
        if self.kernel_reason().is_none() && self.btf_refusal.is_none() {
            "interceptable"
        } else {
            "refused"
        }
    }

    /// The module's reason first, else BTF's.
    pub fn reason(&self) -> Option<&str> {
        self.kernel_reason().or(self.btf_refusal.map(BtfRefusal::word))
    }

    /// `kernel`, `btf`, or none.
    pub fn refused_by(&self) -> Option<&'static str> {
        if self.kernel_reason().is_some() {
            Some("kernel")
        } else if self.btf_refusal.is_some() {
            Some("btf")
        } else {
            None
        }
    }

    /// The SPEC an attach sends, when it can be sent.
    pub fn spec(&self) -> Option<String> {
        if self.state() != "interceptable" {
            return None;
        }
        self.prototype.as_ref().and_then(|p| p.spec().ok()).map(|s| s.to_string())
    }
}

/// A name BTF can be asked about: a symbol's start, not `sym+0xoff`.
pub fn is_lookup_name(name: &str) -> bool {
    hp_core::proto::is_symbol_name(name) && name != "unknown"
}

/// `57 callees: 30 interceptable, 27 refused (12 no_ftrace, 5 noreturn, ...)`.
pub fn summary(list: &[Judged]) -> String {
    let interceptable = list.iter().filter(|j| j.state() == "interceptable").count();
    let mut reasons: Vec<(&str, usize)> = Vec::new();
    for r in list.iter().filter_map(Judged::reason) {
        match reasons.iter_mut().find(|(w, _)| *w == r) {
            Some((_, n)) => *n += 1,
            None => reasons.push((r, 1)),
        }
    }
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let total = list.len();
    let mut s = format!("{total} callee{}: {interceptable} interceptable", if total == 1 { "" } else { "s" });
    if !reasons.is_empty() {
        let items: Vec<String> = reasons.iter().map(|(w, n)| format!("{n} {w}")).collect();
        s.push_str(&format!(", {} refused ({})", total - interceptable, items.join(", ")));
    }
    if reasons.iter().any(|(w, _)| *w == "no_prototype") {
        s.push_str("; no_prototype ones attach with --raw");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prototype::tests::{int, proto, ptr, string, timespec64};
    use crate::prototype::CType;

    fn callee(name: &str, reason: Option<&str>) -> Callee {
        Callee {
            name: name.to_string(),
            sites: 2,
            tails: 0,
            static_call_sites: 0,
            state: if reason.is_some() { "refused" } else { "interceptable" }.to_string(),
            reason: reason.map(str::to_string),
        }
    }

    #[test]
    fn fn_items() {
        let kstrtoint = proto(
            "kstrtoint",
            int("int", 4, true),
            &[("s", string()), ("base", int("unsigned int", 4, false)), ("res", ptr("int *"))],
            false,
        );
        assert_eq!(fn_item("kstrtoint", false, Lookup::Found(&kstrtoint)).unwrap(), "kstrtoint:sxx");
        let schedule = proto("schedule", CType::void(), &[], false);
        assert_eq!(fn_item("schedule", false, Lookup::Found(&schedule)).unwrap(), "schedule:");
        let printk = proto("_printk", int("int", 4, true), &[("fmt", string())], true);
        let e = fn_item("_printk", true, Lookup::Found(&printk)).unwrap_err();
        assert_eq!(e.to_string(), "_printk cannot be intercepted: variadic: int _printk(const char *fmt, ...)");
        assert_eq!(fn_item("x", true, Lookup::Missing).unwrap(), "x");
        let e = fn_item("x", false, Lookup::Missing).unwrap_err();
        assert_eq!(e.word, "no_prototype");
        assert!(e.to_string().contains("--raw"), "{e}");
        assert_eq!(fn_item("x", true, Lookup::NoBtf("gone")).unwrap(), "x");
        assert!(fn_item("x", false, Lookup::NoBtf("gone"))
            .unwrap_err()
            .to_string()
            .contains("no BTF to type it: gone"));
        assert!(is_catalogue("kfree") && !is_catalogue("kstrtoint"));
    }

    #[test]
    fn verdicts_join() {
        let ns = proto("ns_to_timespec64", timespec64(), &[("nsec", int("s64", 8, true))], false);
        let printk = proto("_printk", int("int", 4, true), &[("fmt", string())], true);
        let list = vec![
            Judged::new(callee("ns_to_timespec64", None), Lookup::Found(&ns)),
            Judged::new(callee("_printk", None), Lookup::Found(&printk)),
            Judged::new(callee("kstrtoint", Some("no_ftrace")), Lookup::Missing),
            Judged::new(callee("__stack_chk_fail", Some("noreturn")), Lookup::Missing),
            Judged::new(callee("__x86_return_thunk", Some("no_ftrace")), Lookup::Missing),
            Judged::new(callee("mystery", None), Lookup::Missing),
            Judged::new(callee("ext4_foo+0x10", Some("not_function_start")), Lookup::NotAsked),
        ];
        let j = &list[0];
        assert_eq!(
            (j.state(), j.reason(), j.refused_by(), j.spec().as_deref()),
            ("interceptable", None, None, Some("x"))
        );
        let j = &list[1];
        assert_eq!((j.state(), j.reason(), j.refused_by(), j.spec()), ("refused", Some("variadic"), Some("btf"), None));
        let j = &list[2];
        assert_eq!((j.reason(), j.refused_by()), (Some("no_ftrace"), Some("kernel")));
        let j = &list[6];
        assert_eq!((j.reason(), j.btf_refusal), (Some("not_function_start"), None));
        assert_eq!(
            summary(&list),
            "7 callees: 1 interceptable, 6 refused (2 no_ftrace, 1 no_prototype, 1 noreturn, 1 not_function_start, \
             1 variadic); no_prototype ones attach with --raw"
        );
        assert_eq!(summary(&list[..1]), "1 callee: 1 interceptable");
        assert!(is_lookup_name("kfree") && !is_lookup_name("ext4_foo+0x10") && !is_lookup_name("unknown"));
    }
}
