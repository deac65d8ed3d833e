//! `idlelab compare OLD NEW`: the cells whose verdict changed between two runs, and those whose
//! evidence changed (what the app got on reuse), naming the releases each run ran (two runs on
//! other Envoy or Istio releases compare like any two); and [`versions_table`]: the same cells
//! on several releases (`--envoy A,B`, `--istio A,B`).
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

/// What a comparison reads of a cell (a summary.json cell): its verdict and match, what the
/// app got on reuse, and the releases that ran it.
#[derive(Clone, Debug, PartialEq)]
struct CellSide {
    verdict: String,
    pass: bool,
    /// e.g. `4 reset`: the app's connections' first request after the idle, by outcome.
    reuse: String,
    /// e.g. `Envoy 1.40.0, Istio 1.30-dev (9739e10eb9d7)`, as the running binaries reported.
    releases: String,
}

fn side(c: &Value) -> CellSide {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for conn in c["evidence"]["observations"]["connections"].as_array().into_iter().flatten() {
        *counts.entry(conn["reuse"]["outcome"].as_str().unwrap_or("?").to_string()).or_default() += 1;
    }
    let reuse = if c["evidence"]["observations"].is_null() {
        "no observations".to_string()
    } else if counts.is_empty() {
        "no connection".to_string()
    } else {
        counts.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", ")
    };
    let lab = &c["evidence"]["lab"];
    let mut envoys: Vec<&str> =
        lab["envoys"].as_array().into_iter().flatten().filter_map(|e| e["version"].as_str()).collect();
    envoys.sort();
    envoys.dedup();
    let mut releases: Vec<String> = envoys.iter().map(|v| format!("Envoy {v}")).collect();
    releases.extend(lab["istio_release"].as_str().map(|v| format!("Istio {v}")));
    CellSide {
        verdict: c["verdict"].as_str().unwrap_or("error").to_string(),
        pass: c["pass"].as_bool().unwrap_or(false),
        reuse,
        releases: releases.join(", "),
    }
}

fn cell_key(c: &Value) -> String {
    format!("{}::{}", c["scenario"].as_str().unwrap_or(""), c["cell"].as_str().unwrap_or(""))
}

fn load(p: &Path) -> Result<BTreeMap<String, CellSide>, String> {
    let path = summary_path(p);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: not a summary.json ({e})", path.display()))?;
    let cells = v["cells"].as_array().ok_or_else(|| format!("{}: no `cells` array", path.display()))?;
    Ok(cells.iter().map(|c| (cell_key(c), side(c))).collect())
}

/// The releases a run's cells ran, most common first (`Envoy 1.40.0, Istio …`).
fn releases_of(run: &BTreeMap<String, CellSide>) -> String {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for c in run.values().filter(|c| !c.releases.is_empty()) {
        *seen.entry(c.releases.as_str()).or_default() += 1;
    }
    let mut seen: Vec<(&str, usize)> = seen.into_iter().collect();
    seen.sort_by_key(|s| std::cmp::Reverse(s.1));
    if seen.is_empty() {
        "releases not recorded (no proxy, or an older summary)".into()
    } else {
        seen.iter().map(|(r, _)| *r).collect::<Vec<_>>().join("; ")
    }
}

/// Per cell in both runs whose evidence changed (what the app got on reuse; whether or not its
/// verdict changed too): one sentence.
fn evidence_changes(old: &BTreeMap<String, CellSide>, new: &BTreeMap<String, CellSide>) -> Vec<String> {
    old.iter()
        .filter_map(|(k, o)| {
            let n = new.get(k)?;
            (o.reuse != n.reuse).then(|| format!("{k}: the app got {} → {} on reuse", o.reuse, n.reuse))
        })
        .collect()
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
    let (ro, rn) = (releases_of(&o), releases_of(&n));
    if ro != rn {
        println!("old ran {ro}\nnew ran {rn}");
    }
    let verdicts = |run: &BTreeMap<String, CellSide>| -> BTreeMap<String, (String, bool)> {
        run.iter().map(|(k, c)| (k.clone(), (c.verdict.clone(), c.pass))).collect()
    };
    let changed = changes(&verdicts(&o), &verdicts(&n));
    let evidence = evidence_changes(&o, &n);
    if changed.is_empty() {
        println!("no verdict changed ({} cells compared)", n.len());
    } else {
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
    }
    for line in &evidence {
        println!("{line}");
    }
    let regressed = changed.iter().filter(|c| c.regressed()).count();
    let cells = |n: usize| if n == 1 { "1 cell".to_string() } else { format!("{n} cells") };
    println!(
        "{} changed verdict ({regressed} regressed), {} changed what the app got on reuse",
        cells(changed.len()),
        evidence.len()
    );
    if regressed > 0 { 1 } else { 0 }
}

/// The same cells on several releases (`--envoy A,B` or `--istio A,B`; `axis` names which): a
/// verdict per release, and per cell whose verdict or reuse outcome changed, one sentence
/// naming the change.
pub fn versions_table(axis: &str, runs: &[(String, crate::report::RunSummary)]) -> String {
    let names: Vec<String> = runs.iter().map(|(v, _)| v.clone()).collect();
    let keys: Vec<String> =
        runs.first().map(|(_, s)| s.cells.iter().map(|c| c.key.clone()).collect()).unwrap_or_default();
    let sides: Vec<BTreeMap<String, CellSide>> = runs
        .iter()
        .map(|(_, s)| {
            s.cells.iter().filter_map(|c| serde_json::to_value(c).ok()).map(|c| (cell_key(&c), side(&c))).collect()
        })
        .collect();
    table_of(axis, &names, &keys, &sides)
}

/// [`versions_table`] of the cells `keys` as each release's run (`names`) saw them.
fn table_of(axis: &str, names: &[String], keys: &[String], sides: &[BTreeMap<String, CellSide>]) -> String {
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED);
    let mut header = vec!["cell".to_string()];
    header.extend(names.iter().map(|v| format!("{axis} {v}")));
    table.set_header(header);
    let mut changes = Vec::new();
    for key in keys {
        let per: Vec<Option<&CellSide>> = sides.iter().map(|s| s.get(key)).collect();
        let shown = |c: &CellSide| format!("{}{}", c.verdict, if c.pass { "" } else { " ✗" });
        let mut row = vec![key.to_string()];
        row.extend(per.iter().map(|c| c.map(shown).unwrap_or_else(|| "-".into())));
        table.add_row(row);
        for (i, pair) in per.windows(2).enumerate() {
            let (Some(a), Some(b)) = (pair[0], pair[1]) else { continue };
            let (va, vb) = (shown(a), shown(b));
            if va != vb || a.reuse != b.reuse {
                changes.push(format!(
                    "{key}: {axis} {} → {}: verdict {va} → {vb}; the app got {} → {} on reuse",
                    names[i],
                    names[i + 1],
                    a.reuse,
                    b.reuse
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

    /// A summary.json cell: its verdict and match, the outcomes of its reuses, its releases.
    fn cell(verdict: &str, pass: bool, reuses: &[&str], envoy: &str) -> Value {
        let connections: Vec<Value> = reuses.iter().map(|r| serde_json::json!({"reuse": {"outcome": r}})).collect();
        serde_json::json!({
            "scenario": "redis-sidecar-upstream", "cell": "none", "verdict": verdict, "pass": pass,
            "evidence": {
                "observations": {"connections": connections},
                "lab": {"istio_release": "1.30-dev (9739e10eb9d7)",
                        "envoys": [{"version": envoy}, {"version": envoy}]}
            }
        })
    }

    #[test]
    fn a_cell_whose_reuse_outcome_changed_between_releases_is_named_once_per_step() {
        let old = cell("failed-on-reuse", false, &["eof"; 4], "1.36.4");
        let new = cell("reset-on-reuse", true, &["reset"; 4], "1.40.0");
        let (a, b) = (side(&old), side(&new));
        assert_eq!(a.reuse, "4 eof");
        assert_eq!(a.releases, "Envoy 1.36.4, Istio 1.30-dev (9739e10eb9d7)");
        let key = cell_key(&old);
        let names = ["1.36.4".to_string(), "1.38.3".to_string(), "1.40.0".to_string()];
        let sides: Vec<BTreeMap<String, CellSide>> =
            [a.clone(), b.clone(), b.clone()].into_iter().map(|s| [(key.clone(), s)].into()).collect();
        let table = table_of("Envoy", &names, std::slice::from_ref(&key), &sides);
        assert!(table.contains("redis-sidecar-upstream::none: Envoy 1.36.4 → 1.38.3: verdict failed-on-reuse ✗ → reset-on-reuse; the app got 4 eof → 4 reset on reuse"), "{table}");
        assert!(!table.contains("1.38.3 → 1.40.0"), "no change between the last two: {table}");
        let same = table_of("Istio", &names[..2], std::slice::from_ref(&key), &[sides[1].clone(), sides[2].clone()]);
        assert!(same.contains("no cell's verdict or reuse outcome changed"), "{same}");
        let (o, n): (BTreeMap<_, _>, BTreeMap<_, _>) = ([(key.clone(), a)].into(), [(key.clone(), b)].into());
        assert_eq!(evidence_changes(&o, &n), ["redis-sidecar-upstream::none: the app got 4 eof → 4 reset on reuse"]);
        assert_eq!(releases_of(&n), "Envoy 1.40.0, Istio 1.30-dev (9739e10eb9d7)");
    }

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
