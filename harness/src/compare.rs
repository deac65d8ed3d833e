//! `idlelab compare OLD NEW`: the cells whose verdict changed between two runs; and
//! [`versions_table`]: the same cells on several Envoy releases (`--envoy A,B`).
//!
//! Cells are matched by `scenario::mitigation`. A cell *regressed* when it matched its
//! expectation in OLD and does not in NEW (or is gone from NEW); that, and only that, makes the
//! exit code 1, so a nightly job can compare against a baseline directory and fail loudly.

use comfy_table::{Table, presets};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: String,
    pub old: Option<(String, bool)>,
    pub new: Option<(String, bool)>,
}

impl Change {
    pub fn regressed(&self) -> bool {
        matches!((&self.old, &self.new), (Some((_, true)), Some((_, false))) | (Some((_, true)), None))
    }
    fn kind(&self) -> &'static str {
        match (&self.old, &self.new) {
            (None, Some(_)) => "added",
            (Some((_, true)), None) => "REGRESSED (removed)",
            (Some(_), None) => "removed",
            _ if self.regressed() => "REGRESSED",
            (Some((_, false)), Some((_, true))) => "fixed",
            _ => "changed",
        }
    }
}

fn summary_path(p: &Path) -> PathBuf {
    if p.is_dir() { p.join("summary.json") } else { p.to_path_buf() }
}

fn load(p: &Path) -> Result<BTreeMap<String, (String, bool)>, String> {
    let path = summary_path(p);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: not a summary.json ({e})", path.display()))?;
    let cells = v["cells"].as_array().ok_or_else(|| format!("{}: no `cells` array", path.display()))?;
    Ok(cells
        .iter()
        .map(|c| {
            let key = format!("{}::{}", c["scenario"].as_str().unwrap_or(""), c["cell"].as_str().unwrap_or(""));
            let verdict = c["verdict"].as_str().unwrap_or("error").to_string();
            (key, (verdict, c["pass"].as_bool().unwrap_or(false)))
        })
        .collect())
}

/// Every cell whose verdict or match changed, or that is only in one of the runs.
pub fn changes(old: &BTreeMap<String, (String, bool)>, new: &BTreeMap<String, (String, bool)>) -> Vec<Change> {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let (o, n) = (old.get(k).cloned(), new.get(k).cloned());
            (o != n).then(|| Change { key: k.clone(), old: o, new: n })
        })
        .collect()
}

pub fn main(old: &Path, new: &Path) -> i32 {
    let (o, n) = match (load(old), load(new)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}\n  hint: pass two run directories (results/<run>/) or their summary.json files");
            return 2;
        }
    };
    let changed = changes(&o, &n);
    if changed.is_empty() {
        println!("no verdict changed ({} cells compared)", n.len());
        return 0;
    }
    let show = |x: &Option<(String, bool)>| match x {
        Some((v, pass)) => format!("{v}{}", if *pass { "" } else { " (mismatch)" }),
        None => "—".into(),
    };
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED);
    table.set_header(vec!["cell", "old", "new", ""]);
    for c in &changed {
        table.add_row(vec![c.key.clone(), show(&c.old), show(&c.new), c.kind().to_string()]);
    }
    println!("{table}");
    let regressed = changed.iter().filter(|c| c.regressed()).count();
    println!("{} cells changed, {regressed} regressed", changed.len());
    if regressed > 0 { 1 } else { 0 }
}

/// What the app got on reuse in a cell, e.g. `4 reset`: its connections' first request after
/// the idle period, counted by outcome.
fn reuse_outcomes(cell: &crate::events::CellReport) -> String {
    let Some(o) = &cell.evidence.observations else { return "no observations".into() };
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for c in &o.connections {
        let name = serde_json::to_value(c.reuse.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{:?}", c.reuse.outcome).to_lowercase());
        *counts.entry(name).or_default() += 1;
    }
    if counts.is_empty() {
        return "no connection".into();
    }
    counts.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", ")
}

/// The same cells on several Envoy releases (`--envoy A,B`): a verdict per release, and per
/// cell whose verdict or reuse outcome changed, one sentence naming the change.
pub fn versions_table(runs: &[(String, crate::report::RunSummary)]) -> String {
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED);
    let mut header = vec!["cell".to_string()];
    header.extend(runs.iter().map(|(v, _)| format!("Envoy {v}")));
    table.set_header(header);
    let keys: Vec<&str> =
        runs.first().map(|(_, s)| s.cells.iter().map(|c| c.key.as_str()).collect()).unwrap_or_default();
    let mut changes = Vec::new();
    for key in keys {
        let per: Vec<Option<&crate::events::CellReport>> =
            runs.iter().map(|(_, s)| s.cells.iter().find(|c| c.key == key)).collect();
        let shown = |c: Option<&crate::events::CellReport>| match c {
            Some(c) => format!(
                "{}{}",
                c.verdict.map(|v| v.to_string()).unwrap_or_else(|| "error".into()),
                if c.pass { "" } else { " ✗" }
            ),
            None => "-".into(),
        };
        let mut row = vec![key.to_string()];
        row.extend(per.iter().map(|c| shown(*c)));
        table.add_row(row);
        for (i, pair) in per.windows(2).enumerate() {
            let (Some(a), Some(b)) = (pair[0], pair[1]) else { continue };
            let (va, vb) = (shown(Some(a)), shown(Some(b)));
            let (oa, ob) = (reuse_outcomes(a), reuse_outcomes(b));
            if va != vb || oa != ob {
                changes.push(format!(
                    "{key}: Envoy {} → {}: verdict {va} → {vb}; the app got {oa} → {ob} on reuse",
                    runs[i].0,
                    runs[i + 1].0
                ));
            }
        }
    }
    let mut out = format!("{table}\n");
    if changes.is_empty() {
        out.push_str("no cell's verdict or reuse outcome changed between the releases\n");
    } else {
        out.push_str(&changes.join("\n"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lost_match_is_a_regression() {
        let m = |v: &[(&str, &str, bool)]| {
            v.iter().map(|(k, verdict, p)| (k.to_string(), (verdict.to_string(), *p))).collect()
        };
        let old = m(&[("s::none", "idle-closed", true), ("s::a", "survived", false), ("s::gone", "survived", true)]);
        let new = m(&[("s::none", "survived", false), ("s::a", "survived", true), ("s::new", "hung", true)]);
        let c = changes(&old, &new);
        let kinds: Vec<(&str, &str)> = c.iter().map(|c| (c.key.as_str(), c.kind())).collect();
        assert_eq!(
            kinds,
            [("s::a", "fixed"), ("s::gone", "REGRESSED (removed)"), ("s::new", "added"), ("s::none", "REGRESSED")]
        );
    }
}
