//! `cargo xtask bench`: what hp_patcher adds per call, measured in a guest
//! under QEMU's `-icount shift=0` (one guest instruction per nanosecond, so
//! the figures are instruction counts, the same on any host), written to
//! bench/RESULTS.md. Not part of `test`, and nothing asserts on a figure.
//!
//! The guest side is lab/guest/bench.sh: each configuration, each function,
//! several rounds of N calls from one site of cr_target.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::kernel::Kernel;
use crate::{build, guest, repo_root, scenarios};

/// The configurations, in the order bench.sh runs them, with what each is.
const CONFIGURATIONS: &[(&str, &str)] = &[
    ("nothing", "not attached"),
    ("sink_none", "attached, sink none, no fault rule"),
    ("rule_elsewhere", "sink none, a fault rule on another function (the site's mask is 0)"),
    ("rule_every_unfired", "sink none, a rule on this site that does not fire (every=1000000000)"),
    ("rule_pid_unfired", "sink none, a rule on this site that does not fire (pid=1)"),
];

/// Per call, over the rounds of one configuration and function.
struct Figures {
    median: f64,
    min: f64,
    max: f64,
    rounds: usize,
}

fn figures(mut per_call: Vec<f64>) -> Figures {
    per_call.sort_by(f64::total_cmp);
    let n = per_call.len();
    let median = if n % 2 == 1 { per_call[n / 2] } else { (per_call[n / 2 - 1] + per_call[n / 2]) / 2.0 };
    Figures { median, min: per_call[0], max: per_call[n - 1], rounds: n }
}

/// `HPBENCH <configuration> <function> <total ns> <calls>` lines, by
/// (configuration, function): per-call nanoseconds of each round.
fn parse(text: &str) -> Result<BTreeMap<(String, String), Vec<f64>>> {
    let mut rounds: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(error) = line.strip_prefix("HPBENCH-ERROR ") {
            bail!("the bench guest said: {error}");
        }
        let Some(rest) = line.strip_prefix("HPBENCH ") else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let [config, function, ns, calls] = f[..] else { bail!("a malformed bench line: {line}") };
        let (ns, calls): (f64, f64) = (ns.parse()?, calls.parse()?);
        rounds.entry((config.into(), function.into())).or_default().push(ns / calls);
    }
    Ok(rounds)
}

fn commit() -> String {
    let out = |args: &[&str]| {
        Command::new("git").args(args).current_dir(repo_root()).output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let hash = out(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_default();
    let dirty = out(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{hash} (with uncommitted changes)")
    } else {
        hash
    }
}

pub fn bench(kernel: &Kernel) -> Result<()> {
    let built = build::build_all(kernel)?;
    let image = scenarios::bench_image(kernel, &built)?;
    println!("bench: booting {} under -icount shift=0 (slow: TCG counts every instruction)", kernel.release);
    let out = guest::boot_with(kernel, &image, "bench", "", 3600, false, &["-icount", "shift=0"])?;
    let trouble = out.trouble();
    if !out.text.contains("HPBENCH-END") || !trouble.is_empty() {
        bail!("the bench guest did not finish cleanly ({}):\n{}", out.log.display(), trouble.join("\n"));
    }
    let rounds = parse(&out.text)?;
    let nothing = |function: &str| rounds.get(&("nothing".to_string(), function.to_string())).map(|r| figures(r.clone()).median);
    let sink_none = |function: &str| rounds.get(&("sink_none".to_string(), function.to_string())).map(|r| figures(r.clone()).median);

    let date = Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output().context("date")?;
    let mut md = String::new();
    writeln!(md, "# hp_patcher: what it adds per call\n")?;
    writeln!(md, "Written by `cargo xtask bench` on {}.", String::from_utf8_lossy(&date.stdout).trim())?;
    writeln!(md, "Kernel {}; commit {}.", kernel.release, commit())?;
    writeln!(
        md,
        "QEMU TCG with `-icount shift=0`: one guest instruction per guest nanosecond, so each figure is \
         instructions per call, whatever the host. cr_target (paused) calls `kstrdup(NULL)` (returns at \
         once) and `kfree(NULL)` from one site each, N times a round; medians over the rounds, with \
         the lowest and highest round. Timer interrupts that land in a round are in its figure.\n"
    )?;
    writeln!(md, "| configuration | function | per call (median) | rounds: min to max | vs not attached | vs sink none |")?;
    writeln!(md, "|---|---|---:|---|---:|---:|")?;
    for (config, what) in CONFIGURATIONS {
        for function in ["kstrdup", "kfree"] {
            let Some(r) = rounds.get(&(config.to_string(), function.to_string())) else { continue };
            let f = figures(r.clone());
            let vs = |base: Option<f64>| base.map_or("-".to_string(), |b| format!("{:+.1}", f.median - b));
            writeln!(
                md,
                "| {what} | `{function}` | {:.1} | {:.1} to {:.1} ({} rounds) | {} | {} |",
                f.median,
                f.min,
                f.max,
                f.rounds,
                vs(nothing(function)),
                vs(sink_none(function))
            )?;
        }
    }
    writeln!(md, "\nNot measured yet (issue 17): a bare kprobe and a redirect-only kprobe at the same site, the trace and printk sinks, the kernel's own tracers, bystanders, attach and detach time, memory.")?;
    let path = repo_root().join("bench/RESULTS.md");
    std::fs::create_dir_all(path.parent().unwrap())?;
    std::fs::write(&path, &md)?;
    print!("{md}");
    println!("bench: written to {}; guest log {}", path.display(), out.log.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_parse_to_per_call_medians() {
        let text = "noise\nHPBENCH nothing kstrdup 700000 20000\nHPBENCH nothing kstrdup 720000 20000\nHPBENCH nothing kstrdup 710000 20000\n";
        let rounds = parse(text).unwrap();
        let f = figures(rounds[&("nothing".to_string(), "kstrdup".to_string())].clone());
        assert_eq!((f.median, f.min, f.max, f.rounds), (35.5, 35.0, 36.0, 3));
        assert!(parse("HPBENCH-ERROR refused: attach\n").is_err());
        assert!(parse("HPBENCH nothing kstrdup\n").is_err());
    }
}
