//! The sweep: hp_patcher attached to Debian's own in-tree modules (file
//! systems, block devices, network, sound and the libraries they pull in),
//! each exercised before, during and after the attach, in two guest boots.
//! The result is a table, lab/SWEEP.md.
//!
//! The guest scripts (lab/guest/sweep_*.sh) print one `HPSWEEP` row per
//! module, `HPSWEEP-RMMOD` for each unload, `HPSWEEP-EXERCISE` for the legend,
//! and the usual `HPTEST` checks; this side packs what they need, counts the
//! checks and writes the table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::build;
use crate::guest::{self, Initramfs};
use crate::kernel::Kernel;
use crate::{repo_root, run};

struct SweepBoot {
    name: &'static str,
    script: &'static str,
    /// In-tree modules the script loads by name, each packed with its
    /// dependencies.
    in_tree: &'static [&'static str],
    timeout_secs: u32,
}

/// Split so that one boot going wrong does not lose every row, and so that
/// no boot is long: attaching costs tens of milliseconds per site under TCG.
const BOOTS: &[SweepBoot] = &[
    SweepBoot {
        name: "sweep-storage",
        script: "sweep_storage",
        in_tree: &[
            "loop",
            "xfs",
            "btrfs",
            "nls_cp437",
            "nls_ascii",
            "nls_utf8",
            "vfat",
            "isofs",
            "zram",
        ],
        timeout_secs: 1500,
    },
    SweepBoot {
        name: "sweep-net-sound",
        script: "sweep_net_sound",
        in_tree: &[
            "dummy",
            "veth",
            "bridge",
            "8021q",
            "macvlan",
            "tun",
            "nf_tables",
            "snd-dummy",
            "snd-aloop",
            "snd-mixer-oss",
        ],
        timeout_secs: 1200,
    },
];

struct Row {
    boot: &'static str,
    module: String,
    exercise: String,
    sites: String,
    hits: String,
    attach_ms: String,
    /// Of the attach, the time register_kprobe took (kprobes', not ours).
    kprobes_ms: String,
    identical: String,
    note: String,
}

/// Runs the sweep's boots (those whose name contains `only`, if given) and
/// writes the table to `table`.
/// Returns the number of checks that passed (it fails when any did not).
pub fn sweep(kernel: &Kernel, only: Option<&str>, table: &Path) -> Result<usize> {
    let started = Instant::now();
    let built = build::build_all(kernel)?;
    let nft_tiny = build_nft_tiny()?;
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut problems = Vec::new();
    let mut rows = Vec::new();
    let mut rmmod = BTreeMap::new();
    let mut legend = BTreeMap::new();
    let mut boot_seconds = Vec::new();

    let boots: Vec<_> =
        BOOTS.iter().filter(|b| only.is_none_or(|o| o.split(',').any(|o| b.name.contains(o)))).collect();
    let mut jobs = Vec::new();
    for boot in &boots {
        let fs = Initramfs::new(boot.name, &[boot.script], kernel.arch())?;
        fs.add_file(&repo_root().join("lab/guest/sweep_lib.sh"), "scripts/sweep_lib.sh")?;
        fs.add_file(&built.hp_patcher, "modules/hp_patcher.ko")?;
        fs.add_file(&nft_tiny, "bin/nft_tiny")?;
        for module in boot.in_tree {
            fs.add_in_tree_module(kernel, module)?;
        }
        make_images(&fs)?;
        jobs.push(guest::BootJob {
            name: boot.name,
            scripts: boot.script.to_string(),
            image: fs.pack()?,
            cmdline: "",
            timeout_secs: boot.timeout_secs,
        });
    }
    for (boot, out) in boots.iter().zip(guest::boot_all(kernel, &jobs)) {
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                failed += 1;
                problems.push(format!("{}: {e:#}", boot.name));
                continue;
            }
        };
        boot_seconds.push((boot.name, out.seconds));
        for line in out.text.lines() {
            if let Some(rest) = line.strip_prefix("HPTEST ") {
                if rest.split_whitespace().nth(1) == Some("PASS") {
                    passed += 1;
                } else {
                    println!("  {rest}");
                    failed += 1;
                    problems.push(format!("{}: {rest}", boot.name));
                }
            } else if let Some(rest) = line.strip_prefix("HPSWEEP ") {
                println!("  {rest}");
                rows.push(parse_row(boot.name, rest).with_context(|| format!("bad sweep row: {line}"))?);
            } else if let Some(rest) = line.strip_prefix("HPSWEEP-RMMOD ") {
                if let Some((module, ok)) = rest.split_once(' ') {
                    rmmod.insert(module.to_string(), ok.trim().to_string());
                }
            } else if let Some(rest) = line.strip_prefix("HPSWEEP-EXERCISE ") {
                if let Some((name, text)) = rest.split_once(' ') {
                    legend.insert(name.to_string(), text.trim().to_string());
                }
            }
        }
        let trouble = out.problems(boot.name, &[boot.script]);
        failed += trouble.len();
        problems.extend(trouble);
    }
    // A row whose module was never unloaded is a failure the checks above
    // cannot see: the script stopped before reaching the unload.
    for row in &rows {
        if !rmmod.contains_key(&row.module) {
            failed += 1;
            problems.push(format!("{}: {} was never unloaded", row.boot, row.module));
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let markdown = render(kernel, &rows, &rmmod, &legend, &boot_seconds, wall, &problems);
    std::fs::write(table, markdown)?;
    for p in &problems {
        println!("FAILED {p}");
    }
    println!(
        "sweep: {} modules, {passed} checks passed, {failed} failed, {wall:.0} s wall; table in {}",
        rows.len(),
        table.display()
    );
    if failed > 0 || rows.is_empty() {
        bail!("sweep failed");
    }
    Ok(passed)
}

fn parse_row(boot: &'static str, rest: &str) -> Result<Row> {
    let (fields, note) = rest.split_once(" note=").context("no note=")?;
    let mut words = fields.split_whitespace();
    let module = words.next().context("no module")?.to_string();
    let mut kv = BTreeMap::new();
    for w in words {
        let (k, v) = w.split_once('=').context("field without =")?;
        kv.insert(k, v.to_string());
    }
    let mut take = |k: &str| kv.remove(k).with_context(|| format!("no {k}="));
    Ok(Row {
        boot,
        module,
        exercise: take("exercise")?,
        sites: take("sites")?,
        hits: take("hits")?,
        attach_ms: take("attach_ms")?,
        kprobes_ms: take("kprobes_ms").unwrap_or_else(|_| "-".to_string()),
        identical: take("identical")?,
        note: note.trim().to_string(),
    })
}

fn render(
    kernel: &Kernel,
    rows: &[Row],
    rmmod: &BTreeMap<String, String>,
    legend: &BTreeMap<String, String>,
    boot_seconds: &[(&str, f64)],
    wall: f64,
    problems: &[String],
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Sweep: hp_patcher on Debian's in-tree modules\n");
    let _ = writeln!(
        md,
        "Written by `cargo xtask test --sweep` (xtask/src/sweep.rs, lab/guest/sweep_*.sh); do not edit by hand.\n\
         Kernel {}, QEMU TCG, 2 CPUs. Each module is exercised before, during and after hp_patcher is\n\
         attached to it. *sites* is redirected/found, *hits* the calls intercepted while attached,\n\
         *attach* the guest time `insmod hp_patcher.ko` took, and of it *register_kprobe* what kprobes\n\
         took (hp_patcher's log line at attach). Under TCG every kprobe costs tens of\n\
         milliseconds of text patching, so attach times are not hardware figures; compare them with\n\
         each other. *text identical* is hp_patcher's own check at detach; *rmmod* whether the module\n\
         unloaded afterwards.\n",
        kernel.release
    );
    let _ = writeln!(
        md,
        "| module | sites | hits | attach (ms, guest) | of it, register_kprobe (ms) | text identical | rmmod | exercise | note |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.module,
            r.sites,
            r.hits,
            r.attach_ms,
            r.kprobes_ms,
            r.identical,
            rmmod.get(&r.module).map_or("not reached", String::as_str),
            r.exercise,
            r.note.replace('|', "\\|")
        );
    }
    let _ = writeln!(md, "\nExercises (each phase: before, during, after):\n");
    for (name, text) in legend {
        let _ = writeln!(md, "- `{name}`: {text}");
    }
    let boots: Vec<String> = boot_seconds.iter().map(|(n, s)| format!("{n} {s:.0} s")).collect();
    let _ = writeln!(md, "\nWall time: {wall:.0} s in all (guest boots: {}), on a 2-core host.", boots.join(", "));
    if problems.is_empty() {
        let _ = writeln!(md, "Every check passed.");
    } else {
        let _ = writeln!(md, "\nFailed checks:\n");
        for p in problems {
            let _ = writeln!(md, "- {}", p.replace('\n', " "));
        }
    }
    md
}

/// The guest has no nft; this is the least of one (lab/guest/nft_tiny.c).
fn build_nft_tiny() -> Result<std::path::PathBuf> {
    let out = repo_root().join("target/lab/nft_tiny");
    std::fs::create_dir_all(out.parent().unwrap())?;
    run(Command::new("gcc-12")
        .args(["-static", "-Os", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&out)
        .arg(repo_root().join("lab/guest/nft_tiny.c")))?;
    Ok(out)
}

/// File system images made with the host's own tools, so that the guest
/// mounts what a real mkfs wrote.
fn make_images(fs: &Initramfs) -> Result<()> {
    let blank = |name: &str, mib: u64| -> Result<std::path::PathBuf> {
        let path = fs.path(name);
        std::fs::File::create(&path)?.set_len(mib << 20)?;
        Ok(path)
    };
    // xfsprogs refuses file systems under 300 MB unless it believes it runs
    // under fstests; the kernel mounts small ones, and the guest has 1 GiB.
    run(Command::new("mkfs.xfs")
        .args(["-q", "-f", "-L", "hp_test"])
        .arg(blank("xfs.img", 16)?)
        .env("TEST_DIR", "1")
        .env("TEST_DEV", "1")
        .env("QA_CHECK_FS", "1"))?;
    // Mixed block groups: the only way btrfs fits in 16 MiB (114 MiB without).
    run(Command::new("mkfs.btrfs").args(["-q", "--mixed", "-L", "hp_test"]).arg(blank("btrfs.img", 16)?))?;
    run(Command::new("mkfs.vfat")
        .args(["-n", "HP_TEST"])
        .arg(blank("vfat.img", 8)?)
        .stdout(std::process::Stdio::null()))?;

    let src = fs.path("iso-src");
    std::fs::create_dir_all(src.join("dir/sub"))?;
    std::fs::write(src.join("readme.txt"), "hp_patcher sweep: isofs\n")?;
    std::fs::write(src.join("dir/sub/data.bin"), pseudo_random(300 << 10))?;
    std::fs::write(src.join("dir/A-Long-Mixed-Case-Name.txt"), "Rock Ridge keeps this name\n")?;
    run(Command::new("genisoimage")
        .args(["-quiet", "-R", "-J", "-V", "HP_TEST", "-o"])
        .arg(fs.path("iso.img"))
        .arg(&src))?;
    Ok(())
}

/// Deterministic bytes that do not compress, so that the ISO has data
/// blocks worth reading.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
