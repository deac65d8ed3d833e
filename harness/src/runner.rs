//! The runner: cells → local lab → probe observations → verdict, emitting events.
//!
//! It never prints: reporters turn its events into the terminal view and the files.
//! Cells run concurrently (each in its own namespaces), bounded by `jobs`. Ctrl-C or
//! SIGTERM aborts the cells, whose guards remove every namespace, process and temp dir.

use crate::cells::Cell;
use crate::events::{Event, Phase};
use crate::mitigation::IstioContext;
use crate::report::{CellReport, Evidence, Reporter, RunSummary, SCHEMA_VERSION};
use crate::scenario::Scenario;
use crate::verdict;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::task::JoinSet;

/// Fans events out to reporters.
#[derive(Clone)]
pub struct Emitter(Arc<Mutex<Vec<Box<dyn Reporter>>>>);

impl Emitter {
    pub fn new(reporters: Vec<Box<dyn Reporter>>) -> Self {
        Emitter(Arc::new(Mutex::new(reporters)))
    }
    pub fn emit(&self, e: Event) {
        for r in self.0.lock().expect("reporters").iter_mut() {
            r.on_event(&e);
        }
    }
    pub fn finish(&self, s: &RunSummary) -> anyhow::Result<()> {
        for r in self.0.lock().expect("reporters").iter_mut() {
            r.finish(s)?;
        }
        Ok(())
    }
}

pub struct Interrupted;

pub struct RunOptions {
    pub jobs: usize,
    pub out_dir: PathBuf,
    pub time_scale_label: String,
}

async fn run_one(cell: Cell, shared: Arc<crate::lab::RunShared>, emitter: Emitter) -> CellReport {
    let started = Instant::now();
    let label = cell.label.clone();
    let phase_emitter = emitter.clone();
    let phase = move |p: Phase| phase_emitter.emit(Event::CellPhase { cell: label.clone(), phase: p });
    let result = crate::lab::run_cell(&cell.scaled, &shared, &phase).await;
    let mut evidence = Evidence { notes: cell.time_scale.notes().collect(), ..Default::default() };
    let (verdict, explanation, error) = match result {
        Ok(outcome) => {
            let (v, why) = verdict::judge(&outcome.observations);
            evidence.observations = Some(outcome.observations);
            evidence.lab = Some(outcome.evidence);
            (Some(v), why, None)
        }
        Err(e) => (None, String::new(), Some(format!("{e:#}"))),
    };
    let ctx = IstioContext {
        namespace: format!("idlelab-{}", cell.scenario),
        client_app: "idlelab-probe".into(),
        service_host: format!("{}.idlelab-{}.svc.cluster.local", cell.real.service.name(), cell.scenario),
        service_port: cell.real.service.port(),
        sidecar_pods: cell
            .real
            .path
            .iter()
            .filter_map(|h| match h {
                crate::hop::Hop::Sidecar(_) => Some("client".to_string()),
                crate::hop::Hop::ServerSidecar(_) => Some("server".to_string()),
                _ => None,
            })
            .collect(),
    };
    CellReport {
        scenario: cell.scenario.clone(),
        cell: cell.label.clone(),
        istio: cell.mitigation.as_mitigation().istio_resources(&ctx),
        mitigation: cell.mitigation,
        describe: cell.describe,
        expected: cell.expected,
        pass: verdict == Some(cell.expected),
        verdict,
        explanation,
        why_expected: cell.why,
        error,
        wall_ms: started.elapsed().as_millis() as u64,
        time_scale: cell.time_scale,
        evidence,
    }
}

async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Run the cells of one scenario. `Err(Interrupted)` after Ctrl-C, once everything is removed.
pub async fn run(
    scenario: &Scenario,
    cells: Vec<Cell>,
    opts: &RunOptions,
    emitter: &Emitter,
) -> Result<RunSummary, Interrupted> {
    let started = Instant::now();
    let started_at = jiff::Timestamp::now().to_string();
    emitter.emit(Event::RunStarted {
        scenario: scenario.name.clone(),
        backend: "local".into(),
        cells: cells.iter().map(|c| c.label.clone()).collect(),
        out_dir: opts.out_dir.clone(),
    });
    for c in &cells {
        emitter.emit(Event::CellScaled {
            cell: c.label.clone(),
            factor: c.time_scale.factor,
            auto: c.time_scale.auto,
            values: c.time_scale.values.clone(),
        });
    }
    let order: Vec<String> = cells.iter().map(|c| c.label.clone()).collect();
    let permits = Arc::new(tokio::sync::Semaphore::new(opts.jobs.max(1)));
    // Removed when the run ends, interrupted or not (its guard drops with this function).
    let shared = match crate::lab::RunShared::new() {
        Ok(s) => Arc::new(s),
        Err(e) => {
            let reports: Vec<CellReport> = cells.into_iter().map(|c| setup_failure(c, &e)).collect();
            return Ok(summary_of(scenario, opts, started, started_at, reports));
        }
    };
    let mut set = JoinSet::new();
    let mut by_task = std::collections::HashMap::new();
    for cell in cells {
        let (emitter, permits, shared) = (emitter.clone(), permits.clone(), shared.clone());
        let identity = (cell.scenario.clone(), cell.label.clone(), cell.mitigation.clone(), cell.expected);
        let handle = set.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore");
            run_one(cell, shared, emitter).await
        });
        by_task.insert(handle.id(), identity);
    }
    let mut reports = Vec::new();
    let collect = async {
        while let Some(r) = set.join_next_with_id().await {
            let report = match r {
                Ok((_, report)) => report,
                Err(e) => {
                    let identity = by_task.remove(&e.id()).expect("every task is known");
                    panic_report(identity, e)
                }
            };
            emitter.emit(Event::CellFinished(Box::new(report.clone())));
            reports.push(report);
        }
    };
    tokio::select! {
        _ = collect => {}
        _ = interrupted() => {
            set.shutdown().await;
            return Err(Interrupted);
        }
    }
    reports.sort_by_key(|r| order.iter().position(|l| *l == r.cell));
    let summary = summary_of(scenario, opts, started, started_at, reports);
    emitter.emit(Event::RunFinished { wall_ms: summary.wall_ms });
    Ok(summary)
}

fn summary_of(
    scenario: &Scenario,
    opts: &RunOptions,
    started: Instant,
    started_at: String,
    reports: Vec<CellReport>,
) -> RunSummary {
    RunSummary {
        schema_version: SCHEMA_VERSION,
        scenario: scenario.name.clone(),
        summary: scenario.summary.clone(),
        backend: "local".into(),
        time_scale: opts.time_scale_label.clone(),
        pass: reports.iter().all(|r| r.pass),
        started_at,
        wall_ms: started.elapsed().as_millis() as u64,
        out_dir: opts.out_dir.clone(),
        cells: reports,
    }
}

/// A cell that could not start because the run itself could not be set up.
fn setup_failure(cell: Cell, e: &anyhow::Error) -> CellReport {
    CellReport {
        scenario: cell.scenario,
        cell: cell.label,
        mitigation: cell.mitigation,
        describe: cell.describe,
        expected: cell.expected,
        verdict: None,
        pass: false,
        explanation: String::new(),
        why_expected: cell.why,
        error: Some(format!("{e:#}")),
        wall_ms: 0,
        time_scale: cell.time_scale,
        istio: vec![],
        evidence: Evidence::default(),
    }
}

/// A cell whose task panicked: its guards already cleaned up during unwinding.
fn panic_report(
    (scenario, cell, mitigation, expected): (
        String,
        String,
        crate::mitigation::MitigationSpec,
        crate::verdict::Verdict,
    ),
    e: tokio::task::JoinError,
) -> CellReport {
    let msg = if e.is_panic() {
        let p = e.into_panic();
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into())
    } else {
        "cancelled".into()
    };
    CellReport {
        scenario,
        cell,
        mitigation,
        describe: String::new(),
        expected,
        verdict: None,
        pass: false,
        explanation: String::new(),
        why_expected: None,
        error: Some(format!("the cell panicked: {msg}")),
        wall_ms: 0,
        time_scale: crate::timescale::TimeScale { factor: 1, auto: false, values: vec![], orderings: vec![] },
        istio: vec![],
        evidence: Evidence::default(),
    }
}
