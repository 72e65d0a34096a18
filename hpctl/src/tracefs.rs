//! A tracefs instance of hpctl's own (`instances/hpctl-<pid>`): its own
//! ring buffer, so that nobody else's tracing is disturbed and drops are
//! ours to count. Created with mkdir, configured, read through every CPU's
//! `trace_pipe_raw`, removed with rmdir (which needs every file closed).

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::device::{lockdown_mode, strip_os_error};

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";
pub const EVENT: &str = "events/hp_patcher/hp_call";

/// The tracefs root, mounting tracefs on /sys/kernel/tracing if it is not.
pub fn root() -> Result<PathBuf> {
    let tracefs = Path::new(TRACEFS);
    if tracefs.join("instances").is_dir() {
        return Ok(tracefs.to_path_buf());
    }
    if tracefs.is_dir() {
        let target = CString::new(tracefs.as_os_str().as_bytes()).expect("no NUL");
        let fstype = CString::new("tracefs").expect("no NUL");
        // SAFETY: NUL-terminated strings; no data.
        let rc = unsafe { libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
        if rc == 0 && tracefs.join("instances").is_dir() {
            return Ok(tracefs.to_path_buf());
        }
        let err = io::Error::last_os_error();
        if Path::new(DEBUGFS_TRACING).join("instances").is_dir() {
            return Ok(PathBuf::from(DEBUGFS_TRACING));
        }
        if rc != 0 {
            bail!("mounting tracefs on {TRACEFS}: {}", strip_os_error(&err));
        }
    }
    bail!("no tracefs: {TRACEFS} does not exist (is sysfs mounted? CONFIG_TRACING?)")
}

fn write_file(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| {
        let mut msg = format!("writing {value:?} to {}: {}", path.display(), strip_os_error(&e));
        if e.raw_os_error() == Some(libc::EPERM) {
            if let Some(mode) = lockdown_mode() {
                msg.push_str(&format!(" (kernel lockdown: {mode})"));
            }
        }
        anyhow::anyhow!(msg)
    })
}

/// Reads a tracefs file with reads of 64 kB. Some generate their text anew
/// at each read and return nothing past the first (header_page and
/// header_event do on 6.18): std's 32-byte first read would cut them short.
pub fn read_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut text = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// Removes instances left by an hpctl that was killed (its pid is gone).
pub fn remove_stale(root: &Path) {
    let Ok(dir) = fs::read_dir(root.join("instances")) else { return };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("hpctl-")).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir(entry.path());
        }
    }
}

/// One CPU's trace_pipe_raw, non-blocking.
pub struct CpuReader {
    pub cpu: u32,
    file: File,
}

pub enum ReadOutcome {
    Page(usize),
    /// EAGAIN, or 0: nothing to read now.
    Empty,
}

impl CpuReader {
    pub fn read_page(&mut self, buf: &mut [u8]) -> Result<ReadOutcome> {
        loop {
            match self.file.read(buf) {
                Ok(0) => return Ok(ReadOutcome::Empty),
                Ok(n) => return Ok(ReadOutcome::Page(n)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadOutcome::Empty),
                Err(e) => bail!("reading cpu{}'s trace_pipe_raw: {}", self.cpu, strip_os_error(&e)),
            }
        }
    }
}

/// Per-CPU ring-buffer losses, from `per_cpu/cpuN/stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuStats {
    pub overrun: u64,
    pub dropped_events: u64,
}

pub fn parse_stats(text: &str) -> CpuStats {
    let mut s = CpuStats::default();
    for line in text.lines() {
        if let Some((key, value)) = line.split_once(':') {
            let value = value.trim().parse().unwrap_or(0);
            match key.trim() {
                "overrun" => s.overrun = value,
                "dropped events" => s.dropped_events = value,
                _ => {}
            }
        }
    }
    s
}

pub struct Instance {
    pub root: PathBuf,
    pub path: PathBuf,
    enabled: bool,
    removed: bool,
}

impl Instance {
    /// Creates `instances/hpctl-<pid>` with a `buffer_kb` buffer per CPU that
    /// drops new events when full, on the local clock (ftrace's default, and
    /// the one the event's start_ns is read from).
    pub fn create(root: &Path, buffer_kb: u32) -> Result<Instance> {
        let path = root.join("instances").join(format!("hpctl-{}", std::process::id()));
        fs::create_dir(&path).with_context(|| format!("creating the tracefs instance {}", path.display()))?;
        let instance = Instance { root: root.to_path_buf(), path, enabled: false, removed: false };
        write_file(&instance.path.join("buffer_size_kb"), &buffer_kb.to_string())?;
        write_file(&instance.path.join("options/overwrite"), "0")?;
        write_file(&instance.path.join("trace_clock"), "local")?;
        Ok(instance)
    }

    /// Fails unless hp_patcher's event is there.
    pub fn check_event(&self) -> Result<()> {
        if !self.path.join(EVENT).is_dir() {
            bail!(
                "no {EVENT} in tracefs: hp_patcher is not loaded, or was loaded without tracepoints (a module with bad taint gets none)"
            );
        }
        Ok(())
    }

    /// `events/header_page`, `events/header_event` and the event's `format`.
    pub fn descriptions(&self) -> Result<(String, String, String)> {
        let (page, header) = self.layout_text()?;
        Ok((page, header, read_file(&self.path.join(EVENT).join("format"))?))
    }

    /// The ring-buffer layout files of this instance (or of the top level).
    pub fn layout_text(&self) -> Result<(String, String)> {
        let pick = |name: &str| {
            let own = self.path.join("events").join(name);
            if own.exists() {
                own
            } else {
                self.root.join("events").join(name)
            }
        };
        Ok((read_file(&pick("header_page"))?, read_file(&pick("header_event"))?))
    }

    pub fn cpus(&self) -> Result<Vec<u32>> {
        let dir = self.path.join("per_cpu");
        let mut cpus: Vec<u32> = fs::read_dir(&dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("cpu")?.parse().ok())
            .collect();
        cpus.sort_unstable();
        Ok(cpus)
    }

    /// One reader per CPU that has a buffer (an offline possible CPU may
    /// refuse: it is skipped with a warning).
    pub fn open_readers(&self) -> Result<Vec<CpuReader>> {
        let mut readers = Vec::new();
        let mut first_error = None;
        for cpu in self.cpus()? {
            let path = self.path.join(format!("per_cpu/cpu{cpu}/trace_pipe_raw"));
            match OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&path) {
                Ok(file) => readers.push(CpuReader { cpu, file }),
                Err(e) => {
                    eprintln!("hpctl: cpu{cpu} not traced: opening {}: {}", path.display(), strip_os_error(&e));
                    first_error.get_or_insert(e);
                }
            }
        }
        match (readers.is_empty(), first_error) {
            (true, Some(e)) => Err(e).context("no CPU's trace_pipe_raw could be opened"),
            (true, None) => bail!("{} lists no CPU", self.path.join("per_cpu").display()),
            _ => Ok(readers),
        }
    }

    pub fn set_enabled(&mut self, on: bool) -> Result<()> {
        write_file(&self.path.join(EVENT).join("enable"), if on { "1" } else { "0" })?;
        self.enabled = on;
        Ok(())
    }

    pub fn stats(&self, cpus: &[u32]) -> Vec<(u32, CpuStats)> {
        cpus.iter()
            .map(|&cpu| {
                let text = read_file(&self.path.join(format!("per_cpu/cpu{cpu}/stats"))).unwrap_or_default();
                (cpu, parse_stats(&text))
            })
            .collect()
    }

    /// Disables the event and removes the instance; readers must be closed.
    pub fn remove(&mut self) -> Result<()> {
        if self.enabled {
            let _ = self.set_enabled(false);
        }
        if !self.removed {
            fs::remove_dir(&self.path)
                .with_context(|| format!("removing the tracefs instance {}", self.path.display()))?;
            self.removed = true;
        }
        Ok(())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_stats() {
        let text = "entries: 12\noverrun: 3\ncommit overrun: 0\nbytes: 1536\noldest event ts:  6534.000001\n\
                    now ts:  6535.153419\ndropped events: 7\nread events: 100\n";
        assert_eq!(parse_stats(text), CpuStats { overrun: 3, dropped_events: 7 });
    }
}
