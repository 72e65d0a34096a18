//! Replies from /dev/hp_patcher (docs/control.md, "Records"): one record per
//! line, a kind then `key=value` pairs. Unknown kinds and keys are skipped
//! (later versions add keys at the end of a line); a key a record needs and
//! lacks is an error that names it.

use anyhow::{bail, Context, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub kind: String,
    pub fields: Vec<(String, String)>,
}

impl Record {
    pub fn get(&self, key: &str) -> Result<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .with_context(|| format!("`{}` record without {key}=", self.kind))
    }

    pub fn num(&self, key: &str) -> Result<u64> {
        let v = self.get(key)?;
        let parsed = match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => v.parse(),
        };
        parsed.with_context(|| format!("`{}` record: {key}={v} is not a number", self.kind))
    }

    pub fn flag(&self, key: &str) -> Result<bool> {
        Ok(self.num(key)? != 0)
    }
}

/// Parses one line; `None` for a blank one.
pub fn parse_line(line: &str) -> Result<Option<Record>> {
    let mut words = line.split_ascii_whitespace();
    let Some(kind) = words.next() else { return Ok(None) };
    let mut fields = Vec::new();
    for word in words {
        let (k, v) = word.split_once('=').with_context(|| format!("`{kind}` record: {word:?} is not key=value"))?;
        fields.push((k.to_string(), v.to_string()));
    }
    Ok(Some(Record { kind: kind.to_string(), fields }))
}

/// Parses a whole reply. An `error <reason>` line is not key=value: use
/// [`error_reason`] on a failed command's reply.
pub fn parse_reply(text: &str) -> Result<Vec<Record>> {
    text.lines().filter_map(|l| parse_line(l).transpose()).collect()
}

/// The reason of an `error <reason>` reply.
pub fn error_reason(text: &str) -> Option<String> {
    text.lines().find_map(|l| l.trim().strip_prefix("error ").map(|r| r.trim().to_string()))
}

fn of_kind<'a>(records: &'a [Record], kind: &'a str) -> impl Iterator<Item = &'a Record> + 'a {
    records.iter().filter(move |r| r.kind == kind)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    /// `attached`, `awaited` or `refused`.
    pub state: String,
    pub sink: String,
    pub follow: bool,
    pub sites: u64,
    pub armed: u64,
    pub hits: u64,
}

impl Target {
    pub fn from_record(r: &Record) -> Result<Target> {
        Ok(Target {
            name: r.get("name")?.to_string(),
            state: r.get("state")?.to_string(),
            sink: r.get("sink")?.to_string(),
            follow: r.flag("follow")?,
            sites: r.num("sites")?,
            armed: r.num("armed")?,
            hits: r.num("hits")?,
        })
    }
    pub fn all(records: &[Record]) -> Result<Vec<Target>> {
        of_kind(records, "target").map(Target::from_record).collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detached {
    pub name: String,
    pub calls: u64,
}

impl Detached {
    pub fn all(records: &[Record]) -> Result<Vec<Detached>> {
        of_kind(records, "detached")
            .map(|r| Ok(Detached { name: r.get("name")?.to_string(), calls: r.num("calls")? }))
            .collect()
    }
}

/// A detached target whose callers are still inside an intercepted call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detaching {
    pub name: String,
    pub inside: u64,
    pub waited_ms: u64,
}

impl Detaching {
    pub fn all(records: &[Record]) -> Result<Vec<Detaching>> {
        of_kind(records, "detaching")
            .filter(|r| r.get("waited_ms").is_ok())
            .map(|r| {
                Ok(Detaching { name: r.get("name")?.to_string(), inside: r.num("inside")?, waited_ms: r.num("waited_ms")? })
            })
            .collect()
    }

    /// One line for a person: what the detach still waits for.
    pub fn describe(&self) -> String {
        format!(
            "{}: detaching, waiting {:.1} s for {} call{} still inside an intercepted function",
            self.name,
            self.waited_ms as f64 / 1000.0,
            self.inside,
            if self.inside == 1 { "" } else { "s" }
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    pub module: String,
    /// As the kernel printed it: hashed like `%p` unless raw_pointers=1.
    pub addr: String,
    /// `func+0xoff/0xsize`.
    pub caller: String,
    pub callee: String,
    /// `call` or `tail`.
    pub kind: String,
    /// `armed`, `refused`, `foreign`, `jcc`, `long` or `planned`.
    pub state: String,
    pub hits: u64,
}

impl Site {
    pub fn all(records: &[Record]) -> Result<Vec<Site>> {
        of_kind(records, "site")
            .map(|r| {
                Ok(Site {
                    module: r.get("module")?.to_string(),
                    addr: r.get("addr")?.to_string(),
                    caller: r.get("caller")?.to_string(),
                    callee: r.get("callee")?.to_string(),
                    kind: r.get("kind")?.to_string(),
                    state: r.get("state")?.to_string(),
                    // A plan has no hits yet; be lenient.
                    hits: r.num("hits").unwrap_or(0),
                })
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Func {
    pub module: String,
    pub name: String,
    pub hits: u64,
    pub inflight: u64,
    pub events: u64,
    pub dropped: u64,
    pub missed: u64,
}

impl Func {
    pub fn all(records: &[Record]) -> Result<Vec<Func>> {
        of_kind(records, "func")
            .map(|r| {
                Ok(Func {
                    module: r.get("module")?.to_string(),
                    name: r.get("name")?.to_string(),
                    hits: r.num("hits")?,
                    inflight: r.num("inflight")?,
                    events: r.num("events")?,
                    dropped: r.num("dropped")?,
                    missed: r.num("missed")?,
                })
            })
            .collect()
    }
}

/// A `callee` line: a function outside the module that it calls, and the
/// module's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Callee {
    /// The symbol, or `sym+0xoff` when the destination is not a symbol's start.
    pub name: String,
    pub sites: u64,
    pub tails: u64,
    pub static_call_sites: u64,
    /// `interceptable` or `refused`.
    pub state: String,
    /// The module's reason when refused.
    pub reason: Option<String>,
}

impl Callee {
    pub fn all(records: &[Record]) -> Result<Vec<Callee>> {
        of_kind(records, "callee")
            .map(|r| {
                let state = r.get("state")?.to_string();
                let reason = match state.as_str() {
                    "interceptable" => None,
                    _ => Some(r.get("reason")?.to_string()),
                };
                Ok(Callee {
                    name: r.get("name")?.to_string(),
                    sites: r.num("sites")?,
                    tails: r.num("tails")?,
                    static_call_sites: r.num("static_call_sites")?,
                    state,
                    reason,
                })
            })
            .collect()
    }
}

/// The `info` reply: what decoding events needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    pub version: u64,
    pub slab_buckets: bool,
    pub call_thunks: bool,
    pub raw_pointers: bool,
    /// The kernel's gfp names, in its own order (compounds first).
    pub gfp: Vec<(u64, String)>,
    /// (index in hp_core::catalogue::MEMORY, name, available)
    pub functions: Vec<(usize, String, bool)>,
}

impl Info {
    pub fn from_records(records: &[Record]) -> Result<Info> {
        let Some(info) = of_kind(records, "info").next() else { bail!("the info reply has no info line") };
        let gfp =
            of_kind(records, "gfp").map(|r| Ok((r.num("mask")?, r.get("name")?.to_string()))).collect::<Result<_>>()?;
        let functions = of_kind(records, "function")
            .map(|r| Ok((r.num("index")? as usize, r.get("name")?.to_string(), r.flag("available")?)))
            .collect::<Result<_>>()?;
        Ok(Info {
            version: info.num("version")?,
            slab_buckets: info.flag("slab_buckets")?,
            call_thunks: info.flag("call_thunks").unwrap_or(false),
            raw_pointers: info.flag("raw_pointers").unwrap_or(false),
            gfp,
            functions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The examples of docs/control.md, verbatim, plus a key from a later version.
    const EXAMPLES: &str = "\
target name=cr_target state=attached sink=trace follow=1 sites=14 armed=14 hits=1234
detached name=cr_target calls=1234
site module=cr_target addr=00000000c0ffee12 caller=cr_round+0x9d/0x290 callee=kfree kind=call state=armed hits=77
func module=cr_target name=kfree hits=77 inflight=0 events=77 dropped=0 missed=0 later=5
info version=1 slab_buckets=0 call_thunks=1 raw_pointers=0
gfp mask=0x400 name=__GFP_HIGH
function index=11 name=kfree available=1
callee name=mutex_lock sites=12 tails=1 static_call_sites=0 state=interceptable
callee name=__stack_chk_fail sites=3 tails=0 static_call_sites=0 state=refused reason=noreturn
";

    #[test]
    fn documented_records() {
        let records = parse_reply(EXAMPLES).unwrap();
        assert_eq!(records.len(), 9);
        let callees = Callee::all(&records).unwrap();
        assert_eq!(
            (callees[0].name.as_str(), callees[0].sites, callees[0].tails, callees[0].reason.as_deref()),
            ("mutex_lock", 12, 1, None)
        );
        assert_eq!((callees[1].state.as_str(), callees[1].reason.as_deref()), ("refused", Some("noreturn")));
        let t = &Target::all(&records).unwrap()[0];
        assert_eq!(
            t,
            &Target {
                name: "cr_target".into(),
                state: "attached".into(),
                sink: "trace".into(),
                follow: true,
                sites: 14,
                armed: 14,
                hits: 1234
            }
        );
        assert_eq!(Detached::all(&records).unwrap(), [Detached { name: "cr_target".into(), calls: 1234 }]);
        let s = &Site::all(&records).unwrap()[0];
        assert_eq!(
            (s.caller.as_str(), s.kind.as_str(), s.state.as_str(), s.hits),
            ("cr_round+0x9d/0x290", "call", "armed", 77)
        );
        let f = &Func::all(&records).unwrap()[0];
        assert_eq!((f.name.as_str(), f.hits, f.events, f.dropped), ("kfree", 77, 77, 0));
        let info = Info::from_records(&records).unwrap();
        assert_eq!(info.gfp, [(0x400, "__GFP_HIGH".to_string())]);
        assert_eq!(info.functions, [(11, "kfree".to_string(), true)]);
        assert!(!info.slab_buckets && info.call_thunks);
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let r = parse_reply("target name=x state=attached").unwrap();
        let e = Target::all(&r).unwrap_err().to_string();
        assert_eq!(e, "`target` record without sink=");
        assert!(parse_reply("func module").is_err());
        let r = parse_reply("func module=m name=n hits=z inflight=0 events=0 dropped=0 missed=0").unwrap();
        assert_eq!(Func::all(&r).unwrap_err().to_string(), "`func` record: hits=z is not a number");
        assert_eq!(
            error_reason("error module cr_targte is not loaded\n").as_deref(),
            Some("module cr_targte is not loaded")
        );
        assert_eq!(error_reason(""), None);
        assert_eq!(parse_reply("\n\n").unwrap(), []);
    }
}
