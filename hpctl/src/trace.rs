//! `hpctl trace`: stream hp_call events from an instance of our own, count
//! what arrived and what was lost, and sum it up.
//!
//! Accounting, per target and function: hp_patcher's `stats` are read before
//! the event is enabled and after it is disabled and every CPU drained, so
//! every call in between is either an event it wrote (`events`) or one it
//! could not (`dropped`). An event written is either received here or lost
//! in the ring buffer: `ring_dropped = events(end - start) - received`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hp_core::catalogue::KernelConfig;

use crate::btf::Prototypes;
use crate::device::{self, Command};
use crate::event::{CallEvent, Comms, HpCallFormat, Renderer};
use crate::format::{EventFormat, HeaderLayout, PageLayout};
use crate::json::{self, CpuDrops, FunctionSummary, Summary, Totals};
use crate::records::{parse_reply, Func, Info};
use crate::ringbuf::{parse_page, Layout};
use crate::symbols::Kallsyms;
use crate::tracefs::{self, CpuReader, CpuStats, Instance, ReadOutcome};

pub struct Options {
    /// Only these targets (empty: all).
    pub modules: Vec<String>,
    /// Only these functions (empty: all).
    pub functions: Vec<String>,
    pub json: bool,
    pub buffer_kb: u32,
    pub duration: Option<Duration>,
    /// Also write what was read, as a capture directory (src/capture.rs).
    pub save_raw: Option<PathBuf>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGINT and SIGTERM set STOP; no SA_RESTART, so a sleep is cut short.
fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a handler that only stores an atomic.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

fn module_stats() -> Result<Vec<Func>> {
    let reply = device::send(&Command::Stats { module: None })?;
    Func::all(&parse_reply(&reply)?)
}

/// Everything the stream keeps while it runs.
struct Stream {
    opts: Options,
    renderer: Renderer,
    format: HpCallFormat,
    layout: Layout,
    out: io::BufWriter<io::Stdout>,
    /// Events received per (target, callee), shown or not.
    received: HashMap<(String, String), u64>,
    filtered_out: u64,
    bad_pages: u64,
    problems_shown: u32,
    kallsyms_loaded: Instant,
    output_closed: bool,
    /// cpu<N>.raw of a capture directory, by CPU.
    raw_files: HashMap<u32, File>,
}

impl Stream {
    fn wanted(&self, ev: &CallEvent) -> bool {
        (self.opts.modules.is_empty() || self.opts.modules.contains(&ev.target))
            && (self.opts.functions.is_empty() || self.opts.functions.contains(&ev.callee))
    }

    fn problem(&mut self, msg: String) {
        self.bad_pages += 1;
        if self.problems_shown < 5 {
            self.problems_shown += 1;
            eprintln!("hpctl: {msg}");
        }
    }

    fn page(&mut self, cpu: u32, buf: &[u8]) {
        if let Some(file) = self.raw_files.get_mut(&cpu) {
            if let Err(e) = file.write_all(buf) {
                eprintln!("hpctl: saving cpu{cpu}'s pages: {e}; no longer saving");
                self.raw_files.clear();
            }
        }
        let page = parse_page(&self.layout, buf);
        if let Some(p) = &page.problem {
            self.problem(format!("cpu{cpu}: unreadable ring-buffer page: {p}"));
        }
        for record in &page.records {
            let ev = match self.format.decode(record.ts, cpu, record.data) {
                Ok(Some(ev)) => ev,
                Ok(None) => continue,
                Err(e) => {
                    self.problem(format!("cpu{cpu}: undecodable hp_call record: {e:#}"));
                    continue;
                }
            };
            if self.wanted(&ev) {
                if self.renderer.symbols.lookup_in_cached(ev.site, &ev.target).is_none()
                    && self.kallsyms_loaded.elapsed() > Duration::from_secs(1)
                {
                    // A module loaded since (follow): look again, at most once a second.
                    self.renderer.symbols = Kallsyms::load();
                    self.kallsyms_loaded = Instant::now();
                }
                let line = if self.opts.json { json::call(&self.renderer.json(&ev)) } else { self.renderer.human(&ev) };
                self.emit(&line);
            } else {
                self.filtered_out += 1;
            }
            // The event's own names become the key (no copies made).
            *self.received.entry((ev.target, ev.callee)).or_default() += 1;
        }
    }

    fn emit(&mut self, line: &str) {
        if !self.output_closed && writeln!(self.out, "{line}").is_err() {
            // stdout closed (`| head`): stop, and still clean up.
            self.output_closed = true;
            STOP.store(true, Ordering::Relaxed);
        }
    }

    fn flush(&mut self) {
        if !self.output_closed && self.out.flush().is_err() {
            self.output_closed = true;
            STOP.store(true, Ordering::Relaxed);
        }
    }

    /// Reads each CPU until it has nothing (or `max_pages`); pages read.
    fn read_round(&mut self, readers: &mut [CpuReader], buf: &mut [u8], max_pages: usize) -> Result<usize> {
        let mut pages = 0;
        for reader in readers.iter_mut() {
            for _ in 0..max_pages {
                match reader.read_page(buf)? {
                    ReadOutcome::Page(n) => {
                        pages += 1;
                        self.page(reader.cpu, &buf[..n]);
                    }
                    ReadOutcome::Empty => break,
                }
            }
        }
        self.flush();
        Ok(pages)
    }
}

fn drops_total(stats: &[(u32, CpuStats)]) -> (u64, u64) {
    stats.iter().fold((0, 0), |(o, d), (_, s)| (o + s.overrun, d + s.dropped_events))
}

pub fn run(opts: Options) -> Result<()> {
    // From the start: a Ctrl-C during setup still removes the instance.
    install_signal_handlers();
    let info = Info::from_records(&parse_reply(&device::send(&Command::Info)?)?)?;
    let root = tracefs::root()?;
    tracefs::remove_stale(&root);
    let mut instance = Instance::create(&root, opts.buffer_kb)?;
    instance.check_event()?;
    let (header_page, header_event, format_text) = instance.descriptions()?;
    let layout = Layout { page: PageLayout::parse(&header_page)?, header: HeaderLayout::parse(&header_event)? };
    let format = HpCallFormat::new(&EventFormat::parse(&format_text).context("parsing hp_call's format")?)?;
    let mut readers = instance.open_readers()?;
    let cpus: Vec<u32> = readers.iter().map(|r| r.cpu).collect();
    let what = describe(&opts);
    let json_out = opts.json;
    let duration = opts.duration;
    let save_raw = opts.save_raw.clone();
    let mut stream = Stream {
        opts,
        renderer: Renderer {
            gfp: info.gfp.clone(),
            config: KernelConfig { slab_buckets: info.slab_buckets },
            symbols: Kallsyms::load(),
            comms: Comms::new(Some(root.join("saved_cmdlines").display().to_string())),
            prototypes: Prototypes::live(),
        },
        format,
        layout,
        out: io::BufWriter::new(io::stdout()),
        received: HashMap::new(),
        filtered_out: 0,
        bad_pages: 0,
        problems_shown: 0,
        kallsyms_loaded: Instant::now(),
        output_closed: false,
        raw_files: HashMap::new(),
    };
    if let Some(dir) = &save_raw {
        stream.raw_files = start_capture(dir, &cpus, [&header_page, &header_event, &format_text])?;
    }
    let mut buf = vec![0u8; layout.page_size()];

    let start_stats = module_stats()?;
    instance.set_enabled(true)?;
    let started = Instant::now();
    eprintln!("hpctl: tracing {what}, Ctrl-C to stop");

    let mut last_drops = 0u64;
    let mut last_check = Instant::now();
    let mut check_drops = |stream: &mut Stream, stats: &[(u32, CpuStats)]| {
        let (overrun, dropped) = drops_total(stats);
        let total = overrun + dropped;
        if total > last_drops {
            let new = total - last_drops;
            eprintln!(
                "hpctl: ring buffer lost {new} more events ({total} in all: overrun {overrun}, dropped events {dropped}); a larger --buffer-kb may help"
            );
            if json_out {
                let per_cpu = stats
                    .iter()
                    .map(|(cpu, s)| CpuDrops { cpu: *cpu, overrun: s.overrun, dropped_events: s.dropped_events })
                    .collect();
                let d = json::Drop { elapsed_s: started.elapsed().as_secs_f64(), total, new, per_cpu };
                stream.emit(&json::drop(&d));
                stream.flush();
            }
            last_drops = total;
        }
    };

    let mut result = Ok(());
    while !STOP.load(Ordering::Relaxed) && duration.is_none_or(|d| started.elapsed() < d) {
        let pages = match stream.read_round(&mut readers, &mut buf, 64) {
            Ok(p) => p,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        if last_check.elapsed() >= Duration::from_secs(1) {
            check_drops(&mut stream, &instance.stats(&cpus));
            last_check = Instant::now();
        }
        if pages == 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // The end: no new events, everything in the buffers read, counters final.
    let disabled = instance.set_enabled(false);
    // A call that passed the enabled check just before may still be writing its event.
    std::thread::sleep(Duration::from_millis(100));
    if result.is_ok() {
        result = stream.read_round(&mut readers, &mut buf, usize::MAX).map(drop);
    }
    let final_stats = instance.stats(&cpus);
    check_drops(&mut stream, &final_stats);
    drop(readers);
    let removed = instance.remove();
    let end_stats = module_stats();
    if let Some(dir) = &save_raw {
        stream.raw_files.clear();
        if let Err(e) = finish_capture(dir, &stream.received) {
            eprintln!("hpctl: saving the capture's info files: {e:#}");
        }
    }
    result?;
    disabled?;
    removed?;
    let end_stats = end_stats?;

    let (overrun, dropped_events) = drops_total(&final_stats);
    let summary = summarize(
        &start_stats,
        &end_stats,
        &stream.received,
        SummaryCounts {
            elapsed_s: started.elapsed().as_secs_f64(),
            filtered_out: stream.filtered_out,
            overrun,
            dropped_events,
            bad_pages: stream.bad_pages,
        },
    );
    if json_out {
        stream.emit(&json::summary(&summary));
        stream.flush();
    }
    eprintln!("hpctl: {}", summary_line(&summary));
    Ok(())
}

/// The capture directory's description files, and one cpu<N>.raw per CPU.
fn start_capture(dir: &Path, cpus: &[u32], texts: [&String; 3]) -> Result<HashMap<u32, File>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in ["header_page", "header_event", "format"].iter().zip(texts) {
        std::fs::write(dir.join(name), text).with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    let info = device::send(&Command::Info)?;
    std::fs::write(dir.join("info"), info)?;
    cpus.iter()
        .map(|&cpu| {
            let path = dir.join(format!("cpu{cpu}.raw"));
            Ok((cpu, File::create(&path).with_context(|| format!("creating {}", path.display()))?))
        })
        .collect()
}

/// The symbols of the targets seen and the names of the tasks that called.
fn finish_capture(dir: &Path, received: &HashMap<(String, String), u64>) -> Result<()> {
    let mut targets: Vec<&str> = received.keys().map(|(t, _)| t.as_str()).collect();
    targets.sort_unstable();
    targets.dedup();
    let kallsyms = tracefs::read_file(Path::new("/proc/kallsyms"))?;
    let mine: String = kallsyms
        .lines()
        .filter(|l| targets.iter().any(|t| l.ends_with(&format!("[{t}]"))))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.join("kallsyms"), mine)?;
    let mut comms = String::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        if !entry.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        for task in std::fs::read_dir(entry.path().join("task")).into_iter().flatten().flatten() {
            if let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) {
                comms.push_str(&format!("{} {}\n", task.file_name().to_string_lossy(), comm.trim_end()));
            }
        }
    }
    std::fs::write(dir.join("comms"), comms)?;
    Ok(())
}

fn describe(opts: &Options) -> String {
    let mut s = if opts.modules.is_empty() { "all targets".to_string() } else { opts.modules.join(", ") };
    if !opts.functions.is_empty() {
        s.push_str(&format!(" ({})", opts.functions.join(", ")));
    }
    s
}

pub struct SummaryCounts {
    pub elapsed_s: f64,
    pub filtered_out: u64,
    pub overrun: u64,
    pub dropped_events: u64,
    pub bad_pages: u64,
}

/// Per (target, function): what arrived, and the module's counters' growth.
/// Rows follow the module's own order, then functions only seen in events.
pub fn summarize(
    start: &[Func],
    end: &[Func],
    received: &HashMap<(String, String), u64>,
    counts: SummaryCounts,
) -> Summary {
    let mut keys: Vec<(String, String)> = end.iter().map(|f| (f.module.clone(), f.name.clone())).collect();
    let mut extra: Vec<(String, String)> = received.keys().filter(|k| !keys.contains(k)).cloned().collect();
    extra.sort();
    keys.extend(extra);
    let find =
        |list: &[Func], key: &(String, String)| list.iter().find(|f| f.module == key.0 && f.name == key.1).cloned();
    let mut functions = Vec::new();
    let mut totals = Totals::default();
    for key in keys {
        let got = received.get(&key).copied().unwrap_or(0);
        let (s, e) = (find(start, &key), find(end, &key));
        // A target attached meanwhile started from 0; one gone has no end (counted as no growth).
        let delta = |field: fn(&Func) -> u64| -> u64 {
            match (&s, &e) {
                (_, None) => 0,
                (None, Some(e)) => field(e),
                (Some(s), Some(e)) => field(e).saturating_sub(field(s)),
            }
        };
        let f = FunctionSummary {
            target: key.0,
            function: key.1,
            received: got,
            ring_dropped: delta(|f| f.events) as i64 - got as i64,
            module_dropped: delta(|f| f.dropped),
            module_events: delta(|f| f.events),
            hits: delta(|f| f.hits),
            missed: delta(|f| f.missed),
        };
        totals.received += f.received;
        totals.ring_dropped += f.ring_dropped;
        totals.module_dropped += f.module_dropped;
        totals.module_events += f.module_events;
        totals.hits += f.hits;
        totals.missed += f.missed;
        functions.push(f);
    }
    Summary {
        elapsed_s: (counts.elapsed_s * 1000.0).round() / 1000.0,
        received: totals.received,
        filtered_out: counts.filtered_out,
        ring_dropped: counts.overrun + counts.dropped_events,
        overrun: counts.overrun,
        dropped_events: counts.dropped_events,
        bad_pages: counts.bad_pages,
        functions,
        totals,
    }
}

/// The one line on stderr at the end.
pub fn summary_line(s: &Summary) -> String {
    let targets: Vec<&str> = {
        let mut t: Vec<&str> = s.functions.iter().map(|f| f.target.as_str()).collect();
        t.dedup();
        t
    };
    let name = |f: &FunctionSummary| {
        if targets.len() > 1 {
            format!("{}:{}", f.target, f.function)
        } else {
            f.function.clone()
        }
    };
    let list = |value: &dyn Fn(&FunctionSummary) -> i64| -> String {
        let items: Vec<String> =
            s.functions.iter().filter(|f| value(f) != 0).map(|f| format!("{}={}", name(f), value(f))).collect();
        if items.is_empty() {
            "none".to_string()
        } else {
            items.join(" ")
        }
    };
    let mut line = format!("{} events received", s.received);
    if s.filtered_out > 0 {
        line.push_str(&format!(" ({} filtered out)", s.filtered_out));
    }
    line.push_str(&format!(
        ", {} ring-buffer drops (overrun {}, dropped events {}); received: {}; ring losses: {}; module dropped: {}",
        s.ring_dropped,
        s.overrun,
        s.dropped_events,
        list(&|f| f.received as i64),
        list(&|f| f.ring_dropped),
        list(&|f| f.module_dropped as i64),
    ));
    if s.bad_pages > 0 {
        line.push_str(&format!("; {} unreadable pages or records", s.bad_pages));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn func(name: &str, hits: u64, events: u64, dropped: u64) -> Func {
        Func { module: "cr_target".into(), name: name.into(), hits, inflight: 0, events, dropped, missed: 0 }
    }

    #[test]
    fn accounting_adds_up() {
        let start = [func("kfree", 10, 10, 0), func("__kmalloc_noprof", 5, 4, 1)];
        let end = [func("kfree", 110, 105, 5), func("__kmalloc_noprof", 55, 54, 1)];
        let mut received = HashMap::new();
        received.insert(("cr_target".to_string(), "kfree".to_string()), 93);
        received.insert(("cr_target".to_string(), "__kmalloc_noprof".to_string()), 50);
        let counts = SummaryCounts { elapsed_s: 2.0, filtered_out: 0, overrun: 0, dropped_events: 2, bad_pages: 0 };
        let s = summarize(&start, &end, &received, counts);
        for f in &s.functions {
            assert_eq!(f.hits as i64, f.received as i64 + f.ring_dropped + f.module_dropped as i64, "{}", f.function);
        }
        assert_eq!((s.totals.ring_dropped, s.totals.module_dropped, s.ring_dropped), (2, 5, 2));
        assert_eq!(
            summary_line(&s),
            "143 events received, 2 ring-buffer drops (overrun 0, dropped events 2); \
             received: kfree=93 __kmalloc_noprof=50; ring losses: kfree=2; module dropped: kfree=5"
        );
    }
}
