//! The runner: cells → a backend → probe observations → verdict, emitting events; the same
//! for every backend.
//!
//! ```text
//!   cells ──▶ Backend::run_cell ──CellOutcome──▶ verdict::judge ──▶ CellReport
//!      └──────────── Event (RunStarted, CellScaled, CellPhase, CellFinished, RunFinished) ──▶ reporters
//! ```
//!
//! It never prints: reporters turn its events into the terminal view and the files.
//! Cells run concurrently, bounded by `jobs` and the backend's `max_jobs`; with `repeat`,
//! each cell runs that many times and a verdict that differs between runs fails the cell.
//! Ctrl-C or SIGTERM aborts the cells, whose guards remove everything they created.

use crate::backend::{Backend, PhaseSink};
use crate::cells::Cell;
use crate::events::{CellReport, Evidence, RepeatOutcome, Reporter, RunSummary, SCHEMA_VERSION, ScenarioSummary};
use crate::events::{Event, Phase};
use crate::mitigation::MitigationSpec;
use crate::model::verdict::{self, Verdict};
use crate::scenario::Scenario;
use std::collections::HashMap;
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
    /// `run` or `matrix`: names the run in reports.
    pub title: String,
    pub jobs: usize,
    pub repeat: u32,
    pub out_dir: PathBuf,
    pub time_scale_label: String,
}

/// A cell's name in events and test reports: `scenario::mitigation`, with `#n` for the n-th
/// run of a repeated cell.
pub fn cell_key(scenario: &str, label: &str, run: u32, repeat: u32) -> String {
    if repeat > 1 { format!("{scenario}::{label}#{run}") } else { format!("{scenario}::{label}") }
}

/// What identifies a cell when its task can no longer tell (a panic).
#[derive(Clone)]
struct Identity {
    scenario: String,
    label: String,
    mitigation: MitigationSpec,
    expected: Verdict,
    key: String,
}

fn report_of(cell: &Cell, key: &str) -> CellReport {
    CellReport {
        scenario: cell.scenario.clone(),
        cell: cell.label.clone(),
        key: key.to_string(),
        mitigation: cell.mitigation.clone(),
        describe: cell.describe.clone(),
        expected: cell.expected,
        verdict: None,
        pass: false,
        stable: true,
        explanation: String::new(),
        why_expected: cell.why.clone(),
        error: None,
        wall_ms: 0,
        time_scale: cell.time_scale.clone(),
        istio: cell.mitigation.as_mitigation().istio_resources(&crate::render::report_context(cell)),
        evidence: Evidence {
            notes: cell
                .time_scale
                .notes()
                .chain(
                    (cell.real.client.library != crate::model::library::Library::default_for(cell.real.service))
                        .then(|| cell.real.client_settings().join("; "))
                        .map(|s| format!("configuration: {s}")),
                )
                .chain(
                    cell.mitigation
                        .as_mitigation()
                        .notes(&crate::render::local_context(cell, crate::mitigation::LOCAL_NAMESPACE)),
                )
                .collect(),
            ..Default::default()
        },
        repeats: vec![],
    }
}

/// Where a cell that did not match keeps the logs of its proxies and control plane.
pub fn logs_dir(out_dir: &std::path::Path, key: &str) -> PathBuf {
    out_dir.join("logs").join(key.replace("::", "--").replace(['/', '#', '='], "_"))
}

async fn run_one<B: Backend>(
    backend: Arc<B>,
    cell: Arc<Cell>,
    index: usize,
    key: String,
    emitter: Emitter,
    out_dir: Arc<PathBuf>,
) -> CellReport {
    let started = Instant::now();
    let phase_key = key.clone();
    let phase_emitter = emitter.clone();
    let phase: PhaseSink = Arc::new(move |p: Phase| {
        tracing::debug!(phase = ?p, "phase");
        phase_emitter.emit(Event::CellPhase { cell: phase_key.clone(), phase: p })
    });
    let span = tracing::info_span!("cell", key = %key, factor = cell.time_scale.factor);
    let result = tracing::Instrument::instrument(backend.run_cell(cell.clone(), index, phase), span).await;
    if let Err(f) = &result {
        tracing::warn!(key = %key, "cell could not run: {:#}", f.error);
    }
    let keep_logs = |logs: &[(String, String)]| {
        let dir = logs_dir(&out_dir, &key);
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| logs.iter().try_for_each(|(name, text)| std::fs::write(dir.join(name), text)));
        if let Err(e) = written {
            tracing::warn!(key = %key, "could not keep the cell's logs in {}: {e}", dir.display());
        }
    };
    let mut report = report_of(&cell, &key);
    match result {
        Ok(outcome) => {
            let (v, why) = verdict::judge(&outcome.observations);
            if Some(cell.expected) != Some(v) && !outcome.logs.is_empty() {
                keep_logs(&outcome.logs);
            }
            report.evidence.notes.extend(outcome.notes);
            report.evidence.observations = Some(outcome.observations);
            report.evidence.lab = outcome.lab;
            report.verdict = Some(v);
            report.explanation = why;
        }
        Err(f) => {
            if !f.logs.is_empty() {
                keep_logs(&f.logs);
            }
            report.error = Some(format!("{:#}", f.error));
        }
    }
    report.pass = report.verdict == Some(cell.expected);
    report.wall_ms = started.elapsed().as_millis() as u64;
    report
}

async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Run cells (of one scenario or many) on `backend`. `Err(Interrupted)` after Ctrl-C, once
/// everything is removed (the backend is dropped before this returns).
pub async fn run<B: Backend>(
    backend: B,
    scenarios: &[Scenario],
    cells: Vec<Cell>,
    opts: &RunOptions,
    emitter: &Emitter,
) -> Result<RunSummary, Interrupted> {
    let started = Instant::now();
    let started_at = jiff::Timestamp::now().to_string();
    let repeat = opts.repeat.max(1);
    let cells: Vec<Arc<Cell>> = cells.into_iter().map(Arc::new).collect();
    let tasks: Vec<(usize, u32, String)> = cells
        .iter()
        .enumerate()
        .flat_map(|(i, c)| (1..=repeat).map(move |r| (i, r, cell_key(&c.scenario, &c.label, r, repeat))))
        .collect();
    emitter.emit(Event::RunStarted {
        title: opts.title.clone(),
        backend: backend.name(),
        cells: tasks.iter().map(|t| t.2.clone()).collect(),
        out_dir: opts.out_dir.clone(),
    });
    for c in &cells {
        emitter.emit(Event::CellScaled {
            cell: cell_key(&c.scenario, &c.label, 1, 1),
            factor: c.time_scale.factor,
            auto: c.time_scale.auto,
            values: c.time_scale.values.clone(),
        });
    }
    // What `prepare` made is removed when the run ends, interrupted or not: the backend drops
    // with this function.
    let backend = Arc::new(backend);
    let backend_name = backend.name();
    match backend.prepare().await {
        Ok(()) => {}
        Err(e) => {
            let reports = cells
                .iter()
                .map(|c| {
                    let mut r = report_of(c, &cell_key(&c.scenario, &c.label, 1, 1));
                    r.error = Some(format!("{e:#}"));
                    r
                })
                .collect();
            return Ok(summary_of(scenarios, opts, &backend_name, started, started_at, reports));
        }
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(opts.jobs.min(backend.max_jobs()).max(1)));
    let mut set = JoinSet::new();
    let mut by_task = HashMap::new();
    for (i, run_no, key) in tasks {
        let cell = cells[i].clone();
        let identity = Identity {
            scenario: cell.scenario.clone(),
            label: cell.label.clone(),
            mitigation: cell.mitigation.clone(),
            expected: cell.expected,
            key: key.clone(),
        };
        let (emitter, permits, backend) = (emitter.clone(), permits.clone(), backend.clone());
        let out_dir = Arc::new(opts.out_dir.clone());
        let handle = set.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore");
            (i, run_no, run_one(backend, cell, i, key, emitter, out_dir).await)
        });
        by_task.insert(handle.id(), (i, run_no, identity));
    }
    let mut runs: Vec<Vec<(u32, CellReport)>> = vec![Vec::new(); cells.len()];
    let collect = async {
        while let Some(r) = set.join_next_with_id().await {
            let (i, run_no, report) = match r {
                Ok((_, done)) => done,
                Err(e) => {
                    let (i, run_no, identity) = by_task.remove(&e.id()).expect("every task is known");
                    (i, run_no, panic_report(identity, &cells[i], e))
                }
            };
            emitter.emit(Event::CellFinished(Box::new(report.clone())));
            runs[i].push((run_no, report));
        }
    };
    tokio::select! {
        _ = collect => {}
        _ = interrupted() => {
            set.shutdown().await;
            return Err(Interrupted);
        }
    }
    let reports = runs.into_iter().map(combine_repeats).collect();
    let summary = summary_of(scenarios, opts, &backend_name, started, started_at, reports);
    emitter.emit(Event::RunFinished { wall_ms: summary.wall_ms });
    Ok(summary)
}

/// One report per cell: the first run in full, every run's verdict, and whether they agree.
fn combine_repeats(mut runs: Vec<(u32, CellReport)>) -> CellReport {
    runs.sort_by_key(|(n, _)| *n);
    let outcomes: Vec<RepeatOutcome> = runs
        .iter()
        .map(|(n, r)| RepeatOutcome {
            run: *n,
            verdict: r.verdict,
            pass: r.pass,
            wall_ms: r.wall_ms,
            error: r.error.clone(),
        })
        .collect();
    let mut first = runs.into_iter().next().expect("at least one run").1;
    if outcomes.len() > 1 {
        first.key = cell_key(&first.scenario, &first.cell, 1, 1);
        first.stable = outcomes.iter().all(|o| o.verdict == outcomes[0].verdict);
        first.pass = outcomes.iter().all(|o| o.pass);
        if !first.stable {
            let verdicts: Vec<String> =
                outcomes.iter().map(|o| o.verdict.map(|v| v.to_string()).unwrap_or_else(|| "error".into())).collect();
            first.explanation =
                format!("the verdict flipped between runs: {}; {}", verdicts.join(", "), first.explanation);
        }
        first.repeats = outcomes;
    }
    first
}

fn summary_of(
    scenarios: &[Scenario],
    opts: &RunOptions,
    backend: &str,
    started: Instant,
    started_at: String,
    reports: Vec<CellReport>,
) -> RunSummary {
    let scenario_summaries = scenarios
        .iter()
        .map(|s| {
            let cells: Vec<&CellReport> = reports.iter().filter(|r| r.scenario == s.name).collect();
            ScenarioSummary {
                name: s.name.clone(),
                summary: s.summary.clone(),
                source: s.source.clone(),
                pass: cells.iter().all(|r| r.pass),
                cells: cells.len(),
            }
        })
        .collect();
    RunSummary {
        schema_version: SCHEMA_VERSION,
        scenario: opts.title.clone(),
        summary: scenarios.iter().map(|s| s.summary.clone()).collect::<Vec<_>>().join("; "),
        scenarios: scenario_summaries,
        backend: backend.into(),
        time_scale: opts.time_scale_label.clone(),
        repeat: opts.repeat.max(1),
        pass: reports.iter().all(|r| r.pass),
        started_at,
        wall_ms: started.elapsed().as_millis() as u64,
        out_dir: opts.out_dir.clone(),
        cells: reports,
    }
}

/// A cell whose task panicked: its guards already cleaned up during unwinding.
fn panic_report(identity: Identity, cell: &Cell, e: tokio::task::JoinError) -> CellReport {
    let msg = if e.is_panic() {
        let p = e.into_panic();
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into())
    } else {
        "cancelled".into()
    };
    let mut r = report_of(cell, &identity.key);
    r.scenario = identity.scenario;
    r.cell = identity.label;
    r.mitigation = identity.mitigation;
    r.expected = identity.expected;
    r.error = Some(format!("the cell panicked: {msg}"));
    r
}
