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
    ("sink_trace_off", "hp_patcher, sink trace, hp_call off (each call counted as dropped): the trampoline and hooks"),
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
    // What is built now is what is measured, whatever is committed meanwhile.
    let measured_commit = commit();
    let built = build::build_all(kernel)?;
    let image = scenarios::bench_image(kernel, &built)?;
    println!("bench: booting {} under -icount shift=0 (slow: TCG counts every instruction)", kernel.release);
    let (out, rounds) = run_guest(kernel, &image, "bench", "", &["-icount", "shift=0"])?;
    // The same rounds in host time: noisy, so only as ratios within the run.
    println!("bench: booting {} under plain TCG", kernel.release);
    // It also times attaches and measures memory (not under -icount:
    // btrfs's attach takes minutes there).
    let (tcg_out, tcg_rounds) = run_guest(kernel, &image, "bench-tcg", "hp_bench_attach", &[])?;
    let round_count = rounds.values().map(Vec::len).max().unwrap_or(0);
    let median_in = |rounds: &Rounds, config: &str, function: &str| {
        rounds.get(&(config.to_string(), function.to_string())).map(|r| figures(r.clone()).median)
    };
    let redirect = |function: &str| median_in(&rounds, "kprobe_redirect", function);

    let date = Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output().context("date")?;
    let mut md = String::new();
    writeln!(md, "# hp_patcher: what it adds per call\n")?;
    writeln!(md, "Written by `cargo xtask bench` on {}.", String::from_utf8_lossy(&date.stdout).trim())?;
    writeln!(md, "Kernel {}; commit {measured_commit}.", kernel.release)?;
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
    memory_table(&mut md, &tcg_out.text)?;
    attach_table(&mut md, &tcg_out.text)?;
    // The icount boot's: a ratio of instruction budgets, the same on any host.
    trace_rate(&mut md, &out.text)?;
    let notes: Vec<&str> = out.text.lines().filter_map(|l| l.strip_prefix("HPINFO bench: ")).collect();
    if !notes.is_empty() {
        writeln!(md, "\nFrom the guest:\n")?;
        for note in notes {
            writeln!(md, "- {note}")?;
        }
    }
    writeln!(
        md,
        "\nNot measured: bpftrace, which the lab's guests cannot run (a busybox initramfs with \
         no network, and Debian's bpftrace needs LLVM and libbpf besides)."
    )?;
    let path = repo_root().join("bench/RESULTS.md");
    std::fs::create_dir_all(path.parent().unwrap())?;
    std::fs::write(&path, &md)?;
    print!("{md}");
    println!("bench: written to {}; guest log {}", path.display(), out.log.display());
    Ok(())
}

/// Some configurations under -icount, medians printed, RESULTS.md
/// untouched; with `profile`, where one function's calls go instead.
pub fn bench_only(kernel: &Kernel, only: &str, profile: Option<&str>) -> Result<()> {
    let built = build::build_all(kernel)?;
    let image = scenarios::bench_image(kernel, &built)?;
    if let Some(function) = profile {
        return crate::profile::profile(kernel, &image, only, function);
    }
    let (out, rounds) = run_guest(kernel, &image, "bench-only", &format!("hp_bench_only={only}"), &["-icount", "shift=0"])?;
    for ((config, function), per_call) in rounds {
        let f = figures(per_call);
        println!("{config:24} {function:20} {:8.1} ({:.1}-{:.1})", f.median, f.min, f.max);
    }
    let mut md = String::new();
    trace_rate(&mut md, &out.text)?;
    print!("{md}");
    Ok(())
}

/// Boots the bench guest with these QEMU arguments; its log and its rounds.
pub(crate) fn run_guest(
    kernel: &Kernel,
    image: &std::path::Path,
    name: &str,
    cmdline: &str,
    qemu_args: &[&str],
) -> Result<(guest::GuestOutput, Rounds)> {
    let out = guest::boot_with(kernel, image, name, cmdline, 3600, false, qemu_args)?;
    let trouble = out.trouble();
    if !out.text.contains("HPBENCH-END") || !trouble.is_empty() {
        bail!("the bench guest did not finish cleanly ({}):\n{}", out.log.display(), trouble.join("\n"));
    }
    let rounds = parse(&out.text)?;
    Ok((out, rounds))
}

/// `<module> <sites>`, then `<slab vmalloc percpu free>` (kB) before,
/// while attached and after the detach -> the module and [sites, slab,
/// vmalloc and percpu growths, free memory's drop while attached, its drop
/// left after the detach].
fn memory_round(line: &str) -> Option<(&str, [f64; 6])> {
    let (module, rest) = line.split_once(' ')?;
    let v: Vec<f64> = rest.split_whitespace().map(|w| w.parse().ok()).collect::<Option<_>>()?;
    let [sites, s0, v0, p0, f0, s1, v1, p1, f1, _, _, _, f2] = v[..] else { return None };
    Some((module, [sites, s1 - s0, v1 - v0, p1 - p0, f0 - f1, f0 - f2]))
}

/// Kernel memory one attach takes, per target measured, and the line
/// through the two: bytes a site, and what a target takes besides.
fn memory_table(md: &mut String, text: &str) -> Result<()> {
    let mut by_module: BTreeMap<&str, Vec<[f64; 6]>> = BTreeMap::new();
    for (module, round) in text.lines().filter_map(|l| memory_round(l.strip_prefix("HPMEM ")?)) {
        by_module.entry(module).or_default().push(round);
    }
    if by_module.is_empty() {
        return Ok(());
    }
    writeln!(
        md,
        "\nKernel memory one attach takes (every catalogue function, sink none), medians over the \
         attaches, each read after dropping the caches: slab as the objects in use (/proc/slabinfo, \
         active objects times their size), vmalloc and percpu from /proc/meminfo after stat_refresh \
         (whole areas and chunks: coarse), and how far free memory fell (MemFree plus the free pages in \
         per-CPU lists, /proc/zoneinfo's pageset counts, which MemFree leaves out), which also counts \
         what kmalloc takes straight from the page allocator (over 8 kB: the copy of the target's text, \
         the sites' arrays), and any other allocation in the guest meanwhile. The last column is free \
         memory after the detach against before the attach: what an attach leaves behind, noise \
         included.\n"
    )?;
    writeln!(md, "| target | sites | attaches | slab kB | vmalloc kB | percpu kB | free memory fell, kB | left after detach, kB |")?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
    let mut points = Vec::new();
    for (module, rounds) in &by_module {
        let median_of = |i: usize| figures(rounds.iter().map(|m| m[i]).collect()).median;
        writeln!(
            md,
            "| {module} | {:.0} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            median_of(0),
            rounds.len(),
            median_of(1),
            median_of(2),
            median_of(3),
            median_of(4),
            median_of(5)
        )?;
        points.push((median_of(0), median_of(4)));
    }
    // A line through two noisy points says nothing when memory does not
    // grow with the sites, or when it would give a target less than
    // nothing (one large block, such as the text copy, is not per site):
    // then it is left out.
    if let [(s0, m0), (s1, m1)] = points[..] {
        let per_site = (m1 - m0) / (s1 - s0) * 1024.0;
        let per_target = m0 - per_site * s0 / 1024.0;
        if (s1 - s0).abs() >= 1.0 && per_site > 0.0 && per_target >= 0.0 {
            writeln!(
                md,
                "\nThrough the two (free memory): about {per_site:.0} bytes a site, and {per_target:.0} kB a target besides."
            )?;
        }
    }
    Ok(())
}

/// `HPRATE <burst|max> <calls> <their ns> <received> <drops> <hpctl user,
/// system ticks>` lines: how `hpctl trace` keeps pace with one CPU making
/// events, steadily at rising rates, then as fast as it can.
fn trace_rate(md: &mut String, text: &str) -> Result<()> {
    let mut rows = Vec::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("HPRATE ")) {
        let (pace, rest) = line.split_once(' ').context("an empty HPRATE line")?;
        let v: Vec<f64> = rest.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        let [calls, ns, received, drops, user_ticks, system_ticks] = v[..] else {
            bail!("a malformed HPRATE line: {line}")
        };
        rows.push((pace.to_string(), calls, ns, received, drops, (user_ticks + system_ticks) / 100.0));
    }
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(
        md,
        "\n`hpctl trace` against one CPU making events: cr_target on CPU 0 calls kfree (sink trace) in \
         bursts a millisecond apart, then as fast as it can, while hpctl reads on CPU 1 with 64 kB of \
         ring buffer per CPU (under -icount: guest seconds are instruction counts, the same on any host; \
         the two CPUs run by turns on one host thread). hpctl's busy time is its user and system CPU \
         time, in ticks of 10 ms, startup included.\n"
    )?;
    writeln!(md, "| calls a burst | events a guest second | received | dropped by the ring buffer | hpctl busy (s) |")?;
    writeln!(md, "|---|---:|---:|---:|---:|")?;
    let mut lossless = None;
    for (pace, calls, ns, received, drops, busy) in &rows {
        let rate = calls / (ns / 1e9);
        writeln!(
            md,
            "| {} | {rate:.0} | {received:.0} | {drops:.0} ({:.1}%) | {busy:.2} |",
            if pace == "max" { "all at once" } else { pace },
            100.0 * drops / calls
        )?;
        if *drops == 0.0 {
            lossless = Some(lossless.map_or(rate, |r: f64| r.max(rate)));
        }
    }
    match lossless {
        Some(rate) => writeln!(md, "\nThe highest rate hpctl took without a loss: {rate:.0} events a guest second.")?,
        None => writeln!(md, "\nhpctl lost events at every rate measured.")?,
    }
    Ok(())
}

/// `<sites> <ours|bare> <attach ns> <detach ns>` lines, by (sites, who):
/// the attach and detach times of each round.
fn attach_rounds(text: &str) -> BTreeMap<(u64, String), Vec<(f64, f64)>> {
    let mut rounds: BTreeMap<(u64, String), Vec<(f64, f64)>> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("HPATTACH ") else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let [sites, who, attach, detach] = f[..] else { continue };
        let (Ok(sites), Ok(attach), Ok(detach)) = (sites.parse(), attach.parse(), detach.parse()) else { continue };
        rounds.entry((sites, who.to_string())).or_default().push((attach, detach));
    }
    rounds
}

/// Attach and detach times against kprobes' own batch floor, under
/// plain TCG (host time: ratios within the run are what to go by).
fn attach_table(md: &mut String, text: &str) -> Result<()> {
    let rounds = attach_rounds(text);
    let median = |sites: u64, who: &str, detach: bool| {
        let r = rounds.get(&(sites, who.to_string()))?;
        Some(figures(r.iter().map(|&(a, d)| if detach { d } else { a }).collect()).median)
    };
    let sizes: Vec<u64> = rounds.keys().filter(|(_, who)| who == "ours").map(|&(s, _)| s).collect();
    if sizes.is_empty() {
        return Ok(());
    }
    writeln!(
        md,
        "\nAttach and detach of btrfs's sites (a selection of its callees near 1, 10 and 100 sites, then \
         all), sink none, timed from a shell in the guest under plain TCG, medians of 3 rounds: \
         hp_patcher's control command (planning, arming, the detach's waits) against kp_batch, a bare \
         module that registers the same addresses with one `register_kprobes()` and removes them with \
         one `unregister_kprobes()`. Milliseconds of host time under TCG, so only the ratio (×) is \
         worth comparing.\n"
    )?;
    writeln!(md, "| sites | attach, ms | register_kprobes, ms | × | detach, ms | unregister_kprobes, ms | × |")?;
    writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|")?;
    for sites in sizes {
        let mut row = format!("| {sites} |");
        for detach in [false, true] {
            let (ours, bare) = (median(sites, "ours", detach), median(sites, "bare", detach));
            let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.0}", v / 1e6));
            let ratio = ours.zip(bare).map_or("-".to_string(), |(o, b)| format!("{:.2}", o / b));
            write!(row, " {} | {} | {ratio} |", ms(ours), ms(bare))?;
        }
        writeln!(md, "{row}")?;
    }
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
        assert_eq!((f.median, f.min, f.max), (35.5, 35.0, 36.0));
        assert!(parse("HPBENCH-ERROR refused: attach\n").is_err());
        assert!(parse("HPBENCH nothing kstrdup\n").is_err());
        assert_eq!(
            memory_round("cr_target 37 100 200 10 9000 160 250 12 8500 100 200 10 8990"),
            Some(("cr_target", [37.0, 60.0, 50.0, 2.0, 500.0, 10.0]))
        );
        assert_eq!(memory_round("cr_target 37 100"), None);
        let attach = attach_rounds("HPATTACH 12 ours 5000000 9000000\nHPATTACH 12 bare 1000000 2000000\n");
        assert_eq!(attach[&(12, "ours".to_string())], [(5e6, 9e6)]);
    }

    #[test]
    fn trace_rate_table_says_the_highest_lossless_rate() {
        let mut md = String::new();
        trace_rate(&mut md, "HPRATE 5 1500 300000000 1500 0 10 5\nHPRATE max 2000000 2000000000 20000 1980000 50 40\n")
            .unwrap();
        assert!(md.contains("| 5 | 5000 | 1500 | 0 (0.0%) | 0.15 |"), "{md}");
        assert!(md.contains("| all at once | 1000000 | 20000 | 1980000 (99.0%) | 0.90 |"), "{md}");
        assert!(md.contains("without a loss: 5000 events"), "{md}");
        assert!(trace_rate(&mut md, "HPRATE 5 1500\n").is_err());
    }
}
