//! A saved capture, decoded offline: a directory with what a live trace
//! reads, for tests and for `hpctl decode`.
//!
//! ```text
//! header_page, header_event   events/header_page and events/header_event
//! format                      events/hp_patcher/hp_call/format
//! cpu<N>.raw                  per_cpu/cpu<N>/trace_pipe_raw, read whole pages at a time
//! info         (optional)     the reply to `info`: gfp names, slab_buckets
//! kallsyms     (optional)     /proc/kallsyms (module lines suffice)
//! comms        (optional)     "pid comm" lines
//! ```
//!
//! Capturing one in a guest, while a target runs with sink=trace:
//! `hpctl decode` documents the commands (docs/hpctl.md).

use std::path::Path;

use anyhow::{Context, Result};
use hp_core::catalogue::KernelConfig;

use crate::btf::Prototypes;
use crate::event::{CallEvent, Comms, HpCallFormat, Renderer};
use crate::format::{EventFormat, HeaderLayout, PageLayout};
use crate::records::{parse_reply, Info};
use crate::ringbuf::{parse_page, Layout, Missed};
use crate::symbols::Kallsyms;

pub struct Capture {
    pub layout: Layout,
    pub format: HpCallFormat,
    /// Per CPU in file order, CPUs in ascending order.
    pub events: Vec<CallEvent>,
    /// Records of other event types.
    pub other_records: usize,
    pub pages: usize,
    /// (cpu, page index, what the page said about lost events), where it said any.
    pub missed: Vec<(u32, usize, Missed)>,
    pub problems: Vec<String>,
}

fn read(dir: &Path, name: &str) -> Result<String> {
    let path = dir.join(name);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

pub fn decode_dir(dir: &Path) -> Result<Capture> {
    let layout = Layout {
        page: PageLayout::parse(&read(dir, "header_page")?)?,
        header: HeaderLayout::parse(&read(dir, "header_event")?)?,
    };
    let format = HpCallFormat::new(&EventFormat::parse(&read(dir, "format")?)?)?;
    let mut cpus: Vec<u32> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("cpu")?.strip_suffix(".raw")?.parse().ok())
        .collect();
    cpus.sort_unstable();
    let mut capture = Capture {
        layout,
        format,
        events: Vec::new(),
        other_records: 0,
        pages: 0,
        missed: Vec::new(),
        problems: Vec::new(),
    };
    for cpu in cpus {
        let path = dir.join(format!("cpu{cpu}.raw"));
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        for (index, chunk) in bytes.chunks(layout.page_size()).enumerate() {
            capture.pages += 1;
            let page = parse_page(&layout, chunk);
            if page.missed != Missed::None {
                capture.missed.push((cpu, index, page.missed));
            }
            if let Some(p) = page.problem {
                capture.problems.push(format!("cpu{cpu} page {index}: {p}"));
            }
            for r in &page.records {
                match capture.format.decode(r.ts, cpu, r.data) {
                    Ok(Some(ev)) => capture.events.push(ev),
                    Ok(None) => capture.other_records += 1,
                    Err(e) => capture.problems.push(format!("cpu{cpu} page {index}: {e:#}")),
                }
            }
        }
    }
    Ok(capture)
}

/// A renderer from the capture's optional files: without `info`, gfp values
/// print in hex and no bucket argument is assumed.
pub fn renderer_for(dir: &Path) -> Result<Renderer> {
    let (gfp, config) = match std::fs::read_to_string(dir.join("info")) {
        Ok(text) => {
            let info = Info::from_records(&parse_reply(&text)?)?;
            (info.gfp, KernelConfig { slab_buckets: info.slab_buckets })
        }
        Err(_) => (Vec::new(), KernelConfig::default()),
    };
    let symbols = Kallsyms::parse(&std::fs::read_to_string(dir.join("kallsyms")).unwrap_or_default());
    let mut comms = Comms::new(None);
    if let Ok(text) = std::fs::read_to_string(dir.join("comms")) {
        for (pid, comm) in text.lines().filter_map(|l| l.split_once(' ')) {
            if let Ok(pid) = pid.trim().parse() {
                comms.insert(pid, comm.trim());
            }
        }
    }
    // Offline: this machine's BTF need not be the captured kernel's.
    Ok(Renderer { gfp, config, symbols, comms, prototypes: Prototypes::none() })
}
