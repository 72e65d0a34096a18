//! `hpctl catalogue`: the memory functions the loaded module can intercept on
//! this kernel, with the arguments it prints them with, checked against the
//! running kernel's BTF. The module's layouts were chosen at build time from
//! the BTF of the headers it was built against; this says whether they are
//! those of the kernel it runs on.

use hp_core::catalogue::{KernelConfig, MEMORY};

use crate::records::Info;

/// One available catalogue function, and what BTF says of it.
#[derive(Debug, PartialEq, Eq)]
pub struct Row {
    pub name: String,
    /// The argument names the module prints.
    pub ours: Vec<&'static str>,
    /// The running kernel's parameter names; None when BTF has no prototype.
    pub btf: Option<Vec<String>>,
}

impl Row {
    pub fn matches(&self) -> bool {
        self.btf.as_ref().is_some_and(|b| b.iter().map(String::as_str).eq(self.ours.iter().copied()))
    }
}

/// The rows for every function `info` says is available, each with the
/// parameter names `params` (BTF) gives for it.
pub fn rows(info: &Info, mut params: impl FnMut(&str) -> Option<Vec<String>>) -> Vec<Row> {
    let config = KernelConfig { slab_buckets: info.slab_buckets };
    info.functions
        .iter()
        .filter(|(_, _, available)| *available)
        .filter_map(|(index, name, _)| {
            let func = MEMORY.get(*index).filter(|f| f.name == name)?;
            Some(Row { name: name.clone(), ours: func.args_for(config).map(|a| a.name).collect(), btf: params(name) })
        })
        .collect()
}

/// The table `hpctl catalogue` prints.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    for row in rows {
        let verdict = match &row.btf {
            _ if row.matches() => "ok".to_string(),
            None => "no prototype in BTF".to_string(),
            Some(btf) => format!("DIFFERS: the kernel's BTF has ({})", btf.join(", ")),
        };
        out += &format!("{}({})  {verdict}\n", row.name, row.ours.join(", "));
    }
    let ok = rows.iter().filter(|r| r.matches()).count();
    out += &format!("{ok} of {} functions match the running kernel's BTF\n", rows.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(functions: &[(&str, bool)]) -> Info {
        let functions = functions
            .iter()
            .map(|(name, available)| {
                let index = MEMORY.iter().position(|f| f.name == *name).unwrap();
                (index, name.to_string(), *available)
            })
            .collect();
        Info { version: 1, slab_buckets: true, call_thunks: false, raw_pointers: false, gfp: Vec::new(), functions }
    }

    #[test]
    fn a_renamed_argument_is_a_difference() {
        let info = info(&[("kfree", true), ("__kmalloc_noprof", true), ("vfree", false)]);
        let rows = rows(&info, |name| match name {
            "kfree" => Some(vec!["object".into()]),
            "__kmalloc_noprof" => Some(vec!["size".into(), "gfp".into()]),
            _ => None,
        });
        assert_eq!(rows.len(), 2, "unavailable functions are not listed");
        assert!(rows[0].matches());
        assert!(!rows[1].matches());
        let text = table(&rows);
        assert!(text.contains("__kmalloc_noprof(size, flags)  DIFFERS: the kernel's BTF has (size, gfp)"), "{text}");
        assert!(text.ends_with("1 of 2 functions match the running kernel's BTF\n"), "{text}");
    }
}
