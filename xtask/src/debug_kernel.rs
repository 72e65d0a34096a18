//! A debug build of Debian's own 6.12 kernel for the guest: Debian's config,
//! trimmed to what a QEMU guest and the lab's test modules need, with KASAN,
//! lockdep, kmemleak, debug objects, KFENCE and fault injection turned on.
//!
//! Built once per machine and cached outside any checkout, in
//! `/var/cache/hp_patcher/debug-6.12/`:
//!
//! | path | what |
//! | --- | --- |
//! | `linux-source-6.12/` | Debian's `linux-source-6.12` tarball, unpacked |
//! | `build/` | the build output (`make O=`): the `kdir` for `make M=...`; `build/arch/x86/boot/bzImage` |
//! | `modules/lib/modules/<release>/` | `modules_install` staging: stripped, signed, xz-compressed like Debian's |
//! | `keep-modules.lsmod` | the module list given to `localmodconfig` |
//! | `done` | written last: the release, the build's wall time and the config table it was built with |
//!
//! A `done` marker whose table differs from [`CONFIG`] (or [`KEEP_MODULES`])
//! makes the next call reconfigure and rebuild (incrementally) in place.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::apt::{Apt, Suite};
use crate::kernel::Kernel;
use crate::run;

/// Where everything is cached: outside any git checkout, shared by every run on this machine.
pub const CACHE_DIR: &str = "/var/cache/hp_patcher/debug-6.12";

/// Debian's source package, at the version of the 6.12 line's build that the
/// lab resolved (whose config is the base): it follows the line as the
/// archive moves.
const SOURCE_PACKAGE: &str = "linux-source-6.12";
const SOURCE_TARBALL: &str = "usr/src/linux-source-6.12.tar.xz";
const SOURCE_DIR: &str = "linux-source-6.12";

/// Appended to the release: `6.12.117-hpdebug`.
pub const LOCALVERSION: &str = "-hpdebug";

/// What building a kernel needs on a Debian host (pahole comes with dwarves;
/// openssl from libssl-dev signs the modules; kmod runs depmod).
const BUILD_PACKAGES: &[&str] =
    &["build-essential", "bc", "bison", "flex", "libssl-dev", "libelf-dev", "dwarves", "cpio", "xz-utils", "kmod"];

/// Never more than two jobs, always at the lowest priority: the machine has
/// two cores and other people's guests run on it.
const JOBS: &str = "-j2";
const NICENESS: &str = "19";

/// Modules kept by `localmodconfig` (as if they were loaded); every other
/// `=m` of Debian's config is dropped. Their dependencies are kept by the
/// script itself. Built-ins are left as Debian has them.
const KEEP_MODULES: &[&str] = &[
    // virtio devices a QEMU guest may be given, and 9p to share a host directory.
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "virtio_balloon",
    "virtio_mmio",
    "virtio_rng",
    "virtio_scsi",
    "9p",
    "9pnet_virtio",
    // File systems the tests mount or patch.
    "ext4",
    "jbd2",
    "mbcache",
    "xfs",
    "btrfs",
    "vfat",
    "fat",
    "msdos",
    "isofs",
    "overlay",
    "fuse",
    // Block devices to put them on.
    "brd",
    "loop",
    "zram",
    // Network modules (targets with many allocation sites). e1000 is also
    // one of the modules the real-module host check reads on every kernel.
    "e1000",
    "dummy",
    "veth",
    "bridge",
    "stp",
    "llc",
    "nf_tables",
    "nf_conntrack",
    "nf_nat",
    "nft_chain_nat",
    "nft_ct",
    "nft_reject_inet",
    // Sound modules that need no hardware.
    "snd",
    "snd_timer",
    "snd_pcm",
    "snd_dummy",
    "snd_aloop",
    "soundcore",
    // Checksums the file systems use.
    "crc32c_generic",
    "crc32c_intel",
    "libcrc32c",
    "crc16",
];

/// Changes to Debian's config after `localmodconfig`, applied with
/// `scripts/config`. Values: `y`, `n`, `m`, a number, or a quoted string.
/// Each is checked after `olddefconfig`: one that Kconfig refuses fails the
/// build instead of being silently dropped. Everything not named here stays
/// as Debian has it, in particular IBT, retpoline, rethunk, call padding and
/// call-depth tracking, the ORC unwinder and voluntary dynamic preemption.
const CONFIG: &[(&str, &str)] = &[
    ("LOCALVERSION", "\"-hpdebug\""),
    ("LOCALVERSION_AUTO", "n"),
    // Module signatures are checked but not enforced, as on Debian.
    // MODULE_SIG itself cannot be turned off: SECURITY_LOCKDOWN_LSM selects
    // it, and the lockdown LSM is kept to test under lockdown=integrity.
    ("MODULE_SIG_FORCE", "n"),
    // In-tree modules are signed at modules_install with a key the build
    // generates, so that only out-of-tree modules taint with E, as on Debian.
    ("MODULE_SIG_ALL", "y"),
    // Debian's config names its own certificates, which the source package does not ship.
    ("SYSTEM_TRUSTED_KEYS", "\"\""),
    ("MODULE_UNLOAD", "y"),
    ("MODULE_FORCE_UNLOAD", "y"),
    // /proc/config.gz: a guest can check what it runs.
    ("IKCONFIG", "y"),
    ("IKCONFIG_PROC", "y"),
    // Not a Xen guest; saves building the Xen front ends, which are built in.
    ("XEN", "n"),
    // localmodconfig does not map "fuse" to FUSE_FS.
    ("FUSE_FS", "m"),
    // No DWARF: it would double the build time and the size of the tree.
    // BTF is generated from DWARF by pahole, so it goes too.
    ("DEBUG_INFO_NONE", "y"),
    ("DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT", "n"),
    ("DEBUG_INFO_BTF", "n"),
    ("DEBUG_INFO_BTF_MODULES", "n"),
    // Warn of big stack frames (Debian: 2048). KASAN's redzones make many; a warning, never an error.
    ("FRAME_WARN", "1024"),
    ("WERROR", "n"),
    // KASAN, generic (shadow memory), inline checks: the fastest generic mode.
    ("KASAN", "y"),
    ("KASAN_GENERIC", "y"),
    ("KASAN_INLINE", "y"),
    ("KASAN_OUTLINE", "n"),
    // Shadow for vmalloc space as well: vmalloc/vfree are in the catalogue, and
    // modules and stacks live there.
    ("KASAN_VMALLOC", "y"),
    // Debian has KFENCE built but off (interval 0); sample every 100 ms.
    ("KFENCE", "y"),
    ("KFENCE_SAMPLE_INTERVAL", "100"),
    ("PROVE_LOCKING", "y"),
    ("PROVE_RCU", "y"),
    ("DEBUG_ATOMIC_SLEEP", "y"),
    ("DEBUG_KMEMLEAK", "y"),
    ("DEBUG_KMEMLEAK_DEFAULT_OFF", "n"),
    // The pool kmemleak uses before the slab allocator is up (the old "early
    // log"); too small and kmemleak disables itself during boot.
    ("DEBUG_KMEMLEAK_MEM_POOL_SIZE", "65536"),
    ("DEBUG_KMEMLEAK_AUTO_SCAN", "y"),
    ("DEBUG_OBJECTS", "y"),
    ("DEBUG_OBJECTS_FREE", "y"),
    ("DEBUG_OBJECTS_TIMERS", "y"),
    ("DEBUG_OBJECTS_WORK", "y"),
    ("DEBUG_OBJECTS_RCU_HEAD", "y"),
    ("DEBUG_OBJECTS_ENABLE_DEFAULT", "1"),
    ("DEBUG_LIST", "y"),
    ("FAULT_INJECTION", "y"),
    ("FAILSLAB", "y"),
    // Cheap extras next to failslab: page allocation failures and
    // fail_function (error injection at ALLOW_ERROR_INJECTION functions).
    ("FAIL_PAGE_ALLOC", "y"),
    ("FUNCTION_ERROR_INJECTION", "y"),
    ("FAIL_FUNCTION", "y"),
    ("FAULT_INJECTION_DEBUG_FS", "y"),
    ("FAULT_INJECTION_STACKTRACE_FILTER", "y"),
    // What the lab relies on; already so in Debian's config, named so that a
    // change of the base config cannot drop them unnoticed.
    ("KPROBES", "y"),
    ("KPROBE_EVENTS", "y"),
    ("DEBUG_FS", "y"),
    ("DEVTMPFS", "y"),
    ("BLK_DEV_INITRD", "y"),
    ("RD_GZIP", "y"),
    ("SERIAL_8250", "y"),
    ("SERIAL_8250_CONSOLE", "y"),
    ("VIRTIO_PCI", "y"),
    ("X86_KERNEL_IBT", "y"),
    ("MITIGATION_RETPOLINE", "y"),
    ("MITIGATION_RETHUNK", "y"),
    ("MITIGATION_CALL_DEPTH_TRACKING", "y"),
];

/// Builds the debug kernel unless the cache already holds it; returns the cache directory.
pub fn ensure_debug_kernel() -> Result<PathBuf> {
    let cache = PathBuf::from(CACHE_DIR);
    let done = cache.join("done");
    // Debian's config is the base; fetching the lab kernel unpacks it.
    let debian = Kernel::default_release()?;
    let source_version = debian.version.clone().context("the lab kernel comes from Debian's packages")?;
    let recipe = recipe_text(&source_version);
    if let Ok(text) = fs::read_to_string(&done) {
        if text.contains(&recipe) {
            return Ok(cache);
        }
        eprintln!("debug kernel: the recipe changed since {} was written; rebuilding", done.display());
        fs::remove_file(&done)?;
    }
    fs::create_dir_all(&cache).with_context(|| format!("creating {CACHE_DIR}"))?;
    let base_config =
        debian.root.as_ref().context("the lab kernel is unpacked")?.join(format!("boot/config-{}", debian.release));

    install_packages()?;
    let src = unpack_source(&cache, &source_version, &debian.release)?;
    let build = cache.join("build");
    configure(&src, &build, &base_config, &cache)?;

    eprintln!("debug kernel: building in {} (nice {NICENESS}, make {JOBS}); log in build.log", build.display());
    let start = Instant::now();
    make(&src, &build, &cache.join("build.log"), &["bzImage", "modules"])?;
    let seconds = start.elapsed().as_secs();

    let staging = cache.join("modules");
    let _ = fs::remove_dir_all(&staging);
    let staging_arg = format!("INSTALL_MOD_PATH={}", staging.display());
    make(&src, &build, &cache.join("modules_install.log"), &["modules_install", &staging_arg, "INSTALL_MOD_STRIP=1"])?;

    let release = fs::read_to_string(build.join("include/config/kernel.release"))?.trim().to_string();
    if !release.ends_with(LOCALVERSION) {
        bail!("debug kernel release {release} does not end with {LOCALVERSION}");
    }
    if !build.join("arch/x86/boot/bzImage").exists() || !staging.join(format!("lib/modules/{release}")).is_dir() {
        bail!("debug kernel build in {} left no bzImage or modules", build.display());
    }
    fs::write(&done, format!("release={release}\nbuild_seconds={seconds}\n{recipe}"))?;
    eprintln!("debug kernel {release} built in {seconds} s");
    Ok(cache)
}

/// The debug kernel as a `Kernel`: its build tree to build modules against,
/// and a root laid out like an unpacked Debian kernel (boot/vmlinuz-*,
/// lib/modules/*) so that booting and in-tree modules work as for the others.
pub fn kernel() -> Result<Kernel> {
    let cache = ensure_debug_kernel()?;
    let build = cache.join("build");
    let release = fs::read_to_string(build.join("include/config/kernel.release"))?.trim().to_string();
    let root = cache.join("root");
    fs::create_dir_all(root.join("boot"))?;
    fs::create_dir_all(root.join("lib/modules"))?;
    let links = [
        (build.join("arch/x86/boot/bzImage"), root.join(format!("boot/vmlinuz-{release}"))),
        (cache.join(format!("modules/lib/modules/{release}")), root.join(format!("lib/modules/{release}"))),
    ];
    for (target, link) in links {
        if fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(&target, &link)?;
        }
    }
    Ok(Kernel { release, kdir: build, root: Some(root), version: None, toolchain: crate::toolchain::Toolchain::Host })
}

/// What the `done` marker records of the recipe: a change to it invalidates the cache.
fn recipe_text(source_version: &str) -> String {
    let mut text = format!("source={SOURCE_PACKAGE} {source_version}\nkeep={}\n", KEEP_MODULES.join(","));
    for (option, value) in CONFIG {
        let _ = writeln!(text, "CONFIG_{option}={value}");
    }
    text
}

fn installed_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query").args(["-W", "-f=${Status} ${Version}", package]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.strip_prefix("install ok installed ").map(str::to_string)
}

/// Whatever build dependency is missing.
fn install_packages() -> Result<()> {
    let wanted: Vec<String> =
        BUILD_PACKAGES.iter().filter(|p| installed_version(p).is_none()).map(|p| p.to_string()).collect();
    if wanted.is_empty() {
        return Ok(());
    }
    eprintln!("debug kernel: installing {}", wanted.join(" "));
    let install = || {
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&wanted)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    if install().is_err() {
        run(Command::new("apt-get").args(["update", "-q"]))?;
        install()?;
    }
    Ok(())
}

/// Downloads Debian's source package at `version` and unpacks its tarball,
/// once per version; checks that it is the lab kernel's Linux version.
fn unpack_source(cache: &Path, version: &str, lab_release: &str) -> Result<PathBuf> {
    let src = cache.join(SOURCE_DIR);
    let stamp = cache.join(".unpacked");
    if fs::read_to_string(&stamp).ok().as_deref() != Some(version) {
        let _ = fs::remove_dir_all(&src);
        let debs = cache.join("source-debs");
        let _ = fs::remove_dir_all(&debs);
        eprintln!("debug kernel: fetching {SOURCE_PACKAGE} {version}");
        Apt::for_suite(Suite::Bookworm, crate::kernel::Arch::X86_64)?
            .download(&[format!("{SOURCE_PACKAGE}={version}")], &debs)?;
        let deb = fs::read_dir(&debs)?
            .filter_map(|e| Some(e.ok()?.path()))
            .find(|p| p.extension().is_some_and(|e| e == "deb"));
        let unpacked = debs.join("root");
        run(Command::new("dpkg").arg("-x").arg(deb.context("no source package downloaded")?).arg(&unpacked))?;
        eprintln!("debug kernel: unpacking {SOURCE_TARBALL}");
        run(Command::new("tar").arg("xf").arg(unpacked.join(SOURCE_TARBALL)).current_dir(cache))?;
        fs::remove_dir_all(&debs)?;
        fs::write(&stamp, version)?;
    }
    let makefile = fs::read_to_string(src.join("Makefile"))?;
    let field =
        |name: &str| makefile.lines().find_map(|l| l.strip_prefix(name)?.trim_start().strip_prefix('=')).map(str::trim);
    let linux = format!(
        "{}.{}.{}",
        field("VERSION").unwrap_or("?"),
        field("PATCHLEVEL").unwrap_or("?"),
        field("SUBLEVEL").unwrap_or("?")
    );
    let lab = lab_release.split(['+', '-']).next().unwrap_or(lab_release);
    if linux != lab {
        bail!("{} is Linux {linux}, the lab kernel {lab_release} is {lab}", src.display());
    }
    Ok(src)
}

/// Debian's config, trimmed by `localmodconfig` to [`KEEP_MODULES`], then [`CONFIG`], checked.
fn configure(src: &Path, build: &Path, base_config: &Path, cache: &Path) -> Result<()> {
    fs::create_dir_all(build)?;
    let config = build.join(".config");
    fs::copy(base_config, &config).with_context(|| format!("copying {}", base_config.display()))?;
    let out = format!("O={}", build.display());
    run(Command::new("make").arg(&out).arg("olddefconfig").current_dir(src).stdout(Stdio::null()))?;

    // localmodconfig reads an lsmod listing; ours names the modules to keep.
    let lsmod = cache.join("keep-modules.lsmod");
    let mut listing = String::from("Module                  Size  Used by\n");
    for module in KEEP_MODULES {
        let _ = writeln!(listing, "{module} 0 0");
    }
    fs::write(&lsmod, listing)?;
    // Options hidden until now may be asked about: stdin at end of file takes their defaults.
    run(Command::new("make")
        .arg(&out)
        .arg(format!("LSMOD={}", lsmod.display()))
        .arg("localmodconfig")
        .current_dir(src)
        .stdin(Stdio::null())
        .stdout(Stdio::null()))?;

    let script = src.join("scripts/config");
    for (option, value) in CONFIG {
        let mut cmd = Command::new(&script);
        cmd.arg("--file").arg(&config);
        match *value {
            "y" => cmd.args(["--enable", option]),
            "n" => cmd.args(["--disable", option]),
            "m" => cmd.args(["--module", option]),
            v if v.starts_with('"') => cmd.args(["--set-str", option, v.trim_matches('"')]),
            v => cmd.args(["--set-val", option, v]),
        };
        run(&mut cmd)?;
    }
    run(Command::new("make").arg(&out).arg("olddefconfig").current_dir(src).stdout(Stdio::null()))?;

    let text = fs::read_to_string(&config)?;
    let refused: Vec<String> = CONFIG
        .iter()
        .filter(|(option, value)| !config_has(&text, option, value))
        .map(|(option, value)| format!("{option}={value}"))
        .collect();
    if !refused.is_empty() {
        bail!("Kconfig did not take these debug-kernel settings: {}", refused.join(" "));
    }
    Ok(())
}

/// Whether `.config` text has `option` at `value`; `n` also holds when the option is absent
/// (its dependencies are off).
fn config_has(text: &str, option: &str, value: &str) -> bool {
    let set = format!("CONFIG_{option}=");
    let line = text.lines().find(|l| l.starts_with(&set) || *l == format!("# CONFIG_{option} is not set"));
    match (line, value) {
        (None, "n") => true,
        (None, _) => false,
        (Some(l), "n") => l.starts_with('#'),
        (Some(l), v) => l.strip_prefix(&set) == Some(v),
    }
}

/// `nice -n 19 make -j2 O=<build> <targets>` in the source tree, output to `log`.
fn make(src: &Path, build: &Path, log: &Path, targets: &[&str]) -> Result<()> {
    let file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let result = run(Command::new("nice")
        .args(["-n", NICENESS, "make", JOBS])
        .arg(format!("O={}", build.display()))
        .args(targets)
        .current_dir(src)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file));
    if result.is_err() {
        let text = fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    result.with_context(|| format!("see {}", log.display()))
}
