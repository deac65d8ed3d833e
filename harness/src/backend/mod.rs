//! A backend runs one cell where its connections live, and hands back what the probe
//! observed; the runner does the rest (events, verdicts, reports) the same way for every
//! backend.
//!
//! ```text
//!   runner ──run_cell(cell)──▶ LocalBackend (`local`): network namespaces, nftables, Istio's
//!      ▲                       control plane and Envoys on this host
//!      │                  ──▶ KindBackend (`kind`): the cell's plan of kubectl / istioctl
//!      │                       commands on a cluster, through one command runner
//!      └──── CellOutcome { observations, evidence, notes, logs } │ CellFailure
//! ```
//!
//! A backend never judges and never reports: the verdict is `model::verdict::judge` of the
//! observations, whichever backend made them.

pub mod balance;
pub mod evidence;

use crate::cells::Cell;
use crate::model::observation::Observations;
use evidence::LabEvidence;
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;

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

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Warm => "warm",
            Phase::Idle { .. } => "idle",
            Phase::Reuse => "reuse",
            Phase::Teardown => "teardown",
        }
    }
}

/// Told where a cell is, as it goes.
pub type PhaseSink = Arc<dyn Fn(Phase) + Send + Sync>;

/// What a cell that ran left behind.
pub struct CellOutcome {
    pub observations: Observations,
    /// The local lab's measurements beside the probe: sockets, middleboxes, Envoys (`None`
    /// on a cluster, where `notes` carry the evidence).
    pub lab: Option<LabEvidence>,
    /// Sentences of evidence: what HTTP requests met, EnvoyFilter status, a cluster's
    /// proxy-config fields and counters.
    pub notes: Vec<String>,
    /// Logs of the cell's proxies, control plane and server (file name, text), read before
    /// teardown: the runner keeps them for a cell that did not match.
    pub logs: Vec<(String, String)>,
}

/// A cell that could not run: why, and the logs its processes left (read before teardown).
#[derive(Debug)]
pub struct CellFailure {
    pub error: anyhow::Error,
    pub logs: Vec<(String, String)>,
}

impl CellFailure {
    pub fn new(error: anyhow::Error) -> Self {
        CellFailure { error, logs: vec![] }
    }
}

/// Where cells run. The runner calls `preflight` before anything exists, `prepare` once,
/// then `run_cell` per cell (at most `max_jobs` at once); dropping the backend removes what
/// `prepare` made.
pub trait Backend: Send + Sync + 'static {
    /// What reports call it: `local`, `kind (kind-idlelab)`.
    fn name(&self) -> String;
    /// How many cells may run at once.
    fn max_jobs(&self) -> usize {
        usize::MAX
    }
    /// Whether the cells can run here at all, checked before anything is created: `Err`
    /// says what is missing and how to fix it (the command exits 2).
    fn preflight(&self, cells: &[Cell]) -> Result<(), String>;
    /// What the run's cells share (a temp dir; the cluster). An error fails every cell.
    fn prepare(&self) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Run one cell (`index`: its place in the run); `phase` is told where it is. Success or
    /// failure, everything the cell created is gone when this returns.
    fn run_cell(
        &self,
        cell: Arc<Cell>,
        index: usize,
        phase: PhaseSink,
    ) -> impl Future<Output = Result<CellOutcome, CellFailure>> + Send;
}
