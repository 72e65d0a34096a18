//! The ring-buffer parser and hp_call decoder against a binary sample laid
//! out as trace_pipe_raw hands it out on x86_64 6.12 (tests/data/sample-6.12).
//!
//! The sample's bytes come from the small writer below, written from the
//! kernel's layout (kernel/trace/ring_buffer.c, the struct of a TRACE_EVENT)
//! with offsets of its own, not from hpctl's parser. The test checks the
//! committed files are what it writes (`HPCTL_REGEN=1` rewrites them), that
//! the parser finds exactly the calls it put in, and the rendered output
//! against goldens (`HPCTL_BLESS=1` rewrites those).

use std::path::{Path, PathBuf};

use hp_core::catalogue::index_of;
use hpctl::capture::{decode_dir, renderer_for};
use hpctl::event::CallEvent;
use hpctl::ringbuf::Missed;

const PAGE: usize = 4096;
const HEADER: usize = 16;
const EVENT_ID: u16 = 1894;
const OTHER_ID: u16 = 17;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sample-6.12")
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Writes one sub-buffer the way the kernel fills it.
struct PageWriter {
    bytes: Vec<u8>,
    ts: u64,
    /// The calls written, with the time the kernel gave them.
    calls: Vec<CallEvent>,
    cpu: u32,
}

impl PageWriter {
    fn new(cpu: u32, page_ts: u64) -> PageWriter {
        let mut bytes = vec![0u8; PAGE];
        bytes[..8].copy_from_slice(&page_ts.to_le_bytes());
        PageWriter { bytes: bytes[..HEADER].to_vec(), ts: page_ts, calls: Vec::new(), cpu }
    }

    fn used(&self) -> usize {
        self.bytes.len() - HEADER
    }

    fn word(&mut self, w: u32) {
        self.bytes.extend_from_slice(&w.to_le_bytes());
    }

    fn header(&mut self, type_len: u32, delta: u32) {
        assert!(type_len < 32 && delta < (1 << 27));
        self.word(type_len | (delta << 5));
    }

    /// A data event: `type_len` = words when the payload fits in 28 words
    /// (112 bytes), else 0 and the length word (itself included) first.
    fn data(&mut self, delta: u32, payload: &[u8]) {
        let padded = payload.len().div_ceil(4) * 4;
        if padded <= 112 {
            self.header((padded / 4) as u32, delta);
        } else {
            self.header(0, delta);
            self.word(padded as u32 + 4);
        }
        self.bytes.extend_from_slice(payload);
        self.bytes.resize(self.bytes.len() + padded - payload.len(), 0);
        self.ts += u64::from(delta);
    }

    fn time_extend(&mut self, delta: u64) {
        self.header(30, (delta & ((1 << 27) - 1)) as u32);
        self.word((delta >> 27) as u32);
        self.ts += delta;
    }

    fn time_stamp(&mut self, abs: u64) {
        self.header(31, (abs & ((1 << 27) - 1)) as u32);
        self.word((abs >> 27) as u32);
        self.ts = abs;
    }

    /// A discarded event: padding whose array[0] is its old length.
    fn discarded(&mut self, delta: u32, payload_words: u32) {
        self.header(29, delta.max(1));
        self.word(payload_words * 4 + 4);
        for i in 0..payload_words {
            self.word(0xdead_0000 + i);
        }
    }

    fn other_event(&mut self, delta: u32) {
        let mut p = Vec::new();
        p.extend_from_slice(&OTHER_ID.to_le_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&7i32.to_le_bytes());
        p.extend_from_slice(&0x1234_5678u64.to_le_bytes());
        self.data(delta, &p);
    }

    #[allow(clippy::too_many_arguments)]
    fn call(&mut self, delta: u32, pid: i32, site: u64, callee: &str, args: [u64; 6], ret: Option<(u64, u64)>) {
        let target = "cr_target";
        let func = index_of(callee).map_or(200, |i| i as u32);
        // struct trace_event_raw_hp_call: trace_entry (8), then the fields at
        // the offsets the format file lists, strings after the 112 fixed bytes.
        let mut p = vec![0u8; 112];
        p[0..2].copy_from_slice(&EVENT_ID.to_le_bytes());
        p[2] = 0x1; // flags: irqs off
        p[3] = 0x1; // preempt count
        p[4..8].copy_from_slice(&pid.to_le_bytes());
        let target_loc = ((target.len() as u32 + 1) << 16) | 112;
        let callee_off = 112 + target.len() as u32 + 1;
        let callee_loc = ((callee.len() as u32 + 1) << 16) | callee_off;
        p[8..12].copy_from_slice(&target_loc.to_le_bytes());
        p[16..24].copy_from_slice(&site.to_le_bytes());
        p[24..28].copy_from_slice(&callee_loc.to_le_bytes());
        p[28..32].copy_from_slice(&func.to_le_bytes());
        p[32..36].copy_from_slice(&u32::from(ret.is_some()).to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            p[40 + 8 * i..48 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (ret_value, duration) = ret.unwrap_or((0, 0));
        let end = self.ts + u64::from(delta);
        let start = end - duration - 150;
        p[88..96].copy_from_slice(&ret_value.to_le_bytes());
        p[96..104].copy_from_slice(&start.to_le_bytes());
        p[104..112].copy_from_slice(&duration.to_le_bytes());
        p.extend_from_slice(target.as_bytes());
        p.push(0);
        p.extend_from_slice(callee.as_bytes());
        p.push(0);
        self.data(delta, &p);
        self.calls.push(CallEvent {
            ts: end,
            cpu: self.cpu,
            pid,
            target: target.to_string(),
            site,
            callee: callee.to_string(),
            func,
            returned: ret.is_some(),
            args,
            ret: ret_value,
            // The sample's format (6.12, before issue 7) has neither.
            ret2: None,
            start_ns: start,
            duration_ns: duration,
            strings: None,
        });
    }

    /// What a reader gets for a page it swapped out of a full buffer: the
    /// writer moved on, leaving padding (delta 1) to the end, in commit.
    fn full(mut self) -> (Vec<u8>, Vec<CallEvent>) {
        let rest = 4080 - self.used();
        if rest >= 8 {
            self.header(29, 1);
            self.word(rest as u32 - 4);
            self.bytes.resize(PAGE, 0);
        } else {
            self.bytes.resize(PAGE, 0); // a null padding: type 29, delta 0
            let at = HEADER + 4080 - rest;
            self.bytes[at..at + 4].copy_from_slice(&29u32.to_le_bytes());
        }
        let commit = 4080u64;
        self.bytes[8..16].copy_from_slice(&commit.to_le_bytes());
        (self.bytes, self.calls)
    }

    /// A page copied out from under the writer: commit is what was copied,
    /// the rest zeroed; `missed` sets RB_MISSED_EVENTS (and, with a count,
    /// RB_MISSED_STORED and the count after the data).
    fn partial(mut self, missed: Option<Option<u64>>) -> (Vec<u8>, Vec<CallEvent>) {
        let mut commit = self.used() as u64;
        if let Some(count) = missed {
            if let Some(n) = count {
                self.bytes.extend_from_slice(&n.to_le_bytes());
                commit |= 1 << 30;
            }
            commit |= 1 << 31;
        }
        self.bytes.resize(PAGE, 0);
        self.bytes[8..16].copy_from_slice(&commit.to_le_bytes());
        (self.bytes, self.calls)
    }
}

const CR_ROUND: u64 = 0xffff_ffff_c0a0_1000;
const CR_TIMER: u64 = 0xffff_ffff_c0a0_1400;
const CR_HRTIMER: u64 = 0xffff_ffff_c0a0_1500;
const GFP_KERNEL: u64 = 0xcc0;
const GFP_ATOMIC: u64 = 0x820;
const ZERO: u64 = 0x100;
const OBJ: u64 = 0xffff_8880_04a1_b000;
const CACHE: u64 = 0xffff_8880_0100_4200;

/// (cpu0.raw, cpu1.raw, the calls in them in file order)
fn sample() -> (Vec<u8>, Vec<u8>, Vec<CallEvent>) {
    let mut calls = Vec::new();
    let mut cpu0 = Vec::new();

    // cpu0, page 1: a full page from a busy worker, with a time extend,
    // someone else's small event and a discarded one among the calls.
    let mut p = PageWriter::new(0, 5_000_000_000_000);
    p.call(1200, 150, CR_ROUND + 0x9d, "__kmalloc_noprof", [100, GFP_KERNEL, 0, 0, 0, 0], Some((OBJ, 812)));
    p.time_extend(200_000_000);
    p.call(0, 150, CR_ROUND + 0x1c4, "kfree", [OBJ, 7, 7, 7, 7, 7], None);
    p.other_event(40);
    p.discarded(55, 30);
    p.call(
        900,
        150,
        CR_ROUND + 0xe1,
        "__kmalloc_cache_noprof",
        [CACHE, GFP_KERNEL | ZERO, 64, 0, 0, 0],
        Some((OBJ + 0x40, 640)),
    );
    let mut i = 0u64;
    while p.used() + 4 + 4 + 112 + 32 + 8 + 128 <= 4080 {
        let obj = OBJ + 0x1000 * (i + 1);
        match i % 4 {
            0 => p.call(
                1500,
                150,
                CR_ROUND + 0x12a,
                "__kmalloc_node_noprof",
                [256 + i, 0, GFP_KERNEL, 0xffff_ffff, 0, 0],
                Some((obj, 700 + i)),
            ),
            1 => p.call(2100, 150, CR_ROUND + 0x1c4, "kfree", [obj - 0x1000, 0, 0, 0, 0, 0], None),
            2 => p.call(
                1800,
                150,
                CR_ROUND + 0x150,
                "kmem_cache_alloc_node_noprof",
                [CACHE, GFP_KERNEL, 1, 0, 0, 0],
                Some((obj, 1000 + i)),
            ),
            _ => p.call(1700, 150, CR_ROUND + 0x1f0, "kmem_cache_free", [CACHE, obj - 0x1000, 0, 0, 0, 0], None),
        }
        i += 1;
    }
    let (bytes, c) = p.full();
    cpu0.extend(bytes);
    calls.extend(c);

    // cpu0, page 2: the page the writer was still on, copied out at the
    // end of a trace: an absolute time stamp, a call of a function this
    // hpctl does not know, an allocation that failed.
    let mut p = PageWriter::new(0, 5_000_900_000_000);
    p.call(3000, 150, CR_ROUND + 0x9d, "__kmalloc_noprof", [1 << 20, GFP_KERNEL, 0, 0, 0, 0], Some((0, 30_000)));
    p.time_stamp(5_001_500_000_000);
    p.call(10, 150, CR_ROUND + 0x220, "kzalloc_future", [1, 2, 3, 4, 5, 6], Some((0x55, 99)));
    p.call(
        4000,
        0,
        CR_HRTIMER + 0x31,
        "__kmalloc_cache_noprof",
        [CACHE, GFP_ATOMIC, 32, 0, 0, 0],
        Some((OBJ + 0x20, 410)),
    );
    let (bytes, c) = p.partial(None);
    cpu0.extend(bytes);
    calls.extend(c);

    // cpu1: a page after events were lost in an overwriting buffer (7, stored),
    // then one whose lost count did not fit (flag only).
    let mut cpu1 = Vec::new();
    let mut p = PageWriter::new(1, 5_000_000_500_000);
    p.other_event(3);
    p.call(
        700,
        151,
        CR_TIMER + 0x48,
        "__vmalloc_noprof",
        [8192, GFP_KERNEL | ZERO, 0, 0, 0, 0],
        Some((0xffff_c900_0012_0000, 25_000)),
    );
    p.call(900, 151, CR_TIMER + 0x77, "vfree", [0xffff_c900_0012_0000, 0, 0, 0, 0, 0], None);
    let (bytes, c) = p.partial(Some(Some(7)));
    cpu1.extend(bytes);
    calls.extend(c);
    let mut p = PageWriter::new(1, 5_000_100_000_000);
    p.call(
        100,
        151,
        CR_TIMER + 0x48,
        "__vmalloc_noprof",
        [4096, GFP_KERNEL, 0, 0, 0, 0],
        Some((0xffff_c900_0013_0000, 20_000)),
    );
    let (bytes, c) = p.partial(Some(None));
    cpu1.extend(bytes);
    calls.extend(c);
    (cpu0, cpu1, calls)
}

fn check_file(path: &Path, want: &[u8], env: &str) {
    if std::env::var_os(env).is_some() {
        std::fs::write(path, want).unwrap();
    }
    let have = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e} (set {env}=1 to write it)", path.display()));
    assert!(have == want, "{} differs from what the test makes (set {env}=1 to rewrite it)", path.display());
}

#[test]
fn sample_files_are_what_the_writer_makes() {
    let (cpu0, cpu1, _) = sample();
    check_file(&data_dir().join("cpu0.raw"), &cpu0, "HPCTL_REGEN");
    check_file(&data_dir().join("cpu1.raw"), &cpu1, "HPCTL_REGEN");
}

#[test]
fn parser_finds_every_call_with_its_time() {
    let (_, _, calls) = sample();
    let capture = decode_dir(&data_dir()).unwrap();
    assert_eq!(capture.problems, Vec::<String>::new());
    assert_eq!(capture.pages, 4);
    assert_eq!(capture.other_records, 2, "someone else's events are records, not calls");
    assert_eq!(capture.missed, [(1, 0, Missed::Count(7)), (1, 1, Missed::Unknown)]);
    assert!(calls.len() > 30, "the full page holds {} calls", calls.len());
    assert_eq!(capture.events.len(), calls.len());
    for (got, want) in capture.events.iter().zip(&calls) {
        assert_eq!(got, want);
    }
}

#[test]
fn rendered_sample_matches_goldens() {
    let capture = decode_dir(&data_dir()).unwrap();
    let mut renderer = renderer_for(&data_dir()).unwrap();
    let human: String = capture.events.iter().map(|e| renderer.human(e) + "\n").collect();
    let json: String = capture.events.iter().map(|e| hpctl::json::call(&renderer.json(e)) + "\n").collect();
    check_file(&golden_dir().join("trace-sample.txt"), human.as_bytes(), "HPCTL_BLESS");
    check_file(&golden_dir().join("trace-sample.jsonl"), json.as_bytes(), "HPCTL_BLESS");
}
