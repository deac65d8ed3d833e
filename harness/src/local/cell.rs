//! One cell in the local lab, stage by stage: its namespaces, Istio's control plane for its
//! proxies, the server and every hop at once, the probe, the evidence; and its teardown.
//!
//! ```text
//!   build_lab ─▶ start_mesh ─▶ start_path (server ∥ hops) ─▶ run_probe ─▶ collect_evidence
//!   CellLab owns all of it: its Drop order is processes, namespaces, files
//! ```

use super::evidence::{envoy_filter_status, http_view};
use super::servers::http_server;
use super::shared::{RunShared, ServerPlace};
use super::topology::{self, Topology};
use super::{device, envoy, mesh, netns, process, servers, sockets};
use crate::backend::evidence::{EnvoyEvidence, LabEvidence};
use crate::backend::{CellFailure, CellOutcome, Phase};
use crate::config::CellConfig;
use crate::hop::Hop;
use crate::model::observation::Observations;
use crate::model::service::Service;
use crate::probe::{ProbeLine, ProbeSpec};
use anyhow::{Context, Result, anyhow, bail};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

static CELL_SEQ: AtomicU32 = AtomicU32::new(0);

/// A cell's number in this run: its namespaces' names and its /24 of addresses
/// (`topology::link_addrs`) come from it.
pub(super) fn next_cell_seq() -> u32 {
    CELL_SEQ.fetch_add(1, Ordering::Relaxed)
}

/// Everything a cell owns, in the order it must go: processes, then namespaces, then files.
struct CellLab {
    /// With `--capture`: the packets of every namespace, from the servers' start on, and each
    /// middlebox's `conntrack -E` (a process: it goes first).
    capture: Option<super::capture::CellCapture>,
    envoys: Vec<(String, envoy::Envoy)>,
    /// Istio's control plane for the cell's proxies (in the app's namespace).
    control_plane: Option<crate::local::control_plane::ControlPlane>,
    server: Option<process::LabProcess>,
    topology: Topology,
    dir: tempfile::TempDir,
}

impl CellLab {
    /// A directory for one Envoy's files, writable by its uid (1337).
    fn envoy_files(&self, role: &str) -> Result<envoy::EnvoyFiles> {
        envoy::EnvoyFiles::create(self.dir.path().join(role))
    }

    /// Every log the cell's processes wrote (control plane, pilot-agents, Envoys, server,
    /// probe), named by their path in the cell's dir.
    fn logs(&self) -> Vec<(String, String)> {
        fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<(String, String)>) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for e in entries.flatten() {
                let path = e.path();
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if path.is_dir() && !path.is_symlink() {
                    walk(&path, root, out);
                } else if (name.ends_with(".log") || name.ends_with(".stderr")) && name != "access.log" {
                    let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('/', "-");
                    out.push((rel, std::fs::read_to_string(&path).unwrap_or_default()));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), self.dir.path(), &mut out);
        out.sort();
        out
    }

    fn teardown(self) -> u64 {
        let t = Instant::now();
        drop(self);
        t.elapsed().as_millis() as u64
    }

    /// Sockets in every namespace that has some, and every middlebox's view.
    async fn snapshot(&self, knobs: &CellConfig, moment: &str, evidence: &mut LabEvidence) {
        for node in &self.topology.nodes {
            if let Some(device) = hop_of(knobs, &node.role).and_then(device::local_device) {
                evidence.middleboxes.extend(device.snapshot(&node.netns, &node.role, moment));
            } else if moment != "after-reuse" {
                evidence.sockets.push(sockets::snapshot(&node.netns, &node.role, moment).await);
            }
        }
    }
}

/// The node role of each path hop that has its own namespace: `mb<index>`, `gw<index>`.
fn node_role(index: usize, hop: &Hop) -> Option<String> {
    hop.on_path().own_node(index)
}

fn hop_of<'a>(knobs: &'a CellConfig, role: &str) -> Option<&'a Hop> {
    knobs.path.iter().enumerate().find(|(i, h)| node_role(*i, h).as_deref() == Some(role)).map(|(_, h)| h)
}

/// The probe's command for the cell's client library.
fn probe_command(knobs: &CellConfig) -> Result<tokio::process::Command> {
    use crate::model::library::Runtime;
    Ok(match knobs.client.library.runtime() {
        Runtime::Rust => {
            let mut cmd = tokio::process::Command::new(crate::tools::idlelab_exe());
            cmd.arg("probe");
            cmd
        }
        Runtime::Go => {
            let bin = crate::tools::go_probe_bin();
            if !bin.is_file() {
                bail!("the Go probe {} is missing: run `just setup` (it builds clients/go with Go)", bin.display());
            }
            tokio::process::Command::new(bin)
        }
        Runtime::External => {
            let argv = knobs.client.command.as_deref().unwrap_or_default();
            let (program, args) = argv.split_first().ok_or_else(|| anyhow!("client.command is empty"))?;
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args);
            if let Some(dir) = &knobs.client.command_dir {
                cmd.current_dir(dir);
            }
            cmd
        }
    })
}

/// What every hop of a cell needs to know to start.
struct HopContext<'a> {
    tag: &'a str,
    /// The cell's objects, its control plane's address and mesh CA, when Istio has proxies
    /// on the path.
    istio: Option<(&'a crate::render::objects::CellObjects, &'a str, &'a crate::certs::MeshCa)>,
    /// The idle timeout the client sidecar's upstream HTTP pool must have (scaled) when no
    /// DestinationRule sets it: the time scale's model, checked against what Envoy received.
    http_pool_idle: Option<crate::model::duration::Dur>,
}

/// Start the server; returns it and how long it took to accept connections.
async fn start_server(
    lab: &CellLab,
    knobs: &CellConfig,
    shared: &RunShared,
    tag: &str,
) -> Result<(process::LabProcess, u64)> {
    let dir = lab.dir.path().join("server");
    std::fs::create_dir(&dir)?;
    let netns = lab.topology.server().netns.path();
    let name = format!("{tag} {} server", knobs.service.name());
    let idle_timeout_s = knobs.server_idle_timeout.0.as_secs();
    let started = Instant::now();
    let place = ServerPlace { service: knobs.service, dir: &dir, netns: &netns, name: &name, idle_timeout_s };
    let server = servers::start(place, shared).await?;
    Ok((server, started.elapsed().as_millis() as u64))
}

/// Set up one hop; returns its Envoy (with the role it plays) when it has one.
async fn start_hop(lab: &CellLab, ctx: &HopContext<'_>, i: usize, hop: &Hop) -> Result<Option<(String, envoy::Envoy)>> {
    use crate::render::objects::ProxyRole;
    // A proxy is Istio's to make (one recipe for every proxy role); anything else is built here.
    let Some(role) = hop.on_path().proxy_role() else {
        let node = node_role(i, hop).expect("a hop that is no proxy has a node of its own");
        let ns = &lab.topology.node(&node).netns;
        match device::local_device(hop) {
            Some(device) => device.start(ns).with_context(|| format!("setting up {} {node}", hop.kind()))?,
            None => bail!("the local lab cannot build a `{}` hop: it is no proxy and has no `LocalDevice`", hop.kind()),
        }
        return Ok(None);
    };
    let node = match node_role(i, hop) {
        Some(own) => lab.topology.node(&own),
        None if role == ProxyRole::ServerSidecar => lab.topology.server(),
        None => lab.topology.app(),
    };
    let (objects, xds, ca) = ctx.istio.expect("Istio's objects for a path with a proxy");
    let p = objects.proxy(role).expect("the objects have every proxy of the path");
    let files = lab.envoy_files(role.name())?;
    let envoy = mesh::start_proxy(p, files, &node.netns, xds, ca)
        .await
        .with_context(|| format!("{} {}", ctx.tag, role.name()))?;
    if let (ProxyRole::Sidecar, Some(expected), Some(fields)) = (role, ctx.http_pool_idle, &envoy.istio_config)
        && let Some(problem) = crate::local::config_dump::http_pool_idle_mismatch(fields, expected)
    {
        bail!("{} sidecar: {problem}", ctx.tag);
    }
    Ok(Some((role.name().to_string(), envoy)))
}

async fn run_in(
    cell: &crate::cells::Cell,
    shared: &RunShared,
    phase: &(dyn Fn(Phase) + Send + Sync),
    slot: &mut Option<CellLab>,
    capture: bool,
) -> Result<(Observations, LabEvidence)> {
    let knobs = &cell.scaled;
    let started = Instant::now();
    phase(Phase::Setup);
    let seq = next_cell_seq();
    let tag = format!("{}{}-c{seq}", netns::PREFIX, std::process::id());
    let lab = slot.insert(build_lab(knobs, &tag, seq).await?);
    let mut evidence = LabEvidence {
        namespaces: lab.topology.nodes.iter().map(|n| n.netns.name.clone()).collect(),
        addresses: lab
            .topology
            .nodes
            .iter()
            .map(|n| (n.role.clone(), n.toward_app.unwrap_or_else(|| topology::link_addrs(seq, 0).0).to_string()))
            .collect(),
        ..Default::default()
    };
    let mesh = start_mesh(lab, cell, shared, seq).await?;
    evidence.server_start_ms = start_path(lab, knobs, shared, &tag, &mesh).await?;
    if capture {
        // From here on: every connection of the probe, from its SYN (the proxies' xDS
        // connections are older and show mid-stream).
        let namespaces: Vec<(String, std::path::PathBuf)> =
            lab.topology.nodes.iter().map(|n| (n.role.clone(), n.netns.path())).collect();
        let forwarders: Vec<String> =
            knobs.path.iter().enumerate().filter_map(|(i, h)| super::capture::forwarding_node(i, h)).collect();
        lab.capture = Some(super::capture::CellCapture::start(&namespaces, &forwarders, lab.dir.path()).await?);
    }
    if let (Some(cp), Some(objects)) = (&lab.control_plane, &mesh.objects) {
        evidence.envoy_filters = envoy_filter_status(cp, &objects.docs).await;
    }
    evidence.setup_ms = started.elapsed().as_millis() as u64;
    if std::env::var("IDLELAB_FAULT").as_deref() == Ok("panic-after-setup") {
        panic!("IDLELAB_FAULT=panic-after-setup: a deliberate panic to test cleanup");
    }
    let observations = run_probe(lab, knobs, &mesh, &tag, phase, &mut evidence).await?;
    collect_evidence(lab, knobs, &observations, &mut evidence).await;
    phase(Phase::Teardown);
    Ok((observations, evidence))
}

/// The cell's namespaces (app, one per hop with a node of its own, server) and its temp dir.
async fn build_lab(knobs: &CellConfig, tag: &str, seq: u32) -> Result<CellLab> {
    let dir = tempfile::Builder::new().prefix(&format!("{tag}-")).tempdir().context("creating the cell's temp dir")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let mut roles = vec!["app".to_string()];
    roles.extend(knobs.path.iter().enumerate().filter_map(|(i, h)| node_role(i, h)));
    roles.push("srv".into());
    let topology = {
        let (tag, span) = (tag.to_string(), tracing::Span::current());
        tokio::task::spawn_blocking(move || span.in_scope(|| Topology::build(&tag, seq, &roles))).await??
    };
    let lab = CellLab { envoys: Vec::new(), control_plane: None, server: None, topology, dir, capture: None };
    // Probe interval and count for libraries that only set the idle time (mysql_async) come
    // from the namespace's sysctls, as they would from the pod's.
    if let Some(ka) = knobs.client.keepalive {
        let app = &lab.topology.app().netns;
        app.sysctl("net.ipv4.tcp_keepalive_intvl", &ka.whole_seconds().1.to_string())?;
        app.sysctl("net.ipv4.tcp_keepalive_probes", &ka.probes.to_string())?;
    }
    Ok(lab)
}

/// What a cell's Istio proxies need: its objects (None on a path without a proxy), the mesh's
/// CA, the run's CA for a TLS gateway, and the address the app connects to.
struct Mesh {
    objects: Option<crate::render::objects::CellObjects>,
    mesh_ca: Option<crate::certs::MeshCa>,
    run_ca: Option<crate::certs::RunCa>,
    target_ip: std::net::Ipv4Addr,
}

/// Istio's objects for the cell and its control plane, serving in every namespace that has a
/// proxy.
async fn start_mesh(lab: &mut CellLab, cell: &crate::cells::Cell, shared: &RunShared, seq: u32) -> Result<Mesh> {
    let knobs = &cell.scaled;
    let srv_ip = lab.topology.server().toward_app.expect("the server has an address");
    // The app connects to the first hop with an address of its own (the gateway), else to the server.
    let target_ip = knobs
        .path
        .iter()
        .enumerate()
        .find_map(|(i, h)| h.on_path().local_host().and(node_role(i, h)))
        .map(|role| lab.topology.node(&role).toward_app.expect("a gateway has an address"))
        .unwrap_or(srv_ip);
    let run_ca = if knobs.service == Service::Https {
        Some(crate::certs::generate().context("generating the run's CA")?)
    } else {
        None
    };
    servers::prepare(knobs.service, shared).await?;
    let app_ip = topology::link_addrs(seq, 0).0;
    let gateway_ip = (target_ip != srv_ip).then_some(target_ip);
    let addrs = crate::render::objects::Addresses { app: app_ip, server: srv_ip, gateway: gateway_ip };
    let cert =
        run_ca.as_ref().map(|c| crate::render::objects::GatewayCert { cert_pem: &c.cert_pem, key_pem: &c.key_pem });
    let objects = crate::render::objects::for_cell(cell, crate::mitigation::LOCAL_NAMESPACE, addrs, cert);
    let mesh_ca = objects.as_ref().map(|_| crate::certs::MeshCa::new()).transpose()?;
    if let Some(objects) = &objects {
        let others: Vec<std::path::PathBuf> = lab
            .topology
            .nodes
            .iter()
            .filter(|n| n.role != "app")
            .filter(|n| {
                (n.role == "srv" && objects.proxy(crate::render::objects::ProxyRole::ServerSidecar).is_some())
                    || (n.role.starts_with("gw"))
            })
            .map(|n| n.netns.path())
            .collect();
        let dir = lab.dir.path().join("control-plane");
        std::fs::create_dir(&dir)?;
        lab.control_plane = Some(mesh::start_control_plane(objects, &lab.topology.app().netns, &others, &dir).await?);
    }
    Ok(Mesh { objects, mesh_ca, run_ca, target_ip })
}

/// The server and every hop, all at once: they do not depend on each other, and each Envoy
/// needs tens of milliseconds to come up. Returns how long the server took to accept.
async fn start_path(lab: &mut CellLab, knobs: &CellConfig, shared: &RunShared, tag: &str, mesh: &Mesh) -> Result<u64> {
    let xds = lab.control_plane.as_ref().map(|cp| cp.addr.clone()).unwrap_or_default();
    let http_pool_idle = knobs
        .service
        .is_http()
        .then(|| knobs.sidecar().and_then(|s| s.http_pool_idle_default()).map(|(d, _)| d))
        .flatten();
    let ctx = HopContext {
        tag,
        istio: mesh.objects.as_ref().zip(mesh.mesh_ca.as_ref()).map(|(o, ca)| (o, xds.as_str(), ca)),
        http_pool_idle,
    };
    let shared_lab: &CellLab = lab;
    let hops = futures_util::future::join_all(
        knobs.path.iter().enumerate().map(|(i, hop)| start_hop(shared_lab, &ctx, i, hop)),
    );
    let (server, hops) = tokio::join!(start_server(shared_lab, knobs, shared, tag), hops);
    // Keep what started even when something else failed, so that it is torn down.
    let mut failure = None;
    for h in hops {
        match h {
            Ok(Some((role, envoy))) => lab.envoys.push((role, envoy)),
            Ok(None) => {}
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    let (server, server_start_ms) = server?;
    lab.server = Some(server);
    match failure {
        Some(e) => Err(e),
        None => Ok(server_start_ms),
    }
}

/// The probe, inside the app namespace, as root (not exempt from capture): this same binary
/// for the Rust libraries, the Go probe for the Go ones, the scenario's own program for an
/// external client; all speak the probe contract (scenarios/PROBE.md). Snapshots the sockets
/// and middleboxes after the warm-up and just before the reuse.
async fn run_probe(
    lab: &mut CellLab,
    knobs: &CellConfig,
    mesh: &Mesh,
    tag: &str,
    phase: &(dyn Fn(Phase) + Send + Sync),
    evidence: &mut LabEvidence,
) -> Result<Observations> {
    let port = knobs.service.port();
    let mut spec = ProbeSpec::for_cell(knobs, format!("{}:{port}", mesh.target_ip));
    // An app names an HTTP service by its host, and Istio routes an `http-*` (`grpc-*`) port by it.
    if knobs.service.is_http() {
        spec.authority = mesh.objects.as_ref().map(|o| format!("{}:{port}", o.ctx.service_host));
    }
    spec.tls_ca_pem = mesh.run_ca.as_ref().map(|ca| ca.ca_pem.clone());
    let mut cmd = probe_command(knobs)?;
    let stderr = std::fs::File::create(lab.dir.path().join("probe.stderr"))?;
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::from(stderr));
    let mut probe = process::spawn(&format!("{tag} probe"), cmd, &lab.topology.app().netns.path(), None)?;
    let mut stdin = probe.child.stdin.take().expect("piped");
    // A probe that exits without reading its spec (a broken external client) closes the pipe:
    // what it printed says more than the EPIPE, so keep reading its stdout.
    match stdin.write_all(&serde_json::to_vec(&spec)?).await {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            tracing::debug!("the probe closed its stdin before reading the spec")
        }
        other => other?,
    }
    drop(stdin);
    let mut lines = BufReader::new(probe.child.stdout.take().expect("piped")).lines();
    let mut observations = None;
    let mut snapshot_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                match serde_json::from_str::<ProbeLine>(&line) {
                    Ok(ProbeLine::Phase { name, idle_ms, .. }) => match name.as_str() {
                        "warm" => phase(Phase::Warm),
                        "idle" => {
                            let ms = idle_ms.unwrap_or(0);
                            phase(Phase::Idle { ms });
                            lab.snapshot(knobs, "after-warm", evidence).await;
                            let margin = (ms / 4).min(300);
                            snapshot_at = Some(tokio::time::Instant::now() + Duration::from_millis(ms.saturating_sub(margin)));
                        }
                        "reuse" => phase(Phase::Reuse),
                        _ => {}
                    },
                    Ok(ProbeLine::Observations(o)) => observations = Some(o),
                    Ok(ProbeLine::Error(e)) => bail!("probe: {e}"),
                    Err(e) => bail!("probe printed something that is not a probe line ({e}): {line}"),
                }
            }
            _ = async { tokio::time::sleep_until(snapshot_at.expect("guarded")).await }, if snapshot_at.is_some() => {
                snapshot_at = None;
                lab.snapshot(knobs, "before-reuse", evidence).await;
            }
        }
    }
    let status = probe.child.wait().await?;
    let observations = observations.ok_or_else(|| anyhow!("the probe exited ({status}) without observations"))?;
    observations.check_contract().map_err(|e| anyhow!("the probe broke its contract (scenarios/PROBE.md): {e}"))?;
    Ok(observations)
}

/// After the reuse: the sockets and middleboxes once more, the HTTP server's request count,
/// and each Envoy's counters and access log.
async fn collect_evidence(lab: &CellLab, knobs: &CellConfig, observations: &Observations, evidence: &mut LabEvidence) {
    lab.snapshot(knobs, "after-reuse", evidence).await;
    if matches!(knobs.service, Service::Http | Service::Https) {
        evidence.server_requests =
            Some(http_server::requests_received(&lab.dir.path().join("server").join(http_server::HTTP_REQUEST_LOG)));
    }
    // The access loggers flush every 100 ms; the last connections closed when the probe exited.
    tokio::time::sleep(Duration::from_millis(150)).await;
    evidence.istio_release = lab.control_plane.as_ref().and_then(|cp| cp.istio.clone());
    for (role, envoy) in &lab.envoys {
        let (version, istio_agent) = envoy.versions().await;
        evidence.envoys.push(EnvoyEvidence {
            role: role.clone(),
            version,
            istio_agent,
            counters: envoy
                .counters(&["idle_timeout", "downstream_cx_total", "upstream_cx_total", "upstream_cx_destroy"])
                .await
                .unwrap_or_default(),
            access_log: envoy.access_log_entries(),
            istio_config: envoy.istio_config.clone(),
        });
    }
    if let Some(received) = &evidence.server_requests {
        evidence.http = Some(http_view(observations, &evidence.envoys, received));
    }
}

/// Run one cell (its scaled knobs; its mitigation's Istio resources). `phase` is told where
/// the cell is. Success or failure, everything the cell created is gone when this returns;
/// the logs of its control plane, proxies and server come back either way.
pub async fn run_cell(
    cell: &crate::cells::Cell,
    shared: &RunShared,
    phase: &(dyn Fn(Phase) + Send + Sync),
    captures: Option<&std::path::Path>,
) -> Result<CellOutcome, CellFailure> {
    let mut slot = None;
    let result = run_in(cell, shared, phase, &mut slot, captures.is_some()).await;
    let mut logs = slot.as_ref().map(CellLab::logs).unwrap_or_default();
    // The capture is written whether the cell passed or failed (a failure is when it matters).
    // None: no capture was asked for (or the cell ended before it started).
    let taken = slot.as_mut().and_then(|lab| lab.capture.take());
    let capture = super::capture::finish_cell(taken, captures, cell).await;
    let capture_note = capture.as_ref().map(super::capture::outcome_note);
    if let Some(line) = &capture_note {
        logs.push(("capture".into(), line.clone()));
    }
    let teardown_ms = match slot {
        Some(lab) => {
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || span.in_scope(|| lab.teardown())).await.unwrap_or(0)
        }
        None => 0,
    };
    match result {
        Ok((observations, mut evidence)) => {
            evidence.teardown_ms = teardown_ms;
            // The capture's note; with the file, which hop acted first on each connection of
            // the app that ended badly.
            let mut capture_notes: Vec<String> = capture_note.into_iter().collect();
            if let Some(Ok(file)) = &capture {
                let (c, notes) = super::capture::judge(file, &cell.scaled, &evidence, cell.time_scale.factor);
                evidence.capture = c;
                capture_notes = notes;
            }
            let grpc = if cell.scaled.service == Service::Grpc {
                super::evidence::grpc_view(&observations, &evidence.envoys)
            } else {
                vec![]
            };
            let notes = evidence
                .http
                .iter()
                .cloned()
                .chain(grpc)
                .chain(evidence.envoy_filters.iter().map(|e| format!("Istio: EnvoyFilter {}: {}", e.name, e.status)))
                .chain(capture_notes)
                .collect();
            Ok(CellOutcome { observations, lab: Some(evidence), notes, logs })
        }
        Err(error) => Err(CellFailure { error, logs }),
    }
}
