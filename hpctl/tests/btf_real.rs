//! Prototypes from real BTF: Debian's 6.12 vmlinux (the .BTF section of the
//! headers package's vmlinux) and the split BTF of its ext4.ko and jbd2.ko,
//! from lab/cache, which `cargo xtask setup` (and `cargo xtask test`, before
//! it runs these tests) fills with the 6.12 line's newest build, named in
//! lab/cache/lines/6.12. A missing cache fails with a message that says so:
//! it is never a silent pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use hp_core::proto::Refusal;
use hpctl::btf::Btfs;
use hpctl::prototype::{BtfRefusal, Shape};
use object::{Object, ObjectSection, ObjectSymbol};

fn cache() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../lab/cache")
}

/// The release xtask resolved the 6.12 line to (xtask::lines::LINE_6_12).
fn release() -> String {
    let named = cache().join("lines/6.12");
    let text = std::fs::read_to_string(&named).unwrap_or_else(|e| {
        panic!("{}: {e}: run `cargo xtask setup` first (it resolves the 6.12 line and unpacks its packages)", named.display())
    });
    text.trim().to_string()
}

fn root() -> PathBuf {
    let release = release();
    let root = cache().join(&release).join("root");
    assert!(
        root.join("boot").is_dir(),
        "{} is missing: run `cargo xtask setup` first (it unpacks Debian's {release} packages into lab/cache)",
        root.display()
    );
    root
}

fn vmlinux_path() -> PathBuf {
    root().join(format!("usr/src/linux-headers-{}/vmlinux", release()))
}

fn module_path(dir: &str, name: &str) -> PathBuf {
    let base = root().join(format!("lib/modules/{}/kernel/{dir}/{name}", release()));
    for suffix in [".ko.xz", ".ko"] {
        let path = PathBuf::from(format!("{}{suffix}", base.display()));
        if path.exists() {
            return path;
        }
    }
    panic!("no {name}.ko(.xz) under {}: is lab/cache complete? (`cargo xtask setup`)", base.display());
}

/// The file, decompressed with xz(1) when it is a .ko.xz (as xtask reads modules).
fn read(path: &Path) -> Vec<u8> {
    if path.extension().is_some_and(|e| e == "xz") {
        let out = std::process::Command::new("xz")
            .arg("-dc")
            .arg(path)
            .output()
            .unwrap_or_else(|e| panic!("running xz -dc {}: {e} (xz-utils is needed)", path.display()));
        assert!(out.status.success(), "xz -dc {} failed", path.display());
        return out.stdout;
    }
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn btf_section(elf: &[u8], what: &Path) -> Vec<u8> {
    let file = object::File::parse(elf).unwrap_or_else(|e| panic!("{}: {e}", what.display()));
    let section = file.section_by_name(".BTF").unwrap_or_else(|| panic!("{} has no .BTF section", what.display()));
    section.data().unwrap().to_vec()
}

/// The functions a module calls outside itself: its undefined symbols, sorted.
fn imports(elf: &[u8]) -> Vec<String> {
    let file = object::File::parse(elf).unwrap();
    let mut names: Vec<String> = file
        .symbols()
        .filter(|s| s.is_undefined())
        .filter_map(|s| s.name().ok().map(str::to_string))
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

struct Lab {
    vmlinux: Vec<u8>,
    jbd2: Vec<u8>,
    ext4: Vec<u8>,
    /// Functions ext4.ko calls outside itself: its undefined symbols.
    ext4_imports: Vec<String>,
}

fn lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| {
        let vmlinux_path = vmlinux_path();
        let vmlinux = btf_section(&read(&vmlinux_path), &vmlinux_path);
        let jbd2_path = module_path("fs/jbd2", "jbd2");
        let jbd2 = btf_section(&read(&jbd2_path), &jbd2_path);
        let ext4_path = module_path("fs/ext4", "ext4");
        let ext4_elf = read(&ext4_path);
        let ext4 = btf_section(&ext4_elf, &ext4_path);
        let ext4_imports = imports(&ext4_elf);
        Lab { vmlinux, jbd2, ext4, ext4_imports }
    })
}

/// Parsed once for all tests (vmlinux's BTF is about 5 MB).
fn btfs() -> MutexGuard<'static, Btfs> {
    static BTFS: OnceLock<Mutex<Btfs>> = OnceLock::new();
    let btfs = BTFS.get_or_init(|| {
        let lab = lab();
        let modules = vec![("jbd2".into(), lab.jbd2.clone()), ("ext4".into(), lab.ext4.clone())];
        Mutex::new(Btfs::from_bytes(&lab.vmlinux, modules).unwrap())
    });
    btfs.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn kstrtoint_takes_a_string() {
    let p = btfs().prototype("kstrtoint").expect("kstrtoint in vmlinux");
    assert_eq!(p.declaration(), "int kstrtoint(const char *s, unsigned int base, int *res)");
    assert_eq!((p.btf.as_str(), p.spec_letters().as_str()), ("vmlinux", "sxx"));
    assert_eq!(p.spec().unwrap().to_string(), "sxx");
}

#[test]
fn kstrdup_keeps_gfp_t() {
    let mut btfs = btfs();
    let p = btfs.prototype("kstrdup").unwrap();
    assert_eq!(p.declaration(), "char *kstrdup(const char *s, gfp_t gfp)");
    assert_eq!(p.params[1].ty.kind(), "gfp");
    let p = btfs.prototype("kmemdup_noprof").unwrap();
    assert_eq!(p.declaration(), "void *kmemdup_noprof(const void *const p, size_t size, gfp_t gfp)");
    assert_eq!((p.params[0].ty.kind(), p.params[1].ty.kind()), ("ptr", "size"));
}

#[test]
fn ns_to_timespec64_returns_a_struct_in_two_registers() {
    let p = btfs().prototype("ns_to_timespec64").unwrap();
    assert_eq!(p.declaration(), "struct timespec64 ns_to_timespec64(s64 nsec)");
    assert_eq!(p.ret.shape.size(), 16);
    assert_eq!(p.refusal(), None);
    assert_eq!(p.spec().unwrap().to_string(), "x");
    let f = hpctl::prototype::ValueFormat { gfp: &[] };
    assert_eq!(f.result(&p.ret, 3, 250).as_deref(), Some("{tv_sec=3, tv_nsec=250}"));
}

#[test]
fn printk_is_variadic() {
    let p = btfs().prototype("_printk").unwrap();
    assert!(p.variadic);
    assert_eq!(p.declaration(), "int _printk(const char *fmt, ...)");
    assert_eq!((p.spec_letters().as_str(), p.refusal()), ("s.", Some(Refusal::Variadic)));
}

#[test]
fn more_than_six_arguments() {
    // fs/iomap/direct-io.c: iocb, iter, ops, dops, dio_flags, private, done_before.
    let p = btfs().prototype("iomap_dio_rw").unwrap();
    assert_eq!(p.arity(), 7, "{}", p.declaration());
    assert_eq!(p.refusal(), Some(Refusal::TooManyArgs(7)));
}

#[test]
fn struct_by_value_argument() {
    // kuid_t is `struct { uid_t val; }`, passed by value.
    let p = btfs().prototype("from_kuid").unwrap();
    assert_eq!(p.declaration(), "uid_t from_kuid(struct user_namespace *targ, kuid_t kuid)");
    assert!(matches!(p.params[1].ty.shape, Shape::Aggregate { bytes: 4, .. }));
    assert_eq!((p.spec_letters().as_str(), p.refusal()), ("xS", Some(Refusal::Aggregate)));
    // Returning one is fine.
    let p = btfs().prototype("make_kuid").unwrap();
    assert_eq!((p.ret.text.as_str(), p.refusal()), ("kuid_t", None));
}

#[test]
fn jbd2_journal_start_from_jbd2s_split_btf() {
    let mut btfs = btfs();
    let p = btfs.prototype("jbd2_journal_start").expect("jbd2_journal_start in jbd2's BTF");
    assert_eq!(p.btf, "jbd2");
    assert_eq!(p.declaration(), "handle_t *jbd2_journal_start(journal_t *journal, int nblocks)");
    assert_eq!(p.spec().unwrap().to_string(), "xx");
    // And a function of ext4's own, from ext4's split BTF.
    assert_eq!(btfs.prototype("ext4_mark_inode_dirty").map(|p| p.btf), None, "a static inline, not in BTF");
    assert_eq!(btfs.prototype("no_such_function_anywhere"), None);
}

#[test]
fn enums_and_bools() {
    let mut btfs = btfs();
    // bool is a typedef of _Bool.
    let p = btfs.prototype("capable").unwrap();
    assert_eq!(p.declaration(), "bool capable(int cap)");
    assert_eq!(p.ret.kind(), "bool");
    assert_eq!(hpctl::prototype::ValueFormat { gfp: &[] }.result(&p.ret, 0x100, 0).as_deref(), Some("false"));
}

/// Every function ext4.ko imports, judged from BTF: the numbers are printed
/// (`--nocapture`) and must stay sane.
#[test]
fn ext4_imports_judged() {
    let lab = lab();
    let mut btfs = btfs();
    let mut reasons: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut typed = 0;
    for name in &lab.ext4_imports {
        match btfs.prototype(name) {
            Some(p) => match p.refusal() {
                None => typed += 1,
                Some(r) => reasons.entry(BtfRefusal::Spec(r).word()).or_default().push(p.declaration()),
            },
            None => reasons.entry(BtfRefusal::NoPrototype.word()).or_default().push(name.clone()),
        }
    }
    println!("ext4.ko imports {} symbols: {typed} typed and attachable", lab.ext4_imports.len());
    for (word, list) in &reasons {
        println!("  {word}: {}", list.len());
        for item in list.iter().take(12) {
            println!("    {item}");
        }
    }
    assert!(typed > 200, "only {typed} of ext4's imports have an attachable prototype");
    assert!(reasons.get("variadic").is_some_and(|v| v.iter().any(|d| d.contains("_printk("))));
    assert!(reasons.get("struct_by_value").is_some_and(|v| v.iter().any(|d| d.contains("from_kuid("))));
}

/// xfs, e1000 and snd-pcm: every import judged from vmlinux's BTF (a
/// function another module exports, e.g. snd's for snd-pcm, has no
/// prototype there). Each logs through a variadic function, which must be
/// refused, and most imports are attachable.
#[test]
fn other_modules_imports_judged() {
    let mut btfs = btfs();
    for (dir, name) in [("fs/xfs", "xfs"), ("drivers/net/ethernet/intel/e1000", "e1000"), ("sound/core", "snd-pcm")] {
        let path = module_path(dir, name);
        let elf = read(&path);
        let imports = imports(&elf);
        let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut typed = 0;
        for import in &imports {
            let word = match btfs.prototype(import) {
                Some(p) => match p.refusal() {
                    None => {
                        typed += 1;
                        continue;
                    }
                    Some(r) => BtfRefusal::Spec(r).word(),
                },
                None => BtfRefusal::NoPrototype.word(),
            };
            *reasons.entry(word).or_default() += 1;
        }
        println!("{name}.ko imports {} symbols: {typed} typed and attachable; refused: {reasons:?}", imports.len());
        assert!(reasons.get("variadic").is_some_and(|&n| n > 0), "{name}: no variadic import refused");
        assert!(typed * 2 > imports.len(), "{name}: only {typed} of {} imports attachable", imports.len());
    }
}
