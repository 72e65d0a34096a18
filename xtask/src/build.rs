//! Building hp_patcher.ko (Rust object + C layer, linked by Kbuild) and the
//! lab's test modules, out of tree, into target/kmod/<release>/.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags};

use crate::kernel::{Arch, Kernel};
use crate::stack::{self, StackInfo};
use crate::toolchain::Toolchain;
use crate::{repo_root, run};

/// What rustc must do on either architecture: no unwinding, frame pointers
/// (the kernels unwind with them or with ORC), retpolines through the
/// kernel's thunks, no jump tables, one section per function.
const KERNEL_RUSTFLAGS: &[&str] = &[
    "-Cpanic=abort",
    "-Cforce-frame-pointers=y",
    "-Cforce-unwind-tables=n",
    "-Cembed-bitcode=n",
    "-Csymbol-mangling-version=v0",
    "-Zretpoline-external-thunk",
    "-Cjump-tables=n",
    "-Zfunction-sections=y",
    // For the stack budget check (stack.rs); the section is not loaded.
    "-Zemit-stack-sizes",
];

/// x86_64 (6.12 and 6.1): the kernel's code model and static relocation,
/// no red zone or GOT, and 6.12's return thunks, IBT and call padding.
const X86_64_RUSTFLAGS: &[&str] = &[
    "-Crelocation-model=static",
    "-Ccode-model=kernel",
    "-Cno-redzone=y",
    "-Zfunction-return=thunk-extern",
    "-Zcf-protection=branch",
    "-Zpatchable-function-entry=16,16",
    "-Zplt=yes",
];

/// i386: Debian's 686-pae kernel is built with `-mregparm=3
/// -freg-struct-return` (arch/x86/Makefile), so every function C and Rust
/// call across the glue passes its first three arguments in eax, edx, ecx
/// and returns small structs in registers. No return thunks, IBT or call
/// padding exist on 32-bit. The rest is in kmod/rust/targets/i686-linux-kernel.json.
const I386_RUSTFLAGS: &[&str] = &["-Zregparm=3", "-Zreg-struct-return"];

/// The Rust target (a built-in one, or a spec file under kmod/rust), its
/// output directory name and its flags.
fn rust_target(arch: Arch) -> (String, &'static str, Vec<&'static str>) {
    let (target, dir, own) = match arch {
        Arch::X86_64 => ("x86_64-unknown-none".to_string(), "x86_64-unknown-none", X86_64_RUSTFLAGS),
        Arch::I386 => (
            repo_root().join("kmod/rust/targets/i686-linux-kernel.json").display().to_string(),
            "i686-linux-kernel",
            I386_RUSTFLAGS,
        ),
    };
    (target, dir, KERNEL_RUSTFLAGS.iter().chain(own).copied().collect())
}

/// The Rust object's entry points, kept by `ld --gc-sections`.
/// The functions C calls in Rust: those hp_glue.h declares between its
/// "Implemented in Rust" and "Implemented in C" comments, so that the header
/// stays the one list.
fn rust_exports() -> Result<Vec<String>> {
    let glue = std::fs::read_to_string(repo_root().join("kmod/hp_glue.h"))?;
    let section = glue
        .split_once("/* Implemented in Rust")
        .and_then(|(_, rest)| rest.split_once("/* Implemented in C"))
        .map(|(rust, _)| rust)
        .context("hp_glue.h: no 'Implemented in Rust' section")?;
    // Each declaration's name is the identifier just before its '('.
    let names: Vec<String> = section
        .split('(')
        .filter_map(|before| before.rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next())
        .filter(|name| name.starts_with("hp_"))
        .map(str::to_string)
        .collect();
    Ok(names)
}

/// compiler_builtins brings weak copies of these; the kernel's must win.
const KERNEL_MEM_FUNCTIONS: &[&str] = &["memcpy", "memset", "memmove", "memcmp", "bcmp", "strlen"];

/// i386: LLVM calls its 64-bit division helpers the way gcc passes a u64
/// under regparm(3) (the dividend in eax:edx), while compiler_builtins'
/// Rust versions, built with -Zregparm=3, read it from the stack: a u64
/// printed in the guest came out as garbage. hp_main.c provides these,
/// built by gcc; compiler_builtins' copies are renamed away, and any other
/// such helper the object needs fails the build.
const I386_C_LIBCALLS: &[&str] = &["__udivdi3", "__umoddi3", "__divdi3", "__moddi3"];

/// libgcc-style helper names (`__udivdi3`, `__ashldi3`, `__popcountsi2`).
fn is_libcall(name: &str) -> bool {
    name.starts_with("__")
        && (name.ends_with("di3") || name.ends_with("di2") || name.ends_with("si2") || name.ends_with("ti3"))
}

/// Relocation types the module loader accepts (arch/x86/kernel/module.c):
/// x86_64 NONE, 64, PC32, PLT32, 32S; i386 R_386_32, PC32, PLT32.
fn loader_relocations(arch: Arch) -> &'static [u32] {
    match arch {
        Arch::X86_64 => &[0, 1, 2, 4, 11],
        Arch::I386 => &[1, 2, 4],
    }
}

pub struct Built {
    pub hp_patcher: PathBuf,
    pub cr_target: PathBuf,
    pub cr_twin: PathBuf,
    /// A bare or redirect-only kprobe on one call site: the bench's floors.
    pub kp_floor: PathBuf,
    pub kp_batch: PathBuf,
    /// The module cr_target calls into (any-callee tests); loaded first.
    pub cr_callee: PathBuf,
    /// The static user-space tool (the same for every kernel).
    pub hpctl: PathBuf,
}

pub fn out_dir(kernel: &Kernel) -> PathBuf {
    repo_root().join("target/kmod").join(&kernel.release)
}

pub fn build_all(kernel: &Kernel) -> Result<Built> {
    let out = out_dir(kernel);
    println!("building for {} with {} toolchain", kernel.release, kernel.toolchain.describe());
    ensure_base_btf(kernel)?;
    let rust_object = build_rust_object(&out, kernel.arch())?;
    let hp_dir = stage_sources(&repo_root().join("kmod"), &out.join("build/hp_patcher"))?;
    write_if_changed(&hp_dir.join("hp_catalogue.h"), &catalogue_header(kernel)?)?;
    // A prebuilt object, which Kbuild copies to hp_rust.o through objtool
    // (kmod/Kbuild says why). The `%_shipped` rule no longer applies to
    // external modules since 6.13.
    let _ = std::fs::remove_file(hp_dir.join("hp_rust.o_shipped"));
    copy_if_changed(&rust_object, &hp_dir.join("hp_rust.prebuilt"))?;
    let hp_patcher = kbuild(kernel, &hp_dir, "hp_patcher.ko", &out)?;
    check_entries_endbr(kernel, &hp_patcher)?;
    crate::hot_path::check(&hp_patcher, kernel.arch())?;
    if let Ok(su) = std::fs::read_to_string(hp_dir.join("hp_services.su")) {
        let frames = stack::c_frames(&su);
        for f in stack::HOT_C {
            println!("hot path, C: {f}: {} bytes (then printk)", frames.get(*f).copied().unwrap_or(0));
        }
    }
    let cr_dir = stage_sources(&repo_root().join("lab/cr_target"), &out.join("build/cr_target"))?;
    let _ = std::fs::remove_file(cr_dir.join("cr_twin.mod.c"));
    let cr_target = kbuild(kernel, &cr_dir, "cr_target.ko", &out)?;
    // The same Kbuild builds the twin (cr_twin.c), a second target, the
    // bench's floors (kp_floor.c per call, kp_batch.c per attach), and
    // cr_callee, which both call.
    let cr_twin = out.join("cr_twin.ko");
    std::fs::copy(cr_dir.join("cr_twin.ko"), &cr_twin)?;
    let cr_callee = out.join("cr_callee.ko");
    std::fs::copy(cr_dir.join("cr_callee.ko"), &cr_callee)?;
    let hpctl = crate::hpctl::build()?;
    let kp_floor = out.join("kp_floor.ko");
    std::fs::copy(cr_dir.join("kp_floor.ko"), &kp_floor)?;
    let kp_batch = out.join("kp_batch.ko");
    std::fs::copy(cr_dir.join("kp_batch.ko"), &kp_batch)?;
    Ok(Built { hp_patcher, cr_target, cr_twin, cr_callee, kp_floor, kp_batch, hpctl })
}

/// The version of `crate` that a Cargo.lock pins.
fn locked_version(lock: &Path, krate: &str) -> Result<String> {
    let text = std::fs::read_to_string(lock).with_context(|| format!("reading {}", lock.display()))?;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line == format!("name = \"{krate}\"") {
            if let Some(version) = lines.next().and_then(|l| l.strip_prefix("version = \"")) {
                return Ok(version.trim_end_matches('"').to_string());
            }
        }
    }
    bail!("{} pins no {krate}", lock.display())
}

/// The arena for iced-x86's decoder tables is sized by a host test
/// (crates/hp-core/tests/decoder_tables.rs) against the workspace's iced;
/// the module must be built with that same version.
fn check_same_iced() -> Result<()> {
    let host = locked_version(&repo_root().join("Cargo.lock"), "iced-x86")?;
    let kmod = locked_version(&repo_root().join("kmod/rust/Cargo.lock"), "iced-x86")?;
    if host != kmod {
        bail!(
            "iced-x86 {kmod} in kmod/rust/Cargo.lock, {host} in Cargo.lock: the decoder arena is sized for the latter"
        );
    }
    Ok(())
}

/// Builds kmod/rust with Debian's rustc-web (the rustup toolchain has no
/// rust-src to build `core` from) and merges it into one relocatable object.
pub fn build_rust_object(out: &Path, arch: Arch) -> Result<PathBuf> {
    check_same_iced()?;
    let target_dir = repo_root().join("target/kmod-rust");
    let (target, target_name, flags) = rust_target(arch);
    run(Command::new("/usr/bin/cargo")
        .args(["build", "--release", "--target", &target])
        .args(["-Z", "build-std=core,alloc", "-Z", "build-std-features=", "-Z", "json-target-spec"])
        .current_dir(repo_root().join("kmod/rust"))
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTFLAGS", flags.join(" "))
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO"))?;
    let archive = target_dir.join(target_name).join("release/libhp_kmod.a");

    let work = out.join("rust-objects");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    run(Command::new("ar").arg("x").arg(&archive).current_dir(&work))?;
    let mut members = Vec::new();
    for entry in std::fs::read_dir(&work)? {
        let path = entry?.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("compiler_builtins") {
            let mut objcopy = Command::new("objcopy");
            let libcalls = if arch == Arch::I386 { I386_C_LIBCALLS } else { &[] };
            for f in KERNEL_MEM_FUNCTIONS.iter().chain(libcalls) {
                objcopy.arg(format!("--redefine-sym={f}=__hp_builtins_{f}"));
            }
            run(objcopy.arg(&path))?;
        }
        members.push(path);
    }
    members.sort();
    let merged = out.join("hp_rust.o");
    let mut ld = Command::new("ld");
    ld.args(["-m", if arch == Arch::I386 { "elf_i386" } else { "elf_x86_64" }]);
    ld.args(["-r", "--gc-sections", "-o"]).arg(&merged);
    let exports = rust_exports()?;
    for sym in &exports {
        ld.arg("-u").arg(sym);
    }
    run(ld.args(&members))?;
    // Frames of what the module really contains (after --gc-sections).
    let mut stack = StackInfo::default();
    stack.add_object(&merged)?;
    stack.check()?;
    let largest: Vec<String> = stack.largest(3).iter().map(|(f, s)| format!("{s} {}", short(f))).collect();
    println!("largest Rust frames (bytes): {}", largest.join(", "));
    for entry in stack::HOT_ENTRIES {
        let (bytes, chain) = stack.deepest(entry, &mut Vec::new());
        let chain: Vec<&str> = chain.iter().map(|f| short(f)).collect();
        println!("hot path {entry}: {bytes} bytes of Rust stack through direct calls ({})", chain.join(" -> "));
    }
    for f in stack::HOT_INDIRECT {
        println!("hot path, called through a pointer: {f}: {} bytes", stack.frame_of(f));
    }
    // The kernel has no use for these, and objtool frowns on the first.
    // (.eh_frame: the i386 build of compiler_builtins has one, which the
    // i386 loader would refuse for its R_386_NONE relocations.)
    run(Command::new("objcopy")
        .args([
            "--wildcard",
            "--remove-section=.stack_sizes*",
            "--remove-section=.eh_frame",
            "--remove-section=.rel.eh_frame",
        ])
        .arg(&merged))?;
    check_rust_object(&merged, &exports, arch)?;
    Ok(merged)
}

/// A symbol for a log line: mangled Rust names are long, their end tells.
fn short(symbol: &str) -> &str {
    let keep = symbol.len().saturating_sub(48);
    symbol.get(keep..).unwrap_or(symbol)
}

/// The loader rejects GOT relocations, and a weak mem* from
/// compiler_builtins would shadow the kernel's: refuse such an object here
/// rather than in the guest.
fn check_rust_object(path: &Path, exports: &[String], arch: Arch) -> Result<()> {
    let data = std::fs::read(path)?;
    let file = object::File::parse(&*data)?;
    for section in file.sections() {
        for (_, reloc) in section.relocations() {
            if let RelocationFlags::Elf { r_type } = reloc.flags() {
                if !loader_relocations(arch).contains(&r_type) {
                    bail!(
                        "{}: relocation type {r_type} in {} is refused by the module loader",
                        path.display(),
                        section.name()?
                    );
                }
            }
        }
    }
    let defined: HashSet<&str> = file.symbols().filter(|s| s.is_definition()).filter_map(|s| s.name().ok()).collect();
    if arch == Arch::I386 {
        let needed: HashSet<&str> = file.symbols().filter(|s| s.is_undefined()).filter_map(|s| s.name().ok()).collect();
        if let Some(call) = needed.iter().find(|n| is_libcall(n) && !I386_C_LIBCALLS.contains(n)) {
            bail!("{}: needs {call}, whose compiler_builtins version does not take arguments as LLVM passes them under regparm: add it to hp_main.c and I386_C_LIBCALLS", path.display());
        }
    }
    for f in KERNEL_MEM_FUNCTIONS {
        if defined.contains(f) {
            bail!("{}: defines {f}, which must come from the kernel", path.display());
        }
    }
    for sym in exports {
        if !defined.contains(sym.as_str()) {
            bail!("{}: {sym} is missing", path.display());
        }
    }
    Ok(())
}

/// The trampolines, which the kernel enters through a pointer.
const POINTER_ENTRIES: &[&str] = &["hp_trampoline", "hp_trampoline_jump", "hp_fail_return"];

/// Under IBT every function entered through a pointer must begin with
/// ENDBR, or the CPU faults on its first call. TCG does not enforce IBT, so
/// no guest test would notice its absence (7.x's SYM_FUNC_START stopped
/// emitting it): check the built module instead.
fn check_entries_endbr(kernel: &Kernel, ko: &Path) -> Result<()> {
    let config = std::fs::read_to_string(kernel.kdir.join(".config")).unwrap_or_default();
    if !config.lines().any(|l| l == "CONFIG_X86_KERNEL_IBT=y") {
        return Ok(());
    }
    const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
    let data = std::fs::read(ko)?;
    let file = object::File::parse(&*data)?;
    for name in POINTER_ENTRIES {
        let symbol =
            file.symbols().find(|s| s.name() == Ok(name)).with_context(|| format!("{}: no {name}", ko.display()))?;
        let section = file.section_by_index(symbol.section_index().context("undefined")?)?;
        let offset = (symbol.address() - section.address()) as usize;
        let first = section.data()?.get(offset..offset + 4);
        if first != Some(&ENDBR64[..]) {
            bail!("{}: {name} does not begin with ENDBR, and the kernel has IBT on ({first:02x?})", ko.display());
        }
    }
    println!("IBT: {} begin with ENDBR", POINTER_ENTRIES.join(", "));
    Ok(())
}

/// The catalogue header, as the DKMS package's `hp-kbuild` makes it on a
/// user's machine (crates/hp-kbuild), from the lab's unpacked kernel.
fn catalogue_header(kernel: &Kernel) -> Result<String> {
    let symvers = std::fs::read_to_string(kernel.module_symvers())
        .with_context(|| format!("reading {}", kernel.module_symvers().display()))?;
    let config = std::fs::read_to_string(kernel.kdir.join(".config")).unwrap_or_default();
    if kernel.arch() == Arch::X86_64 {
        hp_kbuild::check_x86_64_object_fits(&kernel.release, &config)?;
    }
    let btf = match std::fs::read(kernel.kdir.join("vmlinux")) {
        Ok(data) => hp_kbuild::btf_of(&data)?,
        Err(_) => None,
    };
    if btf.is_none() {
        println!("catalogue: {} has no BTF; argument layouts are the catalogue's own", kernel.release);
    }
    let facts = hp_kbuild::KernelFacts {
        release: &kernel.release,
        symvers: &symvers,
        config: &config,
        btf: btf.as_deref(),
        source_tree: &kernel.source_tree()?,
    };
    hp_kbuild::catalogue_header(&facts)
}

/// Copies a module's sources into its build directory, touching only
/// changed files so that Kbuild stays incremental.
pub fn stage_sources(src: &Path, dst: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let path = entry?.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let is_source = name == "Kbuild" || [".c", ".h", ".S"].iter().any(|e| name.ends_with(e));
        if path.is_file() && is_source {
            copy_if_changed(&path, &dst.join(&name))?;
        }
    }
    Ok(dst.into())
}

/// Module BTF (what hpctl types cr_callee's arguments from) needs the
/// kernel's own BTF as its base, in a file named vmlinux in the headers.
/// Debian's 6.12 headers ship one; 6.1's do not, so it is cut out of the
/// image's compressed vmlinux: the .BTF section alone, exactly the base the
/// running kernel has. Headers installed on the host are left as they are.
fn ensure_base_btf(kernel: &Kernel) -> Result<()> {
    let (Some(root), base) = (&kernel.root, kernel.kdir.join("vmlinux")) else { return Ok(()) };
    if base.exists() {
        return Ok(());
    }
    let image = std::fs::read(root.join(format!("boot/vmlinuz-{}", kernel.release)))?;
    const XZ_MAGIC: &[u8] = b"\xfd7zXZ\0";
    let Some(at) = image.windows(XZ_MAGIC.len()).position(|w| w == XZ_MAGIC) else {
        println!("no xz payload in vmlinuz-{}: modules get no BTF", kernel.release);
        return Ok(());
    };
    let tmp = crate::repo_root().join("target/lab").join(&kernel.release);
    std::fs::create_dir_all(&tmp)?;
    let (payload, full) = (tmp.join("vmlinux.xz"), tmp.join("vmlinux.full"));
    std::fs::write(&payload, &image[at..])?;
    // The payload is followed by the decompressor's own data: xz stops at
    // the end of its stream and complains about the rest, hence no status check.
    let out = Command::new("xz").args(["-dc", "--single-stream"]).arg(&payload).output()?;
    std::fs::write(&full, out.stdout)?;
    run(Command::new("objcopy").args(["--only-section=.BTF", "--only-section=.BTF_ids"]).arg(&full).arg(&base))?;
    std::fs::remove_file(&payload)?;
    std::fs::remove_file(&full)?;
    Ok(())
}

fn kbuild(kernel: &Kernel, dir: &Path, ko: &str, out: &Path) -> Result<PathBuf> {
    // Kbuild did not always rerun modpost after an object changed, leaving
    // stale symbol versions (the guest then refused the module): force it.
    for stale in ["Module.symvers", &ko.replace(".ko", ".mod.c")] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let mut make = kernel.toolchain.make(kernel.root.as_deref())?;
    match kernel.toolchain {
        // An unpacked copy of Debian 12's headers, outside /usr/src: the
        // common Makefile, found by our root (Kernel::makefile).
        Toolchain::Host => make.arg("-C").arg(&kernel.kdir).arg("-f").arg(kernel.makefile()?),
        // Debian 13's headers at their own path: their Makefile sets the
        // output directory that external modules need since 6.13.
        Toolchain::Trixie => make.arg("-C").arg(kernel.toolchain.kdir(&kernel.kdir, &kernel.release)),
    };
    run(make
        .arg(format!("M={}", dir.display()))
        // 6.1's kbuild package has no resolve_btfids; our modules declare
        // no BTF ids for it to resolve.
        .args(resolve_btfids_missing(kernel).then_some("RESOLVE_BTFIDS=true"))
        .arg(format!("-j{}", std::thread::available_parallelism().map_or(2, |n| n.get())))
        .arg("modules"))?;
    let built = out.join(ko);
    std::fs::copy(dir.join(ko), &built)?;
    Ok(built)
}

fn resolve_btfids_missing(kernel: &Kernel) -> bool {
    let Some(root) = &kernel.root else { return false };
    let kbuild = root.join("usr/lib");
    let found = std::fs::read_dir(&kbuild).into_iter().flatten().flatten().any(|d| {
        d.file_name().to_string_lossy().starts_with("linux-kbuild-")
            && d.path().join("tools/bpf/resolve_btfids/resolve_btfids").exists()
    });
    !found
}

fn copy_if_changed(from: &Path, to: &Path) -> Result<()> {
    let data = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    if std::fs::read(to).ok().as_deref() != Some(&data[..]) {
        std::fs::write(to, data)?;
    }
    Ok(())
}

fn write_if_changed(to: &Path, text: &str) -> Result<()> {
    if std::fs::read_to_string(to).ok().as_deref() != Some(text) {
        std::fs::write(to, text)?;
    }
    Ok(())
}
