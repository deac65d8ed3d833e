//! idlelab: reproduce the failures of idle pooled connections behind an Istio sidecar and
//! cloud middleboxes, and record per mitigation whether they still reproduce.
//!
//! # Layout
//!
//! Data flows one way: load → expand → run → observe → judge → report. Each module imports
//! only the ones listed before it (no import circle, none back up).
//!
//! ```text
//!   cli ─▶ session ─▶ runner ─▶ Backend: local │ kind ─▶ probe observations
//!                       │                                      │
//!                       └──── events ◀── verdict (model) ◀─────┘ ──▶ report
//!   scenario ─▶ cells (config + mitigation + time scale) ─▶ render (Kubernetes, Istio objects)
//!   model: durations, services, keepalive, libraries, observations, verdicts, scaled values
//! ```
//!
//! The ground: the words every layer shares, and what the machine provides.
//! - [`model`]: durations, services, the kernel's keepalive, client libraries and their
//!   settings, the time scale's types, the probe's observations and the verdict judged from
//!   them (`model::balance`: a gRPC run's requests per replica and its balance verdict).
//!   Imports nothing of the lab.
//! - [`tools`]: where the lab's tools are installed (Envoy, Istio's binaries, the Go probe),
//!   each Envoy release `--envoy` asks for (a cached venv per release; the release a binary
//!   reports) and each Istio release `--istio` asks for (built on first use from its pins in
//!   istio/versions by scripts/build-istio.sh).
//! - [`certs`]: the CA of a run and of a cell's mesh.
//!
//! A cell's configuration:
//! - [`hop`]: one type per hop kind on the path (`sidecar`, `middlebox`, …), each telling
//!   what it is on the path (`hop::PathHop`).
//! - [`config`]: a cell's resolved configuration (`CellConfig`): the scenario's settings
//!   after its mitigation, the single input of a backend.
//! - [`mitigation`]: one type per mitigation, each with its change to the configuration and
//!   its Istio resources.
//! - [`timescale`]: compress a cell's durations without flipping what decides its outcome.
//! - [`scenario`]: the scenario format, its loader and its validator (errors name file,
//!   line, column).
//! - [`cells`]: expand a scenario into cells (scenario × mitigation), scaled.
//!
//! Running a cell:
//! - [`probe`]: `idlelab probe`, a real client pool that warms, idles and reuses; one module
//!   per Rust client library, behind the probe contract (`scenarios/PROBE.md`);
//!   `probe::grpc`, `idlelab probe-grpc`: tonic channels that send requests for a run's
//!   duration and record which replica answered each; `probe::grpc_idle`: a gRPC idle
//!   cell's tonic channels (with their HTTP/2 keepalive) behind the same contract.
//! - [`capture`]: a pcap or pcapng read as a stream of TCP segments, and what one hop's
//!   packets say about each connection that ended badly (`idlelab explain`);
//!   `capture::attribute`: which hop acted first on each failed connection of a cell's
//!   capture (every hop's interfaces, a NAT's sides joined by sequence number, the lab's
//!   socket listings, Envoy's access logs, conntrack's events). Both backends write a cell's
//!   capture with `--capture` (`local::capture`, `kind::capture`).
//! - [`render`]: the one renderer of a cell's Kubernetes and Istio objects, for both backends.
//! - [`backend`]: the `Backend` trait the runner drives, and what a cell leaves behind;
//!   `backend::balance`: a gRPC balance run's counts and reports made into its numbers, the
//!   same for both backends.
//! - [`local`]: the local backend: a cell's run stage by stage (`local::cell`) in namespaces
//!   of its own, each hop kind that is no proxy (`local::device`: the nftables middlebox),
//!   each service's real server (`local::servers`), and
//!   Istio's control plane with pilot-agent + Envoy per proxy (`local::control_plane`,
//!   `local::proxy`, `local::config_dump`); `local::doctor` checks its prerequisites;
//!   `local::envoy_timing` measures, once per Envoy binary, the timing facts the time scale
//!   rests on (the session scales every cell for the Envoy that runs it, `cells::for_envoy`).
//!   A gRPC balance cell has its own stage (`local::grpc_cell`): client and replica namespaces
//!   around a node with kube-proxy's ClusterIP rules (`local::cluster_ip`), the replicas
//!   being `idlelab serve-grpc` (`local::grpc_replica`), and with a `sidecar` or
//!   `server-sidecar` hop, a sidecar per client or replica pod from the same control plane
//!   (`render::objects::for_grpc_cell`), which takes EndpointSlice changes while it serves.
//! - [`kind`]: the kind backend: each cell's steps (`kind::cell`, each hop kind's objects in
//!   `kind::device`) in a plan of kind / istioctl / kubectl commands, executed through one
//!   command runner (`kind::run`) that reaches the cluster through the lab's own Docker engine
//!   when kind-up started one (`kind::engine`); a gRPC balance cell's steps are
//!   `kind::grpc_cell`'s (a StatefulSet of replicas, client pods, `kubectl scale`);
//!   `kind::capture`: `--capture` on the lab's own cluster, each pod's network namespace found
//!   on this machine and captured by `local::capture`. The
//!   cluster and its images come from
//!   `kind-images/` (`just kind-up`).
//!
//! Judging and reporting:
//! - [`events`]: what the runner tells reporters, and the reports of cells and runs.
//! - [`runner`]: runs cells on a backend, concurrently and repeatedly, judges them, emits
//!   events; handles Ctrl-C.
//! - [`report`]: reporters (terminal, summary.json, summary.md, junit.xml, report.html); a
//!   connection timeline per cell (`report::timeline`), or a balance cell's request rate per
//!   replica (`report::balance_chart`); a failed connection's sequence diagram across the
//!   hops (`report::sequence`).
//! - [`compare`]: `idlelab compare OLD NEW`, the cells whose verdict or reuse outcome changed
//!   and the releases each run ran; and the release × cell table of `--envoy A,B` and
//!   `--istio A,B` (what changed from one release to the next).
//!
//! Commands:
//! - [`session`]: what `run`, `matrix`, `try` and `bench` share: load, choose the backend,
//!   build the reporters, run.
//! - [`tryout`]: `idlelab try FILE...`, a team's own Istio YAML against the failures.
//! - [`bench`]: `idlelab bench`, the figures the README quotes.
//! - [`cli`]: the `idlelab` command line.

pub mod model;
pub mod tools;
pub mod certs;
pub mod hop;
pub mod config;
pub mod mitigation;
pub mod timescale;
pub mod scenario;
pub mod cells;
pub mod probe;
pub mod capture;
pub mod render;
pub mod backend;
pub mod local;
pub mod kind;
pub mod events;
pub mod runner;
pub mod report;
pub mod compare;
pub mod session;
pub mod tryout;
pub mod bench;
pub mod cli;
