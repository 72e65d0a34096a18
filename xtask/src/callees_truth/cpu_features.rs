//! The CPU features an alternative depends on, as the kernel's headers
//! number them and as /proc/cpuinfo shows them to the guest check.

use std::collections::HashMap;
use std::fmt;

use anyhow::{bail, Result};

use crate::kernel::Kernel;

/// A CPU feature as the guest can test it in /proc/cpuinfo.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Feature {
    /// Shown on the `flags` line under this name.
    Flag(String),
    /// Shown on the `bugs` line under this name.
    Bug(String),
    /// Not shown in /proc/cpuinfo: the macro's name, or the bit number.
    Hidden(String),
}

/// One feature present (or absent).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lit {
    pub feature: Feature,
    pub present: bool,
}

/// A conjunction of literals; `None` is false, an empty one true.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cond(pub Option<Vec<Lit>>);

impl Cond {
    pub fn and(mut self, lit: Lit) -> Cond {
        if let Some(lits) = &mut self.0 {
            if lits.iter().any(|l| l.feature == lit.feature && l.present != lit.present) {
                return Cond(None);
            }
            if !lits.contains(&lit) {
                lits.push(lit);
                lits.sort();
            }
        }
        self
    }
}

/// `1` (always), `0` (never), or `popcnt&!erms&bug.srso&?X86_FEATURE_FSRS`.
impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("0"),
            Some(lits) if lits.is_empty() => f.write_str("1"),
            Some(lits) => {
                for (i, l) in lits.iter().enumerate() {
                    let sep = if i > 0 { "&" } else { "" };
                    let not = if l.present { "" } else { "!" };
                    match &l.feature {
                        Feature::Flag(n) => write!(f, "{sep}{not}{n}")?,
                        Feature::Bug(n) => write!(f, "{sep}{not}bug.{n}")?,
                        Feature::Hidden(n) => write!(f, "{sep}{not}?{n}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// The kernel's CPU feature bits (arch/x86/include/asm/cpufeatures.h of the
/// release's headers) and how /proc/cpuinfo shows them.
pub struct Features {
    by_bit: HashMap<u32, (String, Option<String>)>,
    ncapints: u32,
}

/// X86_FEATURE_ALWAYS: set on every CPU (alternatives that must always apply).
const ALWAYS: &str = "ALWAYS";
/// X86_FEATURE_XENPV: only a Xen PV guest; the lab's guests run under QEMU.
const XENPV: &str = "XENPV";

impl Features {
    pub fn parse(header: &str) -> Features {
        // Before 6.11 a flag is shown unless its comment starts with "";
        // from then on only when its comment starts with "name".
        let hidden_by_default = !header.contains("/* \"\"");
        let ncapints = header
            .lines()
            .find_map(|l| l.strip_prefix("#define NCAPINTS"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(21);
        let mut by_bit = HashMap::new();
        for line in header.lines() {
            let Some(rest) = line.strip_prefix("#define X86_") else { continue };
            let (is_bug, rest) = match (rest.strip_prefix("FEATURE_"), rest.strip_prefix("BUG_")) {
                (Some(r), _) => (false, r),
                (_, Some(r)) => (true, r),
                _ => continue,
            };
            let Some((name, value)) = rest.split_once(|c: char| c.is_whitespace()) else { continue };
            let (value, comment) = match value.split_once("/*") {
                Some((v, c)) => (v.trim(), c.trim_start()),
                None => (value.trim(), ""),
            };
            let Some(bit) = bit_of(value, is_bug, ncapints) else { continue };
            let shown = if let Some(q) = comment.strip_prefix('"') {
                let quoted = q.split('"').next().unwrap_or("");
                (!quoted.is_empty()).then(|| quoted.to_string())
            } else if hidden_by_default {
                None
            } else {
                Some(name.to_lowercase())
            };
            let prefix = if is_bug { "BUG_" } else { "" };
            by_bit.entry(bit).or_insert((format!("{prefix}{name}"), shown));
        }
        Features { by_bit, ncapints }
    }

    /// From the kernel's build directory, the source tree an `O=` build
    /// links as `source` (the debug kernel), or the unpacked headers' common part.
    pub fn read(kernel: &Kernel) -> Result<Features> {
        const HEADER: &str = "arch/x86/include/asm/cpufeatures.h";
        let mut candidates = vec![kernel.kdir.join(HEADER), kernel.kdir.join("source").join(HEADER)];
        if let Some(root) = &kernel.root {
            if let Ok(dirs) = std::fs::read_dir(root.join("usr/src")) {
                candidates.extend(dirs.flatten().map(|d| d.path().join(HEADER)));
            }
        }
        match candidates.iter().find(|p| p.exists()) {
            Some(header) => Ok(Features::parse(&std::fs::read_to_string(header)?)),
            None => bail!("no {HEADER} for {}", kernel.release),
        }
    }

    /// The literal "feature `bit` present == `present`", or what the host
    /// knows of it: Some(true/false) when it is decided here.
    pub fn lit(&self, bit: u32, present: bool) -> std::result::Result<Lit, bool> {
        let Some((name, shown)) = self.by_bit.get(&bit) else {
            return Ok(Lit { feature: Feature::Hidden(format!("bit{bit}")), present });
        };
        if name == ALWAYS {
            return Err(present);
        }
        if name == XENPV {
            return Err(!present);
        }
        let feature = match shown {
            Some(s) if bit >= self.ncapints * 32 => Feature::Bug(s.clone()),
            Some(s) => Feature::Flag(s.clone()),
            None => Feature::Hidden(format!("X86_FEATURE_{name}")),
        };
        Ok(Lit { feature, present })
    }
}

/// `( 3*32+21)` -> 117; `X86_BUG(14)` or `X86_BUG(1*32 + 0)` -> NCAPINTS*32 + n.
fn bit_of(value: &str, is_bug: bool, ncapints: u32) -> Option<u32> {
    let inner = if is_bug { value.strip_prefix("X86_BUG(")?.strip_suffix(')')? } else { value };
    let inner = inner.trim().trim_start_matches('(').trim_end_matches(')');
    let bit = match inner.split_once('+') {
        Some((word, bit)) => {
            let word: u32 = word.split('*').next()?.trim().parse().ok()?;
            word * 32 + bit.trim().parse::<u32>().ok()?
        }
        None => inner.trim().parse().ok()?,
    };
    Some(if is_bug { ncapints * 32 + bit } else { bit })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD_HEADER: &str = "#define NCAPINTS\t\t\t21\n\
        #define X86_FEATURE_REP_GOOD\t\t( 3*32+16) /* REP microcode works well */\n\
        #define X86_FEATURE_ALWAYS\t\t( 3*32+21) /* \"\" Always-present feature */\n\
        #define X86_FEATURE_XENPV\t\t( 8*32+16) /* \"\" Xen paravirtual guest */\n\
        #define X86_FEATURE_RETPOLINE\t\t(11*32+12) /* \"\" Generic Retpoline mitigation */\n\
        #define X86_FEATURE_SSE4_2\t\t( 4*32+20) /* \"sse4_2\" SSE-4.2 */\n\
        #define X86_BUG_SPECTRE_V2\t\tX86_BUG(14) /* CPU is affected by Spectre variant 2 */\n";
    const NEW_HEADER: &str = "#define NCAPINTS\t\t\t22\n\
        #define X86_FEATURE_ERMS\t\t( 9*32+ 9) /* \"erms\" Enhanced REP MOVSB/STOSB */\n\
        #define X86_FEATURE_FSRS\t\t(12*32+11) /* Fast short REP STOSB */\n\
        #define X86_BUG_SRSO\t\t\tX86_BUG(1*32 + 0) /* \"srso\" AMD SRSO bug */\n";

    #[test]
    fn feature_names_as_cpuinfo_shows_them() {
        let old = Features::parse(OLD_HEADER);
        assert_eq!(old.lit(3 * 32 + 16, true), Ok(Lit { feature: Feature::Flag("rep_good".into()), present: true }));
        assert_eq!(old.lit(4 * 32 + 20, false), Ok(Lit { feature: Feature::Flag("sse4_2".into()), present: false }));
        assert_eq!(old.lit(11 * 32 + 12, true).unwrap().feature, Feature::Hidden("X86_FEATURE_RETPOLINE".into()));
        assert_eq!(old.lit(21 * 32 + 14, true).unwrap().feature, Feature::Bug("spectre_v2".into()));
        // Decided here: ALWAYS is set, XENPV is not (no Xen PV guest).
        assert_eq!(old.lit(3 * 32 + 21, true), Err(true));
        assert_eq!(old.lit(8 * 32 + 16, true), Err(false));
        assert_eq!(old.lit(8 * 32 + 16, false), Err(true));
        let new = Features::parse(NEW_HEADER);
        assert_eq!(new.lit(9 * 32 + 9, true).unwrap().feature, Feature::Flag("erms".into()));
        assert_eq!(new.lit(12 * 32 + 11, true).unwrap().feature, Feature::Hidden("X86_FEATURE_FSRS".into()));
        assert_eq!(new.lit(23 * 32, true).unwrap().feature, Feature::Bug("srso".into()));
    }

    #[test]
    fn conditions() {
        let f = |n: &str| Feature::Flag(n.into());
        let t = Cond(Some(Vec::new()));
        assert_eq!(t.to_string(), "1");
        let c = t.and(Lit { feature: f("rep_good"), present: true }).and(Lit { feature: f("erms"), present: false });
        assert_eq!(c.to_string(), "!erms&rep_good");
        assert_eq!(c.clone().and(Lit { feature: f("erms"), present: true }).to_string(), "0");
        let h = c.and(Lit { feature: Feature::Hidden("X86_FEATURE_FSRS".into()), present: false });
        assert_eq!(h.to_string(), "!erms&rep_good&!?X86_FEATURE_FSRS");
    }
}
