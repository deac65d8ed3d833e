//! Reporters consume the runner's events; each writes one view of the run.
//!
//! ```text
//!   runner ──Event──▶ TerminalReporter   (live view or plain lines, then a table)
//!                 ├──▶ JsonReporter       (summary.json, schema in results/README.md)
//!                 ├──▶ MarkdownReporter   (summary.md)
//!                 ├──▶ JunitReporter      (junit.xml)
//!                 └──▶ HtmlReporter       (report.html, with a timeline per cell and, with
//!                                          `--capture`, a sequence diagram per failed connection)
//! ```

pub mod balance_chart;
pub mod html;
pub mod json;
pub mod junit;
pub mod markdown;
pub mod sequence;
pub mod terminal;
pub mod timeline;

pub use crate::events::{CellReport, Evidence, RepeatOutcome, Reporter, RunSummary, SCHEMA_VERSION, ScenarioSummary};
use std::path::Path;

/// The reporters of a run, in one place for every backend and command: the terminal view
/// (unless `terminal` is None; `Some(verbose)`), then summary.json, summary.md, junit.xml
/// and report.html in `dir`.
pub fn reporters(dir: &Path, terminal: Option<bool>) -> Vec<Box<dyn Reporter>> {
    let mut out: Vec<Box<dyn Reporter>> = Vec::new();
    if let Some(verbose) = terminal {
        out.push(Box::new(terminal::TerminalReporter::new(verbose)));
    }
    out.push(Box::new(json::JsonReporter { path: dir.join("summary.json") }));
    out.push(Box::new(markdown::MarkdownReporter { path: dir.join("summary.md") }));
    out.push(Box::new(junit::JunitReporter { path: dir.join("junit.xml") }));
    out.push(Box::new(html::HtmlReporter { path: dir.join("report.html") }));
    out
}

/// Write the file reports of a finished run (again) into its directory.
pub fn write_files(summary: &RunSummary) -> anyhow::Result<()> {
    reporters(&summary.out_dir, None).iter_mut().try_for_each(|r| r.finish(summary))
}
