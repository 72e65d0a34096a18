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
    ("kprobe_bare", "a kprobe at the site whose handler does nothing (kprobes emulates the call)"),
    ("kprobe_redirect", "a kprobe at the site that only redirects the call (the floor for any module)"),
    ("kprobe_event_site", "the kernel's kprobe event at the site (records one register; no result, no duration)"),
    ("kprobe_events_callee", "kprobe events p+r on the callee (every caller in the kernel pays them)"),
    ("fprobe_callee", "fprobe events entry+exit on the callee (every caller pays them)"),
    ("function_tracer", "the function tracer, filtered to the callee (every caller pays it)"),
    ("sink_none", "hp_patcher, sink none, no fault rule"),
    ("rule_elsewhere", "sink none, a fault rule on another function (the site's mask is 0)"),
    ("rule_every_unfired", "sink none, a rule on this site that does not fire (every=1000000000)"),
    ("rule_pid_unfired", "sink none, a rule on this site that does not fire (pid=1)"),
    ("sink_trace", "hp_patcher, sink trace, hp_call on, nobody reading"),
    ("sink_printk", "hp_patcher, sink printk (200 lines per 5 s, the rest suppressed)"),
];

/// Per call, over the rounds of one configuration and function.
struct Figures {
    median: f64,
    min: f64,
    max: f64,
}

fn figures(mut per_call: Vec<f64>) -> Figures {
    per_call.sort_by(f64::total_cmp);
    let n = per_call.len();
    let median = if n % 2 == 1 { per_call[n / 2] } else { (per_call[n / 2 - 1] + per_call[n / 2]) / 2.0 };
    Figures { median, min: per_call[0], max: per_call[n - 1] }
}

/// Per-call nanoseconds of each round, by (configuration, function).
type Rounds = BTreeMap<(String, String), Vec<f64>>;

/// `HPBENCH <configuration> <function> <total ns> <calls>` lines, by
/// (configuration, function): per-call nanoseconds of each round.
fn parse(text: &str) -> Result<Rounds> {
    let mut rounds: Rounds = BTreeMap::new();
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
    // The table itself does not count: it is what this run rewrites.
    let dirty = out(&["status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/RESULTS.md"])
        .is_some_and(|s| !s.is_empty());
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
    let (out, rounds) = run_guest(kernel, &image, "bench", &["-icount", "shift=0"])?;
    // The same rounds in host time: noisy, so only as ratios within the run.
    println!("bench: booting {} under plain TCG", kernel.release);
    let (_, tcg_rounds) = run_guest(kernel, &image, "bench-tcg", &[])?;
    let round_count = rounds.values().map(Vec::len).max().unwrap_or(0);
    let median_in = |rounds: &Rounds, config: &str, function: &str| {
        rounds.get(&(config.to_string(), function.to_string())).map(|r| figures(r.clone()).median)
    };
    let redirect = |function: &str| median_in(&rounds, "kprobe_redirect", function);

    let date = Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output().context("date")?;
    let mut md = String::new();
    writeln!(md, "# hp_patcher: what it adds per call\n")?;
    writeln!(md, "Written by `cargo xtask bench` on {}.", String::from_utf8_lossy(&date.stdout).trim())?;
    writeln!(md, "Kernel {}; commit {}.", kernel.release, commit())?;
    writeln!(
        md,
        "QEMU TCG with `-icount shift=0`: one guest instruction per guest nanosecond, so each figure is \
         instructions per call, whatever the host. cr_target (paused) calls `kstrdup(NULL)` (returns at \
         once) and `kfree(NULL)` from one site each, N times a round; medians over {round_count} rounds, \
         with the lowest and highest round in brackets where they differ. Timer interrupts that land in a round are in its figure. \
         The plain-TCG column is the same rounds run again without -icount, in host time, as a \
         ratio within that run: host time under TCG also counts translating code and the host's \
         own noise, so those ratios wander (see kfree's) and the icount figures are the ones to go by. The bystander is cr_twin, a copy of cr_target that nothing attaches to, making the same \
         calls in the same rounds: what the rest of the kernel pays.\n"
    )?;
    // One row per configuration: instructions per call at the site (median,
    // and the lowest to highest round), its ratio to the redirect-only
    // floor, and what the bystander pays meanwhile.
    writeln!(
        md,
        "| configuration | `kstrdup` at the site | `kfree` at the site | × redirect-only kprobe | \
         plain TCG: × redirect-only | bystander's `kstrdup` | bystander's `kfree` |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|")?;
    for (config, what) in CONFIGURATIONS {
        let cell = |function: &str| -> Option<Figures> {
            rounds.get(&(config.to_string(), function.to_string())).map(|r| figures(r.clone()))
        };
        let shown = |function: &str| {
            cell(function).map_or("-".to_string(), |f| {
                if f.max - f.min < 0.05 {
                    format!("{:.1}", f.median)
                } else {
                    format!("{:.1} ({:.1}–{:.1})", f.median, f.min, f.max)
                }
            })
        };
        let ratios: Vec<String> = ["kstrdup", "kfree"]
            .iter()
            .filter_map(|function| Some(format!("{:.2}", cell(function)?.median / redirect(function)?)))
            .collect();
        let tcg_ratios: Vec<String> = ["kstrdup", "kfree"]
            .iter()
            .filter_map(|function| {
                let ratio = median_in(&tcg_rounds, config, function)? / median_in(&tcg_rounds, "kprobe_redirect", function)?;
                Some(format!("{ratio:.2}"))
            })
            .collect();
        let joined = |r: Vec<String>| if r.is_empty() { "-".to_string() } else { r.join(", ") };
        writeln!(
            md,
            "| {what} | {} | {} | {} | {} | {} | {} |",
            shown("kstrdup"),
            shown("kfree"),
            joined(ratios),
            joined(tcg_ratios),
            shown("kstrdup@bystander"),
            shown("kfree@bystander")
        )?;
    }
    let memory: Vec<[f64; 4]> = out.text.lines().filter_map(|l| memory_round(l.strip_prefix("HPMEM ")?)).collect();
    if !memory.is_empty() {
        let median_of = |i: usize| figures(memory.iter().map(|m| m[i]).collect()).median;
        let sites = median_of(0);
        writeln!(
            md,
            "\nKernel memory one attach takes ({sites:.0} sites of cr_target, sink none; /proc/meminfo \
             before and while attached, after stat_refresh, medians over {} attaches): slab {:.0} kB, \
             vmalloc {:.0} kB, percpu {:.0} kB; {:.0} bytes a site in all. Coarse: meminfo counts whole \
             slab pages and vmalloc areas, and misses what kmalloc takes straight from the page allocator \
             (over 8 kB, such as the copy of the target's text).",
            memory.len(),
            median_of(1),
            median_of(2),
            median_of(3),
            (median_of(1) + median_of(2) + median_of(3)) * 1024.0 / sites.max(1.0)
        )?;
    }
    let notes: Vec<&str> = out.text.lines().filter_map(|l| l.strip_prefix("HPINFO bench: ")).collect();
    if !notes.is_empty() {
        writeln!(md, "\nFrom the guest:\n")?;
        for note in notes {
            writeln!(md, "- {note}")?;
        }
    }
    writeln!(
        md,
        "\nNot measured yet (issue 17): bpftrace, attach and detach time against a bare \
         register_kprobes of the same sites, the event rate at which `hpctl trace` drops."
    )?;
    let path = repo_root().join("bench/RESULTS.md");
    std::fs::create_dir_all(path.parent().unwrap())?;
    std::fs::write(&path, &md)?;
    print!("{md}");
    println!("bench: written to {}; guest log {}", path.display(), out.log.display());
    Ok(())
}

/// Boots the bench guest with these QEMU arguments; its log and its rounds.
fn run_guest(
    kernel: &Kernel,
    image: &std::path::Path,
    name: &str,
    qemu_args: &[&str],
) -> Result<(guest::GuestOutput, Rounds)> {
    let out = guest::boot_with(kernel, image, name, "", 3600, false, qemu_args)?;
    let trouble = out.trouble();
    if !out.text.contains("HPBENCH-END") || !trouble.is_empty() {
        bail!("the bench guest did not finish cleanly ({}):\n{}", out.log.display(), trouble.join("\n"));
    }
    let rounds = parse(&out.text)?;
    Ok((out, rounds))
}

/// `<sites> <slab vmalloc percpu before> <the same after>` (kB) -> sites
/// and the three growths.
fn memory_round(line: &str) -> Option<[f64; 4]> {
    let v: Vec<f64> = line.split_whitespace().map(|w| w.parse().ok()).collect::<Option<_>>()?;
    let [sites, s0, v0, p0, s1, v1, p1] = v[..] else { return None };
    Some([sites, s1 - s0, v1 - v0, p1 - p0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_parse_to_per_call_medians() {
        let text = "noise\nHPBENCH nothing kstrdup 700000 20000\nHPBENCH nothing kstrdup 720000 20000\nHPBENCH nothing kstrdup 710000 20000\n";
        let rounds = parse(text).unwrap();
        let f = figures(rounds[&("nothing".to_string(), "kstrdup".to_string())].clone());
        assert_eq!((f.median, f.min, f.max), (35.5, 35.0, 36.0));
        assert!(parse("HPBENCH-ERROR refused: attach\n").is_err());
        assert!(parse("HPBENCH nothing kstrdup\n").is_err());
        assert_eq!(memory_round("37 100 200 10 160 250 12"), Some([37.0, 60.0, 50.0, 2.0]));
        assert_eq!(memory_round("37 100"), None);
    }
}
