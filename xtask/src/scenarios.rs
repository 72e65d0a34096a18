//! The guest test plan and the demo: which scripts run in which boot.
//!
//! The scripts in lab/guest/ print `HPTEST <check> PASS` or
//! `HPTEST <check> FAIL <why>`; a boot passes when every check passed, every
//! script ran to its end, and the kernel log shows no trouble. A check that
//! the kernel under test cannot support prints `HPSKIP <check> <why>`: it is
//! neither passed nor failed, and the run lists it at its end.

use std::process::Command;

use anyhow::{bail, Result};

use crate::build::{self, Built};
use crate::guest::{self, Initramfs};
use crate::kernel::{Arch, Kernel};
use crate::{callees_truth, probe_point, run};

#[derive(Clone, Copy)]
struct Boot {
    name: &'static str,
    scripts: &'static [&'static str],
    /// In-tree modules to pack, each with its dependencies.
    in_tree: &'static [&'static str],
    ext4_image: bool,
    /// In-tree modules whose callee ground truth (callees_truth.rs) is
    /// packed as `modules/<name>.callees`, with scripts/callees_lib.sh.
    callees_truth: &'static [&'static str],
    /// Host programs packed with their libraries (guest::add_host_program).
    host_programs: &'static [&'static str],
    /// Added to the kernel command line.
    cmdline: &'static str,
    timeout_secs: u32,
}

/// A boot that packs only our modules: each entry below says what it adds.
const PLAIN: Boot = Boot {
    name: "",
    scripts: &[],
    in_tree: &[],
    ext4_image: false,
    callees_truth: &[],
    host_programs: &[],
    cmdline: "",
    timeout_secs: 900,
};

/// Grouped so that one boot runs several scenarios.
const BOOTS: &[Boot] = &[
    Boot {
        name: "cr_target",
        scripts: &[
            "bad_input",
            "accounting",
            "target_unload",
            "race",
            "cycles",
            "kmemleak",
            "inject",
            "leaks",
            "systematic",
        ],
        ..PLAIN
    },
    Boot {
        name: "core",
        // force_unload last: `rmmod -f` taints the kernel, and a debug
        // kernel then turns lockdep off for the rest of the boot.
        scripts: &["pointers", "caller", "disturbed", "leak", "fault", "kmemleak", "force_unload"],
        // Races show up sooner when the kernel preempts anywhere.
        cmdline: "preempt=full",
        ..PLAIN
    },
    Boot {
        name: "failslab",
        // Only the debug kernel has failslab: there each allocation of an
        // attach fails in turn, about 12 s apiece under KASAN and TCG, more
        // than the core boot's budget could hold. Elsewhere it says so and ends.
        scripts: &["failslab"],
        ..PLAIN
    },
    Boot {
        name: "control",
        // lockdown last: it cannot be lifted.
        scripts: &[
            "control",
            "targets",
            "follow",
            "events",
            "tracecmd",
            "anycallee",
            "callee",
            "typed",
            "detach_wait",
            "hpctl_fault",
            "lockdown",
        ],
        host_programs: &["/usr/bin/trace-cmd"],
        ..PLAIN
    },
    Boot {
        name: "ext4",
        scripts: &["ext4", "hpctl_ext4", "callees_ext4", "ext4_fault", "systematic_brd"],
        in_tree: &["ext4", "brd"],
        ext4_image: true,
        callees_truth: &["ext4"],
        ..PLAIN
    },
];

/// On i386 (Debian's 686-pae 6.1): the seed's interface, bad input, exact
/// accounting, attach/detach cycles and races under load, and ext4 (whose
/// planning overflowed i386's 8 kB stack until it moved to a worker's
/// fresh stack). hpctl is an x86_64 binary and the i386 kernel has no BTF,
/// so the control, event and typed-callee scenarios stay on x86_64.
const I386_BOOTS: &[Boot] = &[
    Boot {
        name: "cr_target",
        scripts: &[
            "bad_input",
            "accounting",
            "target_unload",
            "race",
            "cycles",
            "callee_verb",
            "inject",
            "leaks",
            "systematic",
        ],
        ..PLAIN
    },
    Boot { name: "ext4", scripts: &["ext4"], in_tree: &["ext4", "brd"], ext4_image: true, ..PLAIN },
];

/// On PREEMPT_RT (Debian's 6.12 rt-amd64): the cr_target and core boots,
/// where spinlocks sleep and cr_target's atomic contexts become what RT
/// allows (cr_target.c says how).
const RT_BOOTS: &[Boot] = &[BOOTS[0], BOOTS[1]];

fn boots(kernel: &Kernel) -> &'static [Boot] {
    match kernel.arch() {
        Arch::X86_64 if kernel.is_rt() => RT_BOOTS,
        Arch::X86_64 => BOOTS,
        Arch::I386 => I386_BOOTS,
    }
}

fn initramfs(
    kernel: &Kernel,
    built: &Built,
    name: &str,
    scripts: &[&str],
    boot: Option<&Boot>,
) -> Result<std::path::PathBuf> {
    let fs = Initramfs::new(&format!("{}/{name}", kernel.release), scripts, kernel.arch())?;
    fs.add_file(&built.hp_patcher, "modules/hp_patcher.ko")?;
    fs.add_file(&built.cr_target, "modules/cr_target.ko")?;
    fs.add_file(&built.cr_twin, "modules/cr_twin.ko")?;
    fs.add_file(&built.kp_floor, "modules/kp_floor.ko")?;
    fs.add_file(&built.kp_batch, "modules/kp_batch.ko")?;
    fs.add_file(&built.cr_callee, "modules/cr_callee.ko")?;
    // Beside hp_patcher.ko, where `hpctl attach` finds the module to load.
    fs.add_file(&built.hpctl, "modules/hpctl")?;
    fs.add_bytes("modules/probe_point", probe_point::in_cr_round(&built.cr_target)?.as_bytes())?;
    let (sites, tails) = probe_point::cr_target_sites(&built.cr_target)?;
    fs.add_bytes("modules/cr_target.sites", format!("{sites} {tails}\n").as_bytes())?;
    if let Some(boot) = boot {
        for module in boot.in_tree {
            fs.add_in_tree_module(kernel, module)?;
        }
        if boot.ext4_image {
            let image = fs.path("ext4.img");
            std::fs::File::create(&image)?.set_len(8 << 20)?;
            run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "hp_test"]).arg(&image))?;
        }
        for module in boot.callees_truth {
            let (truth, path) = callees_truth::write(kernel, module)?;
            println!("{}", truth.summary());
            fs.add_file(&path, &format!("modules/{module}.callees"))?;
        }
        for program in boot.host_programs {
            fs.add_host_program(program)?;
        }
        if !boot.callees_truth.is_empty() {
            fs.add_file(&crate::repo_root().join("lab/guest/callees_lib.sh"), "scripts/callees_lib.sh")?;
        }
    }
    fs.pack()
}

/// The bench's boot: btrfs (with its dependencies), the largest target
/// of the sweep, for attach and detach times up to a thousand sites.
const BENCH: Boot = Boot { name: "bench", scripts: &["bench"], in_tree: &["btrfs"], ..PLAIN };

/// The bench's initramfs: our modules and lab/guest/bench.sh (bench.rs).
pub fn bench_image(kernel: &Kernel, built: &Built) -> Result<std::path::PathBuf> {
    initramfs(kernel, built, "bench", BENCH.scripts, Some(&BENCH))
}

pub fn demo(kernel: &Kernel) -> Result<()> {
    let built = build::build_all(kernel)?;
    let image = initramfs(kernel, &built, "demo", &["demo"], None)?;
    println!("\n== booting {} in QEMU (TCG): an hpctl session on cr_target, a running module\n", kernel.release);
    let out = guest::boot(kernel, &image, "demo", "", 600, false)?;
    for line in out.text.lines() {
        if let Some(shown) = line.strip_prefix("HPDEMO ") {
            println!("{shown}");
        }
    }
    let trouble = out.trouble();
    if !out.finished() || !trouble.is_empty() {
        bail!("demo guest failed:\n{}", trouble.join("\n"));
    }
    println!("\nguest run took {:.1} s wall; the whole guest log: {}", out.seconds, out.log.display());
    Ok(())
}

/// What one kernel's guest run came to.
pub struct Outcome {
    pub passed: usize,
    pub failed: usize,
    /// `<check> <why>` of each check the kernel could not run.
    pub skipped: Vec<String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.passed > 0
    }
}

pub fn test(kernel: &Kernel, only: Option<&str>) -> Result<Outcome> {
    let runs = boots(kernel)
        .iter()
        .map(|boot| {
            (
                boot,
                boot.scripts
                    .iter()
                    .copied()
                    .filter(|s| only.is_none_or(|o| o.split(',').any(|o| s.contains(o))))
                    .collect(),
            )
        })
        .collect();
    run_boots(kernel, runs)
}

/// The long stress run: not part of `test` (it takes several minutes).
const STRESS: Boot = Boot {
    name: "stress",
    scripts: &["stress"],
    in_tree: &[],
    ext4_image: false,
    callees_truth: &[],
    host_programs: &[],
    cmdline: "preempt=full",
    timeout_secs: 3000,
};

pub fn stress(kernel: &Kernel) -> Result<Outcome> {
    run_boots(kernel, vec![(&STRESS, STRESS.scripts.to_vec())])
}

/// Runs each boot with its scripts (none: skipped) and counts the checks.
fn run_boots(kernel: &Kernel, runs: Vec<(&Boot, Vec<&str>)>) -> Result<Outcome> {
    let built = build::build_all(kernel)?;
    let started = std::time::Instant::now();
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut problems = Vec::new();
    let mut skipped = Vec::new();
    let runs: Vec<_> = runs.into_iter().filter(|(_, scripts)| !scripts.is_empty()).collect();
    let mut jobs = Vec::new();
    for (boot, scripts) in &runs {
        jobs.push(guest::BootJob {
            name: boot.name,
            scripts: scripts.join(", "),
            image: initramfs(kernel, &built, boot.name, scripts, Some(boot))?,
            cmdline: boot.cmdline,
            timeout_secs: boot.timeout_secs * kernel.slowdown(),
        });
    }
    for ((boot, scripts), out) in runs.iter().zip(guest::boot_all(kernel, &jobs)) {
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                failed += 1;
                problems.push(format!("{}: {e:#}", boot.name));
                continue;
            }
        };
        let checks = Checks::read(boot.name, &out.text);
        passed += checks.passed;
        failed += checks.failed.len();
        problems.extend(checks.failed);
        skipped.extend(checks.skipped);
        let trouble = out.problems(boot.name, scripts);
        failed += trouble.len();
        problems.extend(trouble);
    }
    for s in &skipped {
        println!("SKIPPED {}: {s}", kernel.release);
    }
    for p in &problems {
        println!("FAILED {}: {p}", kernel.release);
    }
    println!(
        "guest {}: {passed} passed, {failed} failed, {} skipped, {:.1} s",
        kernel.release,
        skipped.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(Outcome { passed, failed, skipped })
}

/// The checks one boot printed: `HPTEST <check> PASS|FAIL <why>` and
/// `HPSKIP <check> <why>`, each shown as it is counted, with the boot's
/// `HPINFO` and `HPSHOW` lines.
pub struct Checks {
    pub passed: usize,
    /// `<boot>: <check> FAIL <why>`.
    pub failed: Vec<String>,
    pub skipped: Vec<String>,
}

impl Checks {
    pub fn read(boot: &str, text: &str) -> Checks {
        let mut checks = Checks { passed: 0, failed: Vec::new(), skipped: Vec::new() };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("HPTEST ") {
                println!("  {rest}");
                // The serial console can splice a kernel message onto the
                // line right after the word ("PASS[  159.6] ..."), as it did
                // once on the debug kernel.
                let word = rest.split_whitespace().nth(1).unwrap_or("");
                if word == "PASS" || word.strip_prefix("PASS").is_some_and(|r| r.starts_with('[')) {
                    checks.passed += 1;
                } else {
                    checks.failed.push(format!("{boot}: {rest}"));
                }
            } else if let Some(rest) = line.strip_prefix("HPSKIP ") {
                println!("  {rest} SKIPPED");
                checks.skipped.push(format!("{boot}: {rest}"));
            } else if line.starts_with("HPINFO ") || line.starts_with("HPSHOW ") {
                println!("  {line}");
            }
        }
        checks
    }
}
