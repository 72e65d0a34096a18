//! `cargo xtask package`: hp_patcher as a user installs it, for x86_64.
//! - `hp-patcher-dkms_<v>_amd64.deb`: the C layer's sources, the Rust object
//!   prebuilt (so the user's machine needs no Rust toolchain), the static
//!   `hp-kbuild` that checks a kernel's config against that object and
//!   writes the catalogue header, and a dkms.conf: DKMS builds the module
//!   for every installed kernel, now and at each kernel upgrade, and signs
//!   it with its MOK key. amd64, not all: the object and hp-kbuild are x86_64.
//! - `hpctl_<v>_amd64.deb`: the static binary, a man page per subcommand
//!   and bash, zsh and fish completions.
//! - `hp_patcher-<v>-x86_64.tar.gz`: the same files and an install.sh, for
//!   other distributions.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::kernel::Arch;
use crate::{repo_root, run};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The DKMS module name and the source directory's name under /usr/src.
const DKMS_NAME: &str = "hp_patcher";

pub struct Packages {
    pub dkms_deb: PathBuf,
    pub hpctl_deb: PathBuf,
    pub tarball: PathBuf,
}

pub fn out_dir() -> PathBuf {
    repo_root().join("target/package")
}

pub fn build() -> Result<Packages> {
    let out = out_dir();
    let work = out.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let rust_object = crate::build::build_rust_object(&work, Arch::X86_64)?;
    let hpctl = crate::hpctl::build_static("hpctl", "hpctl")?;
    let hp_kbuild = crate::hpctl::build_static("hp-kbuild", "hp-kbuild")?;

    // The DKMS source tree, as /usr/src/hp_patcher-<v> holds it.
    let src = work.join("dkms-src");
    crate::build::stage_sources(&repo_root().join("kmod"), &src)?;
    std::fs::copy(&rust_object, src.join("hp_rust.prebuilt"))?;
    install_file(&hp_kbuild, &src.join("hp-kbuild"), 0o755)?;
    std::fs::write(src.join("dkms.conf"), dkms_conf())?;

    // hpctl's files, as /usr would hold them.
    let generated = work.join("generated");
    crate::manpages::write(&generated)?;
    for page in std::fs::read_dir(generated.join("man8"))? {
        run(Command::new("gzip").args(["-9n"]).arg(page?.path()))?;
    }

    let dkms_deb = dkms_deb(&work, &src)?;
    let hpctl_deb = hpctl_deb(&work, &hpctl, &generated)?;
    let tarball = tarball(&work, &src, &hpctl, &generated)?;
    for file in [&dkms_deb, &hpctl_deb, &tarball] {
        let size = std::fs::metadata(file)?.len();
        println!("{} ({} kB)", file.display(), size.div_ceil(1024));
    }
    Ok(Packages { dkms_deb, hpctl_deb, tarball })
}

/// DKMS runs MAKE in its copy of the sources; hp-kbuild is called where the
/// package installed it, since a copy need not keep its mode. It refuses a
/// kernel the prebuilt object does not suit, before Kbuild starts.
fn dkms_conf() -> String {
    format!(
        r#"# hp_patcher: built by DKMS for every installed kernel (x86_64).
PACKAGE_NAME="{DKMS_NAME}"
PACKAGE_VERSION="{VERSION}"
BUILT_MODULE_NAME[0]="hp_patcher"
DEST_MODULE_LOCATION[0]="/updates/dkms"
AUTOINSTALL="yes"
BUILD_EXCLUSIVE_ARCH="x86_64"
MAKE[0]="/usr/src/{DKMS_NAME}-{VERSION}/hp-kbuild prepare ${{kernel_source_dir}} ${{kernelver}} && make -C ${{kernel_source_dir}} M=${{dkms_tree}}/{DKMS_NAME}/{VERSION}/build modules"
CLEAN="make -C ${{kernel_source_dir}} M=${{dkms_tree}}/{DKMS_NAME}/{VERSION}/build clean"
"#
    )
}

const COPYRIGHT: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: hp_patcher

Files: *
License: GPL-2.0-only
 On Debian systems, the full text of the GNU General Public License
 version 2 can be found in /usr/share/common-licenses/GPL-2.
";

fn dkms_deb(work: &Path, src: &Path) -> Result<PathBuf> {
    let package = "hp-patcher-dkms";
    let root = work.join(package);
    copy_tree(src, &root.join(format!("usr/src/{DKMS_NAME}-{VERSION}")))?;
    doc(&root, package)?;
    let control = format!(
        "Package: {package}\nVersion: {VERSION}\nArchitecture: amd64\nMaintainer: hp_patcher developers <hp-patcher@invalid>\n\
         Section: kernel\nPriority: optional\nDepends: dkms (>= 3.0)\nRecommends: hpctl, linux-headers-amd64\n\
         Description: hp_patcher kernel module, built by DKMS\n \
         Hot-patches the calls a live kernel module makes through kprobes, to trace\n \
         them, fail them by rule and find what the module leaks. DKMS builds the\n \
         module for every installed kernel with headers, from C sources and a\n \
         prebuilt Rust object: no Rust toolchain is needed.\n"
    );
    // What dh_dkms would generate: add, build and install for the running
    // and the newest kernel at configure; remove every build at remove.
    let postinst = format!(
        "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then\n\
         \t/usr/lib/dkms/common.postinst {DKMS_NAME} {VERSION} \"\" \"\" \"$2\"\nfi\n"
    );
    let prerm = format!(
        "#!/bin/sh\nset -e\ncase \"$1\" in\nremove|upgrade|deconfigure)\n\
         \tif dkms status -m {DKMS_NAME} -v {VERSION} | grep -q .; then\n\
         \t\tdkms remove -m {DKMS_NAME} -v {VERSION} --all\n\tfi\n\t;;\nesac\n"
    );
    deb(&root, &control, &[("postinst", &postinst), ("prerm", &prerm)], &format!("{package}_{VERSION}_amd64.deb"))
}

fn hpctl_deb(work: &Path, hpctl: &Path, generated: &Path) -> Result<PathBuf> {
    let package = "hpctl";
    let root = work.join(package);
    install_file(hpctl, &root.join("usr/sbin/hpctl"), 0o755)?;
    copy_tree(&generated.join("man8"), &root.join("usr/share/man/man8"))?;
    let completions = generated.join("completions");
    install_file(&completions.join("hpctl.bash"), &root.join("usr/share/bash-completion/completions/hpctl"), 0o644)?;
    install_file(&completions.join("_hpctl"), &root.join("usr/share/zsh/vendor-completions/_hpctl"), 0o644)?;
    install_file(&completions.join("hpctl.fish"), &root.join("usr/share/fish/vendor_completions.d/hpctl.fish"), 0o644)?;
    doc(&root, package)?;
    let control = format!(
        "Package: {package}\nVersion: {VERSION}\nArchitecture: amd64\nMaintainer: hp_patcher developers <hp-patcher@invalid>\n\
         Section: admin\nPriority: optional\nRecommends: hp-patcher-dkms\n\
         Description: control hp_patcher: trace, fail and leak-check a live module's calls\n \
         hpctl attaches hp_patcher to a loaded kernel module, streams its calls\n \
         (typed from BTF) from a tracefs instance, sets fault rules and prints the\n \
         leak report. A static binary.\n"
    );
    deb(&root, &control, &[], &format!("{package}_{VERSION}_amd64.deb"))
}

fn doc(root: &Path, package: &str) -> Result<()> {
    let dir = root.join("usr/share/doc").join(package);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("copyright"), COPYRIGHT)?;
    Ok(())
}

/// `dpkg-deb --build` of `root`, with its control file, maintainer scripts
/// and md5sums (what `dpkg --verify` checks).
fn deb(root: &Path, control: &str, scripts: &[(&str, &str)], name: &str) -> Result<PathBuf> {
    let debian = root.join("DEBIAN");
    std::fs::create_dir_all(&debian)?;
    let installed_kb = du_kb(root)?;
    std::fs::write(debian.join("control"), format!("{control}Installed-Size: {installed_kb}\n"))?;
    for (script, text) in scripts {
        install_bytes(text.as_bytes(), &debian.join(script), 0o755)?;
    }
    let sums = Command::new("sh")
        .arg("-c")
        .arg("find . -path ./DEBIAN -prune -o -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0r md5sum")
        .current_dir(root)
        .output()?;
    std::fs::write(debian.join("md5sums"), sums.stdout)?;
    let deb = out_dir().join(name);
    run(Command::new("dpkg-deb").args(["--root-owner-group", "-Zxz", "--build"]).arg(root).arg(&deb))?;
    Ok(deb)
}

fn du_kb(dir: &Path) -> Result<u64> {
    let out = Command::new("du").args(["-sk", "--exclude=DEBIAN"]).arg(dir).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("0").parse()?)
}

/// The tarball for other distributions: the same files, and install.sh.
fn tarball(work: &Path, src: &Path, hpctl: &Path, generated: &Path) -> Result<PathBuf> {
    let name = format!("hp_patcher-{VERSION}-x86_64");
    let root = work.join(&name);
    copy_tree(src, &root.join(format!("src/{DKMS_NAME}-{VERSION}")))?;
    install_file(hpctl, &root.join("bin/hpctl"), 0o755)?;
    copy_tree(&generated.join("man8"), &root.join("man/man8"))?;
    copy_tree(&generated.join("completions"), &root.join("completions"))?;
    let script = std::fs::read_to_string(repo_root().join("packaging/install.sh"))?;
    install_bytes(script.replace("@VERSION@", VERSION).as_bytes(), &root.join("install.sh"), 0o755)?;
    let tarball = out_dir().join(format!("{name}.tar.gz"));
    run(Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "-czf"])
        .arg(&tarball)
        .arg("-C")
        .arg(work)
        .arg(&name))?;
    Ok(tarball)
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &dest)?;
        } else {
            std::fs::copy(&path, &dest)?;
        }
    }
    Ok(())
}

fn install_file(from: &Path, to: &Path, mode: u32) -> Result<()> {
    install_bytes(&std::fs::read(from).with_context(|| format!("reading {}", from.display()))?, to, mode)
}

fn install_bytes(data: &[u8], to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to.parent().unwrap())?;
    std::fs::write(to, data)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}
