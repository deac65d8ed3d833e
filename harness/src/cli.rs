//! The `idlelab` command line. Exit codes: 0 every cell matched, 1 some did not,
//! 2 bad input or missing prerequisites, 130 interrupted.

use crate::local::{self, doctor};
use crate::scenario;
use crate::session::{BackendChoice, Exec, OutputArgs, ScenarioArgs, execute, prepare};
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;

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

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Local,
    Kind,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario's cells in the local lab and write summary.json / summary.md.
    Run {
        /// A scenario name from scenarios/ (e.g. redis-idle) or a path to a YAML file.
        scenario: String,
        #[command(flatten)]
        args: ScenarioArgs,
        #[command(flatten)]
        output: OutputArgs,
        /// Cells run at once (each has its own namespaces). Default: all.
        #[arg(long)]
        jobs: Option<usize>,
        /// Pooled connections per cell, instead of the scenario's `client.pool`.
        #[arg(long)]
        pool: Option<usize>,
        /// `local` (network namespaces on this host) or `kind` (a cluster with Istio).
        #[arg(long, value_enum, default_value = "local")]
        backend: Backend,
        /// With `--backend kind`: an existing cluster's kubeconfig context instead of kind.
        #[arg(long)]
        context: Option<String>,
    },
    /// Print every command and manifest the kind backend would run for a scenario, in order,
    /// without running anything.
    Plan {
        scenario: String,
        #[command(flatten)]
        args: ScenarioArgs,
        #[arg(long, value_enum, default_value = "kind")]
        backend: Backend,
        /// An existing cluster's kubeconfig context instead of the kind cluster.
        #[arg(long)]
        context: Option<String>,
        /// Print the plan as JSON instead of as a shell script.
        #[arg(long)]
        json: bool,
        /// With the steps `run --capture` adds (each pod's capture, the proxies' access logs).
        #[arg(long)]
        capture: bool,
    },
    /// Run every cell of every shipped scenario (or of the ones named), concurrently.
    Matrix {
        /// Scenarios to run (default: every one in scenarios/).
        scenarios: Vec<String>,
        #[command(flatten)]
        args: ScenarioArgs,
        #[command(flatten)]
        output: OutputArgs,
        /// Cells run at once, each in its own namespaces.
        #[arg(long, default_value_t = 32)]
        jobs: usize,
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
    /// The timing facts of Envoy releases that the time scale rests on (the connection
    /// manager's close delay, whether idle timers run while connecting), measured from each
    /// binary once and cached: the default Envoy, or each `--envoy` release.
    EnvoyTiming {
        /// Releases to measure, e.g. 1.36.4,1.40.0 (installed on first use, as `run --envoy`).
        #[arg(long, value_name = "VERSION[,VERSION…]")]
        envoy: Option<String>,
    },
    /// Run the probe: a probe spec as JSON (stdin, or --spec FILE), observations as JSON
    /// lines on stdout.
    Probe {
        #[arg(long)]
        spec: Option<PathBuf>,
    },
    /// The lab's HTTP server (run inside a server namespace by the lab).
    #[command(hide = true)]
    ServeHttp {
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Append each request's path to this file (the server-side request count).
        #[arg(long)]
        request_log: Option<PathBuf>,
    },
    /// The lab's gRPC replica: answers `Who` with its id, appends its count to --counts
    /// every 200 ms and on SIGTERM/SIGINT.
    #[command(hide = true)]
    ServeGrpc {
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// The id this replica answers with.
        #[arg(long)]
        replica: u32,
        /// The JSON-lines file its counts are appended to.
        #[arg(long)]
        counts: PathBuf,
        /// Close each client connection this many milliseconds after it opened (GOAWAY).
        #[arg(long)]
        max_connection_age_ms: Option<u64>,
        /// Refused: tonic has no grace after max-connection-age (see `ReplicaServe`).
        #[arg(long)]
        max_connection_age_grace_ms: Option<u64>,
    },
    /// The gRPC probe: a gRPC probe spec as JSON on stdin, its report as one JSON line on stdout.
    #[command(hide = true)]
    ProbeGrpc,
    /// Try your own Istio YAML (DestinationRule, EnvoyFilter, Sidecar, ServiceEntry, Gateway,
    /// VirtualService, ProxyConfig, Deployment/Pod annotations) against the failures: each
    /// scenario it can touch runs its baseline with and without it. Exit 0 when it fixes every
    /// one, 1 when one still fails, 2 for bad input (Istio's own validation included).
    Try {
        /// The YAML files you would `kubectl apply`.
        files: Vec<PathBuf>,
        /// Scenarios to try it on (default: every shipped one it can touch).
        #[arg(long = "scenario", value_name = "NAME")]
        scenarios: Vec<String>,
        /// Map a host of your files onto the lab's service: `reviews.prod.svc.cluster.local=redis`.
        #[arg(long = "host-map", value_name = "FROM=TO")]
        host_map: Vec<String>,
        /// A pod annotation of the client, as if on its Deployment: `KEY=VALUE`.
        #[arg(long = "annotate", value_name = "KEY=VALUE")]
        annotate: Vec<String>,
        #[arg(long, default_value = "scenarios", env = "IDLELAB_SCENARIOS")]
        scenarios_dir: PathBuf,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Remove namespaces and temp dirs left by idlelab runs that were killed outright.
    Reap,
    /// Read a capture (pcap or pcapng, yours or a cell's from `--capture`) and say, for each TCP
    /// connection that ended badly, how long it sat idle, whether a FIN or keepalive probes
    /// were seen, who sent the RST, what that points to and which scenario reproduces it.
    /// Exit 0, or 2 when the file is not a readable capture of TCP.
    Explain {
        /// The capture file.
        file: PathBuf,
    },
    /// Time every scenario, the whole matrix and a 1,000-connection pool; write results/bench.json.
    Bench {
        /// Scenarios to time (default: every shipped scenario).
        scenarios: Vec<String>,
        #[arg(long, default_value = "scenarios", env = "IDLELAB_SCENARIOS")]
        scenarios_dir: PathBuf,
        #[arg(long, default_value = "results/bench.json")]
        out: PathBuf,
        /// Also time the kind backend: warm `kind-up`, the cluster from cached images and its
        /// first cell, redis-idle on kind and on the local lab (the cluster is recreated).
        #[arg(long)]
        kind: bool,
        /// With --kind, first build every image and binary from nothing (tens of minutes).
        #[arg(long)]
        kind_cold: bool,
    },
}

/// `idlelab envoy-timing`: one line per release; exit 2 when a release cannot be had or
/// measured.
fn envoy_timing(releases: Option<&str>) -> i32 {
    let bins: Vec<Result<PathBuf, String>> = match releases {
        None => vec![crate::tools::envoy_bin().ok_or_else(|| "no Envoy: run `just setup`".to_string())],
        Some(list) => crate::tools::release_list(list)
            .iter()
            .map(|v| crate::tools::envoy_release(v).map_err(|e| e.to_string()))
            .collect(),
    };
    let mut code = 0;
    for bin in bins {
        match bin.and_then(|b| crate::local::envoy_timing::of(&b).map_err(|e| format!("{}: {e:#}", b.display()))) {
            Ok(t) => println!("{}", t.describe()),
            Err(e) => {
                eprintln!("error: {e}");
                code = 2;
            }
        }
    }
    code
}

/// Name this process `idlelab`: the lab starts its probe and server as /proc/self/exe, whose
/// process name would otherwise be `exe` in `ss` and `ps`.
fn name_process() {
    // SAFETY: PR_SET_NAME with a NUL-terminated string on the calling (main) thread.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"idlelab".as_ptr() as libc::c_ulong, 0, 0, 0);
    }
}

/// The lab's own log (`tracing`, to stderr): spans per cell and phase, an event per process
/// started, rule installed and namespace created. `RUST_LOG` chooses (e.g.
/// `RUST_LOG=idlelab=debug`); without it, `-v` shows debug and otherwise only warnings.
fn init_tracing(verbose: bool) {
    let default = if verbose { "idlelab=debug" } else { "idlelab=warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    name_process();
    let verbose = match &cli.command {
        Command::Run { output, .. } | Command::Matrix { output, .. } | Command::Try { output, .. } => output.verbose,
        _ => false,
    };
    init_tracing(verbose);
    match cli.command {
        Command::Probe { spec } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(crate::probe::main(spec)),
        Command::ServeHttp { listen, request_log } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(crate::local::servers::http_server::serve(listen, request_log.as_deref())) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            }
        }
        Command::ServeGrpc { listen, replica, counts, max_connection_age_ms, max_connection_age_grace_ms } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("tokio runtime");
            let spec = crate::local::grpc_replica::ReplicaServe {
                listen,
                replica,
                counts_file: counts,
                max_connection_age: max_connection_age_ms.map(std::time::Duration::from_millis),
                max_connection_age_grace: max_connection_age_grace_ms.map(std::time::Duration::from_millis),
            };
            match rt.block_on(crate::local::grpc_replica::serve(spec)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            }
        }
        Command::ProbeGrpc => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(crate::probe::grpc::run_stdin()) {
                Ok(report) => {
                    println!("{}", serde_json::to_string(&report).expect("a report serializes"));
                    0
                }
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
        Command::EnvoyTiming { envoy } => envoy_timing(envoy.as_deref()),
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
        Command::Explain { file } => match crate::capture::explain_file(&file) {
            Ok(text) => {
                print!("{text}");
                0
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                2
            }
        },
        Command::Reap => {
            for r in local::netns::reap_stale() {
                println!("removed {r}");
            }
            for r in crate::kind::reap() {
                println!("{r}");
            }
            0
        }
        Command::Check { scenarios, args } => check(&scenarios, &args),
        Command::Plan { scenario, args, backend, context, json, capture } => {
            if backend != Backend::Kind {
                eprintln!(
                    "error: the local backend has no plan to print; `idlelab check {scenario}` shows its scaled cells"
                );
                return 2;
            }
            match prepare(&scenario, &args, None) {
                Err(code) => code,
                Ok((_, cells)) => {
                    let plan = crate::kind::plan(&cells, &crate::kind::KubeTarget { context }, capture);
                    let text = if json {
                        serde_json::to_string_pretty(&plan).expect("a plan serializes") + "\n"
                    } else {
                        plan.to_string()
                    };
                    // A closed pipe (`| head`) is not an error worth a panic.
                    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
                    0
                }
            }
        }
        Command::Run { scenario, args, output, jobs, pool, backend, context } => {
            match prepare(&scenario, &args, pool) {
                Err(code) => code,
                Ok((s, cells)) => {
                    let time_scale_label = args.time_scale.unwrap_or(s.time_scale).to_string();
                    let mut output = output;
                    // The scenario's `versions:` in the local lab, unless the command line names others.
                    if matches!(backend, Backend::Local) {
                        output.envoy = output.envoy.or_else(|| s.versions.envoy.clone());
                        output.istio = output.istio.or_else(|| s.versions.istio.clone());
                    }
                    let exec = Exec { title: s.name.clone(), output, jobs, quiet: false, time_scale_label };
                    let backend = match backend {
                        Backend::Local => BackendChoice::Local,
                        Backend::Kind => BackendChoice::Kind {
                            target: crate::kind::KubeTarget { context },
                            runner: Box::new(crate::kind::plan::ProcessRunner::detect()),
                        },
                    };
                    execute(vec![s], cells, exec, backend).map(|sum| if sum.pass { 0 } else { 1 }).unwrap_or_else(|c| c)
                }
            }
        }
        Command::Matrix { scenarios, args, output, jobs } => {
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
            // One run of every cell on the same releases: a scenario's own `versions:` is for `run`.
            for s in &loaded {
                let pins = [("envoy", &s.versions.envoy, &output.envoy), ("istio", &s.versions.istio, &output.istio)];
                for (kind, pinned, flag) in pins {
                    if let Some(p) = pinned
                        && flag.as_deref() != Some(p.as_str())
                    {
                        eprintln!(
                            "warning: {}: versions.{kind} {p} is not what the matrix runs (`idlelab run {}` does; or pass --{kind} {p})",
                            s.name, s.name
                        );
                    }
                }
            }
            let label = args.time_scale.map(|t| t.to_string()).unwrap_or_else(|| "per scenario".into());
            let exec = Exec { title: "matrix".into(), output, jobs: Some(jobs), quiet: false, time_scale_label: label };
            execute(loaded, all, exec, BackendChoice::Local)
                .map(|sum| if sum.pass { 0 } else { 1 })
                .unwrap_or_else(|c| c)
        }
        Command::Compare { old, new } => crate::compare::main(&old, &new),
        Command::Try { files, scenarios, host_map, annotate, scenarios_dir, output } => {
            crate::tryout::main(crate::tryout::TryArgs { files, scenarios, host_map, annotate, scenarios_dir, output })
        }
        Command::Bench { scenarios, scenarios_dir, out, kind, kind_cold } => {
            crate::bench::main(scenarios, scenarios_dir, out, kind, kind_cold)
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
