//! hpctl (and hp-kbuild, for the DKMS package) as static binaries, for
//! the busybox guest and any distribution.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{repo_root, run};

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds target/x86_64-unknown-linux-gnu/release/hpctl.
pub fn build() -> Result<PathBuf> {
    build_static("hpctl", "hpctl")
}

/// Builds a workspace binary with glibc linked in (`+crt-static`; with an
/// explicit --target, proc-macros are built for the host without it),
/// checks that it is static, and returns its path.
pub fn build_static(package: &str, bin: &str) -> Result<PathBuf> {
    run(Command::new(env!("CARGO"))
        .args(["build", "--release", "-p", package, "--bin", bin, "--target", TARGET])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .current_dir(repo_root()))?;
    let binary = repo_root().join("target").join(TARGET).join("release").join(bin);
    check_static(&binary)?;
    Ok(binary)
}

/// No PT_INTERP (no dynamic loader) and no DT_NEEDED: nothing to find at run time.
fn check_static(binary: &std::path::Path) -> Result<()> {
    let data = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let file = object::File::parse(&*data).with_context(|| format!("parsing {}", binary.display()))?;
    let object::File::Elf64(elf) = &file else { bail!("{} is not a 64-bit ELF", binary.display()) };
    use object::read::elf::{Dyn, ProgramHeader};
    let endian = elf.endian();
    for header in elf.elf_program_headers() {
        let kind = header.p_type(endian);
        if kind == object::elf::PT_INTERP {
            bail!("{} asks for a dynamic loader (PT_INTERP): not static", binary.display());
        }
        if kind == object::elf::PT_DYNAMIC {
            // A static-pie has a dynamic section for its own relocations, but needs no library.
            if let Ok(Some(dynamic)) = header.dynamic(endian, &*data) {
                if dynamic.iter().any(|d| d.tag32(endian) == Some(object::elf::DT_NEEDED)) {
                    bail!("{} needs shared libraries (DT_NEEDED): not static", binary.display());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_dynamic_binary_is_refused() {
        // Test binaries link glibc dynamically.
        let me = std::env::current_exe().unwrap();
        let err = super::check_static(&me).unwrap_err().to_string();
        assert!(err.contains("PT_INTERP") || err.contains("DT_NEEDED"), "{err}");
        // And the static one passes, when it has been built.
        let built = crate::repo_root().join("target").join(super::TARGET).join("release/hpctl");
        if built.exists() {
            super::check_static(&built).unwrap();
        }
    }
}
