//! `cargo xtask`: build hp_patcher, run the demo, run the tests.

mod apt;
mod bench;
mod build;
mod callees_truth;
mod debian_guest;
mod debug_kernel;
mod guest;
mod hot_path;
mod hpctl;
mod install_test;
mod kernel;
mod lines;
mod manpages;
mod package;
mod probe_point;
mod profile;
mod real_modules;
mod scenarios;
mod stack;
mod sweep;
mod toolchain;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use kernel::{Arch, Kernel};

#[derive(Parser)]
#[command(about = "Build, demo and test hp_patcher")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args)]
struct KernelChoice {
    /// Kernel to build for: a line (6.12, 6.1, i386, rt), `debug`, or an exact
    /// release (default: the 6.12 line's newest build).
    #[arg(long, conflicts_with = "kdir")]
    kernel: Option<String>,
    /// Kernel build directory to build against.
    #[arg(long)]
    kdir: Option<PathBuf>,
}

impl KernelChoice {
    fn resolve(&self) -> Result<Kernel> {
        match (&self.kernel, &self.kdir) {
            (_, Some(kdir)) => Kernel::from_kdir(kdir),
            (Some(release), None) => Kernel::release(release),
            (None, None) => Kernel::default_release(),
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Install host packages, resolve every tested kernel line and fetch its build.
    Setup,
    /// Build hp_patcher.ko and the test modules into target/kmod/<release>/.
    Build(KernelChoice),
    /// Build the packages into target/package/: hp-patcher-dkms and hpctl
    /// (.deb, amd64) and a tarball with install.sh for other distributions.
    Package,
    /// Boot a guest, attach to cr_target, show intercepted calls, detach.
    Demo {
        /// Debian kernel release to boot (default: the lab's kernel).
        #[arg(long)]
        kernel: Option<String>,
    },
    /// 200 attach/detach cycles under load, exact or racing rmmod of the
    /// target (several minutes; not part of `test`).
    Stress {
        /// Debian kernel release to boot (default: the lab's kernel).
        #[arg(long)]
        kernel: Option<String>,
    },
    /// What hp_patcher adds per call, measured under QEMU's -icount (one guest
    /// instruction per nanosecond), into bench/RESULTS.md (not part of `test`).
    Bench {
        /// Debian kernel release or line to boot (default: the lab's kernel).
        #[arg(long)]
        kernel: Option<String>,
        /// While working on the hot path: only these configurations (comma-
        /// separated, as bench.sh names them) and the redirect floor, under
        /// -icount only, printed rather than written to bench/RESULTS.md.
        #[arg(long)]
        only: Option<String>,
        /// With --only <one configuration>: where the calls of this
        /// function go, per kernel function (a QEMU plugin counts them).
        #[arg(long, requires = "only")]
        profile: Option<String>,
    },
    /// The ground truth of a module's callees from its relocations, written
    /// to target/lab/<release>/<module>.callees; with --check, the host
    /// check of ext4, xfs, e1000 and snd-pcm on every tested kernel.
    CalleesTruth {
        /// Debian kernel release, e.g. 6.12.117+deb12-amd64.
        #[arg(required_unless_present = "check")]
        release: Option<String>,
        /// In-tree module name (e.g. ext4), or the path of a .ko.
        #[arg(required_unless_present = "check")]
        module: Option<String>,
        /// Run the host check instead (part of `cargo xtask test`).
        #[arg(long, conflicts_with_all = ["release", "module"])]
        check: bool,
    },
    /// Host unit tests, then the guest tests on every kernel the lab pins.
    Test {
        /// Run only the guest scenarios (or, with --sweep, the sweep boots)
        /// whose name contains this, or one of these (comma-separated).
        #[arg(long)]
        only: Option<String>,
        /// Skip the host unit tests.
        #[arg(long)]
        guest_only: bool,
        /// Test one kernel only: a line (6.12, 6.1, i386, rt), `debug`, or an
        /// exact Debian release (default: each of lines::TEST_LINES).
        #[arg(long)]
        kernel: Option<String>,
        /// Only the sweep over Debian's in-tree modules: on the default
        /// kernel it rewrites lab/SWEEP.md (with --only, target/lab/SWEEP.md);
        /// with --kernel, target/lab/SWEEP-<release>.md.
        #[arg(long)]
        sweep: bool,
        /// Only the install test: the packages, installed with apt in a
        /// Debian 13 guest (made once with debootstrap).
        #[arg(long, conflicts_with_all = ["sweep", "kernel"])]
        install: bool,
    },
}

/// The kernel a one-boot command (demo, stress, bench) boots: the one
/// named, or the lab's; with the host packages its guests need.
fn guest_kernel(named: Option<String>) -> Result<Kernel> {
    kernel::ensure_host_packages()?;
    match named {
        Some(release) => Kernel::release(&release),
        None => Kernel::default_release(),
    }
}

fn main() -> std::process::ExitCode {
    match run_command(Cli::parse().command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_command(command: Cmd) -> Result<()> {
    match command {
        Cmd::Setup => {
            kernel::ensure_host_packages()?;
            lines::TEST_LINES.iter().try_for_each(|l| Kernel::line(*l).map(drop))
        }
        Cmd::Build(choice) => {
            kernel::ensure_host_packages()?;
            let built = build::build_all(&choice.resolve()?)?;
            println!("{}\n{}", built.hp_patcher.display(), built.cr_target.display());
            Ok(())
        }
        Cmd::Package => {
            kernel::ensure_host_packages()?;
            package::build().map(drop)
        }
        Cmd::Demo { kernel } => {
            let kernel = guest_kernel(kernel)?;
            scenarios::demo(&kernel)
        }
        Cmd::Stress { kernel } => {
            let kernel = guest_kernel(kernel)?;
            if !scenarios::stress(&kernel)?.ok() {
                bail!("stress run failed");
            }
            Ok(())
        }
        Cmd::Bench { kernel, only, profile } => {
            let kernel = guest_kernel(kernel)?;
            match only {
                Some(only) => bench::bench_only(&kernel, &only, profile.as_deref()),
                None => bench::bench(&kernel),
            }
        }
        Cmd::CalleesTruth { release, module, check } => {
            if check {
                for line in lines::TEST_LINES.iter().filter(|l| l.arch() == Arch::X86_64) {
                    callees_truth::check(&Kernel::line(*line)?)?;
                }
                return Ok(());
            }
            callees_truth::command(&release.unwrap(), &module.unwrap())
        }
        Cmd::Test { only, guest_only, kernel, sweep, install } => {
            kernel::ensure_host_packages()?;
            if install {
                let passed = install_test::run()?;
                println!("guest: {passed} passed, 0 failed");
                return Ok(());
            }
            // Only a deliberate, complete sweep rewrites the committed table;
            // a filtered one or the one inside the full test run writes under target/.
            let scratch_table = repo_root().join("target/lab/SWEEP.md");
            if sweep {
                // The committed table is the default kernel's, swept whole.
                let (kernel, table) = match &kernel {
                    Some(spec) => {
                        let kernel = Kernel::release(spec)?;
                        let table = scratch_table.with_file_name(format!("SWEEP-{}.md", kernel.release));
                        (kernel, table)
                    }
                    None if only.is_some() => (Kernel::default_release()?, scratch_table),
                    None => (Kernel::default_release()?, repo_root().join("lab/SWEEP.md")),
                };
                return sweep::sweep(&kernel, only.as_deref(), &table).map(drop);
            }
            let all_lines = kernel.is_none();
            let (kernels, swept) = match kernel {
                Some(spec) => {
                    let kernel = Kernel::release(&spec)?;
                    // Only the lines the suite sweeps (6.12, 7.x): the debug kernel is
                    // trimmed to the lab's own modules, and 6.1's zram and tun
                    // exercisers fail there before anything is attached.
                    let sweeps = lines::SWEEP_LINES.iter().any(|l| l.owns(&kernel.release));
                    let swept = if sweeps && kernel.slowdown() == 1 { vec![kernel.clone()] } else { Vec::new() };
                    (vec![kernel], swept)
                }
                None => (
                    lines::TEST_LINES.iter().map(|l| Kernel::line(*l)).collect::<Result<Vec<_>>>()?,
                    lines::SWEEP_LINES.iter().map(|l| Kernel::line(*l)).collect::<Result<Vec<_>>>()?,
                ),
            };
            if !guest_only {
                run(Command::new(env!("CARGO")).args(["test", "--workspace"]).current_dir(repo_root()))?;
                for kernel in &kernels {
                    // Both read x86_64 relocations and decode 64-bit code.
                    if kernel.arch() != Arch::X86_64 || kernel.is_rt() {
                        println!(
                            "{}: real-module and callee-truth checks run on the x86_64 lines, not i386 or RT",
                            kernel.release
                        );
                        continue;
                    }
                    real_modules::check(kernel)?;
                    callees_truth::check(kernel)?;
                }
            }
            // Every kernel runs even when an earlier one failed: a failure on
            // one only is itself worth knowing.
            let mut failed = Vec::new();
            let (mut checks_passed, mut checks_failed, mut checks_skipped) = (0, 0, 0);
            for kernel in &kernels {
                println!("== guest tests on {}", kernel.release);
                let outcome = scenarios::test(kernel, only.as_deref())?;
                checks_passed += outcome.passed;
                checks_failed += outcome.failed;
                checks_skipped += outcome.skipped.len();
                if !outcome.ok() {
                    failed.push(kernel.release.as_str());
                }
            }
            if !failed.is_empty() {
                println!("guest: {checks_passed} passed, {checks_failed} failed");
                bail!("guest tests failed on {}", failed.join(", "));
            }
            // About 3 minutes a kernel: cheap enough to sweep every time.
            if only.is_none() {
                for kernel in &swept {
                    let table = scratch_table.with_file_name(format!("SWEEP-{}.md", kernel.release));
                    checks_passed += sweep::sweep(kernel, None, &table)?;
                }
            }
            // The packages in a real Debian 13 system: with the whole suite
            // (every line), or alone with --install.
            if only.is_none() && all_lines {
                checks_passed += install_test::run()?;
            }
            if checks_skipped > 0 {
                println!("guest: {checks_skipped} checks skipped (listed as SKIPPED above)");
            }
            // The closing line, in the plain form CI reads.
            println!("guest: {checks_passed} passed, 0 failed");
            Ok(())
        }
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs a command, failing with its name if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
