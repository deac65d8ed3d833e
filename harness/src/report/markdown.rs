//! `summary.md`: one table per scenario, mitigations as rows, evidence in words.

use crate::events::{CellReport, Reporter, RunSummary};
use std::fmt::Write;
use std::path::PathBuf;

pub struct MarkdownReporter {
    pub path: PathBuf,
}

fn cell_row(c: &CellReport) -> String {
    let verdict = c.verdict.map(|v| v.to_string()).unwrap_or_else(|| "error".into());
    let mark = if c.pass { "✅" } else { "❌" };
    let evidence = c.error.clone().unwrap_or_else(|| c.explanation.clone());
    format!(
        "| `{}` | {mark} {verdict} | {} | ×{} | {} |\n",
        c.cell,
        c.expected,
        c.time_scale.factor,
        evidence.replace('|', "\\|").replace('\n', " ")
    )
}

pub fn render(s: &RunSummary) -> String {
    let mut out = String::new();
    let status = if s.pass { "all cells matched" } else { "some cells did NOT match" };
    let _ = writeln!(out, "# {} — {status}\n", s.scenario);
    let _ = writeln!(out, "{}\n", s.summary);
    let _ = writeln!(
        out,
        "Backend `{}`, time scale `{}`, wall time {:.1} s, started {}.\n",
        s.backend,
        s.time_scale,
        s.wall_ms as f64 / 1000.0,
        s.started_at
    );
    out.push_str("| mitigation | verdict | expected | scale | evidence |\n|---|---|---|---|---|\n");
    for c in &s.cells {
        out.push_str(&cell_row(c));
    }
    out.push_str("\n## Cells\n");
    for c in &s.cells {
        let _ = writeln!(out, "\n### `{}`\n\n{}", c.cell, c.describe);
        if let Some(why) = &c.why_expected {
            let _ = writeln!(out, "\nExpected `{}`: {why}", c.expected);
        }
        let scaled: Vec<String> =
            c.time_scale.values.iter().map(|v| format!("`{}` {} → {}", v.label, v.real, v.scaled)).collect();
        if scaled.is_empty() {
            // A gRPC balance run keeps its real durations: nothing to list.
            let _ = writeln!(out, "\nTime scale ×{}: no duration scaled.", c.time_scale.factor);
        } else {
            let _ = writeln!(out, "\nTime scale ×{}: {}.", c.time_scale.factor, scaled.join(", "));
        }
        for note in c.time_scale.notes() {
            let _ = writeln!(out, "- {note}");
        }
        if let Some(lab) = &c.evidence.lab {
            for envoy in &lab.envoys {
                let counters: Vec<String> = envoy
                    .counters
                    .iter()
                    .filter(|(k, _)| k.ends_with("idle_timeout"))
                    .map(|(k, v)| format!("`{k}` = {v}"))
                    .collect();
                let flags: Vec<&str> =
                    envoy.access_log.iter().filter_map(|l| l["flags"].as_str()).filter(|f| *f != "-").collect();
                let mut parts: Vec<String> = (!counters.is_empty()).then(|| counters.join(", ")).into_iter().collect();
                if !flags.is_empty() {
                    parts.push(format!("response flags {}", flags.join(", ")));
                }
                if !parts.is_empty() {
                    let _ = writeln!(out, "\nEnvoy ({}): {}.", envoy.role, parts.join("; "));
                }
            }
            for mb in lab.middleboxes.iter().filter(|m| m.moment == "after-reuse") {
                let _ = writeln!(
                    out,
                    "\nMiddlebox {}: {} segments of forgotten flows refused.",
                    mb.role, mb.forgotten_segments
                );
            }
            // A cluster's cell keeps lab evidence (its capture) but times no setup of its own.
            if lab.setup_ms + lab.teardown_ms > 0 {
                let _ = writeln!(out, "\nSetup {} ms, teardown {} ms.", lab.setup_ms, lab.teardown_ms);
            }
        }
        for note in &c.evidence.notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out
}

impl Reporter for MarkdownReporter {
    fn finish(&mut self, summary: &RunSummary) -> anyhow::Result<()> {
        std::fs::write(&self.path, render(summary))?;
        Ok(())
    }
}
