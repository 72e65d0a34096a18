//! hpctl's man pages and shell completions, generated from the clap
//! definitions the binary parses with (hpctl::cli), so that they cannot
//! drift from `--help`. Written uncompressed: packaging compresses.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

/// Section 8, as bpftrace's: hpctl loads a kernel module and must run as root.
const SECTION: &str = "8";

/// Writes out/man8/hpctl.8, one out/man8/hpctl-<sub>[-<subsub>...].8 per
/// visible subcommand, and out/completions/{hpctl.bash,_hpctl,hpctl.fish};
/// returns every file written.
pub fn write(out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = write_man_pages(&out.join("man8"))?;
    written.extend(write_completions(&out.join("completions"))?);
    Ok(written)
}

fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Built once at the top so that every subcommand knows its display name
    // (hpctl-attach: its page's NAME and file) and its bin name (hpctl
    // attach: its SYNOPSIS). `hpctl help` is no command of ours to document.
    let mut cli = hpctl::cli::Cli::command().disable_help_subcommand(true);
    cli.build();
    // Each page's footer: subcommands carry no version of their own.
    let source = format!("hpctl {}", cli.get_version().unwrap_or_default());
    let mut written = Vec::new();
    write_page(cli, dir, &source, &mut written)?;
    Ok(written)
}

/// This command's page, then its subcommands' (hidden ones, like
/// `decode`, are for tests and stay undocumented, as in `--help`).
fn write_page(command: clap::Command, dir: &Path, source: &str, written: &mut Vec<PathBuf>) -> Result<()> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_page(sub.clone(), dir, source, written)?;
    }
    let title = command.get_display_name().unwrap_or_else(|| command.get_name()).to_uppercase();
    let page = clap_mangen::Man::new(command).title(title).section(SECTION).source(source);
    let path =
        page.generate_to(dir).with_context(|| format!("writing {} into {}", page.get_filename(), dir.display()))?;
    written.push(path);
    Ok(())
}

fn write_completions(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cli = hpctl::cli::Cli::command();
    // Each shell names its file as it looks it up: hpctl.bash, _hpctl, hpctl.fish.
    [Shell::Bash, Shell::Zsh, Shell::Fish]
        .into_iter()
        .map(|shell| {
            clap_complete::generate_to(shell, &mut cli, "hpctl", dir)
                .with_context(|| format!("writing the {shell} completion into {}", dir.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page file names hpctl's command tree calls for: hpctl.8, then
    /// hpctl-<sub>.8 for each visible subcommand, and so on down.
    fn expected_pages(command: &clap::Command, name: &str, pages: &mut Vec<String>) {
        pages.push(format!("{name}.8"));
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            expected_pages(sub, &format!("{name}-{}", sub.get_name()), pages);
        }
    }

    #[test]
    fn pages_and_completions_cover_every_subcommand() {
        let out = std::env::temp_dir().join(format!("hpctl-manpages-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let written = write(&out).unwrap();
        let cli = hpctl::cli::Cli::command();

        let top = std::fs::read_to_string(out.join("man8/hpctl.8")).unwrap();
        let title = top.lines().find(|l| l.starts_with(".TH ")).unwrap_or_default();
        assert!(title.starts_with(".TH HPCTL 8 "), "{title}");
        let visible: Vec<&str> = cli.get_subcommands().filter(|s| !s.is_hide_set()).map(|s| s.get_name()).collect();
        assert!(visible.contains(&"attach"), "{visible:?}");
        for sub in &visible {
            // roff escapes the dash: hpctl\-attach(8).
            assert!(top.contains(&format!("hpctl\\-{sub}(8)")), "hpctl.8 does not list {sub}");
            let page = std::fs::read_to_string(out.join(format!("man8/hpctl-{sub}.8"))).unwrap();
            let name = page.split(".SH NAME\n").nth(1).and_then(|rest| rest.lines().next()).unwrap_or_default();
            assert!(name.starts_with(&format!("hpctl\\-{sub} \\- ")), "hpctl-{sub}.8's NAME: {name}");
        }

        let mut pages: Vec<String> = std::fs::read_dir(out.join("man8"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        pages.sort();
        let mut expected = Vec::new();
        expected_pages(&cli, "hpctl", &mut expected);
        expected.sort();
        assert_eq!(pages, expected);

        for name in ["hpctl.bash", "_hpctl", "hpctl.fish"] {
            let text = std::fs::read_to_string(out.join("completions").join(name)).unwrap();
            assert!(!text.is_empty(), "{name} is empty");
        }
        let bash = std::fs::read_to_string(out.join("completions/hpctl.bash")).unwrap();
        assert!(bash.contains("attach"), "hpctl.bash does not complete attach");
        assert_eq!(written.len(), expected.len() + 3, "{written:?}");
        std::fs::remove_dir_all(&out).unwrap();
    }
}
