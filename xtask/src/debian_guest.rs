//! A real Debian 13 system as a guest, for the install test: systemd, the
//! distribution's kernel and its headers, dkms, gcc and make, man-db,
//! everything the packages need, so that the guest installs them with no
//! network. Made once with debootstrap from Debian's archive into an ext4
//! disk image, cached outside the checkout; each boot writes to a
//! throw-away snapshot of it (QEMU's `snapshot=on`), never to the image.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::guest::GuestOutput;
use crate::run;

/// Outside the checkout, so that every clone shares it.
const GUEST_DIR: &str = "/var/cache/hp_patcher/debian13-guest";

/// What the install test needs in the guest besides debootstrap's minimal
/// base (which has apt and dpkg): an init, the kernel and its headers,
/// DKMS with what it builds and signs with, and man.
const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "kmod",
    "linux-image-amd64",
    "linux-headers-amd64",
    "dkms",
    "gcc",
    // What trixie-backports' kernel headers depend on (the compiler their
    // Makefile names), for the kernel upgrade the test installs offline.
    "gcc-14-for-host",
    "make",
    "openssl",
    "man-db",
    "e2fsprogs",
];

const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(14 * 24 * 3600);

/// The disk image's size: the system takes about 1.5 GB; the rest is for
/// the packages and a second kernel's headers the test installs.
const DISK_SIZE: &str = "6G";

/// The login prompts: the serial console is the test's output, and a getty
/// there hangs up the terminal the test writes to.
const MASKED_UNITS: &[&str] = &["serial-getty@ttyS0.service", "getty@tty1.service"];

/// The unit that runs the test when the guest has booted: the script on
/// the second disk, its output on the serial console, then power off.
const LAB_UNIT: &str = "[Unit]
Description=hp_patcher lab: run the script on the lab disk, then power off
After=local-fs.target dev-vdb.device
BindsTo=dev-vdb.device
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'mkdir -p /mnt/lab && mount -o ro /dev/vdb /mnt/lab && exec /bin/sh /mnt/lab/run.sh'
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0

[Install]
WantedBy=multi-user.target
";

pub struct DebianGuest {
    pub disk: PathBuf,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    /// The release of the kernel it boots (`uname -r` in the guest).
    pub release: String,
}

/// The guest's files, made when missing or made from another package list.
pub fn ensure() -> Result<DebianGuest> {
    let dir = PathBuf::from(GUEST_DIR);
    // What the image was made from: made again when any of it changes.
    let stamp = dir.join("recipe");
    let want = format!("{}\n{LAB_UNIT}{MASKED_UNITS:?}\n", PACKAGES.join(" "));
    // Remade every two weeks as well: the second kernel's headers come from
    // the archive of the day, and may want a newer compiler package than an
    // old image holds (the guest has no network to fetch it).
    let fresh = std::fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < MAX_AGE));
    if fresh && std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return existing(&dir);
    }
    let staging = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&staging);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing the outdated {}", dir.display()))?;
    }
    let root = staging.join("root");
    std::fs::create_dir_all(&root)?;
    eprintln!("making the Debian 13 guest {} (debootstrap, once; several minutes)", dir.display());
    let started = std::time::Instant::now();
    crate::toolchain::debootstrap_trixie(&root, PACKAGES)?;
    configure(&root)?;
    let release = kernel_release(&root)?;
    std::fs::copy(root.join(format!("boot/vmlinuz-{release}")), staging.join("vmlinuz"))?;
    std::fs::copy(root.join(format!("boot/initrd.img-{release}")), staging.join("initrd.img"))?;
    std::fs::write(staging.join("release"), &release)?;
    // mke2fs copies the tree, owners and modes included: no loop device,
    // no mount (this host kernel has no module support).
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "debian13", "-d"])
        .arg(&root)
        .arg(staging.join("disk.img"))
        .arg(DISK_SIZE))?;
    std::fs::remove_dir_all(&root)?;
    std::fs::write(staging.join("recipe"), &want)?;
    std::fs::rename(&staging, &dir)?;
    eprintln!("Debian 13 guest made in {:.0} s (kernel {release})", started.elapsed().as_secs_f64());
    existing(&dir)
}

fn existing(dir: &Path) -> Result<DebianGuest> {
    let release = std::fs::read_to_string(dir.join("release"))?.trim().to_string();
    Ok(DebianGuest {
        disk: dir.join("disk.img"),
        vmlinuz: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        release,
    })
}

/// The one kernel debootstrap installed.
fn kernel_release(root: &Path) -> Result<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root.join("boot"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            found.push(release.to_string());
        }
    }
    match &found[..] {
        [one] => Ok(one.clone()),
        _ => bail!("the Debian 13 guest has {} kernels in /boot, expected one", found.len()),
    }
}

/// What debootstrap leaves to the administrator: the root file system in
/// fstab, a host name, and the lab's unit. No network: the guest has none.
fn configure(root: &Path) -> Result<()> {
    std::fs::write(root.join("etc/fstab"), "LABEL=debian13 / ext4 defaults 0 1\n")?;
    std::fs::write(root.join("etc/hostname"), "hp-debian13\n")?;
    std::fs::write(root.join("etc/systemd/system/hp-lab.service"), LAB_UNIT)?;
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants)?;
    std::os::unix::fs::symlink("/etc/systemd/system/hp-lab.service", wants.join("hp-lab.service"))?;
    for unit in MASKED_UNITS {
        std::os::unix::fs::symlink("/dev/null", root.join("etc/systemd/system").join(unit))?;
    }
    // debootstrap's downloads: the guest installs nothing from the archive.
    for entry in std::fs::read_dir(root.join("var/cache/apt/archives"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            std::fs::remove_file(path)?;
        }
    }
    Ok(())
}

impl DebianGuest {
    /// Boots the guest with `lab_disk` (an ext4 image holding run.sh) as
    /// its second disk, under TCG, with no network; returns the serial log.
    pub fn boot(&self, lab_disk: &Path, name: &str, timeout_secs: u32) -> Result<GuestOutput> {
        let log = crate::repo_root().join("target/lab/debian13").join(format!("{name}.log"));
        let mut qemu = Command::new("timeout");
        qemu.args(["--kill-after=10", &timeout_secs.to_string(), "qemu-system-x86_64"])
            // One host thread, as every lab guest (guest.rs says why).
            .args(["-accel", "tcg,thread=single", "-cpu", "max", "-smp", "2", "-m", "2048"])
            .args(["-nographic", "-no-reboot", "-monitor", "none", "-serial", "stdio", "-nic", "none"])
            .arg("-kernel")
            .arg(&self.vmlinuz)
            .arg("-initrd")
            .arg(&self.initrd)
            .arg("-append")
            .arg("root=LABEL=debian13 rw console=ttyS0 loglevel=5 panic=-1 oops=panic panic_on_warn=1 systemd.show_status=error")
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=raw,snapshot=on", self.disk.display()))
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=raw,readonly=on", lab_disk.display()));
        crate::guest::run_serial(qemu, name, &log, None, timeout_secs, false)
    }
}

/// An ext4 image of `dir`, sized for its contents, for the guest's second disk.
pub fn lab_disk(dir: &Path, image: &Path) -> Result<()> {
    let _ = std::fs::remove_file(image);
    let out = Command::new("du").args(["-sm"]).arg(dir).output()?;
    let used: u64 = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("0").parse()?;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "hplab", "-d"])
        .arg(dir)
        .arg(image)
        .arg(format!("{}M", used + used / 4 + 64)))
}
