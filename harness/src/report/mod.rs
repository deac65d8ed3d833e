//! Reporters consume the runner's events; each writes one view of the run.
//!
//! ```text
//!   runner ──Event──▶ TerminalReporter   (progress lines and the final table)
//!                 ├──▶ JsonReporter       (summary.json, schema in results/README.md)
//!                 └──▶ MarkdownReporter   (summary.md)
//! ```

pub mod json;
pub mod markdown;
pub mod terminal;

use crate::events::Event;
use crate::lab::LabEvidence;
use crate::mitigation::{IstioForm, MitigationSpec};
use crate::probe::observation::Observations;
use crate::timescale::TimeScale;
use crate::verdict::Verdict;
use serde::Serialize;
use std::path::PathBuf;

pub const SCHEMA_VERSION: u32 = 1;

/// Everything known about one cell after it ran.
#[derive(Clone, Debug, Serialize)]
pub struct CellReport {
    pub scenario: String,
    pub cell: String,
    pub mitigation: MitigationSpec,
    pub describe: String,
    pub expected: Verdict,
    /// None when the cell could not run (see `error`).
    pub verdict: Option<Verdict>,
    pub pass: bool,
    /// Which observations produced the verdict, in one sentence.
    pub explanation: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub wall_ms: u64,
    pub time_scale: TimeScale,
    /// The same mitigation on a cluster.
    pub istio: Vec<IstioForm>,
    pub evidence: Evidence,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct Evidence {
    pub observations: Option<Observations>,
    pub lab: Option<LabEvidence>,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub schema_version: u32,
    pub scenario: String,
    pub summary: String,
    pub backend: String,
    /// `auto` or the factor asked for; each cell records the factor it ran with.
    pub time_scale: String,
    pub pass: bool,
    pub started_at: String,
    pub wall_ms: u64,
    pub out_dir: PathBuf,
    pub cells: Vec<CellReport>,
}

pub trait Reporter: Send {
    fn on_event(&mut self, _event: &Event) {}
    /// Called once at the end with the whole run.
    fn finish(&mut self, _summary: &RunSummary) -> anyhow::Result<()> {
        Ok(())
    }
}
