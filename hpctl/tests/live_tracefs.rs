//! The tracefs instance and the page parser against a real kernel's ring
//! buffer, without hp_patcher: the instance's `trace_marker` writes
//! `ftrace:print` events whose text and time hpctl knows, so every record
//! can be checked. Needs root and tracefs (mounted if it is not), hence
//! ignored by default:
//!
//!     cargo test -p hpctl --test live_tracefs -- --ignored --test-threads=1

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

use hpctl::format::{EventFormat, HeaderLayout, PageLayout};
use hpctl::ringbuf::{parse_page, Layout, Missed};
use hpctl::tracefs::{self, Instance, ReadOutcome};

fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct Marker {
    text: String,
    before: u64,
    after: u64,
}

/// Reads every CPU until empty; returns (cpu, ts, text) of print events.
fn drain(instance: &Instance, layout: &Layout, print: &EventFormat) -> (Vec<(u32, u64, String)>, usize, Vec<String>) {
    let buf_field = print.field("buf").expect("print has buf").clone();
    let mut readers = instance.open_readers().unwrap();
    let mut buf = vec![0u8; layout.page_size()];
    let (mut out, mut pages, mut problems) = (Vec::new(), 0, Vec::new());
    for r in readers.iter_mut() {
        while let ReadOutcome::Page(n) = r.read_page(&mut buf).unwrap() {
            pages += 1;
            assert_eq!(n, layout.page_size(), "trace_pipe_raw hands out whole sub-buffers");
            let page = parse_page(layout, &buf[..n]);
            assert_eq!(page.missed, Missed::None, "overwrite is off");
            problems.extend(page.problem);
            for rec in page.records {
                let id = u16::from_le_bytes([rec.data[0], rec.data[1]]);
                if u32::from(id) != print.id {
                    continue;
                }
                let text = &rec.data[buf_field.offset..];
                let text = text.split(|&b| b == 0).next().unwrap();
                out.push((r.cpu, rec.ts, String::from_utf8_lossy(text).trim_end().to_string()));
            }
        }
    }
    (out, pages, problems)
}

fn setup(buffer_kb: u32) -> (Instance, Layout, EventFormat) {
    let root = tracefs::root().expect("tracefs");
    let instance = Instance::create(&root, buffer_kb).unwrap();
    let (page, header) = instance.layout_text().unwrap();
    let layout = Layout { page: PageLayout::parse(&page).unwrap(), header: HeaderLayout::parse(&header).unwrap() };
    let print = tracefs::read_file(&instance.path.join("events/ftrace/print/format")).unwrap();
    (instance, layout, EventFormat::parse(&print).unwrap())
}

#[test]
#[ignore = "needs root and tracefs"]
fn markers_come_back_with_their_text_and_time() {
    let (mut instance, layout, print) = setup(1024);
    assert!(tracefs::read_file(&instance.path.join("trace_clock")).unwrap().contains("[mono]"));
    let mut marker = OpenOptions::new().write(true).open(instance.path.join("trace_marker")).unwrap();
    let mut written = Vec::new();
    for i in 0..400 {
        // Short ones fit type_len; long ones (> 112 bytes) need the length word.
        let text = format!("hpctl-marker {i} {}", "x".repeat(i * 7 % 300));
        if i == 50 || i == 51 || i == 300 {
            // Gaps beyond 2^27 ns need a time extend.
            std::thread::sleep(Duration::from_millis(200));
        }
        let before = mono_ns();
        marker.write_all(text.as_bytes()).unwrap();
        let after = mono_ns();
        written.push(Marker { text, before, after });
    }
    let (mut got, pages, problems) = drain(&instance, &layout, &print);
    assert_eq!(problems, Vec::<String>::new());
    assert!(pages > 10, "{pages} pages: full ones and the writer's");
    got.sort_by_key(|g| g.1);
    assert_eq!(got.len(), written.len());
    for (g, w) in got.iter().zip(&written) {
        assert_eq!(g.2, w.text.trim_end());
        assert!(w.before <= g.1 && g.1 <= w.after, "{}: ts {} outside {}..{}", w.text, g.1, w.before, w.after);
    }
    let cpus = instance.cpus().unwrap();
    let stats = instance.stats(&cpus);
    assert!(stats.iter().all(|(_, s)| s.overrun == 0 && s.dropped_events == 0), "{stats:?}");
    let path = instance.path.clone();
    // rmdir refuses (EBUSY) while a file of the instance is open.
    assert!(instance.remove().is_err());
    drop(marker);
    instance.remove().unwrap();
    assert!(!path.exists());
}

#[test]
#[ignore = "needs root and tracefs"]
fn a_full_buffer_drops_new_events_and_counts_them() {
    let (mut instance, layout, print) = setup(8);
    // Stay on one CPU, so that one small buffer fills.
    // SAFETY: a zeroed cpu_set_t with one CPU set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    let mut marker = OpenOptions::new().write(true).open(instance.path.join("trace_marker")).unwrap();
    let (mut ok, mut failed) = (0u64, 0u64);
    for i in 0..3000 {
        match marker.write_all(format!("hpctl-fill {i} {}", "y".repeat(100)).as_bytes()) {
            Ok(()) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    let (got, _, problems) = drain(&instance, &layout, &print);
    assert_eq!(problems, Vec::<String>::new());
    let cpus = instance.cpus().unwrap();
    let (overrun, dropped): (u64, u64) =
        instance.stats(&cpus).iter().fold((0, 0), |(o, d), (_, s)| (o + s.overrun, d + s.dropped_events));
    eprintln!("written {ok}, refused {failed}, received {}, overrun {overrun}, dropped events {dropped}", got.len());
    assert!(dropped > 0, "an 8 kB buffer must fill");
    assert_eq!(overrun, 0, "overwrite is off");
    assert_eq!(got.len() as u64 + dropped, 3000);
    // The kept ones are the oldest: the buffer dropped new events.
    assert!(got.iter().any(|g| g.2.starts_with("hpctl-fill 0 ")));
    drop(marker);
    instance.remove().unwrap();
}

/// Saves a real capture for tests/real_capture.rs: `HPCTL_CAPTURE=1 cargo
/// test -p hpctl --test live_tracefs -- --ignored capture`. Pinned to CPU 0;
/// long and short markers, and a 200 ms gap (a time extend).
#[test]
#[ignore = "needs root and tracefs; writes tests/data/markers-<release>"]
fn capture_markers() {
    if std::env::var_os("HPCTL_CAPTURE").is_none() {
        return;
    }
    // SAFETY: a zeroed cpu_set_t with one CPU set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    let (mut instance, layout, _) = setup(64);
    let release = tracefs::read_file(std::path::Path::new("/proc/sys/kernel/osrelease")).unwrap();
    let release: String = release.trim().split('-').next().unwrap().split('.').take(2).collect::<Vec<_>>().join(".");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/markers-{release}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (page, header) = instance.layout_text().unwrap();
    std::fs::write(dir.join("header_page"), page).unwrap();
    std::fs::write(dir.join("header_event"), header).unwrap();
    let format = tracefs::read_file(&instance.path.join("events/ftrace/print/format")).unwrap();
    std::fs::write(dir.join("format"), format).unwrap();
    let mut marker = OpenOptions::new().write(true).open(instance.path.join("trace_marker")).unwrap();
    let mut texts = String::new();
    for i in 0..60 {
        if i == 30 {
            std::thread::sleep(Duration::from_millis(200));
        }
        let text = format!("hpctl-capture {i} {}", "z".repeat(i * 13 % 200));
        marker.write_all(text.as_bytes()).unwrap();
        texts.push_str(text.trim_end());
        texts.push('\n');
    }
    drop(marker);
    std::fs::write(dir.join("markers.txt"), texts).unwrap();
    let mut readers = instance.open_readers().unwrap();
    let mut buf = vec![0u8; layout.page_size()];
    for r in readers.iter_mut() {
        let mut raw = Vec::new();
        while let ReadOutcome::Page(n) = r.read_page(&mut buf).unwrap() {
            raw.extend_from_slice(&buf[..n]);
        }
        if !raw.is_empty() {
            std::fs::write(dir.join(format!("cpu{}.raw", r.cpu)), raw).unwrap();
        }
    }
    drop(readers);
    instance.remove().unwrap();
}
