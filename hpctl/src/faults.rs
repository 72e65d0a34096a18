//! `hpctl fail` and `hpctl faults`: a target's fault rules, built from
//! flags into the grammar hp-core parses (`hp_core::fault::Rule`), and the
//! `fault` and `fault-site` records the module replies with.

use anyhow::{bail, Result};
use hp_core::fault::{Returns, Rule};

use crate::prototype::{CType, Shape};

use crate::records::Record;

/// The flags of `hpctl fail`, as given.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct RuleArgs {
    /// The function whose calls fail (a memory-catalogue name).
    #[arg(long = "fn", value_name = "NAME")]
    pub function: Option<String>,
    /// Only the call at this site, as `hpctl sites` shows its caller (function+0xoffset).
    #[arg(long, value_name = "FUNC+0xOFF")]
    pub site: Option<String>,
    /// Fail one call in every N.
    #[arg(long, value_name = "N")]
    pub every: Option<u32>,
    /// Fail with this probability.
    #[arg(long, value_name = "P")]
    pub percent: Option<u8>,
    /// Let the first K matching calls through.
    #[arg(long, value_name = "K")]
    pub after: Option<u32>,
    /// Fail at most T calls.
    #[arg(long, value_name = "T")]
    pub times: Option<u32>,
    /// Only calls whose size argument is at least S bytes.
    #[arg(long, value_name = "S")]
    pub min_size: Option<u64>,
    /// Only calls whose gfp flags have a bit of this mask (hex).
    #[arg(long, value_name = "0xMASK")]
    pub gfp: Option<String>,
    /// Only calls made by this task id.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Only calls made by a task of this name.
    #[arg(long)]
    pub comm: Option<String>,
    /// Only while the module runs its init.
    #[arg(long)]
    pub init: bool,
    /// The errno a failed call returns (as -errno, or with --err-ptr as ERR_PTR(-errno)).
    #[arg(long)]
    pub errno: Option<u16>,
    /// The function fails with ERR_PTR(-errno), not NULL.
    #[arg(long)]
    pub err_ptr: bool,
    /// Fail each site once, the first time it is reached, one site per round: a round ends with
    /// `hpctl fail MODULE --next`, or at each load of a module attached with --follow.
    #[arg(long, conflicts_with_all = ["every", "percent", "after", "times"])]
    pub systematic: bool,
}

impl RuleArgs {
    /// The rule's words for `fail <module> ...`, checked by the same
    /// grammar the module parses with.
    /// `returns`: what the function returns, for one outside the catalogue
    /// (from BTF: [`returns_of`]).
    pub fn to_rule_text(&self, returns: Option<Returns>) -> Result<String> {
        let Some(function) = self.function.as_deref() else { bail!("a rule needs --fn") };
        let site = match self.site.as_deref() {
            Some(s) => {
                let (func, off) = s.split_once("+0x").filter(|(f, _)| !f.is_empty()).ok_or_else(|| {
                    anyhow::anyhow!("--site {s}: expected function+0xoffset, as `hpctl sites` shows it")
                })?;
                let off = off.split('/').next().unwrap_or(off);
                Some((func, u32::from_str_radix(off, 16).map_err(|_| anyhow::anyhow!("--site {s}: bad offset"))?))
            }
            None => None,
        };
        let gfp_mask = match self.gfp.as_deref() {
            Some(g) => Some(u64::from_str_radix(g.trim_start_matches("0x"), 16).map_err(|_| anyhow::anyhow!("--gfp {g}: not a hex mask"))?),
            None => None,
        };
        let rule = Rule {
            function,
            site,
            every: self.every,
            percent: self.percent,
            after: self.after.unwrap_or(0),
            times: self.times,
            min_size: self.min_size,
            gfp_mask,
            pid: self.pid,
            comm: self.comm.as_deref(),
            in_init: self.init,
            errno: self.errno,
            err_ptr: self.err_ptr,
            systematic: self.systematic,
            returns,
        };
        let text = rule.to_string();
        Rule::parse(text.split(' ')).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(text)
    }
}

/// What a function's BTF return type means for failing it: a signed
/// integer carries a negative errno, a pointer an error pointer (with
/// `--err-ptr`); the module refuses the rest with the reason.
pub fn returns_of(ret: &CType) -> Returns {
    match &ret.shape {
        Shape::Void => Returns::Void,
        Shape::Int { signed: true, .. } => Returns::Int,
        Shape::Int { signed: false, .. } | Shape::Bool | Shape::Enum { .. } => Returns::Unsigned,
        Shape::Ptr { .. } => Returns::Pointer,
        Shape::Aggregate { .. } => Returns::Aggregate,
        _ => Returns::Unknown,
    }
}

/// One `fault` record: a rule and its counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    pub module: String,
    pub slot: u64,
    pub matched: u64,
    pub failed: u64,
    pub spared: u64,
    pub value: i64,
    /// The rule's words, space-separated.
    pub text: String,
}

/// One `fault-site` record: calls failed at one site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSite {
    pub module: String,
    pub caller: String,
    pub callee: String,
    pub failed: u64,
}

pub fn rules(records: &[Record]) -> Result<Vec<FaultRule>> {
    records
        .iter()
        .filter(|r| r.kind == "fault")
        .map(|r| {
            Ok(FaultRule {
                module: r.get("module")?.to_string(),
                slot: r.num("rule")?,
                matched: r.num("matched")?,
                failed: r.num("failed")?,
                spared: r.num("spared")?,
                value: r.get("value")?.parse()?,
                text: r.get("text")?.replace(',', " "),
            })
        })
        .collect()
}

pub fn sites(records: &[Record]) -> Result<Vec<FaultSite>> {
    records
        .iter()
        .filter(|r| r.kind == "fault-site")
        .map(|r| {
            Ok(FaultSite {
                module: r.get("module")?.to_string(),
                caller: r.get("caller")?.to_string(),
                callee: r.get("callee")?.to_string(),
                failed: r.num("failed")?,
            })
        })
        .collect()
}

/// One `systematic-site` record: a site a systematic rule failed, in its round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystematicSite {
    pub module: String,
    pub slot: u64,
    pub round: u64,
    pub caller: String,
    /// How that round's load went: `in_init`, `loaded`, `init_failed`,
    /// `unloaded`, or `-` (a round of a live module, ended by --next).
    pub load: String,
    /// With leak checking, at the load's end: objects and bytes it left.
    pub leaked: Option<(u64, u64)>,
}

impl SystematicSite {
    /// What came back of the failure, in words.
    pub fn came_back(&self) -> String {
        let load = match self.load.as_str() {
            "in_init" => "init running",
            "loaded" => "survived: loaded",
            "init_failed" => "init failed cleanly",
            "unloaded" => "survived: loaded, then unloaded",
            _ => "a live module's round",
        };
        match self.leaked {
            Some((0, _)) => format!("{load}, nothing leaked"),
            Some((n, bytes)) => format!("{load}, leaked {n} objects ({bytes} bytes)"),
            None => load.to_string(),
        }
    }
}

pub fn systematic_sites(records: &[Record]) -> Result<Vec<SystematicSite>> {
    records
        .iter()
        .filter(|r| r.kind == "systematic-site")
        .map(|r| {
            Ok(SystematicSite {
                module: r.get("module")?.to_string(),
                slot: r.num("rule")?,
                round: r.num("round")?,
                caller: r.get("caller")?.to_string(),
                load: r.get("load").unwrap_or("-").to_string(),
                leaked: match (r.num("leaked"), r.num("leaked_bytes")) {
                    (Ok(n), Ok(bytes)) => Some((n, bytes)),
                    _ => None,
                },
            })
        })
        .collect()
}

/// What a failed call returns, as a C programmer would write it.
pub fn value_name(value: i64, err_ptr: bool) -> String {
    match value {
        0 => "NULL".into(),
        v if err_ptr => format!("ERR_PTR({v})"),
        v => v.to_string(),
    }
}

pub fn table(rules: &[FaultRule], sites: &[FaultSite], systematic: &[SystematicSite]) -> String {
    let mut out = String::new();
    if rules.is_empty() {
        out.push_str("no fault rules\n");
    } else {
        out.push_str(&format!("{:<16} {:>4} {:>9} {:>8} {:>7}  {:<12} RULE\n", "MODULE", "SLOT", "MATCHED", "FAILED", "SPARED", "RETURNS"));
        for r in rules {
            let returns = value_name(r.value, r.text.split(' ').any(|w| w == "err_ptr"));
            out.push_str(&format!(
                "{:<16} {:>4} {:>9} {:>8} {:>7}  {:<12} {}\n",
                r.module, r.slot, r.matched, r.failed, r.spared, returns, r.text
            ));
        }
    }
    if !systematic.is_empty() {
        out.push_str(&format!(
            "\n{:<16} {:>4} {:>6}  {:<40} WHAT CAME BACK (systematic: one site failed per round)\n",
            "MODULE", "SLOT", "ROUND", "SITE FAILED"
        ));
        let mut by_round: Vec<&SystematicSite> = systematic.iter().collect();
        by_round.sort_by(|a, b| (&a.module, a.round).cmp(&(&b.module, b.round)));
        for s in by_round {
            out.push_str(&format!("{:<16} {:>4} {:>6}  {:<40} {}\n", s.module, s.slot, s.round, s.caller, s.came_back()));
        }
    }
    if !sites.is_empty() {
        out.push_str(&format!("\n{:<16} {:<40} {:<28} {:>8}\n", "MODULE", "SITE", "CALLEE", "FAILED"));
        for s in sites {
            out.push_str(&format!("{:<16} {:<40} {:<28} {:>8}\n", s.module, s.caller, s.callee, s.failed));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::parse_reply;

    #[test]
    fn flags_become_a_rule_the_module_parses() {
        let args = RuleArgs {
            function: Some("kstrdup".into()),
            site: Some("cr_round+0x9d/0x2a0".into()),
            every: Some(3),
            times: Some(2),
            gfp: Some("0x20".into()),
            ..RuleArgs::default()
        };
        assert_eq!(args.to_rule_text(None).unwrap(), "fn=kstrdup site=cr_round+0x9d every=3 times=2 gfp=0x20");
        assert!(RuleArgs { every: Some(0), ..args.clone() }.to_rule_text(None).is_err());
        assert!(RuleArgs { function: None, ..args.clone() }.to_rule_text(None).is_err());
        assert!(RuleArgs { site: Some("cr_round".into()), ..args }.to_rule_text(None).is_err());
        let typed = RuleArgs { function: Some("cr_mixed".into()), errno: Some(5), ..RuleArgs::default() };
        assert_eq!(typed.to_rule_text(Some(Returns::Int)).unwrap(), "fn=cr_mixed errno=5 returns=int");
        assert_eq!(returns_of(&CType::new("long", Shape::Int { bytes: 8, signed: true })), Returns::Int);
        assert_eq!(returns_of(&CType::new("u64", Shape::Int { bytes: 8, signed: false })), Returns::Unsigned);
        assert_eq!(returns_of(&CType::new("bool", Shape::Bool)), Returns::Unsigned);
        assert_eq!(returns_of(&CType::void()), Returns::Void);
    }

    #[test]
    fn fault_records_read_back() {
        let reply = "fault module=cr_target rule=0 matched=30 failed=5 spared=0 value=0 text=fn=kstrdup,every=3,times=5\n\
                     fault-site module=cr_target caller=cr_round+0x9d/0x2a0 callee=kstrdup failed=5\n";
        let records = parse_reply(reply).unwrap();
        let r = &rules(&records).unwrap()[0];
        assert_eq!((r.failed, r.value, r.text.as_str()), (5, 0, "fn=kstrdup every=3 times=5"));
        assert_eq!(sites(&records).unwrap()[0].failed, 5);
        assert!(table(&rules(&records).unwrap(), &sites(&records).unwrap(), &[]).contains("NULL"));
        let s = systematic_sites(&parse_reply("systematic-site module=cr_target rule=0 round=3 caller=cr_init_setup+0x2c/0x90 load=init_failed leaked=2 leaked_bytes=288\nsystematic-site module=cr_target rule=0 round=4 caller=cr_init_setup+0x5c/0x90 load=loaded\n").unwrap()).unwrap();
        assert_eq!((s[0].round, s[0].caller.as_str()), (3, "cr_init_setup+0x2c/0x90"));
        assert_eq!(s[0].came_back(), "init failed cleanly, leaked 2 objects (288 bytes)");
        assert_eq!(s[1].came_back(), "survived: loaded");
        assert!(table(&[], &[], &s).contains("WHAT CAME BACK"));
    }
}
