//! Events: what the runner tells reporters while a run goes on.
//!
//! The runner never prints; the terminal view, summary.json and summary.md are reporters
//! that consume these (as cargo-nextest separates running from reporting).

use crate::report::CellReport;
use serde::Serialize;

/// Where a cell is.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", tag = "phase")]
pub enum Phase {
    Setup,
    Warm,
    Idle { ms: u64 },
    Reuse,
    Teardown,
}

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
