//! The human tables and the JSON objects of fixed values against the files
//! in tests/golden/ (`HPCTL_BLESS=1 cargo test -p hpctl` rewrites them;
//! review the diff). docs/json-schema.md describes what the .jsonl hold.

use std::collections::HashMap;
use std::path::Path;

use hpctl::callees::{is_lookup_name, Judged, Lookup};
use hpctl::json::{self, Arg, Call, CpuDrops, Drop};
use hpctl::prototype::{CType, Field, Param, Prototype, Shape};
use hpctl::records::{parse_reply, Callee, Func, Site, Target};
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
            Arg::new("size", "size", 256, "256".into()),
            Arg::new("b", "ptr", 0, "0x0".into()),
            Arg::new("flags", "gfp", 0xcc0, "GFP_KERNEL".into()),
            Arg::new("node", "node", 0xffff_ffff, "-1".into()),
        ],
        regs: [256, 0, 0xcc0, 0xffff_ffff, 0, 0],
        returned: true,
        ret: Some(0xffff_8880_04a1_c000),
        ret2: None,
        ret_text: Some("0xffff888004a1c000".into()),
        prototype: None,
        start_ns: 5_000_000_000_238,
        duration_ns: Some(812),
    };
    let void = Call {
        callee: "kfree".into(),
        func: 11,
        args: vec![Arg::new("object", "ptr", 0xffff_8880_04a1_c000, "0xffff888004a1c000".into())],
        regs: [0xffff_8880_04a1_c000, 0, 0, 0, 0, 0],
        returned: false,
        ret: None,
        ret_text: None,
        duration_ns: None,
        site_symbol: None,
        ..call.clone()
    };
    check("call.jsonl", &format!("{}\n{}\n", json::call(&call), json::call(&void)));

    // Callees outside the catalogue, typed from BTF: a string argument, and
    // a struct returned in rax:rdx.
    let typed_arg = |name: &str, kind, raw, text: &str, ctype: &str| Arg {
        ctype: Some(ctype.into()),
        ..Arg::new(name, kind, raw, text.into())
    };
    let kstrtoint = Call {
        callee: "kstrtoint".into(),
        func: u32::MAX,
        args: vec![
            Arg {
                string: Some("12".into()),
                truncated: Some(false),
                ..typed_arg("s", "string", 0xffff_8880_1000_0000, "\"12\"", "const char *")
            },
            typed_arg("base", "uint", 10, "10", "unsigned int"),
            typed_arg("res", "ptr", 0xffff_c900_0000_0010, "0xffffc90000000010", "int *"),
        ],
        regs: [0xffff_8880_1000_0000, 10, 0xffff_c900_0000_0010, 0, 0, 0],
        ret: Some(0xffff_ffea),
        ret2: Some(0),
        ret_text: Some("-22".into()),
        prototype: Some("int kstrtoint(const char *s, unsigned int base, int *res)".into()),
        ..call.clone()
    };
    let timespec = Call {
        callee: "ns_to_timespec64".into(),
        func: u32::MAX,
        args: vec![typed_arg("nsec", "int", 3_000_000_250, "3000000250", "s64")],
        regs: [3_000_000_250, 0, 0, 0, 0, 0],
        ret: Some(3),
        ret2: Some(250),
        ret_text: Some("{tv_sec=3, tv_nsec=250}".into()),
        prototype: Some("struct timespec64 ns_to_timespec64(s64 nsec)".into()),
        ..call.clone()
    };
    check("call-callee.jsonl", &format!("{}\n{}\n", json::call(&kstrtoint), json::call(&timespec)));

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

const CALLEES: &str = "\
callee name=__SCT__might_resched sites=4 tails=0 static_call_sites=4 state=refused reason=static_call
callee name=__stack_chk_fail sites=3 tails=0 static_call_sites=0 state=refused reason=noreturn
callee name=_printk sites=14 tails=2 static_call_sites=0 state=interceptable
callee name=cr_helper.isra.0 sites=1 tails=0 static_call_sites=0 state=interceptable
callee name=ext4_foo+0x10 sites=1 tails=0 static_call_sites=0 state=refused reason=not_function_start
callee name=from_kuid sites=2 tails=0 static_call_sites=0 state=interceptable
callee name=jbd2_journal_start sites=9 tails=0 static_call_sites=0 state=interceptable
callee name=kstrtoint sites=1 tails=0 static_call_sites=0 state=refused reason=no_ftrace
callee name=ns_to_timespec64 sites=1 tails=0 static_call_sites=0 state=interceptable
callee name=schedule sites=1 tails=1 static_call_sites=0 state=interceptable
";

fn int(text: &str, bytes: u32, signed: bool) -> CType {
    CType::new(text, Shape::Int { bytes, signed })
}

fn ptr(text: &str, to_char: bool) -> CType {
    CType::new(text, Shape::Ptr { to_char })
}

fn named(text: &str, mut ty: CType) -> CType {
    ty.text = text.to_string();
    ty.typedef = Some(text.to_string());
    ty
}

/// What BTF has for the callees above (as Debian's 6.12 declares them).
fn prototypes() -> Vec<Prototype> {
    let p = |name: &str, btf: &str, ret: CType, params: Vec<(&str, CType)>, variadic| Prototype {
        name: name.to_string(),
        btf: btf.to_string(),
        ret,
        params: params.into_iter().map(|(n, ty)| Param { name: n.to_string(), ty }).collect(),
        variadic,
    };
    let field = |name: &str, bit_offset, ty| Field { name: name.to_string(), bit_offset, bits: None, ty };
    let kuid = named(
        "kuid_t",
        CType::new(
            "struct (anon)",
            Shape::Aggregate {
                union: false,
                bytes: 4,
                fields: vec![field("val", 0, int("uid_t", 4, false))],
                natural: true,
            },
        ),
    );
    let timespec64 = CType::new(
        "struct timespec64",
        Shape::Aggregate {
            union: false,
            bytes: 16,
            fields: vec![
                field("tv_sec", 0, named("time64_t", int("s64", 8, true))),
                field("tv_nsec", 64, int("long int", 8, true)),
            ],
            natural: true,
        },
    );
    let int32 = int("int", 4, true);
    vec![
        p("_printk", "vmlinux", int32.clone(), vec![("fmt", ptr("const char *", true))], true),
        p(
            "from_kuid",
            "vmlinux",
            named("uid_t", int("unsigned int", 4, false)),
            vec![("targ", ptr("struct user_namespace *", false)), ("kuid", kuid)],
            false,
        ),
        p(
            "jbd2_journal_start",
            "jbd2",
            ptr("handle_t *", false),
            vec![("journal", ptr("journal_t *", false)), ("nblocks", int32.clone())],
            false,
        ),
        p(
            "kstrtoint",
            "vmlinux",
            int32.clone(),
            vec![
                ("s", ptr("const char *", true)),
                ("base", int("unsigned int", 4, false)),
                ("res", ptr("int *", false)),
            ],
            false,
        ),
        p(
            "ns_to_timespec64",
            "vmlinux",
            timespec64,
            vec![("nsec", named("s64", int("long long int", 8, true)))],
            false,
        ),
        p("schedule", "vmlinux", CType::void(), vec![], false),
        p("__stack_chk_fail", "vmlinux", CType::void(), vec![], false),
    ]
}

fn judged() -> Vec<Judged> {
    let protos = prototypes();
    Callee::all(&parse_reply(CALLEES).unwrap())
        .unwrap()
        .into_iter()
        .map(|c| {
            if !is_lookup_name(&c.name) {
                return Judged::new(c, Lookup::NotAsked);
            }
            let found = protos.iter().find(|p| p.name == c.name);
            Judged::new(c, found.map_or(Lookup::Missing, Lookup::Found))
        })
        .collect()
}

#[test]
fn callees() {
    let list = judged();
    check("callees.txt", &table::callees(&list));
    check("callee.jsonl", &list.iter().map(|j| json::callee("ext4", j) + "\n").collect::<String>());
    assert_eq!(table::callees(&[]), "no call to a function outside the module found\n");
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
                    ["call", "drop", "summary", "target", "func", "site", "callee"]
                        .contains(&v["type"].as_str().unwrap()),
                    "{}",
                    entry.path().display()
                );
            }
        }
    }
}
