//! idlelab: reproduce the failures of idle pooled connections behind an Istio sidecar and
//! cloud middleboxes, and record per mitigation whether they still reproduce.
//!
//! # Layout
//!
//! Data flows one way: load → expand → run → observe → judge → report. Each module knows
//! only the ones before it.
//!
//! - [`duration`]: real-world durations as scenario files write them (`70m`, `1h`).
//! - [`scenario`]: load and validate a scenario file (strict: errors name file, line, column).
//! - [`hop`]: one type per hop kind on the path (`sidecar`, …), as the scenario describes it.
//! - [`mitigation`]: one type per mitigation, each with its lab and its Istio rendering.
//! - [`knobs`]: a cell's settings after its mitigation, the single input of a backend.
//! - [`keepalive`]: the kernel's keepalive timer against the middleboxes its probes cross
//!   (when, and how, keepalive ends an idle connection).
//! - [`timescale`]: compress a cell's durations without flipping what decides its outcome.
//! - [`cells`]: expand a scenario into cells (scenario × mitigation), scaled.
//! - [`lab`]: the local backend: namespaces, nftables middleboxes, a real server per cell,
//!   and (`lab::mesh`) the cell's Istio proxies: client sidecar, ingress gateway, server
//!   sidecar, each pilot-agent + Envoy configured by one control plane per cell.
//! - [`istio`]: Istio's own control-plane code (the Go side in `istio/`): the one renderer of
//!   a cell's Kubernetes and Istio objects (`istio::objects`, shared with `kube`), the control
//!   plane over them, pilot-agent + Envoy per proxy, config dumps and their deciding fields.
//! - [`kube`]: the kind backend: the same cells as a plan of kind / istioctl / kubectl
//!   commands and manifests, executed through one command runner.
//! - [`probe`]: `idlelab probe`, a real client pool that warms, idles and reuses; one module
//!   per Rust client library; `probe::library` names every library (Rust, the Go ones in
//!   `clients/go`, an external program) and its settings, behind one contract
//!   (`scenarios/PROBE.md`).
//! - [`verdict`]: the verdict, a pure function of the probe's observations.
//! - [`events`]: what the runner tells reporters.
//! - [`runner`]: runs cells concurrently (and repeatedly), judges them, emits events; handles
//!   Ctrl-C.
//! - [`report`]: reporters (terminal, summary.json, summary.md, junit.xml, report.html) that
//!   consume events.
//! - [`compare`]: `idlelab compare OLD NEW`, the cells whose verdict changed.
//! - [`tryout`]: `idlelab try FILE...`, a team's own Istio YAML (the `istio-yaml`
//!   mitigation) against the failures: verdict before → after and the diff of what Istio
//!   generated.
//! - [`doctor`]: prerequisites, found or missing, with their fixes.
//! - [`bench`]: `idlelab bench`, the figures the README quotes.
//! - [`cli`]: the `idlelab` command line.

pub mod backend;
pub mod bench;
pub mod cells;
pub mod certs;
pub mod cli;
pub mod compare;
pub mod config;
pub mod events;
pub mod hop;
pub mod kind;
pub mod local;
pub mod mitigation;
pub mod model;
pub mod probe;
pub mod render;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod session;
pub mod timescale;
pub mod tools;
pub mod tryout;
