//! Call sites as `symbol+0xoff [module]`, from /proc/kallsyms (module text
//! symbols only: every site is in a module).

use std::collections::HashMap;

pub struct Kallsyms {
    /// (address, symbol, module), sorted by address.
    syms: Vec<(u64, String, String)>,
    /// `lookup_in_cached`'s answers by address (module, text): a trace
    /// asks for the same few sites again and again.
    cache: HashMap<u64, (String, Option<String>)>,
}

impl Kallsyms {
    pub fn load() -> Kallsyms {
        Kallsyms::parse(&std::fs::read_to_string("/proc/kallsyms").unwrap_or_default())
    }

    /// Keeps `t`/`T` symbols of modules; a table of zero addresses (no
    /// CAP_SYSLOG, or kptr_restrict) is left empty.
    pub fn parse(text: &str) -> Kallsyms {
        let mut syms = Vec::new();
        for line in text.lines() {
            let mut words = line.split_ascii_whitespace();
            let (Some(addr), Some(kind), Some(name), Some(module)) =
                (words.next(), words.next(), words.next(), words.next())
            else {
                continue;
            };
            if !matches!(kind, "t" | "T") {
                continue;
            }
            let Some(module) = module.strip_prefix('[').and_then(|m| m.strip_suffix(']')) else { continue };
            let Ok(addr) = u64::from_str_radix(addr, 16) else { continue };
            if addr != 0 {
                syms.push((addr, name.to_string(), module.to_string()));
            }
        }
        syms.sort_by_key(|s| s.0);
        Kallsyms { syms, cache: HashMap::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    pub fn lookup(&self, addr: u64) -> Option<String> {
        let i = self.syms.partition_point(|s| s.0 <= addr).checked_sub(1)?;
        let (start, name, module) = &self.syms[i];
        Some(format!("{name}+{:#x} [{module}]", addr - start))
    }

    /// As `lookup`, but only a symbol of `module`: an address past the last
    /// symbol known of another module (one loaded since) is not taken for it.
    pub fn lookup_in(&self, addr: u64, module: &str) -> Option<String> {
        let i = self.syms.partition_point(|s| s.0 <= addr).checked_sub(1)?;
        (self.syms[i].2 == module).then(|| self.lookup(addr)).flatten()
    }

    /// `lookup_in`, remembered by address (with the module asked for).
    pub fn lookup_in_cached(&mut self, addr: u64, module: &str) -> Option<&str> {
        if self.cache.get(&addr).is_none_or(|(m, _)| m != module) {
            let text = self.lookup_in(addr, module);
            self.cache.insert(addr, (module.to_string(), text));
        }
        self.cache[&addr].1.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_symbols() {
        let k = Kallsyms::parse(
            "ffffffffc0a01000 t cr_round\t[cr_target]\nffffffffc0a01290 t cr_worker\t[cr_target]\n\
             ffffffffc0a02000 d cr_data\t[cr_target]\nffffffff81000000 T _stext\n",
        );
        assert_eq!(k.lookup(0xffffffffc0a0109d).as_deref(), Some("cr_round+0x9d [cr_target]"));
        assert_eq!(k.lookup(0xffffffffc0a01290).as_deref(), Some("cr_worker+0x0 [cr_target]"));
        assert_eq!(k.lookup(0xffffffffc0a00000), None);
        assert_eq!(k.lookup_in(0xffffffffc0a0109d, "cr_target").as_deref(), Some("cr_round+0x9d [cr_target]"));
        assert_eq!(k.lookup_in(0xffffffffc0a0109d, "ext4"), None);
        assert!(Kallsyms::parse("0000000000000000 t cr_round\t[cr_target]\n").is_empty());
    }

    #[test]
    fn cached_lookups_answer_as_uncached_ones() {
        let mut k = Kallsyms::parse("ffffffffc0a01000 t cr_round\t[cr_target]\n");
        for _ in 0..2 {
            assert_eq!(k.lookup_in_cached(0xffffffffc0a0109d, "cr_target"), Some("cr_round+0x9d [cr_target]"));
            // The same address asked for another module is looked up again.
            assert_eq!(k.lookup_in_cached(0xffffffffc0a0109d, "ext4"), None);
        }
    }
}
