//! Loading hp_patcher and making sure /dev/hp_patcher exists (busybox
//! systems have no udev). A hp_patcher.ko given with --ko or found beside
//! hpctl is loaded with finit_module(2): the lab's busybox guests carry it
//! there, with no modules.dep for modprobe to read. An installed one is
//! modprobe's: DKMS puts it under updates/dkms/, maybe compressed.

use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::device::{errno_name, lockdown_mode, strip_os_error, DEVICE};

const SYS_DEV: &str = "/sys/class/misc/hp_patcher/dev";
const SYS_MODULE: &str = "/sys/module/hp_patcher";

pub fn is_loaded() -> bool {
    Path::new(SYS_MODULE).exists()
}

/// The hp_patcher.ko hpctl loads itself, if it is a file: --ko's, else the
/// one beside the hpctl binary. Past it, [`ensure_loaded`] runs modprobe.
pub fn candidates(ko: Option<&Path>) -> Vec<PathBuf> {
    if let Some(ko) = ko {
        return vec![ko.to_path_buf()];
    }
    std::env::current_exe().ok().and_then(|p| p.parent().map(|dir| dir.join("hp_patcher.ko"))).into_iter().collect()
}

/// Loads hp_patcher unless it is loaded, then waits for the device.
pub fn ensure_loaded(ko: Option<&Path>) -> Result<()> {
    if !(Path::new(DEVICE).exists() && is_loaded()) {
        if !is_loaded() {
            let own = candidates(ko);
            match own.iter().find(|p| p.is_file()) {
                Some(path) => load(path)?,
                None if ko.is_some() => bail!("--ko {}: no such file", own[0].display()),
                None => {
                    if let Err(why) = modprobe() {
                        bail!("{}", not_loadable(&own, &why));
                    }
                }
            }
        }
        wait_for_device(Duration::from_secs(2))?;
    }
    Ok(())
}

/// `modprobe hp_patcher`: what it said when it failed, or that there is none.
fn modprobe() -> Result<(), String> {
    let run = |program: &str| Command::new(program).arg("hp_patcher").output();
    // A root shell from `su` (without -) may lack the sbin directories in its
    // PATH: then where the kernel itself runs modprobe from.
    let output = match run("modprobe") {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => run("/sbin/modprobe"),
        other => other,
    };
    match output {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(modprobe_said(&o.stderr, o.status)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("no modprobe".into()),
        Err(e) => Err(format!("running modprobe: {}", strip_os_error(&e))),
    }
}

/// modprobe's stderr on one line (hpctl's errors are one line), else its status.
fn modprobe_said(stderr: &[u8], status: ExitStatus) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        format!("modprobe: {status}")
    } else {
        lines.join("; ")
    }
}

/// Everything tried, in order, and what to do about it.
fn not_loadable(beside: &[PathBuf], modprobe_said: &str) -> String {
    let beside = match beside.first() {
        Some(path) => format!("no {} beside hpctl", path.display()),
        None => "no hp_patcher.ko beside hpctl".to_string(),
    };
    format!(
        "cannot load hp_patcher: {beside}, and `modprobe hp_patcher` failed ({modprobe_said}); \
         install the hp-patcher-dkms package or use --ko PATH"
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn failure_names_what_was_tried_on_one_line() {
        let said = modprobe_said(
            b"modprobe: FATAL: Module hp_patcher not found in directory /lib/modules/6.12.0-9-amd64\n",
            ExitStatus::from_raw(1 << 8),
        );
        let text = not_loadable(&[PathBuf::from("/usr/sbin/hp_patcher.ko")], &said);
        assert_eq!(
            text,
            "cannot load hp_patcher: no /usr/sbin/hp_patcher.ko beside hpctl, and `modprobe hp_patcher` failed \
             (modprobe: FATAL: Module hp_patcher not found in directory /lib/modules/6.12.0-9-amd64); \
             install the hp-patcher-dkms package or use --ko PATH"
        );
    }

    #[test]
    fn modprobe_without_a_word_is_known_by_its_status() {
        assert_eq!(modprobe_said(b"", ExitStatus::from_raw(1 << 8)), "modprobe: exit status: 1");
        assert_eq!(modprobe_said(b"first\n\n  second \n", ExitStatus::from_raw(1 << 8)), "first; second");
    }

    #[test]
    fn ko_is_the_only_candidate_when_given() {
        assert_eq!(candidates(Some(Path::new("/tmp/x.ko"))), [PathBuf::from("/tmp/x.ko")]);
        let own = candidates(None);
        assert_eq!(own.len(), 1);
        assert!(own[0].ends_with("hp_patcher.ko"), "{own:?}");
    }
}
