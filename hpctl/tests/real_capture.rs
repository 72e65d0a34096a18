//! Ring-buffer pages captured from a real kernel (tests/data/markers-6.18:
//! 6.18 x86_64, by live_tracefs.rs's `capture_markers`): `ftrace:print`
//! events from the instance's trace_marker, short ones (type_len 9..28),
//! long ones (type_len 0 and a length word), a 200 ms pause (a time
//! extend), two full pages and the writer's partial one. The parser must
//! give back every marker, in order, with the pause where it was.
//! tests/data/README.md says how to add a capture of hp_call from a guest.

use std::path::Path;

use hpctl::format::{EventFormat, HeaderLayout, PageLayout};
use hpctl::ringbuf::{parse_page, Layout, Missed};

#[test]
fn markers_from_a_real_ring_buffer() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/markers-6.18");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let layout = Layout {
        page: PageLayout::parse(&read("header_page")).unwrap(),
        header: HeaderLayout::parse(&read("header_event")).unwrap(),
    };
    assert_eq!(layout.page_size(), 4096);
    let print = EventFormat::parse(&read("format")).unwrap();
    let buf = print.field("buf").unwrap();
    let raw = std::fs::read(dir.join("cpu0.raw")).unwrap();
    let mut got = Vec::new();
    for chunk in raw.chunks(layout.page_size()) {
        let page = parse_page(&layout, chunk);
        assert_eq!((page.problem.as_deref(), page.missed), (None, Missed::None));
        for r in page.records {
            assert_eq!(u32::from(u16::from_le_bytes([r.data[0], r.data[1]])), print.id);
            let text = r.data[buf.offset..].split(|&b| b == 0).next().unwrap();
            got.push((r.ts, String::from_utf8_lossy(text).trim_end().to_string()));
        }
    }
    let markers = read("markers.txt");
    let want: Vec<&str> = markers.lines().collect();
    let texts: Vec<&str> = got.iter().map(|g| g.1.as_str()).collect();
    assert_eq!(texts, want);
    for pair in got.windows(2) {
        assert!(pair[0].0 <= pair[1].0, "time goes back: {} then {}", pair[0].0, pair[1].0);
    }
    // Markers 29 and 30 are 200 ms apart: the time extend between them.
    let gap = got[30].0 - got[29].0;
    assert!((200_000_000..300_000_000).contains(&gap), "gap {gap} ns");
    assert!(got.windows(2).enumerate().all(|(i, p)| i == 29 || p[1].0 - p[0].0 < 50_000_000));
}
