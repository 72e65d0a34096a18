//! Pages of the kernel's ring buffer, as `per_cpu/cpuN/trace_pipe_raw` hands
//! them out: one sub-buffer per read.
//!
//! A page is a header (`events/header_page`: a u64 timestamp, a `local_t`
//! commit, then the data) followed by events, each with a 32-bit header
//! (`events/header_event`): `type_len` in the low bits, `time_delta` in the
//! rest. `type_len` 1..=28 is a data event of `type_len * 4` bytes; 0 is a
//! data event whose length is in the next u32 (that u32 included); the
//! special types are padding (a discarded event, or the end of the page when
//! its `time_delta` is 0), a time extend (a delta too wide for 27 bits, in
//! `array[0] << 27 | time_delta`) and an absolute time stamp (59 bits, the
//! top five taken from the running time). Each data event's time is the
//! page's timestamp plus every delta before it, its own included.
//!
//! The commit word's bit 31 says events were lost before this page (an
//! overwriting buffer) and bit 30 that their count follows the data.
//! Little-endian only: hpctl is built for x86_64.

use crate::format::{HeaderLayout, PageLayout};

const MISSED_EVENTS: u64 = 1 << 31;
const MISSED_STORED: u64 = 1 << 30;
const COMMIT_MASK: u64 = (1 << 30) - 1;
/// Bits 59..63 of a time, which an absolute time stamp event does not store.
const TS_MSB: u64 = 0xf8 << 56;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub page: PageLayout,
    pub header: HeaderLayout,
}

impl Layout {
    pub fn page_size(&self) -> usize {
        self.page.page_size()
    }
}

/// Events lost before this page (only an overwriting buffer loses them so).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missed {
    None,
    /// Some, count unknown (no room on the page to store it).
    Unknown,
    Count(u64),
}

/// One data event: its time and its payload (the trace entry: common_type first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub ts: u64,
    pub data: &'a [u8],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<'a> {
    pub timestamp: u64,
    /// Bytes of events on the page.
    pub commit: usize,
    pub missed: Missed,
    pub records: Vec<Record<'a>>,
    /// Set when the page stopped making sense; the records before it stand.
    pub problem: Option<String>,
}

fn read_uint(buf: &[u8], offset: usize, size: usize) -> Option<u64> {
    let bytes = buf.get(offset..offset.checked_add(size)?)?;
    let mut le = [0u8; 8];
    le[..size.min(8)].copy_from_slice(&bytes[..size.min(8)]);
    Some(u64::from_le_bytes(le))
}

fn u32_at(buf: &[u8], offset: usize) -> Option<u32> {
    read_uint(buf, offset, 4).map(|v| v as u32)
}

/// Parses one page. `buf` is what one read returned (at least the header).
pub fn parse_page<'a>(layout: &Layout, buf: &'a [u8]) -> Page<'a> {
    let p = &layout.page;
    let h = &layout.header;
    let mut page = Page { timestamp: 0, commit: 0, missed: Missed::None, records: Vec::new(), problem: None };
    let (Some(timestamp), Some(commit_word)) =
        (read_uint(buf, p.timestamp_offset, p.timestamp_size), read_uint(buf, p.commit_offset, p.commit_size))
    else {
        page.problem = Some(format!("short page: {} bytes", buf.len()));
        return page;
    };
    page.timestamp = timestamp;
    let commit = (commit_word & COMMIT_MASK) as usize;
    page.commit = commit;
    let available = buf.len().saturating_sub(p.data_offset).min(p.data_size);
    if commit > available {
        page.problem = Some(format!("commit {commit} beyond the page's {available} data bytes"));
        return page;
    }
    let data = &buf[p.data_offset..p.data_offset + commit];
    if commit_word & MISSED_EVENTS != 0 {
        page.missed = if commit_word & MISSED_STORED != 0 {
            read_uint(buf, p.data_offset + commit, p.commit_size).map_or(Missed::Unknown, Missed::Count)
        } else {
            Missed::Unknown
        };
    }

    let type_mask = (1u32 << h.type_len_bits) - 1;
    let shift = h.type_len_bits;
    let delta_bits = h.time_delta_bits;
    let mut ts = timestamp;
    let mut pos = 0usize;
    while pos + 4 <= data.len() {
        let header = u32_at(data, pos).unwrap_or(0);
        let type_len = header & type_mask;
        let delta = u64::from(header >> shift);
        let array0 = u32_at(data, pos + 4);
        let need_array0 = |what: &str| format!("{what} at {pos} has no length word");
        if type_len == h.padding {
            if delta == 0 {
                break; // the rest of the page is empty
            }
            let Some(len) = array0 else {
                page.problem = Some(need_array0("padding"));
                break;
            };
            // A discarded event: its delta does not count (the kernel's reader skips it too).
            pos += 4 + len as usize;
        } else if type_len == h.time_extend {
            let Some(high) = array0 else {
                page.problem = Some(need_array0("time extend"));
                break;
            };
            ts = ts.wrapping_add((u64::from(high) << delta_bits) | delta);
            pos += 8;
        } else if type_len == h.time_stamp {
            let Some(high) = array0 else {
                page.problem = Some(need_array0("time stamp"));
                break;
            };
            let mut abs = (u64::from(high) << delta_bits) | delta;
            if ts & TS_MSB != 0 {
                abs |= ts & TS_MSB;
                if abs < ts {
                    abs = abs.wrapping_add(1 << 59);
                }
            }
            ts = abs;
            pos += 8;
        } else if type_len == 0 {
            let Some(len) = array0 else {
                page.problem = Some(need_array0("event"));
                break;
            };
            let len = len as usize;
            if len < 4 || pos + 4 + len > data.len() {
                page.problem = Some(format!("event at {pos} of length {len} overruns commit {commit}"));
                break;
            }
            ts = ts.wrapping_add(delta);
            page.records.push(Record { ts, data: &data[pos + 8..pos + 4 + len] });
            pos += 4 + len;
        } else if type_len <= h.data_max_type_len {
            let len = type_len as usize * 4;
            if pos + 4 + len > data.len() {
                page.problem = Some(format!("event at {pos} of length {len} overruns commit {commit}"));
                break;
            }
            ts = ts.wrapping_add(delta);
            page.records.push(Record { ts, data: &data[pos + 4..pos + 4 + len] });
            pos += 4 + len;
        } else {
            page.problem = Some(format!("unknown event type {type_len} at {pos}"));
            break;
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            page: PageLayout {
                timestamp_offset: 0,
                timestamp_size: 8,
                commit_offset: 8,
                commit_size: 8,
                data_offset: 16,
                data_size: 4080,
            },
            header: HeaderLayout::default(),
        }
    }

    fn page(ts: u64, commit_flags: u64, events: &[u32]) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        buf[..8].copy_from_slice(&ts.to_le_bytes());
        let commit = events.len() as u64 * 4;
        buf[8..16].copy_from_slice(&(commit | commit_flags).to_le_bytes());
        for (i, w) in events.iter().enumerate() {
            buf[16 + i * 4..20 + i * 4].copy_from_slice(&w.to_le_bytes());
        }
        buf
    }

    const fn hdr(type_len: u32, delta: u32) -> u32 {
        type_len | (delta << 5)
    }

    #[test]
    fn small_and_large_events_and_time() {
        let buf = page(
            1000,
            0,
            &[
                hdr(1, 5),
                0xaaaa,
                hdr(0, 7),
                12,
                0xb1,
                0xb2,
                hdr(30, 3),
                1,
                hdr(1, 0),
                0xcccc,
                // A discarded event: array[0] = its length after the header.
                hdr(29, 9),
                8,
                0xdead,
                hdr(31, 4),
                0,
                hdr(2, 1),
                1,
                2,
            ],
        );
        let p = parse_page(&layout(), &buf);
        assert_eq!(p.problem, None);
        let got: Vec<(u64, usize)> = p.records.iter().map(|r| (r.ts, r.data.len())).collect();
        // 1000+5; +7; extend 1<<27 | 3, then +0; padding adds nothing; absolute 4, then +1.
        assert_eq!(got, [(1005, 4), (1012, 8), (1012 + (1 << 27) + 3, 4), (5, 8)]);
        assert_eq!(p.records[1].data, &[0xb1, 0, 0, 0, 0xb2, 0, 0, 0]);
    }

    #[test]
    fn null_padding_ends_the_page() {
        let buf = page(0, 0, &[hdr(1, 1), 1, hdr(29, 0), 0, hdr(1, 1), 1]);
        assert_eq!(parse_page(&layout(), &buf).records.len(), 1);
    }

    #[test]
    fn missed_events_and_bad_lengths() {
        let mut buf = page(0, MISSED_EVENTS | MISSED_STORED, &[hdr(1, 1), 1]);
        buf[16 + 8..16 + 16].copy_from_slice(&42u64.to_le_bytes());
        let p = parse_page(&layout(), &buf);
        assert_eq!((p.commit, p.missed, p.records.len()), (8, Missed::Count(42), 1));
        let buf = page(0, MISSED_EVENTS, &[]);
        assert_eq!(parse_page(&layout(), &buf).missed, Missed::Unknown);
        let buf = page(0, 0, &[hdr(0, 1), 400, 0]);
        let p = parse_page(&layout(), &buf);
        assert!(p.problem.unwrap().contains("overruns"));
        let buf = page(0, 0, &[hdr(1, 1), 1, hdr(3, 0), 1]);
        let p = parse_page(&layout(), &buf);
        assert_eq!(p.records.len(), 1);
        assert!(p.problem.is_some());
        assert!(parse_page(&layout(), &buf[..10]).problem.is_some());
    }

    #[test]
    fn absolute_time_keeps_the_top_bits() {
        let base = 0x0800_0000_0000_0000u64 | 100;
        let buf = page(base, 0, &[hdr(31, 50), 0, hdr(1, 0), 1]);
        let p = parse_page(&layout(), &buf);
        assert_eq!(p.records[0].ts, (2 << 59) | 50, "wrapped past the top bits");
    }
}
