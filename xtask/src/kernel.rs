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

/// The kernels `cargo xtask test` runs the guest suite on, in order.
pub const TEST_RELEASES: &[&str] = &[DEFAULT_RELEASE, LTS_6_1_RELEASE];

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

impl Kernel {
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

/// `6.12.117+deb12-amd64` -> (`6.12.117+deb12`, `amd64`).
fn split_flavour(release: &str) -> Result<(&str, &str)> {
    release.rsplit_once('-').context("a Debian release looks like 6.12.117+deb12-amd64")
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
fn kbuild_package(base: &str, image_version: &str) -> Result<String> {
    let full = format!("linux-kbuild-{base}");
    if apt_version(&full).is_some() {
        return Ok(format!("{full}={image_version}"));
    }
    let major_minor: Vec<&str> = base.split(['.', '-', '+']).take(2).collect();
    Ok(format!("linux-kbuild-{}={image_version}", major_minor.join(".")))
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
    let image = format!("linux-image-{release}-unsigned");
    if apt_version(&image).is_none() {
        run(std::process::Command::new("apt-get").args(["update", "-q"]))?;
    }
    let version = apt_version(&image).with_context(|| format!("apt knows no package {image}"))?;
    let packages = [
        image,
        format!("linux-headers-{release}"),
        format!("linux-headers-{base}-common"),
        kbuild_package(base, &version)?,
    ];
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs)?;
    eprintln!("fetching kernel {release} ({version})");
    run(std::process::Command::new("apt-get").arg("download").args(&packages).current_dir(&debs))?;
    for entry in std::fs::read_dir(&debs)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            run(std::process::Command::new("dpkg").arg("-x").arg(&path).arg(&root))?;
        }
    }
    if !root.join(format!("boot/vmlinuz-{release}")).exists() {
        bail!("unpacked kernel {release} has no image");
    }
    std::fs::write(&stamp, "")?;
    Ok(root)
}
