//! The terminal view: a line per cell as it goes, then a table.

use super::{Reporter, RunSummary};
use crate::events::{Event, Phase};
use comfy_table::{Table, presets};
use std::io::Write;

#[derive(Default)]
pub struct TerminalReporter {
    pub verbose: bool,
}

impl Reporter for TerminalReporter {
    fn on_event(&mut self, event: &Event) {
        let mut out = std::io::stdout().lock();
        match event {
            Event::RunStarted { scenario, backend, cells, out_dir } => {
                let _ =
                    writeln!(out, "{scenario}: {} cells on the {backend} backend → {}", cells.len(), out_dir.display());
            }
            Event::CellScaled { cell, factor, auto, values } => {
                let how = if *auto { "auto" } else { "fixed" };
                let vals: Vec<String> = values.iter().map(|v| format!("{} {}→{}", v.label, v.real, v.scaled)).collect();
                let _ = writeln!(out, "  {cell}: time scale ×{factor} ({how}): {}", vals.join(", "));
            }
            Event::CellPhase { cell, phase } if self.verbose => {
                let _ = writeln!(
                    out,
                    "  {cell}: phase {}",
                    match phase {
                        Phase::Setup => "setup".to_string(),
                        Phase::Warm => "warm".to_string(),
                        Phase::Idle { ms } => format!("idle {:.1} s", *ms as f64 / 1000.0),
                        Phase::Reuse => "reuse".to_string(),
                        Phase::Teardown => "teardown".to_string(),
                    }
                );
            }
            Event::CellFinished(c) => {
                let mark = if c.pass { "PASS" } else { "FAIL" };
                let verdict = c.verdict.map(|v| v.to_string()).unwrap_or_else(|| "error".into());
                let detail = c.error.clone().unwrap_or_else(|| c.explanation.clone());
                let _ = writeln!(
                    out,
                    "  {mark} {}: {verdict} (expected {}) in {:.1} s — {detail}",
                    c.cell,
                    c.expected,
                    c.wall_ms as f64 / 1000.0
                );
            }
            _ => {}
        }
        let _ = out.flush();
    }

    fn finish(&mut self, s: &RunSummary) -> anyhow::Result<()> {
        let mut table = Table::new();
        table.load_style(presets::UTF8_FULL_CONDENSED);
        table.set_header(vec!["mitigation", "verdict", "expected", "match", "scale", "wall"]);
        for c in &s.cells {
            table.add_row(vec![
                c.cell.clone(),
                c.verdict.map(|v| v.to_string()).unwrap_or_else(|| "error".into()),
                c.expected.to_string(),
                if c.pass { "yes".into() } else { "NO".into() },
                format!("×{}", c.time_scale.factor),
                format!("{:.1} s", c.wall_ms as f64 / 1000.0),
            ]);
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "\n{table}");
        let passed = s.cells.iter().filter(|c| c.pass).count();
        let _ = writeln!(
            out,
            "{}: {passed} of {} cells matched their expectation in {:.1} s; results in {}",
            s.scenario,
            s.cells.len(),
            s.wall_ms as f64 / 1000.0,
            s.out_dir.display()
        );
        Ok(())
    }
}
