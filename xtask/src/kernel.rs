//! Guest kernels and their headers: which release, where its files are, and
//! fetching Debian's packages into the git-ignored lab cache.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::apt::{Apt, Suite};
use crate::lines::{self, Build, Line};
use crate::toolchain::Toolchain;
use crate::{repo_root, run};
use std::sync::Mutex;

/// `--kernel debug`: Debian's 6.12 source built with KASAN, lockdep,
/// kmemleak and the rest (debug_kernel.rs), cached outside the checkout.
pub const DEBUG_RELEASE: &str = "debug";

/// Host packages the lab needs (Debian bookworm).
const HOST_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "xz-utils",
    "gzip",
    "e2fsprogs",
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "libstd-rust-web-dev",
    "gcc-12",
    "make",
    "binutils",
    "kmod",
    "pahole",
    // The Debian 13 root that 7.x modules are built in (toolchain.rs).
    "debootstrap",
    "libelf1",
    // For the sweep: file system images, and a static helper for the guest.
    "xfsprogs",
    "btrfs-progs",
    "dosfstools",
    "genisoimage",
    "libc6-dev",
    // Debian's own tracer, packed into the control boot with its libraries.
    "trace-cmd",
];

/// Installs whatever host package is missing.
pub fn ensure_host_packages() -> Result<()> {
    let missing: Vec<&str> = HOST_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !std::process::Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing host packages: {}", missing.join(" "));
    run(std::process::Command::new("apt-get").args(["update", "-q"]))?;
    run(std::process::Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// One kernel: headers to build against and, when it is a Debian package
/// we unpacked, an image and in-tree modules to boot.
#[derive(Clone)]
pub struct Kernel {
    pub release: String,
    /// The build directory (what `/lib/modules/<release>/build` points to).
    pub kdir: PathBuf,
    /// Root of the unpacked packages, when the kernel came from the cache.
    pub root: Option<PathBuf>,
    /// The Debian version of its packages, when it came from the archive.
    pub version: Option<String>,
    /// What its external modules are built with.
    pub toolchain: Toolchain,
}

/// The instruction set a kernel runs: where the build, the trampoline and
/// the guest differ between x86_64 and 32-bit x86, they ask this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    I386,
}

impl Arch {
    /// Debian's flavours: `amd64`, `cloud-amd64`, `rt-amd64` are x86_64;
    /// `686`, `686-pae`, `rt-686-pae` are i386.
    pub fn of_release(release: &str) -> Arch {
        Arch::of_flavour(lines::split_flavour(release).map_or("", |(_, flavour)| flavour))
    }

    pub fn of_flavour(flavour: &str) -> Arch {
        if flavour.ends_with("686") || flavour.ends_with("686-pae") {
            Arch::I386
        } else {
            Arch::X86_64
        }
    }

    /// The dpkg architecture of the kernel's packages.
    pub fn dpkg(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::I386 => "i386",
        }
    }

    /// QEMU's `max` CPU under TCG calls itself AMD, which the i386 kernel
    /// warns about at SMP bring-up (an Athlon MP check in cpu/amd.c); the
    /// same CPU as Intel boots quietly.
    pub fn qemu_cpu(self) -> &'static str {
        match self {
            Arch::X86_64 => "max",
            Arch::I386 => "max,vendor=GenuineIntel",
        }
    }

    pub fn qemu(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::I386 => "qemu-system-i386",
        }
    }
}

impl Kernel {
    pub fn arch(&self) -> Arch {
        Arch::of_release(&self.release)
    }

    /// A PREEMPT_RT flavour (`rt-amd64`, `rt-686-pae`).
    pub fn is_rt(&self) -> bool {
        lines::split_flavour(&self.release).is_some_and(|(_, flavour)| flavour.starts_with("rt-"))
    }

    /// The lab's default kernel: the newest build of the 6.12 line.
    pub fn default_release() -> Result<Kernel> {
        Kernel::line(lines::LINE_6_12)
    }

    /// `--kernel`: a line's name (`6.12`, `6.1`, `i386`: its newest build),
    /// `debug`, an exact Debian release (`6.1.0-57-amd64`), or the release
    /// of a kernel whose headers are installed on this host.
    pub fn release(spec: &str) -> Result<Kernel> {
        if spec == DEBUG_RELEASE {
            return crate::debug_kernel::kernel();
        }
        if let Some(line) = lines::by_name(spec) {
            return Kernel::line(line);
        }
        let installed = PathBuf::from(format!("/lib/modules/{spec}/build"));
        if installed.join("Makefile").exists() {
            return Ok(Kernel { release: spec.into(), kdir: installed, root: None, version: None, toolchain: Toolchain::Host });
        }
        let line = lines::LINES.iter().find(|l| l.owns(spec)).with_context(|| {
            let names: Vec<&str> = lines::LINES.iter().map(|l| l.name).collect();
            format!("{spec} is neither a kernel line ({}) nor a release of one", names.join(", "))
        })?;
        let build =
            line.choose(&[spec.to_string()], |packages| Apt::for_suite(line.suite, line.arch())?.madison(packages))?;
        Kernel::fetched(*line, &build)
    }

    /// A line's newest complete build, resolved once per run and fetched into the cache.
    pub fn line(line: Line) -> Result<Kernel> {
        static RESOLVED: Mutex<Vec<(&str, Build)>> = Mutex::new(Vec::new());
        let known = RESOLVED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(n, _)| *n == line.name)
            .map(|(_, b)| b.clone());
        let (build, kernel) = match known {
            Some(build) => {
                let kernel = Kernel::fetched(line, &build)?;
                (build, kernel)
            }
            None => {
                // Newest complete build first; one that cannot be fetched
                // (gone from the pool while the index still lists it) gives
                // way to the next.
                let mut failed: Vec<String> = Vec::new();
                loop {
                    let build = line.resolve(&failed)?;
                    println!("kernel line {}: {} ({})", line.name, build.release, build.version);
                    match Kernel::fetched(line, &build) {
                        Ok(kernel) => {
                            RESOLVED.lock().unwrap_or_else(|e| e.into_inner()).push((line.name, build.clone()));
                            break (build, kernel);
                        }
                        Err(e) => {
                            println!("kernel line {}: {} could not be fetched ({e:#}); trying the next build", line.name, build.release);
                            failed.push(build.release);
                        }
                    }
                }
            }
        };
        // Where the host tests that read Debian's files find the line's build.
        let lines_dir = cache_dir().join("lines");
        std::fs::create_dir_all(&lines_dir)?;
        std::fs::write(lines_dir.join(line.name), format!("{}\n", build.release))?;
        Ok(kernel)
    }

    fn fetched(line: Line, build: &Build) -> Result<Kernel> {
        let root = fetch_debian_kernel(line, build)?;
        let kdir = root.join(format!("usr/src/linux-headers-{}", build.release));
        Ok(Kernel {
            release: build.release.clone(),
            kdir,
            root: Some(root),
            version: Some(build.version.clone()),
            toolchain: line.suite.toolchain(),
        })
    }

    pub fn from_kdir(kdir: &Path) -> Result<Kernel> {
        let release = std::fs::read_to_string(kdir.join("include/config/kernel.release"))
            .with_context(|| format!("{} has no include/config/kernel.release", kdir.display()))?;
        Ok(Kernel { release: release.trim().into(), kdir: kdir.into(), root: None, version: None, toolchain: Toolchain::Host })
    }

    /// The Makefile to run. Debian's flavour Makefile includes the common
    /// headers by absolute path under /usr/src; in an unpacked copy that
    /// path lies under our root instead.
    pub fn makefile(&self) -> Result<PathBuf> {
        let own = self.kdir.join("Makefile");
        let text = std::fs::read_to_string(&own)?;
        let included = text.lines().find_map(|l| l.strip_prefix("include ")).map(str::trim);
        match (included, &self.root) {
            (Some(path), Some(root)) if path.starts_with('/') && !Path::new(path).exists() => {
                Ok(root.join(path.trim_start_matches('/')))
            }
            _ => Ok(own),
        }
    }

    /// The kernel's source (or common headers) tree: where the Makefile the
    /// build directory includes lives, or the build directory itself.
    pub fn source_tree(&self) -> Result<PathBuf> {
        let text = std::fs::read_to_string(self.kdir.join("Makefile"))?;
        let Some(included) = text.lines().find_map(|l| l.strip_prefix("include ")).map(|p| Path::new(p.trim())) else {
            return Ok(self.kdir.clone());
        };
        let included = match &self.root {
            Some(root) if !included.exists() => root.join(included.strip_prefix("/").unwrap_or(included)),
            _ => included.to_path_buf(),
        };
        Ok(included.parent().map_or_else(|| self.kdir.clone(), Path::to_path_buf))
    }

    /// How much slower its guests run: KASAN and lockdep cost several times.
    pub fn slowdown(&self) -> u32 {
        if self.release.ends_with(crate::debug_kernel::LOCALVERSION) {
            4
        } else {
            1
        }
    }

    pub fn module_symvers(&self) -> PathBuf {
        self.kdir.join("Module.symvers")
    }

    /// The kernel image: in /boot up to Debian 12, beside the modules on 7.x.
    pub fn image(&self) -> Result<PathBuf> {
        let root = self.root.as_ref().context("only a cached Debian kernel can be booted")?;
        image_in(root, &self.release)
            .with_context(|| format!("no vmlinuz of {} under {}", self.release, root.display()))
    }

    /// Directory of the in-tree modules: /lib/modules, or /usr/lib/modules
    /// in Debian 13's merged-/usr packages.
    pub fn modules_dir(&self) -> Result<PathBuf> {
        let root = self.root.as_ref().context("only a cached Debian kernel has in-tree modules")?;
        let modules = |prefix: &str| root.join(format!("{prefix}/modules/{}", self.release));
        Ok([modules("lib"), modules("usr/lib")].into_iter().find(|d| d.is_dir()).unwrap_or_else(|| modules("lib")))
    }

    /// An in-tree module's file from its path under `kernel/` without
    /// suffix, e.g. `fs/ext4/ext4`.
    pub fn in_tree_module(&self, module: &str) -> Result<PathBuf> {
        let dir = self.modules_dir()?.join("kernel");
        MODULE_SUFFIXES
            .iter()
            .map(|suffix| dir.join(format!("{module}{suffix}")))
            .find(|path| path.exists())
            .with_context(|| format!("no in-tree module {module} in {}", self.release))
    }
}

/// How Debian ships in-tree modules: xz-compressed on 6.12, plain on 6.1.
pub const MODULE_SUFFIXES: &[&str] = &[".ko.xz", ".ko"];

/// The contents of an in-tree module, decompressed if it is a `.ko.xz`.
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    if path.extension().is_none_or(|e| e != "xz") {
        return std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    }
    let out = std::process::Command::new("xz").arg("-dc").arg(path).output().context("running xz")?;
    if !out.status.success() {
        bail!("cannot decompress {}", path.display());
    }
    Ok(out.stdout)
}

pub fn cache_dir() -> PathBuf {
    repo_root().join("lab/cache")
}

/// The guest's busybox: the host's static one on x86_64; on i386, Debian's
/// i386 busybox-static, downloaded and unpacked into the cache once.
pub fn busybox(arch: Arch) -> Result<PathBuf> {
    if arch == Arch::X86_64 {
        return Ok(PathBuf::from("/bin/busybox"));
    }
    let dir = cache_dir().join("busybox-i386");
    let busybox = dir.join("root/bin/busybox");
    if busybox.exists() {
        return Ok(busybox);
    }
    let debs = dir.join("debs");
    Apt::for_suite(Suite::Bookworm, Arch::I386)?.download(&["busybox-static".to_string()], &debs)?;
    unpack_all(&debs, &dir.join("root"))?;
    if !busybox.exists() {
        bail!("busybox-static:i386 has no bin/busybox");
    }
    Ok(busybox)
}

/// The i386 libc that runs an i386 kernel's kbuild tools (fixdep, modpost).
fn ensure_i386_host() -> Result<()> {
    let out = std::process::Command::new("dpkg").arg("--print-foreign-architectures").output()?;
    if !String::from_utf8_lossy(&out.stdout).lines().any(|a| a.trim() == "i386") {
        eprintln!("adding dpkg architecture i386 (for the 686-pae kernel's packages)");
        run(std::process::Command::new("dpkg").args(["--add-architecture", "i386"]))?;
        // Some index may fail on a mirror in sync; the point release's is enough.
        let _ = std::process::Command::new("apt-get").args(["update", "-q"]).status();
    }
    if !std::path::Path::new("/lib/ld-linux.so.2").exists() {
        run(std::process::Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", "libc6:i386"])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(())
}

/// The kernel image of `release` in an unpacked root, wherever Debian put it.
fn image_in(root: &Path, release: &str) -> Option<PathBuf> {
    [format!("boot/vmlinuz-{release}"), format!("usr/lib/modules/{release}/vmlinuz")]
        .into_iter()
        .map(|p| root.join(p))
        .find(|p| p.exists())
}

/// Unpacks every .deb in `debs` into `root`.
fn unpack_all(debs: &Path, root: &Path) -> Result<()> {
    for entry in std::fs::read_dir(debs)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            run(std::process::Command::new("dpkg").arg("-x").arg(&path).arg(root))?;
        }
    }
    Ok(())
}

/// Downloads and unpacks every package of a build once, each at the build's
/// version; kbuild's tools are built for the kernel's own architecture.
fn fetch_debian_kernel(line: Line, build: &Build) -> Result<PathBuf> {
    let release = &build.release;
    let dir = cache_dir().join(release);
    let root = dir.join("root");
    let stamp = dir.join(".unpacked");
    if std::fs::read_to_string(&stamp).is_ok_and(|v| v.trim() == build.version) {
        return Ok(root);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let arch = line.arch();
    if arch == Arch::I386 {
        ensure_i386_host()?;
    }
    let packages: Vec<String> = line.packages(release).iter().map(|p| format!("{p}={}", build.version)).collect();
    eprintln!("fetching kernel {release} ({})", build.version);
    let debs = dir.join("debs");
    Apt::for_suite(line.suite, arch)?.download(&packages, &debs)?;
    unpack_all(&debs, &root)?;
    if image_in(&root, release).is_none() {
        bail!("unpacked kernel {release} has no image");
    }
    std::fs::write(&stamp, &build.version)?;
    Ok(root)
}
