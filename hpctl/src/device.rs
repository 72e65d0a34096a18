//! /dev/hp_patcher: the commands hpctl sends and the one write / read-to-0
//! exchange of docs/control.md.
//!
//! Every command line hpctl writes is built by `hp_core::control::Command`'s
//! `Display`: the grammar the module parses with.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};

pub use hp_core::control::{Command, Sink};

use crate::records::error_reason;

pub const DEVICE: &str = "/dev/hp_patcher";

/// The sink as a command-line value; hp-core's `Sink` is the grammar's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkArg {
    #[default]
    Trace,
    Printk,
    None,
}

impl From<SinkArg> for Sink {
    fn from(sink: SinkArg) -> Sink {
        match sink {
            SinkArg::Trace => Sink::Trace,
            SinkArg::Printk => Sink::Printk,
            SinkArg::None => Sink::None,
        }
    }
}

/// A module name as the kernel keeps it: `-` becomes `_` (as modprobe does),
/// and only `[A-Za-z0-9_]`, at most 55 bytes, is accepted.
pub fn module_name(name: &str) -> Result<String, String> {
    let name = name.replace('-', "_");
    if name.is_empty() || name.len() > 55 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("'{name}' is not a module name (1 to 55 of A-Z a-z 0-9 _ -)"));
    }
    Ok(name)
}

/// A function list for `fn=`: names separated by commas, no spaces.
pub fn function_list(list: &str) -> Result<String, String> {
    Ok(function_names(list)?.join(","))
}

/// The names of a comma list, each a kernel symbol name (`[A-Za-z0-9_.]`,
/// as `hp_core::proto::is_symbol_name` has it), duplicates dropped.
pub fn function_names(list: &str) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !hp_core::proto::is_symbol_name(name) {
            return Err(format!("'{list}' is not a comma list of function names"));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// A command the device refused.
#[derive(Debug)]
pub struct DeviceError {
    pub command: String,
    pub errno: i32,
    /// The `error <reason>` line read back after the failed write.
    pub reason: Option<String>,
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let err = io::Error::from_raw_os_error(self.errno);
        let name = errno_name(self.errno);
        match &self.reason {
            Some(reason) => write!(f, "`{}`: {reason} ({name})", self.command),
            None => write!(f, "`{}`: {} ({name})", self.command, strip_os_error(&err)),
        }
    }
}

impl std::error::Error for DeviceError {}

/// `No such file or directory` rather than `No such file or directory (os error 2)`.
pub fn strip_os_error(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENOEXEC => "ENOEXEC",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ENOSYS => "ENOSYS",
        libc::E2BIG => "E2BIG",
        libc::EKEYREJECTED => "EKEYREJECTED",
        libc::ENOKEY => "ENOKEY",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

/// Sends one command and returns the reply text.
pub fn send(command: &Command<'_>) -> Result<String, DeviceError> {
    let line = format!("{command}\n");
    let fail = |errno: i32, reason: Option<String>| DeviceError { command: command.to_string(), errno, reason };
    let errno_of = |e: &io::Error| e.raw_os_error().unwrap_or(libc::EIO);
    let mut dev = OpenOptions::new().read(true).write(true).open(DEVICE).map_err(|e| fail(errno_of(&e), None))?;
    // One write() is one command: never split it (write_all could).
    match dev.write(line.as_bytes()) {
        Ok(n) if n == line.len() => {}
        Ok(n) => return Err(fail(libc::EIO, Some(format!("short write: {n} of {} bytes", line.len())))),
        Err(e) => {
            let reply = read_reply(&mut dev).unwrap_or_default();
            return Err(fail(errno_of(&e), error_reason(&reply)));
        }
    }
    read_reply(&mut dev).map_err(|e| fail(errno_of(&e), None))
}

fn read_reply(dev: &mut impl Read) -> io::Result<String> {
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match dev.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// An error as hpctl's one line on stderr: the context chain, and what the
/// kernel's errno means here (lockdown for EPERM, a module not loaded for
/// ENOENT from attach).
pub fn one_line(e: &anyhow::Error) -> String {
    if let Some(d) = e.downcast_ref::<DeviceError>() {
        return device_error_line(d, lockdown_mode());
    }
    format!("{e:#}").replace('\n', " ")
}

fn device_error_line(d: &DeviceError, lockdown: Option<String>) -> String {
    match (d.errno, lockdown) {
        (libc::EPERM, Some(mode)) => format!("{d}: kernel lockdown ({mode}) forbids it"),
        (libc::ENOENT, _) if d.command.starts_with("attach ") => {
            let module = d.command.split(' ').nth(1).unwrap_or_default();
            format!("module {module} is not loaded ({d})")
        }
        _ => d.to_string(),
    }
}

/// The kernel's lockdown mode when one is in force (`integrity`,
/// `confidentiality`), from /sys/kernel/security/lockdown.
pub fn lockdown_mode() -> Option<String> {
    let text = std::fs::read_to_string("/sys/kernel/security/lockdown").ok()?;
    lockdown_from(&text)
}

pub fn lockdown_from(text: &str) -> Option<String> {
    let start = text.find('[')?;
    let end = start + text[start..].find(']')?;
    let mode = &text[start + 1..end];
    (mode != "none").then(|| mode.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        let attach =
            Command::Attach { module: "cr_target", functions: "kfree,vfree", sink: Sink::Printk, follow: true, burst: None, leaks: None, kernel_frees: false };
        assert_eq!(attach.to_string(), "attach cr_target fn=kfree,vfree sink=printk follow");
        let attach = Command::Attach { module: "ext4", functions: "", sink: Sink::Trace, follow: false, burst: None, leaks: None, kernel_frees: false };
        assert_eq!(attach.to_string(), "attach ext4 sink=trace");
        assert_eq!(Command::Plan { module: "ext4", functions: "kfree" }.to_string(), "plan ext4 fn=kfree");
        assert_eq!(Command::Plan { module: "ext4", functions: "" }.to_string(), "plan ext4");
        assert_eq!(Command::Detach { module: "ext4" }.to_string(), "detach ext4");
        assert_eq!(Command::DetachAll.to_string(), "detach-all");
        assert_eq!(Command::Stats { module: None }.to_string(), "stats");
        assert_eq!(Command::Stats { module: Some("xfs") }.to_string(), "stats xfs");
        assert_eq!(Command::Sites { module: Some("xfs") }.to_string(), "sites xfs");
        assert_eq!(Command::Targets.to_string(), "targets");
        assert_eq!(Command::Info.to_string(), "info");
    }

    #[test]
    fn names_and_lists() {
        assert_eq!(module_name("snd-pcm").unwrap(), "snd_pcm");
        assert!(module_name("a b").is_err());
        assert!(module_name("").is_err());
        assert_eq!(function_list(" kfree, vfree,").unwrap(), "kfree,vfree");
        assert!(function_list("kfree;rm").is_err());
        assert!(function_list("kstrtoint:sxx").is_err(), "SPEC comes from BTF, not the command line");
        assert_eq!(function_names("kfree,foo.isra.0,kfree").unwrap(), ["kfree", "foo.isra.0"]);
    }

    #[test]
    fn errors_read_well() {
        let e = DeviceError {
            command: "attach x sink=trace".into(),
            errno: libc::ENOENT,
            reason: Some("module x is not loaded".into()),
        };
        assert_eq!(e.to_string(), "`attach x sink=trace`: module x is not loaded (ENOENT)");
        let e = DeviceError { command: "targets".into(), errno: libc::EACCES, reason: None };
        assert_eq!(e.to_string(), "`targets`: Permission denied (EACCES)");
    }

    #[test]
    fn errno_meanings() {
        let e = |command: &str, errno, reason: Option<&str>| DeviceError {
            command: command.into(),
            errno,
            reason: reason.map(str::to_string),
        };
        let attach = e("attach cr_target sink=trace", libc::ENOENT, Some("no module cr_target"));
        assert_eq!(
            device_error_line(&attach, None),
            "module cr_target is not loaded (`attach cr_target sink=trace`: no module cr_target (ENOENT))"
        );
        let refused = e("attach x sink=trace", libc::EPERM, None);
        assert_eq!(
            device_error_line(&refused, Some("integrity".into())),
            "`attach x sink=trace`: Operation not permitted (EPERM): kernel lockdown (integrity) forbids it"
        );
        assert_eq!(device_error_line(&refused, None), "`attach x sink=trace`: Operation not permitted (EPERM)");
        let bad =
            e("attach x fn=kfree sink=trace", libc::EINVAL, Some("function 'kfree' is not exported by this kernel"));
        assert_eq!(
            one_line(&anyhow::Error::new(bad)),
            "`attach x fn=kfree sink=trace`: function 'kfree' is not exported by this kernel (EINVAL)"
        );
        let chained = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(&chained), "outer: inner");
    }

    #[test]
    fn lockdown_modes() {
        assert_eq!(lockdown_from("[none] integrity confidentiality\n"), None);
        assert_eq!(lockdown_from("none [integrity] confidentiality\n").as_deref(), Some("integrity"));
        assert_eq!(lockdown_from(""), None);
    }
}
