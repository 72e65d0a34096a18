//! A private apt for the lab: its own sources, lists and cache under
//! lab/cache/apt/<suite>-<arch>/, so that resolving and downloading kernels never
//! depends on, nor changes, what the host's apt is set up to install. The
//! mirror is the one the host's own sources name for Debian (and for its
//! security archive): the lab adds suites, never hosts. Each architecture
//! has its own state: apt drops a whole repository when one of its indexes
//! fails, and the security archive's i386 index is sometimes caught in a
//! mirror sync, which must not hide the amd64 kernels.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use crate::kernel::{cache_dir, Arch};
use crate::run;
use crate::toolchain::Toolchain;

/// Where a line's packages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// Debian 12: bookworm, bookworm-updates and bookworm-security.
    Bookworm,
    /// Debian 13 and its backports, where the 7.x kernels are.
    TrixieBackports,
}

impl Suite {
    fn dir_name(self) -> &'static str {
        match self {
            Suite::Bookworm => "bookworm",
            Suite::TrixieBackports => "trixie-backports",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Suite::Bookworm => "bookworm, bookworm-updates, bookworm-security",
            Suite::TrixieBackports => "trixie, trixie-backports",
        }
    }

    /// One-line sources for this suite, on the host's mirrors.
    fn sources(self, mirrors: &Mirrors, arch: Arch) -> String {
        let keyring = "signed-by=/usr/share/keyrings/debian-archive-keyring.gpg";
        let opts = format!("[arch={} {keyring}]", arch.dpkg());
        let (main, security) = (&mirrors.archive, &mirrors.security);
        match self {
            Suite::Bookworm => format!(
                "deb {opts} {main} bookworm main\ndeb {opts} {main} bookworm-updates main\ndeb {opts} {security} bookworm-security main\n"
            ),
            Suite::TrixieBackports => format!("deb {opts} {main} trixie main\ndeb {opts} {main} trixie-backports main\n"),
        }
    }

    /// The toolchain the suite's kernels were built with, and their modules must be.
    pub fn toolchain(self) -> Toolchain {
        match self {
            Suite::Bookworm => Toolchain::Host,
            Suite::TrixieBackports => Toolchain::Trixie,
        }
    }

    /// The prefix shared by the package names that identify a build.
    pub fn image_prefix(self) -> &'static str {
        match self {
            Suite::Bookworm => "linux-image-",
            Suite::TrixieBackports => "linux-binary-",
        }
    }

    /// The release a package name identifies, if it is a build's image:
    /// bookworm's unsigned image (`linux-image-<release>-unsigned`); on
    /// 7.x, where `linux-image-<release>` is a metapackage over the split
    /// packages, the kernel's binary (`linux-binary-<release>`).
    pub fn release_of_image(self, name: &str) -> Option<&str> {
        match self {
            Suite::Bookworm => name.strip_prefix("linux-image-")?.strip_suffix("-unsigned"),
            Suite::TrixieBackports => {
                name.strip_prefix("linux-binary-").filter(|rest| !rest.starts_with("unsigned-"))
            }
        }
    }

    /// The packages that hold a build's image, in-tree modules and its
    /// config and System.map; the first one's version is the build's.
    pub fn image_packages(self, release: &str) -> Vec<String> {
        match self {
            Suite::Bookworm => vec![format!("linux-image-{release}-unsigned")],
            Suite::TrixieBackports => vec![
                format!("linux-binary-{release}"),
                format!("linux-modules-{release}"),
                format!("linux-base-{release}"),
            ],
        }
    }
}

/// The host's Debian mirrors, as its apt sources name them.
#[derive(Debug, PartialEq, Eq)]
pub struct Mirrors {
    pub archive: String,
    pub security: String,
}

impl Mirrors {
    /// Reads the host's sources: one-line `.list` files and deb822 `.sources`.
    pub fn of_host() -> Result<Mirrors> {
        let mut text = String::new();
        let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
        if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
            files.extend(dir.filter_map(|e| Some(e.ok()?.path())));
        }
        for file in files {
            let name = file.to_string_lossy();
            if name.ends_with(".list") || name.ends_with(".sources") {
                text += &std::fs::read_to_string(&file).unwrap_or_default();
                text.push_str("\n\n");
            }
        }
        Mirrors::parse(&text).context("the host's apt sources name no Debian mirror for bookworm and bookworm-security")
    }

    /// The URIs serving `bookworm` and `bookworm-security`, from sources in
    /// either format.
    pub fn parse(text: &str) -> Option<Mirrors> {
        let mut pairs: Vec<(String, String)> = Vec::new(); // (uri, suite)
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("deb ") {
                let rest = match rest.trim_start().strip_prefix('[') {
                    Some(r) => r.split_once(']').map(|(_, r)| r).unwrap_or(""),
                    None => rest,
                };
                let mut fields = rest.split_whitespace();
                if let (Some(uri), Some(suite)) = (fields.next(), fields.next()) {
                    pairs.push((uri.into(), suite.into()));
                }
            }
        }
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(|v| v.trim().to_string())
            };
            let is_deb = field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
            if let (true, Some(uris), Some(suites)) = (is_deb, field("URIs"), field("Suites")) {
                for uri in uris.split_whitespace() {
                    pairs.extend(suites.split_whitespace().map(|s| (uri.to_string(), s.to_string())));
                }
            }
        }
        let uri_for =
            |suite: &str| pairs.iter().find(|(_, s)| s == suite).map(|(u, _)| u.trim_end_matches('/').to_string());
        Some(Mirrors { archive: uri_for("bookworm")?, security: uri_for("bookworm-security")? })
    }
}

/// apt, with the state of one suite.
pub struct Apt {
    dir: PathBuf,
    arch: Arch,
}

/// Suites whose lists this process has refreshed.
static UPDATED: Mutex<Option<HashSet<(Suite, Arch)>>> = Mutex::new(None);

impl Apt {
    /// The suite's apt for one architecture, its lists refreshed once per run
    /// (the archive moves: a build is resolved against the archive as it is
    /// now). A refresh that fails (a mirror in sync) is tried again; when it
    /// still fails, the indexes that did arrive are used, with a warning.
    pub fn for_suite(suite: Suite, arch: Arch) -> Result<Apt> {
        let dir = cache_dir().join("apt").join(format!("{}-{}", suite.dir_name(), arch.dpkg()));
        for sub in ["lists/partial", "archives/partial", "etc/apt.conf.d", "etc/preferences.d"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let status = dir.join("status");
        if !status.exists() {
            std::fs::write(&status, "")?;
        }
        std::fs::write(dir.join("etc/sources.list"), suite.sources(&Mirrors::of_host()?, arch))?;
        let apt = Apt { dir, arch };
        let mut updated = UPDATED.lock().unwrap_or_else(|e| e.into_inner());
        if updated.get_or_insert_with(HashSet::new).insert((suite, arch)) {
            eprintln!("apt: refreshing the {} lists of {}", arch.dpkg(), suite.describe());
            let update = || run(apt.command("apt-get").args(["update", "-q"]).stdout(std::process::Stdio::null()));
            let mut result = update();
            for delay in [15] {
                if result.is_ok() {
                    break;
                }
                eprintln!("apt: trying again in {delay} s");
                std::thread::sleep(std::time::Duration::from_secs(delay));
                result = update();
            }
            if result.is_err() {
                if !apt.dir.join("lists").read_dir()?.any(|e| e.is_ok_and(|e| e.path().is_file())) {
                    return result.map(|()| apt);
                }
                eprintln!(
                    "apt: warning: some {} index failed to arrive; resolving against those that did",
                    arch.dpkg()
                );
            }
        }
        Ok(apt)
    }

    /// `program` (apt-get or apt-cache) with this suite's state, sources and cache.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let d = self.dir.display();
        for option in [
            format!("Dir::State={d}"),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::State::status={d}/status"),
            format!("Dir::Cache={d}"),
            format!("Dir::Cache::archives={d}/archives"),
            format!("Dir::Etc::SourceList={d}/etc/sources.list"),
            format!("Dir::Etc::SourceParts={d}/etc/sources.list.d"),
            format!("Dir::Etc::Preferences={d}/etc/preferences"),
            format!("Dir::Etc::PreferencesParts={d}/etc/preferences.d"),
            // The downloads land in the lab's cache, not in a directory of _apt's.
            "APT::Sandbox::User=root".to_string(),
            format!("APT::Architecture={}", self.arch.dpkg()),
            format!("APT::Architectures::={}", self.arch.dpkg()),
        ] {
            cmd.arg("-o").arg(option);
        }
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    fn output(&self, cmd: &mut Command) -> Result<String> {
        let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
        if !out.status.success() {
            bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Every package name that starts with `prefix`.
    pub fn pkgnames(&self, prefix: &str) -> Result<String> {
        self.output(self.command("apt-cache").args(["pkgnames", prefix]))
    }

    /// `apt-cache madison`: one line per package and version the archive holds.
    pub fn madison(&self, packages: &[String]) -> Result<String> {
        self.output(self.command("apt-cache").arg("madison").args(packages))
    }

    /// Downloads `name=version` (or `name:arch=version`) packages into `dir`.
    pub fn download(&self, packages: &[String], dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        run(self.command("apt-get").arg("download").args(packages).current_dir(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_from_deb822_and_one_line_sources() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n\
            Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n\
            Suites: bookworm-security\nComponents: main\n";
        let want = Mirrors {
            archive: "http://mirror.example/debian".into(),
            security: "http://mirror.example/debian-security".into(),
        };
        assert_eq!(Mirrors::parse(deb822), Some(want));
        let list = "# comment\ndeb [signed-by=/k.gpg] http://m.example/debian bookworm main\n\
            deb http://s.example/debian-security bookworm-security main\n";
        assert_eq!(Mirrors::parse(list).unwrap().security, "http://s.example/debian-security");
        assert_eq!(Mirrors::parse("deb http://m.example/debian bookworm main\n"), None);
    }

    #[test]
    fn images_per_suite() {
        assert_eq!(Suite::Bookworm.release_of_image("linux-image-6.1.0-57-amd64-unsigned"), Some("6.1.0-57-amd64"));
        assert_eq!(Suite::Bookworm.release_of_image("linux-image-6.1.0-57-amd64"), None);
        let trixie = Suite::TrixieBackports;
        assert_eq!(trixie.release_of_image("linux-binary-7.3.4+deb13-amd64"), Some("7.3.4+deb13-amd64"));
        assert_eq!(trixie.release_of_image("linux-binary-unsigned-7.3.4+deb13-amd64"), None);
        assert_eq!(trixie.release_of_image("linux-image-7.3.4+deb13-amd64"), None);
    }
}
