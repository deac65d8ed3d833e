//! Events: what the runner tells reporters while a run goes on.
//!
//! The runner never prints; the terminal view, summary.json and summary.md are reporters
//! that consume these (as cargo-nextest separates running from reporting).

pub use crate::backend::Phase;
use crate::backend::evidence::LabEvidence;
use crate::mitigation::{IstioForm, MitigationSpec};
use crate::model::observation::Observations;
use crate::model::scale::TimeScale;
use crate::model::verdict::Verdict;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub enum Event {
    /// `cells`: the key of every cell run, in order (repeated cells once per run).
    RunStarted {
        title: String,
        backend: String,
        cells: Vec<String>,
        out_dir: std::path::PathBuf,
    },
    CellScaled {
        cell: String,
        factor: u32,
        auto: bool,
        values: Vec<crate::model::scale::ScaledValue>,
    },
    CellPhase {
        cell: String,
        phase: Phase,
    },
    CellFinished(Box<CellReport>),
    RunFinished {
        wall_ms: u64,
    },
}

pub const SCHEMA_VERSION: u32 = 2;

/// Everything known about one cell after it ran.
#[derive(Clone, Debug, Serialize)]
pub struct CellReport {
    pub scenario: String,
    /// The mitigation's label, e.g. `istio-idle-timeout=24h`.
    pub cell: String,
    /// `scenario::cell`: the name in events and JUnit.
    pub key: String,
    pub mitigation: MitigationSpec,
    pub describe: String,
    pub expected: Verdict,
    /// None when the cell could not run (see `error`).
    pub verdict: Option<Verdict>,
    /// Every run matched (with `--repeat`, every run gave the same, expected verdict).
    pub pass: bool,
    /// Every run gave the same verdict (always true for a single run).
    pub stable: bool,
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
    /// The evidence of the first run.
    pub evidence: Evidence,
    /// With `--repeat N`: every run's outcome.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repeats: Vec<RepeatOutcome>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RepeatOutcome {
    pub run: u32,
    pub verdict: Option<Verdict>,
    pub pass: bool,
    pub wall_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ScenarioSummary {
    pub name: String,
    pub summary: String,
    pub source: PathBuf,
    pub pass: bool,
    pub cells: usize,
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
    /// The scenario's name for `idlelab run`, `matrix` for `idlelab matrix`.
    pub scenario: String,
    pub summary: String,
    pub scenarios: Vec<ScenarioSummary>,
    pub backend: String,
    /// `auto` or the factor asked for; each cell records the factor it ran with.
    pub time_scale: String,
    /// Runs per cell (`--repeat`).
    pub repeat: u32,
    pub pass: bool,
    pub started_at: String,
    pub wall_ms: u64,
    pub out_dir: PathBuf,
    pub cells: Vec<CellReport>,
}

/// Consumes the runner's events; each reporter writes one view of the run (`report`).
pub trait Reporter: Send {
    fn on_event(&mut self, _event: &Event) {}
    /// Called once at the end with the whole run.
    fn finish(&mut self, _summary: &RunSummary) -> anyhow::Result<()> {
        Ok(())
    }
}
