//! The human tables and the JSON objects of fixed values against the files
//! in tests/golden/ (`HPCTL_BLESS=1 cargo test -p hpctl` rewrites them;
//! review the diff). docs/json-schema.md describes what the .jsonl hold.

use std::collections::HashMap;
use std::path::Path;

use hpctl::json::{self, Arg, Call, CpuDrops, Drop};
use hpctl::records::{parse_reply, Func, Site, Target};
use hpctl::{table, trace};

fn check(name: &str, have: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("HPCTL_BLESS").is_some() {
        std::fs::write(&path, have).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(have == want, "{name} differs from the golden file:\n--- have\n{have}--- want\n{want}");
}

const TARGETS: &str = "\
target name=cr_target state=attached sink=trace follow=1 sites=14 armed=14 hits=1234
target name=ext4 state=attached sink=printk follow=0 sites=268 armed=267 hits=98765432
target name=snd_aloop state=awaited sink=none follow=1 sites=0 armed=0 hits=0
";

const PLAN: &str = "\
site module=cr_target addr=00000000c0ffee12 caller=cr_round+0x9d/0x290 callee=__kmalloc_noprof kind=call state=planned
site module=cr_target addr=00000000c0ffee40 caller=cr_round+0x1c4/0x290 callee=kfree kind=tail state=planned
site module=cr_target addr=00000000c0ffee77 caller=cr_hrtimer_fn+0x31/0x80 callee=__kmalloc_cache_noprof kind=call state=foreign
site module=cr_target addr=00000000c0ffee99 caller=cr_odd+0x12/0x40 callee=kfree kind=call state=jcc
site module=cr_target addr=00000000c0ffeeaa caller=cr_odd+0x22/0x40 callee=vfree kind=call state=jcc
";

const STATS: &str = "\
func module=cr_target name=__kmalloc_noprof hits=1200 inflight=1 events=1190 dropped=10 missed=0
func module=cr_target name=kfree hits=1199 inflight=0 events=1199 dropped=0 missed=2
func module=ext4 name=kmem_cache_alloc_noprof hits=98765432 inflight=3 events=0 dropped=0 missed=0
";

#[test]
fn tables() {
    let targets = Target::all(&parse_reply(TARGETS).unwrap()).unwrap();
    check("status.txt", &table::status(&targets));
    let plan = Site::all(&parse_reply(PLAN).unwrap()).unwrap();
    check("plan.txt", &table::sites(&plan, true));
    let armed = PLAN.replace("state=planned", "state=armed hits=5");
    check("sites.txt", &table::sites(&Site::all(&parse_reply(&armed).unwrap()).unwrap(), false));
    check("stats.txt", &table::stats(&Func::all(&parse_reply(STATS).unwrap()).unwrap()));
    let sentences: String = targets.iter().map(|t| table::attached(t) + "\n").collect();
    check("attach.txt", &sentences);
    assert_eq!(table::status(&[]), "no targets\n");
    assert_eq!(table::sites(&[], true), "no call to a selected catalogue function found\n");
}

#[test]
fn json_records() {
    let targets = Target::all(&parse_reply(TARGETS).unwrap()).unwrap();
    check("target.jsonl", &targets.iter().map(|t| json::target(t) + "\n").collect::<String>());
    let funcs = Func::all(&parse_reply(STATS).unwrap()).unwrap();
    check("func.jsonl", &funcs.iter().map(|f| json::func(f) + "\n").collect::<String>());
    let sites = Site::all(&parse_reply(PLAN).unwrap()).unwrap();
    check("site.jsonl", &sites.iter().map(|s| json::site(s) + "\n").collect::<String>());
}

#[test]
fn json_stream_objects() {
    let call = Call {
        ts_ns: 5_000_000_001_200,
        cpu: 1,
        pid: 150,
        comm: "cr_worker/1".into(),
        target: "cr_target".into(),
        site: "0xffffffffc0a0109d".into(),
        site_symbol: Some("cr_round+0x9d [cr_target]".into()),
        callee: "__kmalloc_node_noprof".into(),
        func: 1,
        args: vec![
            Arg { name: "size".into(), kind: "size", raw: 256, text: "256".into() },
            Arg { name: "b".into(), kind: "ptr", raw: 0, text: "0x0".into() },
            Arg { name: "flags".into(), kind: "gfp", raw: 0xcc0, text: "GFP_KERNEL".into() },
            Arg { name: "node".into(), kind: "node", raw: 0xffff_ffff, text: "-1".into() },
        ],
        regs: [256, 0, 0xcc0, 0xffff_ffff, 0, 0],
        returned: true,
        ret: Some(0xffff_8880_04a1_c000),
        ret_text: Some("0xffff888004a1c000".into()),
        start_ns: 5_000_000_000_238,
        duration_ns: Some(812),
    };
    let void = Call {
        callee: "kfree".into(),
        func: 11,
        args: vec![Arg {
            name: "objp".into(),
            kind: "ptr",
            raw: 0xffff_8880_04a1_c000,
            text: "0xffff888004a1c000".into(),
        }],
        regs: [0xffff_8880_04a1_c000, 0, 0, 0, 0, 0],
        returned: false,
        ret: None,
        ret_text: None,
        duration_ns: None,
        site_symbol: None,
        ..call.clone()
    };
    check("call.jsonl", &format!("{}\n{}\n", json::call(&call), json::call(&void)));

    let drop = Drop {
        elapsed_s: 3.5,
        total: 12,
        new: 5,
        per_cpu: vec![
            CpuDrops { cpu: 0, overrun: 0, dropped_events: 12 },
            CpuDrops { cpu: 1, overrun: 0, dropped_events: 0 },
        ],
    };
    check("drop.jsonl", &(json::drop(&drop) + "\n"));

    let f = |name: &str, hits, events, dropped| Func {
        module: "cr_target".into(),
        name: name.into(),
        hits,
        inflight: 0,
        events,
        dropped,
        missed: 0,
    };
    let start = [f("__kmalloc_noprof", 100, 100, 0), f("kfree", 100, 100, 0)];
    let end = [f("__kmalloc_noprof", 1300, 1290, 10), f("kfree", 1299, 1299, 0)];
    let mut received = HashMap::new();
    received.insert(("cr_target".to_string(), "__kmalloc_noprof".to_string()), 1185);
    received.insert(("cr_target".to_string(), "kfree".to_string()), 1192);
    let counts =
        trace::SummaryCounts { elapsed_s: 10.0004, filtered_out: 3, overrun: 0, dropped_events: 12, bad_pages: 0 };
    let summary = trace::summarize(&start, &end, &received, counts);
    for func in &summary.functions {
        assert_eq!(func.hits as i64, func.received as i64 + func.ring_dropped + func.module_dropped as i64);
    }
    check("summary.jsonl", &(json::summary(&summary) + "\n"));
    check("summary.txt", &(trace::summary_line(&summary) + "\n"));
}

/// Every golden object carries the envelope.
#[test]
fn every_object_has_schema_and_type() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "jsonl") {
            for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["schema"], 1, "{}", entry.path().display());
                assert!(
                    ["call", "drop", "summary", "target", "func", "site"].contains(&v["type"].as_str().unwrap()),
                    "{}",
                    entry.path().display()
                );
            }
        }
    }
}
