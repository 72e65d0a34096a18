//! A QEMU guest: a busybox initramfs with our modules and scripts, booted
//! under TCG with a hard timeout, its serial output logged and checked.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::kernel::{read_module, Arch, Kernel, MODULE_SUFFIXES};
use crate::{repo_root, run};

/// Lines that mean the guest kernel is unwell, whatever the tests say.
pub const KERNEL_TROUBLE: &[&str] = &["Oops", "BUG:", "WARNING:", "Call Trace", "general protection", "Kernel panic"];

/// Printed by lab/guest/init.sh when every script has run.
const GUEST_DONE: &str = "HP-GUEST-DONE";

pub struct Initramfs {
    dir: PathBuf,
}

impl Initramfs {
    /// A fresh tree with busybox, /init, the guest helpers and the scripts
    /// to run, in order.
    pub fn new(name: &str, scripts: &[&str], arch: Arch) -> Result<Initramfs> {
        let dir = repo_root().join("target/lab/initramfs").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["bin", "dev", "proc", "sys", "mnt", "tmp", "modules", "scripts"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let fs = Initramfs { dir };
        fs.add_file(&crate::kernel::busybox(arch)?, "bin/busybox")?;
        let guest = repo_root().join("lab/guest");
        fs.add_file(&guest.join("init.sh"), "init")?;
        fs.add_file(&guest.join("lib.sh"), "scripts/lib.sh")?;
        for script in scripts {
            fs.add_file(&guest.join(format!("{script}.sh")), &format!("scripts/{script}.sh"))?;
        }
        std::fs::write(fs.dir.join("scripts/run"), scripts.join("\n") + "\n")?;
        Ok(fs)
    }

    pub fn add_file(&self, src: &Path, dest: &str) -> Result<()> {
        let to = self.dir.join(dest);
        std::fs::copy(src, &to).with_context(|| format!("copying {}", src.display()))?;
        Ok(())
    }

    /// Adds a dynamically linked host program at its own path, with the
    /// libraries and loader `ldd` names at theirs.
    pub fn add_host_program(&self, program: &str) -> Result<()> {
        let out = Command::new("ldd").arg(program).output().context("running ldd")?;
        if !out.status.success() {
            bail!("ldd {program}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let mut files = vec![PathBuf::from(program)];
        // "libz.so.1 => /lib/.../libz.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let path = line.split("=>").last().and_then(|r| r.split_whitespace().next());
            if let Some(path) = path.filter(|p| p.starts_with('/')) {
                files.push(PathBuf::from(path));
            }
        }
        for file in files {
            let dest = file.strip_prefix("/")?;
            std::fs::create_dir_all(self.dir.join(dest).parent().unwrap())?;
            // Through symlinks: /lib64 and /lib are links on a merged-/usr host.
            std::fs::copy(&file, self.dir.join(dest)).with_context(|| format!("copying {}", file.display()))?;
        }
        Ok(())
    }

    pub fn add_bytes(&self, dest: &str, bytes: &[u8]) -> Result<()> {
        std::fs::write(self.dir.join(dest), bytes)?;
        Ok(())
    }

    pub fn path(&self, dest: &str) -> PathBuf {
        self.dir.join(dest)
    }

    /// Adds in-tree modules, decompressed, with their dependencies first;
    /// `modules/<name>.order` lists the load order.
    pub fn add_in_tree_module(&self, kernel: &Kernel, name: &str) -> Result<()> {
        let mut order = Vec::new();
        collect_dependencies(&kernel.modules_dir()?, name, &mut order)?;
        for (module, path) in &order {
            self.add_bytes(&format!("modules/{module}.ko"), &read_module(path)?)?;
        }
        let names: Vec<&str> = order.iter().map(|(m, _)| m.as_str()).collect();
        self.add_bytes(&format!("modules/{name}.order"), (names.join("\n") + "\n").as_bytes())
    }

    pub fn pack(&self) -> Result<PathBuf> {
        let out = self.dir.with_extension("cpio.gz");
        run(Command::new("chmod").arg("+x").arg(self.dir.join("init")))?;
        run(Command::new("sh")
            .arg("-c")
            .arg("find . | cpio -o -H newc --quiet | gzip -1 > \"$0\"")
            .arg(&out)
            .current_dir(&self.dir))?;
        Ok(out)
    }
}

pub fn find_module(dir: &Path, name: &str) -> Result<PathBuf> {
    let wanted: Vec<String> = MODULE_SUFFIXES.iter().map(|s| format!("{}{s}", name.replace('-', "_"))).collect();
    let mut stack = vec![dir.join("kernel")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|f| wanted.contains(&f.to_string_lossy().replace('-', "_"))) {
                return Ok(path);
            }
        }
    }
    bail!("in-tree module {name} not found under {}", dir.display())
}

/// A module's hard dependencies (`depends`) and the modules its soft
/// ones (`softdep pre:`) name by alias, in load order: ext4 on 6.x asks the
/// crypto API for `crypto-crc32c` at mount time, which nobody in the guest
/// would modprobe; 7.x's ext4 calls the crc32c library and names none.
fn collect_dependencies(dir: &Path, name: &str, order: &mut Vec<(String, PathBuf)>) -> Result<()> {
    if order.iter().any(|(m, _)| m == name) {
        return Ok(());
    }
    let path = find_module(dir, name)?;
    let field = |field: &str| -> Result<String> {
        let out = Command::new("/sbin/modinfo").args(["-F", field]).arg(&path).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    for dep in field("depends")?.split(',').filter(|d| !d.is_empty()) {
        collect_dependencies(dir, dep, order)?;
    }
    // As modprobe does, a soft dependency no module provides (built in,
    // or gone) is passed over.
    for alias in soft_pre_dependencies(&field("softdep")?) {
        if let Some(module) = module_of_alias(dir, &alias)? {
            collect_dependencies(dir, &module, order)?;
        }
    }
    order.push((name.to_string(), path));
    Ok(())
}

/// The `pre:` names of a `softdep` field (`pre: crypto-crc32c post: x`).
fn soft_pre_dependencies(softdep: &str) -> Vec<String> {
    let mut pre = false;
    let mut names = Vec::new();
    for word in softdep.split_whitespace() {
        match word {
            "pre:" => pre = true,
            "post:" => pre = false,
            name if pre => names.push(name.to_string()),
            _ => {}
        }
    }
    names
}

/// The in-tree module that provides `alias`, from the modules.alias that
/// the host's depmod makes once for the unpacked kernel (Debian ships none:
/// its postinst runs depmod). The generic implementation is preferred over
/// a CPU-specific one, which TCG's CPU may not run.
fn module_of_alias(dir: &Path, alias: &str) -> Result<Option<String>> {
    let aliases = dir.join("modules.alias");
    if !aliases.exists() {
        let release = dir.file_name().context("modules directory")?;
        // depmod reads <base>/lib/modules/<release>; dir is .../lib/modules/<release>.
        let base = dir.parent().and_then(Path::parent).and_then(Path::parent).context("modules directory")?;
        run(Command::new("/sbin/depmod").arg("-b").arg(base).arg(release))?;
    }
    let text = std::fs::read_to_string(&aliases)?;
    let providers: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("alias ")?.split_once(' ').filter(|(a, _)| *a == alias).map(|(_, m)| m.trim()))
        .collect();
    Ok(providers.iter().find(|m| m.ends_with("_generic")).or(providers.first()).map(|m| m.to_string()))
}

pub struct GuestOutput {
    pub text: String,
    pub log: PathBuf,
    pub seconds: f64,
}

/// One guest for `boot_all`.
pub struct BootJob<'a> {
    pub name: &'a str,
    /// What it runs, for the line printed as it starts.
    pub scripts: String,
    pub image: PathBuf,
    pub cmdline: &'a str,
    pub timeout_secs: u32,
}

/// Guests booted at once: each QEMU runs both vCPUs on one host thread
/// (`boot_with` says why), so two keep the machine's two cores busy, and
/// each guest runs as fast as alone.
const GUESTS_AT_ONCE: usize = 2;

/// Boots every job, `GUESTS_AT_ONCE` at a time; their outputs in the jobs'
/// order. Prints a line as each starts and as each ends.
pub fn boot_all(kernel: &Kernel, jobs: &[BootJob]) -> Vec<Result<GuestOutput>> {
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, Result<GuestOutput>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..GUESTS_AT_ONCE.min(jobs.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break mine };
                        println!("guest {}: running {}", job.name, job.scripts);
                        let out = boot(kernel, &job.image, job.name, job.cmdline, job.timeout_secs, false);
                        if let Ok(out) = &out {
                            println!("guest {}: {:.1} s wall", job.name, out.seconds);
                        }
                        mine.push((i, out));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, out)| out).collect()
}

/// Boots the kernel with the initramfs; returns the serial output. With
/// `echo`, the output is also shown as it comes.
pub fn boot(
    kernel: &Kernel,
    initramfs: &Path,
    name: &str,
    cmdline: &str,
    timeout_secs: u32,
    echo: bool,
) -> Result<GuestOutput> {
    boot_with(kernel, initramfs, name, cmdline, timeout_secs, echo, &[])
}

/// `boot`, with more QEMU arguments (the bench's `-icount`).
pub fn boot_with(
    kernel: &Kernel,
    initramfs: &Path,
    name: &str,
    cmdline: &str,
    timeout_secs: u32,
    echo: bool,
    qemu_args: &[&str],
) -> Result<GuestOutput> {
    let log = repo_root().join("target/lab").join(&kernel.release).join(format!("{name}.log"));
    let console = log.with_extension("console");
    let mut qemu = Command::new("timeout");
    qemu.args(["--kill-after=10", &timeout_secs.to_string(), kernel.arch().qemu()])
        // One host thread for both vCPUs. With multi-threaded TCG, QEMU 7.2
        // can translate a block from a site's int3 while another vCPU's
        // text_poke restores the byte, and then keeps running that stale
        // block: 142 int3 hits in 0.3 s at a restored `e8` were seen on
        // both CPUs, and 6.2+ kernels die of it ("Oops: int3"), as mptcp's
        // TCG-only CI did with jump labels (mptcp_net-next#471). Hardware
        // and KVM cannot do this after text_poke_sync.
        .args(["-accel", "tcg,thread=single", "-cpu", kernel.arch().qemu_cpu(), "-smp", "2"])
        // KASAN's shadow and kmemleak's pool want more on the debug kernel.
        .args(["-m", if kernel.slowdown() > 1 { "2048" } else { "1024" }])
        // ttyS0, the kernel's console, to a file; ttyS1, lab/guest/init.sh's
        // output, to us.
        .args(["-nographic", "-no-reboot", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .args(["-serial", "stdio"])
        .args(qemu_args)
        .arg("-kernel")
        .arg(kernel.image()?)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(format!("console=ttyS0 loglevel=5 panic=-1 oops=panic panic_on_warn=1 rdinit=/init {cmdline}"));
    run_serial(qemu, name, &log, Some(&console), timeout_secs, echo)
}

/// Runs a QEMU command line (under `timeout`) whose serial port is its
/// stdout; logs every line to `log` and returns them. A kernel console
/// written to a file of its own, `console`, follows them, between
/// HP-CONSOLE-BEGIN and HP-CONSOLE-END: a guest that died before its
/// dmesg dump shows why there.
pub fn run_serial(
    mut qemu: Command,
    name: &str,
    log: &Path,
    console: Option<&Path>,
    timeout_secs: u32,
    echo: bool,
) -> Result<GuestOutput> {
    std::fs::create_dir_all(log.parent().unwrap())?;
    if let Some(console) = console {
        let _ = std::fs::remove_file(console);
    }
    let mut log_file = std::fs::File::create(log)?;
    let started = Instant::now();
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {qemu:?}"))?;
    let mut text = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).split(b'\n') {
        let line = String::from_utf8_lossy(&line?).replace('\r', "");
        writeln!(log_file, "{line}")?;
        if echo {
            println!("{line}");
        }
        text.push_str(&line);
        text.push('\n');
    }
    let status = child.wait()?;
    let seconds = started.elapsed().as_secs_f64();
    if let Some(console) = console {
        // A QEMU that never started has no file: say so, and let the
        // missing end markers fail the boot.
        let kernel_lines = match std::fs::read(console) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).replace('\r', ""),
            Err(e) => format!("(no console: {}: {e})", console.display()),
        };
        let section = format!("HP-CONSOLE-BEGIN\n{}\nHP-CONSOLE-END\n", kernel_lines.trim_end());
        log_file.write_all(section.as_bytes())?;
        text.push_str(&section);
        let _ = std::fs::remove_file(console);
    }
    if status.code() == Some(124) || status.code() == Some(137) {
        bail!("guest {name} timed out after {timeout_secs} s; log: {}", log.display());
    }
    Ok(GuestOutput { text, log: log.to_path_buf(), seconds })
}

impl GuestOutput {
    pub fn finished(&self) -> bool {
        self.text.lines().any(|l| l.trim() == GUEST_DONE)
    }

    /// What went wrong in this boot besides failed checks: a script that did
    /// not reach its end, a guest that did not finish, kernel trouble.
    pub fn problems(&self, boot: &str, scripts: &[&str]) -> Vec<String> {
        let mut problems = Vec::new();
        for script in scripts {
            if !self.text.lines().any(|l| l.trim() == format!("HP-SCRIPT-END {script}")) {
                problems.push(format!("{boot}: script {script} did not finish; log: {}", self.log.display()));
            }
        }
        if !self.finished() {
            problems.push(format!("{boot}: guest did not finish; log: {}", self.log.display()));
        }
        let trouble = self.trouble();
        if !trouble.is_empty() {
            problems.push(format!("{boot}: kernel trouble:\n{}", trouble.join("\n")));
        }
        problems
    }

    /// Lines showing kernel trouble, with their line numbers.
    pub fn trouble(&self) -> Vec<String> {
        self.text
            .lines()
            .enumerate()
            .filter(|(_, l)| KERNEL_TROUBLE.iter().any(|p| l.contains(p)))
            .map(|(n, l)| format!("{}:{}: {l}", self.log.display(), n + 1))
            .collect()
    }
}
