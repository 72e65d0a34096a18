//! `hp-kbuild prepare KDIR RELEASE [OUT]`: run by the DKMS package before
//! Kbuild, in the module's build directory, on the user's machine. Checks
//! that the prebuilt Rust object suits the kernel and writes
//! `hp_catalogue.h` (into OUT, default the current directory). Static, so
//! that a machine needs no Rust toolchain to build the module.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use hp_kbuild::{btf_of, catalogue_header, check_x86_64_object_fits, KernelFacts};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["prepare", kdir, release] => prepare(Path::new(kdir), release, Path::new(".")),
        ["prepare", kdir, release, out] => prepare(Path::new(kdir), release, Path::new(out)),
        _ => Err(anyhow::anyhow!("usage: hp-kbuild prepare KERNEL_BUILD_DIR KERNEL_RELEASE [OUT_DIR]")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hp-kbuild: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn prepare(kdir: &Path, release: &str, out: &Path) -> Result<()> {
    let read = |name: &str| {
        std::fs::read_to_string(kdir.join(name)).with_context(|| format!("reading {}", kdir.join(name).display()))
    };
    let config = read(".config").context("the kernel's headers are not installed (linux-headers-<release>)")?;
    check_x86_64_object_fits(release, &config)?;
    let symvers = read("Module.symvers")?;
    let btf = kernel_btf(kdir, release)?;
    if btf.is_none() {
        println!("hp-kbuild: {release} has no BTF here; catalogue layouts from its headers' prototypes");
    }
    let source_tree = source_tree(kdir);
    let facts =
        KernelFacts { release, symvers: &symvers, config: &config, btf: btf.as_deref(), source_tree: &source_tree };
    let header = catalogue_header(&facts)?;
    std::fs::write(out.join("hp_catalogue.h"), header)?;
    Ok(())
}

/// The kernel's BTF: the headers' vmlinux where they ship one (Debian's
/// 6.12 and later), or the running kernel's own when this is it.
fn kernel_btf(kdir: &Path, release: &str) -> Result<Option<Vec<u8>>> {
    if let Ok(data) = std::fs::read(kdir.join("vmlinux")) {
        if let Some(btf) = btf_of(&data)? {
            return Ok(Some(btf));
        }
    }
    let running = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if running.trim() == release {
        if let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") {
            return btf_of(&data);
        }
    }
    Ok(None)
}

/// Debian splits the headers: the build directory's Makefile includes the
/// common one, beside include/linux.
fn source_tree(kdir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(kdir.join("Makefile")).unwrap_or_default();
    let included = text.lines().find_map(|l| l.strip_prefix("include ")).map(|p| Path::new(p.trim()));
    match included.and_then(Path::parent) {
        Some(dir) if dir.join("include/linux").is_dir() => dir.to_path_buf(),
        _ => kdir.to_path_buf(),
    }
}
