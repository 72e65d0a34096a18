//! The toolchain a kernel's external modules are built with: the one its
//! distribution built the kernel with. Debian 12's kernels (6.1, 6.12) use
//! the host's, which is Debian 12. Debian 13's (the 7.x line) need gcc-14,
//! pahole 1.26 or later and glibc 2.38 for their kbuild tools: they are
//! built inside a Debian 13 root made once with debootstrap from Debian's
//! archive and cached outside the checkout, where the kernel's headers and
//! kbuild sit at the paths Debian gives them, as on a Debian 13 machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{repo_root, run};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toolchain {
    /// This machine's: Debian 12 (gcc-12, pahole 1.24, glibc 2.36).
    Host,
    /// Debian 13's, in its own root (gcc-14, pahole 1.30, glibc 2.41).
    Trixie,
}

/// Where the Debian 13 root lives: outside the checkout, so that every
/// clone and worktree shares it, and a fresh clone does not repeat it.
const TRIXIE_ROOT: &str = "/var/cache/hp_patcher/trixie-root";

/// What Debian 13's kbuild needs to build an external module: the
/// compiler its headers name, make, binutils, pahole for module BTF, and
/// the libraries of kbuild's tools (modpost, objtool, resolve_btfids).
const TRIXIE_PACKAGES: &[&str] =
    &["gcc-14", "make", "binutils", "pahole", "libc6-dev", "libelf1t64", "libssl3t64", "zlib1g"];

impl Toolchain {
    pub fn describe(self) -> &'static str {
        match self {
            Toolchain::Host => "Debian 12's (the host's): gcc-12, pahole 1.24",
            Toolchain::Trixie => "Debian 13's, in a debootstrap root: gcc-14, pahole 1.30",
        }
    }

    /// `make` with this toolchain, for a kernel whose packages are unpacked
    /// under `kernel_root`. In the Debian 13 root the kernel's /usr/src and
    /// /usr/lib/linux-kbuild-* are bound at their own paths, and the
    /// checkout at its own, in a mount namespace that ends with the command.
    pub fn make(self, kernel_root: Option<&Path>) -> Result<Command> {
        match self {
            Toolchain::Host => Ok(Command::new("make")),
            Toolchain::Trixie => {
                let root = ensure_trixie_root()?;
                let kernel_root = kernel_root.context("Debian 13's toolchain builds only against unpacked packages")?;
                let mut binds: Vec<(PathBuf, PathBuf)> = vec![
                    (PathBuf::from("/dev"), PathBuf::from("/dev")),
                    (kernel_root.join("usr/src"), PathBuf::from("/usr/src")),
                    (repo_root(), repo_root()),
                ];
                for entry in std::fs::read_dir(kernel_root.join("usr/lib"))? {
                    let name = entry?.file_name().to_string_lossy().into_owned();
                    if name.starts_with("linux-kbuild-") {
                        binds.push((kernel_root.join("usr/lib").join(&name), Path::new("/usr/lib").join(&name)));
                    }
                }
                let mut script = String::from("set -e; root=$1; shift; mount -t proc proc \"$root/proc\"; ");
                let mut cmd = Command::new("unshare");
                cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"]);
                for (i, (from, to)) in binds.iter().enumerate() {
                    let inside = root.join(to.strip_prefix("/").unwrap_or(to));
                    std::fs::create_dir_all(&inside)?;
                    script += &format!("mount --rbind \"$BIND_FROM_{i}\" \"$root{}\"; ", to.display());
                    cmd.env(format!("BIND_FROM_{i}"), from);
                }
                script += "exec chroot \"$root\" make \"$@\"";
                cmd.arg(script).arg("sh").arg(&root);
                Ok(cmd)
            }
        }
    }

    /// A kernel's build directory as `make -C` must name it: inside the
    /// Debian 13 root the headers are at Debian's own path.
    pub fn kdir(self, kdir: &Path, release: &str) -> PathBuf {
        match self {
            Toolchain::Host => kdir.to_path_buf(),
            Toolchain::Trixie => PathBuf::from(format!("/usr/src/linux-headers-{release}")),
        }
    }
}

/// The Debian 13 root, made once: debootstrap into a temporary directory,
/// then renamed, so that an interrupted run leaves nothing half made.
fn ensure_trixie_root() -> Result<PathBuf> {
    let root = PathBuf::from(TRIXIE_ROOT);
    let stamp = root.join(".hp_patcher-toolchain");
    let want = TRIXIE_PACKAGES.join(" ");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == want) {
        return Ok(root);
    }
    let staging = root.with_extension("partial");
    let _ = std::fs::remove_dir_all(&staging);
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("removing the outdated {}", root.display()))?;
    }
    std::fs::create_dir_all(root.parent().unwrap())?;
    eprintln!("making the Debian 13 build root {} (debootstrap, once)", root.display());
    debootstrap_trixie(&staging, TRIXIE_PACKAGES)?;
    // debootstrap leaves its package cache behind; the root needs none.
    let _ = std::fs::remove_dir_all(staging.join("var/cache/apt/archives"));
    if !staging.join("usr/bin/x86_64-linux-gnu-gcc-14").exists() {
        bail!("the Debian 13 root has no x86_64-linux-gnu-gcc-14");
    }
    std::fs::write(staging.join(".hp_patcher-toolchain"), &want)?;
    std::fs::rename(&staging, &root)?;
    Ok(root)
}

/// A minimal Debian 13 system with `packages` in `root`, from the host's
/// own Debian mirror: the build root here, the install test's guest in
/// debian_guest.rs.
pub fn debootstrap_trixie(root: &Path, packages: &[&str]) -> Result<()> {
    let mirror = crate::apt::Mirrors::of_host()?.archive;
    run(Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={}", packages.join(","))])
        .arg("trixie")
        .arg(root)
        .arg(&mirror)
        .stdout(std::process::Stdio::null()))
}
