//! The install test: the packages `cargo xtask package` makes, installed
//! with apt in a real Debian 13 guest (debian_guest.rs) as README tells a
//! user to, then a kernel upgrade's headers, then apt purge
//! (lab/guest/debian13_install.sh says what it checks).

use anyhow::{bail, Context, Result};

use crate::kernel::Kernel;
use crate::scenarios::Checks;
use crate::{debian_guest, lines, package, repo_root};

/// The second kernel's headers, from the lab's 7.x line (trixie-backports):
/// the upgrade a Debian 13 user gets from backports.
const SECOND_KERNEL_PACKAGES: &[&str] = &["linux-headers-", "linux-kbuild-", "linux-base-"];

/// DKMS builds the module twice under TCG, with gcc and pahole.
const TIMEOUT_SECS: u32 = 2400;

pub fn run() -> Result<usize> {
    let guest = debian_guest::ensure()?;
    let packages = package::build()?;
    let second = Kernel::line(lines::LINE_7)?;

    let dir = repo_root().join("target/lab/debian13/lab-disk");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("second"))?;
    for deb in [&packages.dkms_deb, &packages.hpctl_deb, &packages.tarball] {
        std::fs::copy(deb, dir.join(deb.file_name().unwrap()))?;
    }
    let debs =
        second.root.as_ref().and_then(|r| r.parent()).context("the 7.x line is not a cached kernel")?.join("debs");
    let mut copied = 0;
    for entry in std::fs::read_dir(&debs).with_context(|| format!("reading {}", debs.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if SECOND_KERNEL_PACKAGES.iter().any(|p| name.starts_with(p)) {
            std::fs::copy(&path, dir.join("second").join(&name))?;
            copied += 1;
        }
    }
    if copied == 0 {
        bail!("no headers of {} under {}", second.release, debs.display());
    }
    std::fs::copy(repo_root().join("lab/guest/debian13_install.sh"), dir.join("run.sh"))?;
    std::fs::copy(repo_root().join("lab/guest/lib.sh"), dir.join("lib.sh"))?;
    std::fs::write(dir.join("env"), format!("VERSION={}\nSECOND={}\n", package::VERSION, second.release))?;
    let image = repo_root().join("target/lab/debian13/lab-disk.img");
    debian_guest::lab_disk(&dir, &image)?;

    println!("install test: Debian 13 guest ({}), then headers of {}", guest.release, second.release);
    let out = guest.boot(&image, "install", TIMEOUT_SECS)?;
    println!("install test: {:.1} s wall", out.seconds);
    let checks = Checks::read("install", &out.text);
    let mut problems = checks.failed;
    problems.extend(out.problems("install", &["install"]));
    if !problems.is_empty() {
        for p in &problems {
            println!("FAILED debian13: {p}");
        }
        bail!("install test failed; log: {}", out.log.display());
    }
    Ok(checks.passed)
}
