//! Loading hp_patcher.ko with finit_module(2) and making sure
//! /dev/hp_patcher exists (busybox systems have no udev).

use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::device::{errno_name, lockdown_mode, strip_os_error, DEVICE};

const SYS_DEV: &str = "/sys/class/misc/hp_patcher/dev";
const SYS_MODULE: &str = "/sys/module/hp_patcher";

pub fn is_loaded() -> bool {
    Path::new(SYS_MODULE).exists()
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Where hp_patcher.ko is looked for, in order.
pub fn candidates(ko: Option<&Path>) -> Vec<PathBuf> {
    if let Some(ko) = ko {
        return vec![ko.to_path_buf()];
    }
    let mut list = Vec::new();
    if let Some(dir) = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)) {
        list.push(dir.join("hp_patcher.ko"));
    }
    let release = kernel_release();
    for sub in ["extra", "updates"] {
        list.push(PathBuf::from(format!("/lib/modules/{release}/{sub}/hp_patcher.ko")));
    }
    list
}

/// Loads hp_patcher.ko unless it is loaded, then waits for the device.
pub fn ensure_loaded(ko: Option<&Path>) -> Result<()> {
    if !(Path::new(DEVICE).exists() && is_loaded()) {
        if !is_loaded() {
            let list = candidates(ko);
            let Some(path) = list.iter().find(|p| p.is_file()) else {
                let tried: Vec<String> = list.iter().map(|p| p.display().to_string()).collect();
                bail!("hp_patcher.ko not found (tried {}; use --ko PATH)", tried.join(", "));
            };
            load(path)?;
        }
        wait_for_device(Duration::from_secs(2))?;
    }
    Ok(())
}

fn load(path: &Path) -> Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let params = CString::new("").expect("no NUL");
    // SAFETY: a valid fd, a NUL-terminated string, flags 0.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    let errno = err.raw_os_error().unwrap_or(0);
    if errno == libc::EEXIST {
        return Ok(()); // loaded by someone else meanwhile
    }
    let shown = path.display();
    if errno == libc::EPERM {
        if let Some(mode) = lockdown_mode() {
            bail!("kernel lockdown ({mode}) refused to load {shown}: it must be signed with a key the kernel trusts (EPERM)");
        }
    }
    bail!("the kernel refused {shown}: {} ({}); see dmesg", strip_os_error(&err), errno_name(errno))
}

/// Waits until /dev/hp_patcher exists, creating it from sysfs if no one does.
pub fn wait_for_device(timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if Path::new(DEVICE).exists() {
            return Ok(());
        }
        // Give devtmpfs a moment to create it; then do it ourselves.
        if start.elapsed() >= Duration::from_millis(200) {
            if let Ok(text) = std::fs::read_to_string(SYS_DEV) {
                return make_node(text.trim());
            }
        }
        if start.elapsed() >= timeout {
            bail!("{DEVICE} did not appear within {} s of loading hp_patcher", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn make_node(major_minor: &str) -> Result<()> {
    let (major, minor) = major_minor
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .with_context(|| format!("{SYS_DEV} reads {major_minor:?}, not major:minor"))?;
    let path = CString::new(Path::new(DEVICE).as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: a NUL-terminated path; mknod does not keep it.
    let rc = unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(major, minor)) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EEXIST) {
            bail!("creating {DEVICE} ({major}:{minor}): {}", strip_os_error(&err));
        }
    }
    Ok(())
}

/// For commands that do not load anything: the device, or a clear error.
pub fn ensure_device() -> Result<()> {
    if Path::new(DEVICE).exists() {
        return Ok(());
    }
    if is_loaded() && Path::new(SYS_DEV).exists() {
        return wait_for_device(Duration::from_secs(2));
    }
    bail!("hp_patcher is not loaded (`hpctl attach` loads it, or insmod hp_patcher.ko)")
}
