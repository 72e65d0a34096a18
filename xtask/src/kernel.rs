//! Guest kernels and their headers: which release, where its files are, and
//! fetching Debian's packages into the git-ignored lab cache.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::{repo_root, run};

/// The kernel the lab builds for and boots by default. Named here only.
pub const DEFAULT_RELEASE: &str = "6.12.117+deb12-amd64";

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

    pub fn module_symvers(&self) -> PathBuf {
        self.kdir.join("Module.symvers")
    }

    pub fn image(&self) -> Result<PathBuf> {
        let root = self.root.as_ref().context("only a cached Debian kernel can be booted")?;
        Ok(root.join(format!("boot/vmlinuz-{}", self.release)))
    }

    /// Directory of the in-tree modules (`.ko.xz`).
    pub fn modules_dir(&self) -> Result<PathBuf> {
        let root = self.root.as_ref().context("only a cached Debian kernel has in-tree modules")?;
        Ok(root.join(format!("lib/modules/{}", self.release)))
    }
}

/// The contents of an in-tree module (Debian ships them xz-compressed).
pub fn unxz(path: &Path) -> Result<Vec<u8>> {
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

/// Debian names kbuild after the full version since 6.12 (`linux-kbuild-6.12.117+deb12`)
/// and after major.minor before (`linux-kbuild-6.1` for `6.1.0-50`).
fn kbuild_package(base: &str) -> Result<String> {
    let full = format!("linux-kbuild-{base}");
    let known = |name: &str| {
        std::process::Command::new("apt-cache")
            .args(["show", "--no-all-versions", name])
            .output()
            .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
    };
    if known(&full) {
        return Ok(full);
    }
    let major_minor: Vec<&str> = base.split(['.', '-', '+']).take(2).collect();
    Ok(format!("linux-kbuild-{}", major_minor.join(".")))
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
    let packages = [
        format!("linux-image-{release}-unsigned"),
        format!("linux-headers-{release}"),
        format!("linux-headers-{base}-common"),
        kbuild_package(base)?,
    ];
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs)?;
    eprintln!("fetching kernel {release}");
    let download =
        |dir: &Path| run(std::process::Command::new("apt-get").arg("download").args(&packages).current_dir(dir));
    if download(&debs).is_err() {
        run(std::process::Command::new("apt-get").args(["update", "-q"]))?;
        download(&debs)?;
    }
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
