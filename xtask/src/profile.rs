//! `cargo xtask bench --only <configuration> --profile <function>`: where
//! the instructions of one configuration's calls go, function by function.
//! bench/insn_count.c, a QEMU plugin, counts every kernel instruction the
//! guest runs; the guest makes ten times the bench's calls of one function
//! and prints its symbols (kallsyms); a second boot measures `nothing`
//! (the same boot without the configuration), and the difference over the
//! calls is each function's instructions per call. For working on the hot
//! path; nothing is written to bench/RESULTS.md.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::kernel::Kernel;
use crate::repo_root;

/// bench.sh's calls of the profiled function: 5 rounds of 200000.
const CALLS: f64 = 1_000_000.0;

/// The plugin, built with the host's cc.
fn plugin() -> Result<std::path::PathBuf> {
    let source = repo_root().join("bench/insn_count.c");
    let out = repo_root().join("target/bench/insn_count.so");
    std::fs::create_dir_all(out.parent().unwrap())?;
    let status = Command::new("cc")
        .args(["-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .context("cc")?;
    if !status.success() {
        bail!("building {} failed", source.display());
    }
    Ok(out)
}

/// Instructions run in each function in one boot: the plugin's counts by
/// address, attributed to the symbol at or below each (HPSYM lines).
fn by_function(counts: &Path, log: &str) -> Result<HashMap<String, f64>> {
    let mut symbols: Vec<(u64, String)> = log
        .lines()
        .filter_map(|l| l.split_once("HPSYM ").map(|(_, s)| s))
        .filter_map(|s| {
            let f: Vec<&str> = s.split_whitespace().collect();
            let addr = u64::from_str_radix(f.first()?, 16).ok()?;
            let name = match f.get(3) {
                Some(module) => format!("{} {module}", f.get(2)?),
                None => f.get(2)?.to_string(),
            };
            Some((addr, name))
        })
        .collect();
    if symbols.is_empty() {
        bail!("the guest printed no symbols");
    }
    symbols.sort();
    let mut per = HashMap::new();
    let text = std::fs::read_to_string(counts).with_context(|| format!("reading {}", counts.display()))?;
    for line in text.lines() {
        let Some((addr, count)) = line.split_once(' ') else { continue };
        let (Ok(addr), Ok(count)) = (u64::from_str_radix(addr, 16), count.parse::<f64>()) else { continue };
        let i = symbols.partition_point(|s| s.0 <= addr);
        let name = i.checked_sub(1).map_or("?", |i| symbols[i].1.as_str());
        *per.entry(name.to_string()).or_insert(0.0) += count;
    }
    Ok(per)
}

/// Boots the bench image twice (`config`, then `nothing`) with the plugin
/// and prints each function's instructions per call of `function`.
pub fn profile(kernel: &Kernel, image: &Path, config: &str, function: &str) -> Result<()> {
    let plugin = plugin()?;
    let counts = repo_root().join("target/bench/insn_counts.txt");
    // SAFETY (of set_var): xtask is single-threaded here; QEMU inherits it.
    std::env::set_var("HP_INSN_COUNTS", &counts);
    let mut boots = Vec::new();
    for only in [config, "nothing"] {
        let cmdline = format!("hp_bench_only={only} hp_bench_profile hp_bench_fn={function}");
        let args = ["-icount", "shift=0", "-plugin", plugin.to_str().context("plugin path")?];
        println!("bench: profiling {only} ({function})");
        let (out, _) = crate::bench::run_guest(kernel, image, "bench-profile", &cmdline, &args)?;
        boots.push(by_function(&counts, &out.text)?);
    }
    let (with, without) = (&boots[0], &boots[1]);
    let mut rows: Vec<(f64, &str)> = with
        .keys()
        .chain(without.keys())
        .map(|n| ((with.get(n).unwrap_or(&0.0) - without.get(n).unwrap_or(&0.0)) / CALLS, n.as_str()))
        .filter(|(d, _)| d.abs() >= 1.5)
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    rows.dedup();
    println!("instructions per call of {function} under {config}, less the same boot without it:");
    for (d, name) in &rows {
        println!("{d:8.1}  {name}");
    }
    println!("{:8.1}  in all (rows of 1.5 or more; interrupts and the console add noise)", rows.iter().map(|r| r.0).sum::<f64>());
    Ok(())
}
