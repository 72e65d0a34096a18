//! The `hp_patcher:hp_call` event (docs/control.md, "The event"): field
//! offsets from its `format` file, decoding a ring-buffer record, and the
//! human and JSON forms of a call.

use std::collections::HashMap;
use std::fmt::Write;

use anyhow::{bail, Context, Result};
use hp_core::catalogue::{KernelConfig, Kind, MEMORY};
use hp_core::gfp::{write_gfp, GfpName};

use crate::format::{EventFormat, Field};
use crate::json;
use crate::symbols::Kallsyms;

/// Where each field hpctl reads is, from the format file.
#[derive(Clone, Debug)]
pub struct HpCallFormat {
    pub id: u32,
    common_type: Field,
    common_pid: Field,
    target: Field,
    site: Field,
    callee: Field,
    func: Field,
    returned: Field,
    args: Field,
    ret: Field,
    start_ns: Field,
    duration_ns: Field,
}

impl HpCallFormat {
    pub fn new(format: &EventFormat) -> Result<HpCallFormat> {
        let field = |name: &str| -> Result<Field> {
            format.field(name).cloned().with_context(|| format!("the {} event has no field {name}", format.name))
        };
        let scalar = |name: &str| -> Result<Field> {
            let f = field(name)?;
            if !matches!(f.size, 1 | 2 | 4 | 8) || f.array_len.is_some() {
                bail!("{}'s field {name} is {} bytes, not a scalar", format.name, f.size);
            }
            Ok(f)
        };
        let string = |name: &str| -> Result<Field> {
            let f = field(name)?;
            if !(f.is_data_loc() || f.is_rel_loc()) || f.size != 4 {
                bail!("{}'s field {name} is `{}`, not a 4-byte __data_loc string", format.name, f.ty);
            }
            Ok(f)
        };
        let args = field("args")?;
        if args.array_len != Some(6) || args.size != 48 {
            bail!(
                "{}'s field args is `{} args[{:?}]` of {} bytes, not u64[6]",
                format.name,
                args.ty,
                args.array_len,
                args.size
            );
        }
        Ok(HpCallFormat {
            id: format.id,
            common_type: scalar("common_type")?,
            common_pid: scalar("common_pid")?,
            target: string("target")?,
            site: scalar("site")?,
            callee: string("callee")?,
            func: scalar("func")?,
            returned: scalar("returned")?,
            args,
            ret: scalar("ret")?,
            start_ns: scalar("start_ns")?,
            duration_ns: scalar("duration_ns")?,
        })
    }

    /// The call in one ring-buffer record; `None` for another event type.
    pub fn decode(&self, ts: u64, cpu: u32, data: &[u8]) -> Result<Option<CallEvent>> {
        if uint(data, &self.common_type)? != u64::from(self.id) {
            return Ok(None);
        }
        let mut args = [0u64; 6];
        for (i, a) in args.iter_mut().enumerate() {
            *a = read(data, self.args.offset + 8 * i, 8)?;
        }
        Ok(Some(CallEvent {
            ts,
            cpu,
            pid: uint(data, &self.common_pid)? as u32 as i32,
            target: string(data, &self.target)?,
            site: uint(data, &self.site)?,
            callee: string(data, &self.callee)?,
            func: uint(data, &self.func)? as u32,
            returned: uint(data, &self.returned)? != 0,
            args,
            ret: uint(data, &self.ret)?,
            start_ns: uint(data, &self.start_ns)?,
            duration_ns: uint(data, &self.duration_ns)?,
        }))
    }
}

fn read(data: &[u8], offset: usize, size: usize) -> Result<u64> {
    let bytes = data
        .get(offset..offset + size)
        .with_context(|| format!("record of {} bytes has no bytes {offset}..{}", data.len(), offset + size))?;
    let mut le = [0u8; 8];
    le[..size].copy_from_slice(bytes);
    Ok(u64::from_le_bytes(le))
}

fn uint(data: &[u8], f: &Field) -> Result<u64> {
    read(data, f.offset, f.size)
}

/// A `__data_loc char[]` (offset in the low 16 bits, length in the high
/// 16, from the record's start) or `__rel_loc` (from the field's end).
fn string(data: &[u8], f: &Field) -> Result<String> {
    let loc = uint(data, f)?;
    let mut offset = (loc & 0xffff) as usize;
    let len = ((loc >> 16) & 0xffff) as usize;
    if f.is_rel_loc() {
        offset += f.offset + f.size;
    }
    let bytes = data
        .get(offset..offset + len)
        .with_context(|| format!("string {} at {offset}+{len} is outside the {}-byte record", f.name, data.len()))?;
    let bytes = bytes.split(|&b| b == 0).next().unwrap_or_default();
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallEvent {
    /// Ring-buffer time.
    pub ts: u64,
    pub cpu: u32,
    pub pid: i32,
    pub target: String,
    pub site: u64,
    pub callee: String,
    pub func: u32,
    pub returned: bool,
    pub args: [u64; 6],
    pub ret: u64,
    pub start_ns: u64,
    pub duration_ns: u64,
}

/// Task names by pid: /proc/<pid>/comm while the task lives, else tracefs's
/// saved_cmdlines, else `<...>` as ftrace prints it.
#[derive(Default)]
pub struct Comms {
    cache: HashMap<i32, String>,
    saved_cmdlines: Option<String>,
}

impl Comms {
    pub fn new(saved_cmdlines: Option<String>) -> Comms {
        Comms { cache: HashMap::new(), saved_cmdlines }
    }

    pub fn insert(&mut self, pid: i32, comm: &str) {
        self.cache.insert(pid, comm.to_string());
    }

    pub fn get(&mut self, pid: i32) -> String {
        if pid == 0 {
            return "<idle>".to_string();
        }
        if let Some(c) = self.cache.get(&pid) {
            return c.clone();
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim_end().to_string())
            .ok()
            .or_else(|| {
                let path = self.saved_cmdlines.as_ref()?;
                let text = std::fs::read_to_string(path).ok()?;
                text.lines().find_map(|l| {
                    let (p, c) = l.split_once(' ')?;
                    (p.parse() == Ok(pid)).then(|| c.to_string())
                })
            })
            .unwrap_or_else(|| "<...>".to_string());
        self.cache.insert(pid, comm.clone());
        comm
    }
}

/// What turns a `CallEvent` into text: the running kernel's gfp names and
/// config (from `info`), symbols and task names.
pub struct Renderer {
    pub gfp: Vec<(u64, String)>,
    pub config: KernelConfig,
    pub symbols: Kallsyms,
    pub comms: Comms,
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Size => "size",
        Kind::Gfp => "gfp",
        Kind::Node => "node",
        Kind::Ptr => "ptr",
        Kind::CodePtr => "code_ptr",
        Kind::Void => "void",
    }
}

impl Renderer {
    fn value(&self, kind: Kind, value: u64) -> String {
        match kind {
            Kind::Size => value.to_string(),
            Kind::Gfp => {
                let table: Vec<GfpName<'_>> =
                    self.gfp.iter().map(|(mask, name)| GfpName { mask: *mask, name }).collect();
                let mut s = String::new();
                write_gfp(&mut s, value & 0xffff_ffff, &table).expect("writing to a String");
                s
            }
            Kind::Node => (value as u32 as i32).to_string(),
            Kind::Ptr | Kind::CodePtr | Kind::Void => format!("{value:#x}"),
        }
    }

    /// The catalogue entry: by index, checked against the name the event carries.
    fn function(&self, ev: &CallEvent) -> Option<&'static hp_core::catalogue::Function> {
        MEMORY
            .get(ev.func as usize)
            .filter(|f| f.name == ev.callee)
            .or_else(|| MEMORY.iter().find(|f| f.name == ev.callee))
    }

    fn args(&self, ev: &CallEvent) -> Vec<json::Arg> {
        match self.function(ev) {
            Some(f) => f
                .args_for(self.config)
                .zip(ev.args)
                .map(|(a, raw)| json::Arg {
                    name: a.name.to_string(),
                    kind: kind_name(a.kind),
                    raw,
                    text: self.value(a.kind, raw),
                })
                .collect(),
            // Not in this hpctl's catalogue: the six registers in hex.
            None => ["rdi", "rsi", "rdx", "rcx", "r8", "r9"]
                .iter()
                .zip(ev.args)
                .map(|(n, raw)| json::Arg { name: n.to_string(), kind: "ptr", raw, text: format!("{raw:#x}") })
                .collect(),
        }
    }

    fn ret_text(&self, ev: &CallEvent) -> Option<String> {
        if !ev.returned {
            return None;
        }
        let kind = match self.function(ev).map(|f| f.ret) {
            Some(Kind::Void) | None => Kind::Ptr,
            Some(k) => k,
        };
        Some(self.value(kind, ev.ret))
    }

    pub fn site_symbol(&self, ev: &CallEvent) -> Option<String> {
        self.symbols.lookup_in(ev.site, &ev.target)
    }

    pub fn site_text(&self, ev: &CallEvent) -> String {
        self.site_symbol(ev).unwrap_or_else(|| format!("{:#x}", ev.site))
    }

    /// `<time> cpu=N pid=N comm=X target site callee(args) = ret (dur ns)`;
    /// the time is the call's entry (`start_ns`) in seconds.
    pub fn human(&mut self, ev: &CallEvent) -> String {
        let comm = self.comms.get(ev.pid);
        let mut s = format!(
            "{}.{:06} cpu={} pid={} comm={} {} {} {}(",
            ev.start_ns / 1_000_000_000,
            ev.start_ns % 1_000_000_000 / 1000,
            ev.cpu,
            ev.pid,
            comm,
            ev.target,
            self.site_text(ev),
            ev.callee
        );
        for (i, a) in self.args(ev).iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            let _ = write!(s, "{}={}", a.name, a.text);
        }
        s.push(')');
        if let Some(ret) = self.ret_text(ev) {
            let _ = write!(s, " = {ret} ({} ns)", ev.duration_ns);
        }
        s
    }

    pub fn json(&mut self, ev: &CallEvent) -> json::Call {
        json::Call {
            ts_ns: ev.ts,
            cpu: ev.cpu,
            pid: ev.pid,
            comm: self.comms.get(ev.pid),
            target: ev.target.clone(),
            site: format!("{:#x}", ev.site),
            site_symbol: self.site_symbol(ev),
            callee: ev.callee.clone(),
            func: ev.func,
            args: self.args(ev),
            regs: ev.args,
            returned: ev.returned,
            ret: ev.returned.then_some(ev.ret),
            ret_text: self.ret_text(ev),
            start_ns: ev.start_ns,
            duration_ns: ev.returned.then_some(ev.duration_ns),
        }
    }
}
