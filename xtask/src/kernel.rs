//! Guest kernels and their headers: which release, where its files are, and
//! fetching Debian's packages into the git-ignored lab cache.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::{repo_root, run};

/// `--kernel debug`: Debian's 6.12 source built with KASAN, lockdep,
/// kmemleak and the rest (debug_kernel.rs), cached outside the checkout.
pub const DEBUG_RELEASE: &str = "debug";

/// The kernel the lab builds for and boots by default. Named here only.
pub const DEFAULT_RELEASE: &str = "6.12.117+deb12-amd64";

/// Debian 12's other kernel line, Linux 6.1 (the newest ABI in
/// bookworm-security when pinned; bookworm's point release has 6.1.0-50).
pub const LTS_6_1_RELEASE: &str = "6.1.0-56-amd64";

/// Debian 12's 32-bit x86 kernel (i386, PAE), from the point release: the
/// security archive's i386 index is not always complete on this mirror.
pub const I386_RELEASE: &str = "6.1.0-50-686-pae";

/// The kernels `cargo xtask test` runs the guest suite on, in order.
pub const TEST_RELEASES: &[&str] = &[DEFAULT_RELEASE, LTS_6_1_RELEASE, I386_RELEASE];

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
pub struct Kernel {
    pub release: String,
    /// The build directory (what `/lib/modules/<release>/build` points to).
    pub kdir: PathBuf,
    /// Root of the unpacked packages, when the kernel came from the cache.
    pub root: Option<PathBuf>,
}

/// The instruction set a kernel runs: where the build, the trampoline and
/// the guest differ between x86_64 and 32-bit x86, they ask this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    I386,
}

impl Arch {
    /// Debian's flavours: `amd64`, `cloud-amd64`, `rt-amd64` are x86_64;
    /// `686`, `686-pae`, `rt-686-pae` are i386.
    pub fn of_release(release: &str) -> Arch {
        if release.contains("-686") {
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

    /// The default release, fetched into the cache if needed.
    pub fn default_release() -> Result<Kernel> {
        Kernel::release(DEFAULT_RELEASE)
    }

    /// An installed kernel's headers if present, else Debian's packages.
    pub fn release(release: &str) -> Result<Kernel> {
        if release == DEBUG_RELEASE {
            return crate::debug_kernel::kernel();
        }
        let installed = PathBuf::from(format!("/lib/modules/{release}/build"));
        if release != DEFAULT_RELEASE && installed.join("Makefile").exists() {
            return Ok(Kernel { release: release.into(), kdir: installed, root: None });
        }
        let root = fetch_debian_kernel(release)?;
        let kdir = root.join(format!("usr/src/linux-headers-{release}"));
        Ok(Kernel { release: release.into(), kdir, root: Some(root) })
    }

    pub fn from_kdir(kdir: &Path) -> Result<Kernel> {
        let release = std::fs::read_to_string(kdir.join("include/config/kernel.release"))
            .with_context(|| format!("{} has no include/config/kernel.release", kdir.display()))?;
        Ok(Kernel { release: release.trim().into(), kdir: kdir.into(), root: None })
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

    pub fn image(&self) -> Result<PathBuf> {
        let root = self.root.as_ref().context("only a cached Debian kernel can be booted")?;
        Ok(root.join(format!("boot/vmlinuz-{}", self.release)))
    }

    /// Directory of the in-tree modules.
    pub fn modules_dir(&self) -> Result<PathBuf> {
        let root = self.root.as_ref().context("only a cached Debian kernel has in-tree modules")?;
        Ok(root.join(format!("lib/modules/{}", self.release)))
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
    ensure_i386_host()?;
    download_and_unpack(&["busybox-static:i386".to_string()], &dir, &dir.join("root"))?;
    if !busybox.exists() {
        bail!("busybox-static:i386 has no bin/busybox");
    }
    Ok(busybox)
}

/// `6.12.117+deb12-amd64` -> (`6.12.117+deb12`, `amd64`);
/// `6.1.0-50-686-pae` -> (`6.1.0-50`, `686-pae`).
fn split_flavour(release: &str) -> Result<(&str, &str)> {
    const FLAVOURS: &[&str] = &["rt-686-pae", "686-pae", "686", "cloud-amd64", "rt-amd64", "amd64"];
    FLAVOURS
        .iter()
        .find_map(|f| release.strip_suffix(f)?.strip_suffix('-').map(|base| (base, *f)))
        .context("a Debian release looks like 6.12.117+deb12-amd64 or 6.1.0-50-686-pae")
}

/// The candidate version apt knows for a package, if it knows the package.
fn apt_version(name: &str) -> Option<String> {
    let out = std::process::Command::new("apt-cache").args(["show", "--no-all-versions", name]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| l.strip_prefix("Version: ")).map(|v| v.trim().to_string())
}

/// Debian names kbuild after the full version since 6.12 (`linux-kbuild-6.12.117+deb12`)
/// and after major.minor before (`linux-kbuild-6.1` for `6.1.0-50`). The
/// major.minor package exists in several versions at once (6.1.176 in the
/// point release, 6.1.192 in security), so ask for the image's version:
/// modpost and fixdep then match the headers.
/// kbuild's tools (fixdep, modpost) are built for the kernel's own
/// architecture: an i386 kernel's run here through multiarch's i386 libc.
fn kbuild_package(base: &str, image_version: &str, arch: Arch) -> Result<String> {
    let full = format!("linux-kbuild-{base}");
    let name = if apt_version(&full).is_some() {
        full
    } else {
        let major_minor: Vec<&str> = base.split(['.', '-', '+']).take(2).collect();
        format!("linux-kbuild-{}", major_minor.join("."))
    };
    Ok(format!("{name}:{}={image_version}", arch.dpkg()))
}

/// i386 packages to download, and the i386 libc that runs their kbuild tools.
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

/// `apt-get download`s packages into `debs` and unpacks every .deb there into `root`.
fn download_and_unpack(packages: &[String], debs: &Path, root: &Path) -> Result<()> {
    std::fs::create_dir_all(debs)?;
    run(std::process::Command::new("apt-get").arg("download").args(packages).current_dir(debs))?;
    for entry in std::fs::read_dir(debs)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            run(std::process::Command::new("dpkg").arg("-x").arg(&path).arg(root))?;
        }
    }
    Ok(())
}

/// Downloads and unpacks image, headers and kbuild of a Debian kernel once.
fn fetch_debian_kernel(release: &str) -> Result<PathBuf> {
    let dir = cache_dir().join(release);
    let root = dir.join("root");
    let stamp = dir.join(".unpacked");
    if stamp.exists() {
        return Ok(root);
    }
    let (base, _flavour) = split_flavour(release)?;
    let arch = Arch::of_release(release);
    if arch == Arch::I386 {
        ensure_i386_host()?;
    }
    let image = format!("linux-image-{release}-unsigned");
    if apt_version(&image).is_none() {
        run(std::process::Command::new("apt-get").args(["update", "-q"]))?;
    }
    let version = apt_version(&image).with_context(|| format!("apt knows no package {image}"))?;
    let packages = [
        image,
        format!("linux-headers-{release}"),
        format!("linux-headers-{base}-common"),
        kbuild_package(base, &version, arch)?,
    ];
    eprintln!("fetching kernel {release} ({version})");
    download_and_unpack(&packages, &dir.join("debs"), &root)?;
    if !root.join(format!("boot/vmlinuz-{release}")).exists() {
        bail!("unpacked kernel {release} has no image");
    }
    std::fs::write(&stamp, "")?;
    Ok(root)
}
