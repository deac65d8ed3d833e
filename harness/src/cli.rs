//! The `idlelab` command line. Exit codes: 0 every cell matched, 1 some did not,
//! 2 bad input or missing prerequisites, 130 interrupted.

use crate::report::html::HtmlReporter;
use crate::report::junit::JunitReporter;
use crate::report::{Reporter, RunSummary, json::JsonReporter, markdown::MarkdownReporter, terminal::TerminalReporter};
use crate::runner::{self, Emitter, RunOptions};
use crate::scenario::{self, TimeScaleSpec};
use crate::{cells, doctor, lab};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "idlelab",
    version,
    about = "Reproduce idle pooled-connection failures behind Istio sidecars and middleboxes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ScenarioArgs {
    /// Directory holding the shipped scenarios.
    #[arg(long, default_value = "scenarios", env = "IDLELAB_SCENARIOS")]
    scenarios_dir: PathBuf,
    /// Run only these cells (a mitigation name such as `none`, or a full cell label).
    #[arg(long = "mitigation", value_name = "NAME")]
    mitigations: Vec<String>,
    /// `auto` (the strongest compression that keeps every deciding ordering) or a factor.
    #[arg(long, value_name = "auto|N", value_parser = TimeScaleSpec::parse)]
    time_scale: Option<TimeScaleSpec>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario's cells in the local lab and write summary.json / summary.md.
    Run {
        /// A scenario name from scenarios/ (e.g. redis-idle) or a path to a YAML file.
        scenario: String,
        #[command(flatten)]
        args: ScenarioArgs,
        /// Output directory (default: results/<scenario>-<UTC timestamp>/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where default output directories and the `latest` link go.
        #[arg(long, default_value = "results")]
        results_dir: PathBuf,
        /// Cells run at once (each has its own namespaces). Default: all.
        #[arg(long)]
        jobs: Option<usize>,
        /// Print each cell's phases as they happen (when the output is not a terminal).
        #[arg(long, short)]
        verbose: bool,
        /// Run each cell N times; a verdict that differs between runs fails the cell.
        #[arg(long, default_value_t = 1)]
        repeat: u32,
        /// Pooled connections per cell, instead of the scenario's `client.pool`.
        #[arg(long)]
        pool: Option<usize>,
    },
    /// Run every cell of every shipped scenario (or of the ones named), concurrently.
    Matrix {
        /// Scenarios to run (default: every one in scenarios/).
        scenarios: Vec<String>,
        #[command(flatten)]
        args: ScenarioArgs,
        /// Output directory (default: results/matrix-<UTC timestamp>/).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value = "results")]
        results_dir: PathBuf,
        /// Cells run at once, each in its own namespaces.
        #[arg(long, default_value_t = 32)]
        jobs: usize,
        /// Run each cell N times; a verdict that differs between runs fails the cell.
        #[arg(long, default_value_t = 1)]
        repeat: u32,
        #[arg(long, short)]
        verbose: bool,
    },
    /// The cells whose verdict changed between two runs (directories or summary.json files);
    /// exit 1 if any cell that matched its expectation no longer does.
    Compare { old: PathBuf, new: PathBuf },
    /// Validate scenarios and print each cell's scaled durations, without running anything.
    Check {
        scenarios: Vec<String>,
        #[command(flatten)]
        args: ScenarioArgs,
    },
    /// List the shipped scenarios.
    List {
        #[arg(long, default_value = "scenarios", env = "IDLELAB_SCENARIOS")]
        scenarios_dir: PathBuf,
    },
    /// Check the prerequisites of the local lab.
    Doctor,
    /// Run the probe: a probe spec as JSON on stdin, observations as JSON lines on stdout.
    Probe,
    /// The lab's HTTP server (run inside a server namespace by the lab).
    #[command(hide = true)]
    ServeHttp {
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
    /// Remove namespaces and temp dirs left by idlelab runs that were killed outright.
    Reap,
    /// Time whole scenarios and per-cell setup/teardown; write results/bench.json.
    Bench {
        /// Scenarios to time (default: every shipped scenario).
        scenarios: Vec<String>,
        #[arg(long, default_value = "scenarios", env = "IDLELAB_SCENARIOS")]
        scenarios_dir: PathBuf,
        #[arg(long, default_value = "results/bench.json")]
        out: PathBuf,
    },
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("tokio runtime")
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Probe => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(crate::probe::main_from_stdin()),
        Command::ServeHttp { listen } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(crate::lab::http_server::serve(listen)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            }
        }
        Command::Doctor => {
            if doctor::report(&doctor::checks()) {
                0
            } else {
                2
            }
        }
        Command::List { scenarios_dir } => match scenario::list(&scenarios_dir) {
            Ok(names) => {
                for n in names {
                    println!("{n}");
                }
                0
            }
            Err(e) => {
                eprintln!("error: cannot list {}: {e}", scenarios_dir.display());
                2
            }
        },
        Command::Reap => {
            for r in lab::netns::reap_stale() {
                println!("removed {r}");
            }
            0
        }
        Command::Check { scenarios, args } => check(&scenarios, &args),
        Command::Run { scenario, args, out, results_dir, jobs, verbose, repeat, pool } => {
            match prepare(&scenario, &args, pool) {
                Err(code) => code,
                Ok((s, cells)) => {
                    let time_scale_label = args.time_scale.unwrap_or(s.time_scale).to_string();
                    let exec =
                        Exec { title: s.name.clone(), out, results_dir, jobs, repeat, verbose, time_scale_label };
                    execute(vec![s], cells, exec).map(|sum| if sum.pass { 0 } else { 1 }).unwrap_or_else(|c| c)
                }
            }
        }
        Command::Matrix { scenarios, args, out, results_dir, jobs, repeat, verbose } => {
            let names =
                if scenarios.is_empty() { scenario::list(&args.scenarios_dir).unwrap_or_default() } else { scenarios };
            let mut all = Vec::new();
            let mut loaded = Vec::new();
            for n in &names {
                match prepare(n, &args, None) {
                    Ok((s, cells)) => {
                        all.extend(cells);
                        loaded.push(s);
                    }
                    Err(code) => return code,
                }
            }
            if loaded.is_empty() {
                eprintln!("error: no scenarios in {}", args.scenarios_dir.display());
                return 2;
            }
            let label = args.time_scale.map(|t| t.to_string()).unwrap_or_else(|| "per scenario".into());
            let exec = Exec {
                title: "matrix".into(),
                out,
                results_dir,
                jobs: Some(jobs),
                repeat,
                verbose,
                time_scale_label: label,
            };
            execute(loaded, all, exec).map(|sum| if sum.pass { 0 } else { 1 }).unwrap_or_else(|c| c)
        }
        Command::Compare { old, new } => crate::compare::main(&old, &new),
        Command::Bench { scenarios, scenarios_dir, out } => crate::cli::bench(scenarios, scenarios_dir, out),
    }
}

/// Load, validate and expand; print the error and return exit code 2 on bad input.
fn prepare(
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

fn check(names: &[String], args: &ScenarioArgs) -> i32 {
    let names = if names.is_empty() { scenario::list(&args.scenarios_dir).unwrap_or_default() } else { names.to_vec() };
    let mut code = 0;
    for n in &names {
        match prepare(n, args, None) {
            Err(c) => code = c,
            Ok((s, cells)) => {
                println!("{}: ok, {} cells", s.name, cells.len());
                for c in &cells {
                    let vals: Vec<String> =
                        c.time_scale.values.iter().map(|v| format!("{} {}→{}", v.label, v.real, v.scaled)).collect();
                    println!("  {} (expect {}): ×{} {}", c.label, c.expected, c.time_scale.factor, vals.join(", "));
                    for note in c.time_scale.notes() {
                        println!("    note: {note}");
                    }
                }
            }
        }
    }
    code
}

fn default_out_dir(results_dir: &Path, scenario: &str) -> PathBuf {
    let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
    results_dir.join(format!("{scenario}-{stamp}"))
}

/// How to execute a set of cells (a scenario's, or the matrix's).
struct Exec {
    title: String,
    out: Option<PathBuf>,
    results_dir: PathBuf,
    jobs: Option<usize>,
    repeat: u32,
    verbose: bool,
    time_scale_label: String,
}

fn execute(scenarios: Vec<scenario::Scenario>, cells: Vec<cells::Cell>, exec: Exec) -> Result<RunSummary, i32> {
    if let Some(msg) = doctor::missing(&doctor::checks()) {
        eprintln!("error: {msg}");
        return Err(2);
    }
    if exec.repeat == 0 {
        eprintln!("error: --repeat 0: a cell runs at least once");
        return Err(2);
    }
    for r in lab::netns::reap_stale() {
        eprintln!("note: removed {r} left by a killed run");
    }
    let default_dir = exec.out.is_none();
    let out_dir = exec.out.clone().unwrap_or_else(|| default_out_dir(&exec.results_dir, &exec.title));
    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        eprintln!("error: cannot create {}: {e}", out_dir.display());
        return Err(2);
    }
    let reporters: Vec<Box<dyn Reporter>> = vec![
        Box::new(TerminalReporter::new(exec.verbose)),
        Box::new(JsonReporter { path: out_dir.join("summary.json") }),
        Box::new(MarkdownReporter { path: out_dir.join("summary.md") }),
        Box::new(JunitReporter { path: out_dir.join("junit.xml") }),
        Box::new(HtmlReporter { path: out_dir.join("report.html") }),
    ];
    let emitter = Emitter::new(reporters);
    let opts = RunOptions {
        title: exec.title.clone(),
        jobs: exec.jobs.unwrap_or(cells.len() * exec.repeat as usize),
        repeat: exec.repeat,
        out_dir: out_dir.clone(),
        time_scale_label: exec.time_scale_label.clone(),
    };
    let rt = runtime();
    let summary = match rt.block_on(runner::run(&scenarios, cells, &opts, &emitter)) {
        Ok(s) => s,
        Err(runner::Interrupted) => {
            drop(rt);
            eprintln!("interrupted: every namespace, process and temp dir of this run was removed");
            return Err(130);
        }
    };
    drop(rt);
    if let Err(e) = emitter.finish(&summary) {
        eprintln!("error: writing reports: {e:#}");
        return Err(1);
    }
    if default_dir {
        let latest = exec.results_dir.join("latest");
        let _ = std::fs::remove_file(&latest);
        if let Some(name) = out_dir.file_name() {
            let _ = std::os::unix::fs::symlink(name, &latest);
        }
    }
    Ok(summary)
}

fn bench(names: Vec<String>, scenarios_dir: PathBuf, out: PathBuf) -> i32 {
    let names = if names.is_empty() { scenario::list(&scenarios_dir).unwrap_or_default() } else { names };
    let args = ScenarioArgs { scenarios_dir, mitigations: vec![], time_scale: None };
    let mut rows = Vec::new();
    let mut code = 0;
    for n in &names {
        let (s, cells) = match prepare(n, &args, None) {
            Ok(x) => x,
            Err(c) => return c,
        };
        let dir = std::env::temp_dir().join(format!("{}{}-bench-{n}", lab::netns::PREFIX, std::process::id()));
        let exec = Exec {
            title: s.name.clone(),
            out: Some(dir.clone()),
            results_dir: PathBuf::from("results"),
            jobs: None,
            repeat: 1,
            verbose: false,
            time_scale_label: s.time_scale.to_string(),
        };
        let summary = match execute(vec![s.clone()], cells, exec) {
            Ok(sum) => sum,
            Err(c) => return c,
        };
        let _ = std::fs::remove_dir_all(&dir);
        if !summary.pass {
            code = 1;
        }
        let lab: Vec<&lab::LabEvidence> = summary.cells.iter().filter_map(|c| c.evidence.lab.as_ref()).collect();
        let overhead: Vec<u64> = lab.iter().map(|l| l.setup_ms + l.teardown_ms).collect();
        let max = overhead.iter().copied().max().unwrap_or(0);
        let mean = if overhead.is_empty() { 0 } else { overhead.iter().sum::<u64>() / overhead.len() as u64 };
        let factors: Vec<u32> = summary.cells.iter().map(|c| c.time_scale.factor).collect();
        rows.push(serde_json::json!({
            "scenario": s.name,
            "cells": summary.cells.len(),
            "pass": summary.pass,
            "wall_ms": summary.wall_ms,
            "setup_teardown_ms_mean": mean,
            "setup_teardown_ms_max": max,
            "setup_ms_max": lab.iter().map(|l| l.setup_ms).max().unwrap_or(0),
            "teardown_ms_max": lab.iter().map(|l| l.teardown_ms).max().unwrap_or(0),
            "server_start_ms_max": lab.iter().map(|l| l.server_start_ms).max().unwrap_or(0),
            "time_scale_min": factors.iter().min(),
            "time_scale_max": factors.iter().max(),
        }));
    }
    let machine = serde_json::json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "envoy": doctor::checks().into_iter().find(|c| c.name == "envoy").and_then(|c| c.found),
    });
    let doc = serde_json::json!({"schema_version": 1, "at": jiff::Timestamp::now().to_string(), "machine": machine, "scenarios": rows});
    if let Some(parent) = out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Err(e) = std::fs::write(&out, serde_json::to_vec_pretty(&doc).unwrap_or_default()) {
        eprintln!("error: writing {}: {e}", out.display());
        return 1;
    }
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(vec![
        "scenario",
        "cells",
        "pass",
        "wall",
        "setup+teardown mean",
        "max",
        "server start max",
        "time scale",
    ]);
    for r in &rows {
        table.add_row(vec![
            r["scenario"].as_str().unwrap_or("").to_string(),
            r["cells"].to_string(),
            r["pass"].to_string(),
            format!("{:.1} s", r["wall_ms"].as_f64().unwrap_or(0.0) / 1000.0),
            format!("{} ms", r["setup_teardown_ms_mean"]),
            format!("{} ms", r["setup_teardown_ms_max"]),
            format!("{} ms", r["server_start_ms_max"]),
            format!("×{}–×{}", r["time_scale_min"], r["time_scale_max"]),
        ]);
    }
    println!("\n{table}\nwritten to {}", out.display());
    code
}
