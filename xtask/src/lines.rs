//! Kernel lines. The lab names a *line* (Debian 12's 6.1, Debian 12's 6.12
//! and its PREEMPT_RT flavour, the 32-bit 6.1), never a build: Debian's
//! security and backports archives keep only the newest build of a package,
//! so any exact pin breaks within weeks. At setup time each line is resolved
//! to the newest build whose every package (image, headers, common headers,
//! kbuild) the archive holds at that build's version.
//!
//! The parsing and the choice are pure functions of `apt-cache` output, so
//! that a host test can feed them an archive in which a build has vanished.

use std::cmp::Ordering;

use anyhow::{bail, Result};

use crate::apt::{Apt, Suite};
use crate::kernel::Arch;

/// A family of kernels that the lab follows as the archive moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    /// What `--kernel` and README call it.
    pub name: &'static str,
    pub suite: Suite,
    /// Debian's flavour: `amd64`, `rt-amd64`, `686-pae`.
    pub flavour: &'static str,
    /// The upstream versions that belong to the line: a release's upstream
    /// version starts with this (`6.1.`, `6.12.`, `7.`).
    pub upstream: &'static str,
}

/// Debian 12's 6.12 (from bookworm-security): the lab's default kernel.
pub const LINE_6_12: Line = Line { name: "6.12", suite: Suite::Bookworm, flavour: "amd64", upstream: "6.12." };
/// Debian 12's own 6.1.
pub const LINE_6_1: Line = Line { name: "6.1", suite: Suite::Bookworm, flavour: "amd64", upstream: "6.1." };
/// Debian 12's 32-bit x86 kernel (PAE).
pub const LINE_I386: Line = Line { name: "i386", suite: Suite::Bookworm, flavour: "686-pae", upstream: "6.1." };

/// Debian 12's 6.12 built with PREEMPT_RT.
pub const LINE_RT: Line = Line { name: "rt", suite: Suite::Bookworm, flavour: "rt-amd64", upstream: "6.12." };

/// trixie-backports' newest 7.x, built with Debian 13's toolchain.
pub const LINE_7: Line = Line { name: "7.x", suite: Suite::TrixieBackports, flavour: "amd64", upstream: "7." };

/// Every line the lab knows, the default first.
pub const LINES: &[Line] = &[LINE_6_12, LINE_6_1, LINE_I386, LINE_RT, LINE_7];

/// The lines `cargo xtask test` runs the guest suite on, in order.
pub const TEST_LINES: &[Line] = &[LINE_6_12, LINE_6_1, LINE_I386, LINE_RT, LINE_7];

/// The lines it also sweeps Debian's in-tree modules on (sweep.rs).
pub const SWEEP_LINES: &[Line] = &[LINE_6_12, LINE_7];

pub fn by_name(name: &str) -> Option<Line> {
    LINES.iter().copied().find(|l| l.name == name)
}

/// One build of a line: its release (`6.1.0-57-amd64`) and the Debian
/// version every one of its packages has (`6.1.192-3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub release: String,
    pub version: String,
}

impl Line {
    /// The releases of this line among the image package names apt knows
    /// (`apt-cache pkgnames linux-image-`), newest first.
    pub fn candidates(&self, pkgnames: &str) -> Vec<String> {
        let mut releases: Vec<String> = pkgnames
            .lines()
            .filter_map(|name| self.suite.release_of_image(name.trim()))
            .filter(|release| self.owns(release))
            .map(str::to_string)
            .collect();
        releases.sort_by(|a, b| newer_first(a, b));
        releases.dedup();
        releases
    }

    pub fn arch(&self) -> Arch {
        Arch::of_flavour(self.flavour)
    }

    /// Whether `release` is of this line: its flavour, and its upstream version.
    pub fn owns(&self, release: &str) -> bool {
        match split_flavour(release) {
            Some((base, flavour)) => flavour == self.flavour && base.starts_with(self.upstream),
            None => false,
        }
    }

    /// Every package of a build, by name: what the lab downloads.
    pub fn packages(&self, release: &str) -> Vec<String> {
        let (base, flavour) = split_flavour(release).unwrap_or((release, self.flavour));
        let common = if flavour.starts_with("rt-") { "common-rt" } else { "common" };
        let mut packages = self.suite.image_packages(release);
        packages.push(format!("linux-headers-{release}"));
        packages.push(format!("linux-headers-{base}-{common}"));
        packages.push(self.kbuild_package(base));
        packages
    }

    /// Debian names kbuild after the full version since 6.12
    /// (`linux-kbuild-6.12.118+deb12`), after major.minor before
    /// (`linux-kbuild-6.1`, one name for every 6.1 ABI: only one of whose
    /// builds the security archive holds at a time).
    fn kbuild_package(&self, base: &str) -> String {
        if base.contains("+deb") {
            format!("linux-kbuild-{base}")
        } else {
            let major_minor: Vec<&str> = base.split(['.', '-']).take(2).collect();
            format!("linux-kbuild-{}", major_minor.join("."))
        }
    }

    /// The newest build all of whose packages `versions` holds at the
    /// image's version; `versions` answers `apt-cache madison` for a list of
    /// packages. Candidates are tried newest first.
    pub fn choose(
        &self,
        candidates: &[String],
        mut versions: impl FnMut(&[String]) -> Result<String>,
    ) -> Result<Build> {
        let mut refused = Vec::new();
        for release in candidates {
            let packages = self.packages(release);
            let madison = versions(&packages)?;
            match complete_build(&packages, self.arch(), &madison) {
                Ok(version) => return Ok(Build { release: release.clone(), version }),
                Err(why) => refused.push(format!("{release}: {why}")),
            }
        }
        if candidates.is_empty() {
            bail!("the archive has no {} kernel of line {} ({})", self.flavour, self.name, self.suite.describe());
        }
        bail!("no build of line {} is complete in the archive:\n  {}", self.name, refused.join("\n  "))
    }

    /// Resolves the line against the archive as it is now, passing over
    /// the releases in `skip` (builds whose download failed: an index can
    /// still list a build its mirror has already removed).
    pub fn resolve(&self, skip: &[String]) -> Result<Build> {
        let apt = Apt::for_suite(self.suite, self.arch())?;
        let names = apt.pkgnames(self.suite.image_prefix())?;
        let candidates: Vec<String> = self.candidates(&names).into_iter().filter(|c| !skip.contains(c)).collect();
        self.choose(&candidates, |packages| apt.madison(packages))
    }
}

/// The version at which every package is available, the first package's (the
/// image's) newest version, or what is missing.
pub fn complete_build(packages: &[String], arch: Arch, madison: &str) -> std::result::Result<String, String> {
    // An index for another architecture does not count: the i386 index of
    // the security archive has lagged behind the amd64 one.
    let index = format!(" {} Packages", arch.dpkg());
    let available = |name: &str| -> Vec<&str> {
        madison
            .lines()
            .filter_map(|line| {
                let mut fields = line.split('|').map(str::trim);
                let package = fields.next()?;
                let version = fields.next()?;
                let source = fields.next()?;
                (package == name && source.ends_with(index.trim_start()) && source.contains(&index)).then_some(version)
            })
            .collect()
    };
    let Some(image) = packages.first() else { return Err("no packages".into()) };
    let Some(version) = available(image).into_iter().max_by(|a, b| deb_version_cmp(a, b)) else {
        return Err(format!("{image} is gone"));
    };
    let missing: Vec<String> =
        packages[1..].iter().filter(|p| !available(p).contains(&version)).map(|p| format!("{p}={version}")).collect();
    if missing.is_empty() {
        Ok(version.to_string())
    } else {
        Err(format!("missing {}", missing.join(", ")))
    }
}

/// `6.12.117+deb12-amd64` -> (`6.12.117+deb12`, `amd64`);
/// `6.1.0-50-686-pae` -> (`6.1.0-50`, `686-pae`).
pub fn split_flavour(release: &str) -> Option<(&str, &str)> {
    const FLAVOURS: &[&str] = &["rt-686-pae", "686-pae", "686", "cloud-amd64", "rt-amd64", "amd64"];
    FLAVOURS.iter().find_map(|f| release.strip_suffix(f)?.strip_suffix('-').map(|base| (base, *f)))
}

/// Releases by the numbers in them: `6.1.0-57` after `6.1.0-56`,
/// `6.12.118+deb12` after `6.12.117+deb12`, `7.3.4+deb13` after `7.2.12+deb13`.
fn newer_first(a: &str, b: &str) -> Ordering {
    let numbers =
        |s: &str| -> Vec<u64> { s.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect() };
    numbers(b).cmp(&numbers(a)).then_with(|| b.cmp(a))
}

/// Debian's version order, enough for kernel versions (`6.1.192-3` >
/// `6.1.192-2`, `6.12.118-1~deb12u1` > `6.12.117-1~deb12u1`, `~` sorting
/// before everything). dpkg's algorithm: alternate non-digit and digit runs.
pub fn deb_version_cmp(a: &str, b: &str) -> Ordering {
    fn order(c: Option<char>) -> i32 {
        match c {
            Some('~') => -1,
            None => 0,
            Some(c) if c.is_ascii_alphabetic() => c as i32,
            Some(c) => c as i32 + 256,
        }
    }
    let (mut a, mut b) = (a, b);
    while !a.is_empty() || !b.is_empty() {
        let split = |s: &str| s.find(|c: char| c.is_ascii_digit()).unwrap_or(s.len());
        let (an, ar) = a.split_at(split(a));
        let (bn, br) = b.split_at(split(b));
        let (mut ai, mut bi) = (an.chars(), bn.chars());
        loop {
            let (x, y) = (ai.next(), bi.next());
            if x.is_none() && y.is_none() {
                break;
            }
            match order(x).cmp(&order(y)) {
                Ordering::Equal => {}
                other => return other,
            }
        }
        let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (ad, ar) = ar.split_at(digits(ar));
        let (bd, br) = br.split_at(digits(br));
        let (x, y) = (ad.parse::<u64>().unwrap_or(0), bd.parse::<u64>().unwrap_or(0));
        match x.cmp(&y) {
            Ordering::Equal => {}
            other => return other,
        }
        a = ar;
        b = br;
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKGNAMES_6_1: &str = "linux-image-6.1.0-56-amd64-unsigned\nlinux-image-6.1.0-57-amd64-unsigned\n\
        linux-image-6.1.0-57-rt-amd64-unsigned\nlinux-image-6.1.0-50-686-pae-unsigned\n\
        linux-image-6.12.118+deb12-amd64-unsigned\nlinux-image-6.1.0-9-amd64-unsigned\nlinux-image-amd64\n";

    /// bookworm-security on 2026-12-06: 6.1.0-57 arrived with kbuild 6.1.192-3,
    /// and the 6.1.0-56 image stayed while its kbuild (6.1.192-2) vanished.
    const MADISON: &str = "\
linux-image-6.1.0-57-amd64-unsigned | 6.1.192-3 | http://mirror.example/debian-security bookworm-security/main amd64 Packages
linux-headers-6.1.0-57-amd64 | 6.1.192-3 | http://mirror.example/debian-security bookworm-security/main amd64 Packages
linux-headers-6.1.0-57-common | 6.1.192-3 | http://mirror.example/debian-security bookworm-security/main amd64 Packages
linux-image-6.1.0-56-amd64-unsigned | 6.1.192-2 | http://mirror.example/debian-security bookworm-security/main amd64 Packages
linux-headers-6.1.0-56-amd64 | 6.1.192-2 | http://mirror.example/debian-security bookworm-security/main amd64 Packages
linux-headers-6.1.0-56-common | 6.1.192-2 | http://mirror.example/debian-security bookworm-security/main amd64 Packages
linux-kbuild-6.1 | 6.1.192-3 | http://mirror.example/debian-security bookworm-security/main amd64 Packages
linux-kbuild-6.1 | 6.1.176-1 | http://mirror.example/debian bookworm/main amd64 Packages
";

    #[test]
    fn candidates_are_the_lines_own_newest_first() {
        assert_eq!(LINE_6_1.candidates(PKGNAMES_6_1), ["6.1.0-57-amd64", "6.1.0-56-amd64", "6.1.0-9-amd64"]);
        assert_eq!(LINE_I386.candidates(PKGNAMES_6_1), ["6.1.0-50-686-pae"]);
        assert_eq!(LINE_6_12.candidates(PKGNAMES_6_1), ["6.12.118+deb12-amd64"]);
    }

    #[test]
    fn a_vanished_pin_resolves_to_the_newest_complete_build() {
        // The old pin 6.1.0-56 is incomplete now: its kbuild is gone.
        let pinned = LINE_6_1.packages("6.1.0-56-amd64");
        assert_eq!(complete_build(&pinned, Arch::X86_64, MADISON), Err("missing linux-kbuild-6.1=6.1.192-2".into()));
        let candidates = LINE_6_1.candidates(PKGNAMES_6_1);
        let build = LINE_6_1.choose(&candidates, |_| Ok(MADISON.to_string())).unwrap();
        assert_eq!(build, Build { release: "6.1.0-57-amd64".into(), version: "6.1.192-3".into() });
    }

    #[test]
    fn an_incomplete_newest_build_falls_back_to_the_previous_one() {
        // The archive in sync: -57's image is there, its kbuild not yet.
        let madison: String = MADISON
            .lines()
            .filter(|l| !l.contains("6.1.192-3 |") || !l.starts_with("linux-kbuild"))
            .map(|l| format!("{l}\n"))
            .collect();
        let madison = madison.replace("linux-kbuild-6.1 | 6.1.176-1", "linux-kbuild-6.1 | 6.1.192-2");
        let candidates = LINE_6_1.candidates(PKGNAMES_6_1);
        let build = LINE_6_1.choose(&candidates, |_| Ok(madison.clone())).unwrap();
        assert_eq!(build.release, "6.1.0-56-amd64");
        let none = LINE_6_1.choose(&candidates, |_| Ok(String::new())).unwrap_err().to_string();
        assert!(none.contains("6.1.0-57-amd64: linux-image-6.1.0-57-amd64-unsigned is gone"), "{none}");
    }

    #[test]
    fn packages_per_suite_and_flavour() {
        assert_eq!(
            LINE_6_12.packages("6.12.118+deb12-amd64"),
            [
                "linux-image-6.12.118+deb12-amd64-unsigned",
                "linux-headers-6.12.118+deb12-amd64",
                "linux-headers-6.12.118+deb12-common",
                "linux-kbuild-6.12.118+deb12"
            ]
        );
        assert_eq!(LINE_RT.packages("6.12.118+deb12-rt-amd64")[2], "linux-headers-6.12.118+deb12-common-rt");
        let rt = Line { flavour: "rt-amd64", ..LINE_6_1 };
        assert_eq!(rt.packages("6.1.0-57-rt-amd64")[2], "linux-headers-6.1.0-57-common-rt");
        assert_eq!(rt.packages("6.1.0-57-rt-amd64")[3], "linux-kbuild-6.1");
    }

    /// trixie-backports after a move: 7.3.4's packages are gone, 7.3.5 is
    /// whole, and 7.4.1's binary arrived before its kbuild.
    #[test]
    fn the_7_line_resolves_to_what_the_archive_holds_today() {
        let pkgnames = "linux-binary-7.3.4+deb13-amd64\nlinux-binary-7.3.5+deb13-amd64\n\
            linux-binary-7.4.1+deb13-amd64\nlinux-binary-unsigned-7.4.1+deb13-amd64\nlinux-binary-7.4.1+deb13-rt-amd64\n";
        let candidates = LINE_7.candidates(pkgnames);
        assert_eq!(candidates, ["7.4.1+deb13-amd64", "7.3.5+deb13-amd64", "7.3.4+deb13-amd64"]);
        let at = |package: &str, version: &str| {
            format!("{package} | {version} | http://mirror.example/debian trixie-backports/main amd64 Packages\n")
        };
        let mut madison: String = LINE_7.packages("7.3.5+deb13-amd64").iter().map(|p| at(p, "7.3.5-1~bpo13+1")).collect();
        madison += &at("linux-binary-7.4.1+deb13-amd64", "7.4.1-1~bpo13+1");
        let build = LINE_7.choose(&candidates, |_| Ok(madison.clone())).unwrap();
        assert_eq!(build, Build { release: "7.3.5+deb13-amd64".into(), version: "7.3.5-1~bpo13+1".into() });
        assert_eq!(
            LINE_7.packages("7.3.5+deb13-amd64"),
            [
                "linux-binary-7.3.5+deb13-amd64",
                "linux-modules-7.3.5+deb13-amd64",
                "linux-base-7.3.5+deb13-amd64",
                "linux-headers-7.3.5+deb13-amd64",
                "linux-headers-7.3.5+deb13-common",
                "linux-kbuild-7.3.5+deb13"
            ]
        );
    }

    #[test]
    fn debian_version_order() {
        assert_eq!(deb_version_cmp("6.1.192-3", "6.1.192-2"), Ordering::Greater);
        assert_eq!(deb_version_cmp("6.12.118-1~deb12u1", "6.12.117-1~deb12u1"), Ordering::Greater);
        assert_eq!(deb_version_cmp("7.3.4-1~bpo13+1", "7.3.4-1"), Ordering::Less);
        assert_eq!(deb_version_cmp("6.1.192-3", "6.1.192-3"), Ordering::Equal);
        assert_eq!(deb_version_cmp("6.1.76-1", "6.1.192-1"), Ordering::Less);
    }
}
