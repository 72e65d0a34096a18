//! Aligned text tables, and the tables of status, plan and stats.

use crate::callees::{self, Judged};
use crate::records::{Func, Site, Target};

pub struct Table {
    headers: Vec<&'static str>,
    /// Columns aligned right (numbers).
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// `columns`: (header, right-aligned).
    pub fn new(columns: &[(&'static str, bool)]) -> Table {
        Table {
            headers: columns.iter().map(|c| c.0).collect(),
            right: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(cells.len(), self.headers.len(), "a row has one cell per column");
        self.rows.push(cells);
    }

    /// Columns separated by two spaces, no trailing spaces, one line per row.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i] - cell.chars().count();
                if self.right[i] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

pub fn status(targets: &[Target]) -> String {
    if targets.is_empty() {
        return "no targets\n".to_string();
    }
    let mut t = Table::new(&[
        ("NAME", false),
        ("STATE", false),
        ("SINK", false),
        ("FOLLOW", false),
        ("SITES", true),
        ("ARMED", true),
        ("HITS", true),
    ]);
    for x in targets {
        t.row(vec![
            x.name.clone(),
            x.state.clone(),
            x.sink.clone(),
            yes_no(x.follow),
            x.sites.to_string(),
            x.armed.to_string(),
            x.hits.to_string(),
        ]);
    }
    t.render()
}

/// Why a site is not armed, as the plan's last line says it.
fn why_not(state: &str) -> &'static str {
    match state {
        "refused" => "refused by kprobes",
        "foreign" => "someone else's probe is there",
        "jcc" => "reached by a conditional jump",
        "long" => "a prefixed call or jump",
        _ => "not armed",
    }
}

/// The site table of `plan` (or `sites`), and one line that sums it up.
pub fn sites(sites: &[Site], planning: bool) -> String {
    if sites.is_empty() {
        return "no call to a selected catalogue function found\n".to_string();
    }
    let mut t = Table::new(&[("CALLER", false), ("CALLEE", false), ("KIND", false), ("STATE", false)]);
    if !planning {
        t = Table::new(&[("CALLER", false), ("CALLEE", false), ("KIND", false), ("STATE", false), ("HITS", true)]);
    }
    for s in sites {
        let mut row = vec![s.caller.clone(), s.callee.clone(), s.kind.clone(), s.state.clone()];
        if !planning {
            row.push(s.hits.to_string());
        }
        t.row(row);
    }
    let mut out = t.render();
    let good = if planning { "planned" } else { "armed" };
    let armed = sites.iter().filter(|s| s.state == good).count();
    // Reasons in order of first appearance, with counts.
    let mut reasons: Vec<(&str, usize)> = Vec::new();
    for s in sites.iter().filter(|s| s.state != good) {
        match reasons.iter_mut().find(|(state, _)| *state == s.state) {
            Some((_, n)) => *n += 1,
            None => reasons.push((&s.state, 1)),
        }
    }
    let verb = if planning { "would be armed" } else { "armed" };
    let total = sites.len();
    let plural = if total == 1 { "" } else { "s" };
    out.push_str(&format!("{total} site{plural}: {armed} {verb}"));
    if !reasons.is_empty() {
        let list: Vec<String> = reasons.iter().map(|(s, n)| format!("{n} {s} ({})", why_not(s))).collect();
        out.push_str(&format!(", {} not: {}", total - armed, list.join(", ")));
    }
    out.push('\n');
    out
}

pub fn stats(funcs: &[Func]) -> String {
    if funcs.is_empty() {
        return "no targets\n".to_string();
    }
    let mut t = Table::new(&[
        ("MODULE", false),
        ("FUNCTION", false),
        ("HITS", true),
        ("INFLIGHT", true),
        ("EVENTS", true),
        ("DROPPED", true),
        ("MISSED", true),
    ]);
    for f in funcs {
        t.row(vec![
            f.module.clone(),
            f.name.clone(),
            f.hits.to_string(),
            f.inflight.to_string(),
            f.events.to_string(),
            f.dropped.to_string(),
            f.missed.to_string(),
        ]);
    }
    t.render()
}

/// The sentence `attach` prints for the target line it got back.
pub fn attached(t: &Target) -> String {
    let follow = if t.follow { ", following its reloads" } else { "" };
    match t.state.as_str() {
        "attached" => format!(
            "attached to {}: {} of {} site{} armed, sink {}{follow}",
            t.name,
            t.armed,
            t.sites,
            if t.sites == 1 { "" } else { "s" },
            t.sink
        ),
        "awaited" => format!("{} is not loaded: awaiting it, will attach when it loads (sink {})", t.name, t.sink),
        "refused" => format!("{} is followed, but its last load could not be attached (see dmesg)", t.name),
        other => format!("{}: {other} (sink {}, {} of {} sites armed)", t.name, t.sink, t.armed, t.sites),
    }
}

/// `hpctl callees`: one row per callee, both verdicts joined, and a summary line.
pub fn callees(list: &[Judged]) -> String {
    if list.is_empty() {
        return "no call to a function outside the module found\n".to_string();
    }
    let mut t = Table::new(&[
        ("NAME", false),
        ("SITES", true),
        ("TAILS", true),
        ("STATE", false),
        ("REASON", false),
        ("SPEC", false),
        ("PROTOTYPE", false),
    ]);
    let dash = |s: Option<String>| s.unwrap_or_else(|| "-".to_string());
    for j in list {
        t.row(vec![
            j.callee.name.clone(),
            j.callee.sites.to_string(),
            j.callee.tails.to_string(),
            j.state().to_string(),
            dash(j.reason().map(str::to_string)),
            dash(j.spec().map(|s| if s.is_empty() { "(none)".to_string() } else { s })),
            dash(j.prototype.as_ref().map(|p| p.signature())),
        ]);
    }
    let mut out = t.render();
    out.push_str(&callees::summary(list));
    out.push('\n');
    out
}
