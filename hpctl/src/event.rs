//! The `hp_patcher:hp_call` event (docs/control.md, "The event"): field
//! offsets from its `format` file, decoding a ring-buffer record, and the
//! human and JSON forms of a call.

use std::collections::HashMap;
use std::fmt::Write;

use anyhow::{bail, Context, Result};
use hp_core::catalogue::{KernelConfig, Kind, MEMORY};
use hp_core::proto::{strings, REGISTER_ARGS};

use crate::btf::Prototypes;
use crate::format::{EventFormat, Field};
use crate::json;
use crate::prototype::{quote, unreadable, write_gfp_names, Prototype, ValueFormat};
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
    /// Absent from formats older than issue 7's (a saved capture).
    ret2: Option<Field>,
    start_ns: Field,
    duration_ns: Field,
    /// `__data_loc u8[] strings`; absent from older formats.
    strings: Option<Field>,
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
            ret2: format.field("ret2").map(|_| scalar("ret2")).transpose()?,
            start_ns: scalar("start_ns")?,
            duration_ns: scalar("duration_ns")?,
            strings: format.field("strings").map(|_| string("strings")).transpose()?,
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
            ret2: self.ret2.as_ref().map(|f| uint(data, f)).transpose()?,
            // 0 for a void callee, whose event is written as it is called:
            // its own time stamp is the start.
            start_ns: Some(uint(data, &self.start_ns)?).filter(|&t| t != 0).unwrap_or(ts),
            duration_ns: uint(data, &self.duration_ns)?,
            strings: self.strings.as_ref().map(|f| dynamic(data, f).map(<[u8]>::to_vec)).transpose()?,
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

/// The bytes of a `__data_loc` field (offset in the low 16 bits, length in
/// the high 16, from the record's start) or `__rel_loc` (from the field's end).
fn dynamic<'a>(data: &'a [u8], f: &Field) -> Result<&'a [u8]> {
    let loc = uint(data, f)?;
    let mut offset = (loc & 0xffff) as usize;
    let len = ((loc >> 16) & 0xffff) as usize;
    if f.is_rel_loc() {
        offset += f.offset + f.size;
    }
    data.get(offset..offset + len)
        .with_context(|| format!("field {} at {offset}+{len} is outside the {}-byte record", f.name, data.len()))
}

/// A `__data_loc char[]`, up to its NUL.
fn string(data: &[u8], f: &Field) -> Result<String> {
    let bytes = dynamic(data, f)?;
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
    /// rdx after the call: the high half of a two-register result (`None`
    /// when the format has no `ret2`).
    pub ret2: Option<u64>,
    pub start_ns: u64,
    pub duration_ns: u64,
    /// The string arguments (hp_core::proto::strings); `None` when the
    /// format has no `strings` field.
    pub strings: Option<Vec<u8>>,
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
        self.get_ref(pid).to_string()
    }

    pub fn get_ref(&mut self, pid: i32) -> &str {
        if pid == 0 {
            return "<idle>";
        }
        if self.cache.contains_key(&pid) {
            return &self.cache[&pid];
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
        self.cache.entry(pid).or_insert(comm)
    }
}

/// What turns a `CallEvent` into text: the running kernel's gfp names and
/// config (from `info`), symbols, task names, and the prototypes of
/// callees outside the catalogue (from BTF).
pub struct Renderer {
    pub gfp: Vec<(u64, String)>,
    pub config: KernelConfig,
    pub symbols: Kallsyms,
    pub comms: Comms,
    pub prototypes: Prototypes,
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
        let mut s = String::new();
        self.write_value(&mut s, kind, value);
        s
    }

    fn write_value(&self, s: &mut String, kind: Kind, value: u64) {
        // Writing to a String cannot fail.
        let _ = match kind {
            Kind::Size => write!(s, "{value}"),
            Kind::Gfp => {
                write_gfp_names(s, value, &self.gfp);
                Ok(())
            }
            Kind::Node => write!(s, "{}", value as u32 as i32),
            Kind::Ptr | Kind::CodePtr | Kind::Void => write!(s, "{value:#x}"),
        };
    }

    /// The catalogue entry: by index, checked against the name the event carries.
    fn function(&self, ev: &CallEvent) -> Option<&'static hp_core::catalogue::Function> {
        MEMORY
            .get(ev.func as usize)
            .filter(|f| f.name == ev.callee)
            .or_else(|| MEMORY.iter().find(|f| f.name == ev.callee))
    }

    /// A callee outside the catalogue that BTF has a prototype for.
    fn prototype(&mut self, ev: &CallEvent) -> Option<std::rc::Rc<Prototype>> {
        if self.function(ev).is_some() {
            return None;
        }
        self.prototypes.get(&ev.callee)
    }

    fn args(&self, ev: &CallEvent, proto: Option<&Prototype>) -> Vec<json::Arg> {
        if let Some(p) = proto {
            return self.typed_args(ev, p);
        }
        match self.function(ev) {
            Some(f) => f
                .args_for(self.config)
                .zip(ev.args)
                .map(|(a, raw)| json::Arg::new(a.name, kind_name(a.kind), raw, self.value(a.kind, raw)))
                .collect(),
            // Not in this hpctl's catalogue and no prototype: the six registers in hex.
            None => ["rdi", "rsi", "rdx", "rcx", "r8", "r9"]
                .iter()
                .zip(ev.args)
                .map(|(n, raw)| json::Arg::new(n, "ptr", raw, format!("{raw:#x}")))
                .collect(),
        }
    }

    /// Each register argument by its type. String arguments come from the
    /// event's `strings`, in order, when it holds one per string argument
    /// (an attach made with another SPEC gives none: pointers in hex).
    fn typed_args(&self, ev: &CallEvent, p: &Prototype) -> Vec<json::Arg> {
        let f = ValueFormat { gfp: &self.gfp };
        let is_string = |i: usize| p.params[i].ty.letter() == 's';
        let wanted = (0..p.params.len().min(REGISTER_ARGS)).filter(|&i| is_string(i)).count();
        let texts: Vec<Option<(&[u8], bool)>> =
            ev.strings.as_deref().map(|b| strings::decode(b).collect()).unwrap_or_default();
        let texts = (texts.len() == wanted).then_some(texts);
        let mut next = 0;
        p.params
            .iter()
            .zip(ev.args)
            .enumerate()
            .map(|(i, (param, raw))| {
                let name = if param.name.is_empty() { format!("arg{i}") } else { param.name.clone() };
                let mut arg = json::Arg::new(&name, param.ty.kind(), raw, f.scalar(&param.ty, raw));
                arg.ctype = Some(param.ty.text.clone());
                if is_string(i) {
                    match texts.as_ref().map(|t| t[next]) {
                        Some(Some((bytes, truncated))) => {
                            arg.text = quote(bytes, truncated);
                            arg.string = Some(String::from_utf8_lossy(bytes).into_owned());
                            arg.truncated = Some(truncated);
                        }
                        Some(None) => arg.text = unreadable(raw),
                        None => arg.text = format!("{raw:#x}"),
                    }
                    next += 1;
                }
                arg
            })
            .collect()
    }

    fn ret_text(&self, ev: &CallEvent, proto: Option<&Prototype>) -> Option<String> {
        if !ev.returned {
            return None;
        }
        if let Some(p) = proto {
            // Nothing for void, `{sec=.., nsec=..}` for a struct in rax:rdx.
            return ValueFormat { gfp: &self.gfp }.result(&p.ret, ev.ret, ev.ret2.unwrap_or(0));
        }
        let kind = match self.function(ev).map(|f| f.ret) {
            Some(Kind::Void) | None => Kind::Ptr,
            Some(k) => k,
        };
        Some(self.value(kind, ev.ret))
    }

    /// `<time> cpu=N pid=N comm=X target site callee(args) = ret (dur ns)`;
    /// the time is the call's entry (`start_ns`) in seconds. A typed void
    /// callee has no `= ret`, only its duration.
    ///
    /// Written into one string, a catalogue call's arguments straight from
    /// the registers: `hpctl trace` does this for every event it takes, and
    /// the fewer allocations, the higher the rate it keeps up with.
    pub fn human(&mut self, ev: &CallEvent) -> String {
        let proto = self.prototype(ev);
        let mut s = String::with_capacity(192);
        let _ = write!(
            s,
            "{}.{:06} cpu={} pid={} comm={} {} ",
            ev.start_ns / 1_000_000_000,
            ev.start_ns % 1_000_000_000 / 1000,
            ev.cpu,
            ev.pid,
            self.comms.get_ref(ev.pid),
            ev.target,
        );
        match self.symbols.lookup_in_cached(ev.site, &ev.target) {
            Some(site) => s.push_str(site),
            None => {
                let _ = write!(s, "{:#x}", ev.site);
            }
        }
        let _ = write!(s, " {}(", ev.callee);
        match (self.function(ev), &proto) {
            (Some(f), None) => {
                for (i, (a, raw)) in f.args_for(self.config).zip(ev.args).enumerate() {
                    s.push_str(if i > 0 { ", " } else { "" });
                    s.push_str(a.name);
                    s.push('=');
                    self.write_value(&mut s, a.kind, raw);
                }
            }
            _ => {
                for (i, a) in self.args(ev, proto.as_deref()).iter().enumerate() {
                    s.push_str(if i > 0 { ", " } else { "" });
                    let _ = write!(s, "{}={}", a.name, a.text);
                }
            }
        }
        s.push(')');
        match self.ret_text(ev, proto.as_deref()) {
            Some(ret) => {
                let _ = write!(s, " = {ret} ({} ns)", ev.duration_ns);
            }
            None if ev.returned => {
                let _ = write!(s, " ({} ns)", ev.duration_ns);
            }
            None => {}
        }
        s
    }

    pub fn json(&mut self, ev: &CallEvent) -> json::Call {
        let proto = self.prototype(ev);
        let callee = self.function(ev).is_none();
        json::Call {
            ts_ns: ev.ts,
            cpu: ev.cpu,
            pid: ev.pid,
            comm: self.comms.get(ev.pid),
            target: ev.target.clone(),
            site: format!("{:#x}", ev.site),
            site_symbol: self.symbols.lookup_in_cached(ev.site, &ev.target).map(str::to_string),
            callee: ev.callee.clone(),
            func: ev.func,
            args: self.args(ev, proto.as_deref()),
            regs: ev.args,
            returned: ev.returned,
            ret: ev.returned.then_some(ev.ret),
            ret2: ev.ret2.filter(|_| callee && ev.returned),
            ret_text: self.ret_text(ev, proto.as_deref()),
            prototype: proto.map(|p| p.declaration()),
            start_ns: ev.start_ns,
            duration_ns: ev.returned.then_some(ev.duration_ns),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prototype::tests::{int, proto, ptr, string, timespec64, typedef};
    use crate::prototype::CType;

    /// The format 6.12 prints for the TRACE_EVENT of kmod/hp_events.h (with ret2 and strings).
    pub const FORMAT: &str = "name: hp_call\nID: 1894\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:__data_loc char[] target;\toffset:8;\tsize:4;\tsigned:0;\n\
\tfield:unsigned long site;\toffset:16;\tsize:8;\tsigned:0;\n\
\tfield:__data_loc char[] callee;\toffset:24;\tsize:4;\tsigned:0;\n\
\tfield:u32 func;\toffset:28;\tsize:4;\tsigned:0;\n\
\tfield:u32 returned;\toffset:32;\tsize:4;\tsigned:0;\n\
\tfield:u64 args[6];\toffset:40;\tsize:48;\tsigned:0;\n\
\tfield:u64 ret;\toffset:88;\tsize:8;\tsigned:0;\n\
\tfield:u64 ret2;\toffset:96;\tsize:8;\tsigned:0;\n\
\tfield:u64 start_ns;\toffset:104;\tsize:8;\tsigned:0;\n\
\tfield:u64 duration_ns;\toffset:112;\tsize:8;\tsigned:0;\n\
\tfield:__data_loc u8[] strings;\toffset:120;\tsize:4;\tsigned:0;\n\n\
print fmt: \"...\"\n";

    /// One record as the kernel lays it out: the fixed part, then target,
    /// callee and strings.
    fn record(callee: &str, args: [u64; 6], ret: (u64, u64), strings: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 128];
        p[0..2].copy_from_slice(&1894u16.to_le_bytes());
        p[4..8].copy_from_slice(&77i32.to_le_bytes());
        let mut tail = Vec::new();
        let mut loc = |at: usize, bytes: &[u8], p: &mut Vec<u8>| {
            let offset = 128 + tail.len();
            p[at..at + 4].copy_from_slice(&(((bytes.len() as u32) << 16) | offset as u32).to_le_bytes());
            tail.extend_from_slice(bytes);
        };
        // Names as the module writes them: NUL-padded to whole words.
        let padded = |name: &str| {
            let mut b = format!("{name}\0").into_bytes();
            b.resize(b.len().next_multiple_of(8), 0);
            b
        };
        loc(8, &padded("cr_target"), &mut p);
        loc(24, &padded(callee), &mut p);
        loc(120, strings, &mut p);
        p[16..24].copy_from_slice(&0xffff_ffff_c0a0_109du64.to_le_bytes());
        p[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        p[32..36].copy_from_slice(&1u32.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            p[40 + 8 * i..48 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        p[88..96].copy_from_slice(&ret.0.to_le_bytes());
        p[96..104].copy_from_slice(&ret.1.to_le_bytes());
        p[104..112].copy_from_slice(&5_000_000_123_000u64.to_le_bytes());
        p[112..120].copy_from_slice(&812u64.to_le_bytes());
        p.extend_from_slice(&tail);
        p
    }

    fn encoded(list: &[Option<&[u8]>]) -> Vec<u8> {
        let mut buf = [0u8; strings::CAPACITY];
        let mut used = 0;
        for s in list {
            strings::encode(&mut buf, &mut used, *s);
        }
        buf[..used].to_vec()
    }

    fn renderer() -> Renderer {
        let gfp = vec![(0xcc0, "GFP_KERNEL".to_string())];
        let kstrtoint = proto(
            "kstrtoint",
            int("int", 4, true),
            &[("s", string()), ("base", int("unsigned int", 4, false)), ("res", ptr("int *"))],
            false,
        );
        let ns =
            proto("ns_to_timespec64", timespec64(), &[("nsec", typedef("s64", int("long long int", 8, true)))], false);
        let unlock = proto("mutex_unlock", CType::void(), &[("lock", ptr("struct mutex *"))], false);
        let two = proto("strcmp", int("int", 4, true), &[("cs", string()), ("ct", string())], false);
        Renderer {
            gfp,
            config: KernelConfig::default(),
            symbols: Kallsyms::parse("ffffffffc0a01000 t cr_round\t[cr_target]\n"),
            comms: {
                let mut c = Comms::new(None);
                c.insert(77, "cr_worker/0");
                c
            },
            prototypes: Prototypes::fixed(vec![kstrtoint, ns, unlock, two]),
        }
    }

    fn line(r: &mut Renderer, format: &HpCallFormat, data: &[u8]) -> String {
        let ev = format.decode(5_000_000_124_000, 0, data).unwrap().unwrap();
        r.human(&ev)
    }

    #[test]
    fn typed_callee_lines() {
        let format = HpCallFormat::new(&EventFormat::parse(FORMAT).unwrap()).unwrap();
        let mut r = renderer();
        let prefix = "5000.000123 cpu=0 pid=77 comm=cr_worker/0 cr_target cr_round+0x9d [cr_target] ";
        let data = record(
            "kstrtoint",
            [0xffff_8880_1000_0000, 10, 0xffff_c900_0000_0010, 9, 9, 9],
            (0xffff_ffea, 7),
            &encoded(&[Some(b"12x\0")]),
        );
        let ev = format.decode(1, 0, &data).unwrap().unwrap();
        assert_eq!((ev.ret2, ev.strings.as_deref()), (Some(7), Some(&b"\x0312x"[..])));
        assert_eq!(
            line(&mut r, &format, &data),
            format!("{prefix}kstrtoint(s=\"12x\", base=10, res=0xffffc90000000010) = -22 (812 ns)")
        );
        let data = record("ns_to_timespec64", [3_000_000_250, 0, 0, 0, 0, 0], (3, 250), &[]);
        assert_eq!(
            line(&mut r, &format, &data),
            format!("{prefix}ns_to_timespec64(nsec=3000000250) = {{tv_sec=3, tv_nsec=250}} (812 ns)")
        );
        let data = record("mutex_unlock", [0xffff_8880_2000_0000, 1, 2, 3, 4, 5], (0, 0), &[]);
        assert_eq!(line(&mut r, &format, &data), format!("{prefix}mutex_unlock(lock=0xffff888020000000) (812 ns)"));
        // A NULL, a long string; then an attach made without SPEC (no strings): pointers.
        let long = [b'a'; 40];
        let data = record("strcmp", [0, 0x10, 0, 0, 0, 0], (1, 0), &encoded(&[None, Some(&long)]));
        let a32 = "a".repeat(32);
        assert_eq!(line(&mut r, &format, &data), format!("{prefix}strcmp(cs=NULL, ct=\"{a32}\"...) = 1 (812 ns)"));
        let data = record("strcmp", [0x20, 0x10, 0, 0, 0, 0], (1, 0), &[]);
        assert_eq!(line(&mut r, &format, &data), format!("{prefix}strcmp(cs=0x20, ct=0x10) = 1 (812 ns)"));
        let data = record("strcmp", [0x20, 0x10, 0, 0, 0, 0], (1, 0), &encoded(&[None, None]));
        assert_eq!(
            line(&mut r, &format, &data),
            format!("{prefix}strcmp(cs=0x20 (unreadable), ct=0x10 (unreadable)) = 1 (812 ns)")
        );
        // No prototype: the six registers and rax, as before.
        let data = record("mystery", [1, 2, 3, 4, 5, 6], (0x55, 0), &[]);
        assert_eq!(
            line(&mut r, &format, &data),
            format!("{prefix}mystery(rdi=0x1, rsi=0x2, rdx=0x3, rcx=0x4, r8=0x5, r9=0x6) = 0x55 (812 ns)")
        );
    }

    #[test]
    fn a_void_call_starts_at_its_time_stamp() {
        let format = HpCallFormat::new(&EventFormat::parse(FORMAT).unwrap()).unwrap();
        let mut data = record("kfree", [0xffff_8880_1000_0000, 0, 0, 0, 0, 0], (0, 0), &[]);
        data[32..36].copy_from_slice(&0u32.to_le_bytes());
        data[104..120].fill(0);
        let ev = format.decode(4_000_000_000, 1, &data).unwrap().unwrap();
        assert_eq!((ev.target.as_str(), ev.callee.as_str()), ("cr_target", "kfree"));
        assert_eq!((ev.returned, ev.start_ns, ev.duration_ns), (false, 4_000_000_000, 0));
        // A call that returns keeps its own entry time.
        let data = record("kmalloc", [64, 0xcc0, 0, 0, 0, 0], (0xffff_8880_2000_0000, 0), &[]);
        assert_eq!(format.decode(9_000_000_000, 1, &data).unwrap().unwrap().start_ns, 5_000_000_123_000);
    }

    #[test]
    fn typed_callee_json() {
        let format = HpCallFormat::new(&EventFormat::parse(FORMAT).unwrap()).unwrap();
        let mut r = renderer();
        let data = record("kstrtoint", [0xffff_8880_1000_0000, 10, 0x10, 0, 0, 0], (0, 0), &encoded(&[Some(b"12")]));
        let ev = format.decode(1, 0, &data).unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&json::call(&r.json(&ev))).unwrap();
        assert_eq!(v["prototype"], "int kstrtoint(const char *s, unsigned int base, int *res)");
        assert_eq!(v["args"][0]["kind"], "string");
        assert_eq!(v["args"][0]["type"], "const char *");
        assert_eq!(v["args"][0]["string"], "12");
        assert_eq!(v["args"][0]["truncated"], false);
        assert_eq!(v["args"][0]["text"], "\"12\"");
        assert_eq!(v["args"][1]["kind"], "uint");
        assert_eq!(v["args"][1]["text"], "10");
        assert_eq!(v["args"].as_array().unwrap().len(), 3);
        assert_eq!((v["ret"].as_u64(), v["ret2"].as_u64(), v["ret_text"].as_str()), (Some(0), Some(0), Some("0")));
        let data = record("mutex_unlock", [0x10, 0, 0, 0, 0, 0], (9, 0), &[]);
        let ev = format.decode(1, 0, &data).unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&json::call(&r.json(&ev))).unwrap();
        assert_eq!((v["returned"].as_bool(), v["ret"].as_u64(), v["ret_text"].is_null()), (Some(true), Some(9), true));
    }
}
