//! A gRPC balance cell in the local lab: client pods, a node with kube-proxy's rules, and the
//! replicas of one Deployment, each in a namespace of its own.
//!
//! ```text
//!   netns …-c0  idlelab probe-grpc ─┐                          ┌─ netns …-r0  idlelab serve-grpc
//!   netns …-c1  idlelab probe-grpc ─┼─ netns …-node ───────────┼─ netns …-r1  (counts its requests
//!   netns …-c2  idlelab probe-grpc ─┘  ClusterIP: nft DNAT,    └─ …            every 200 ms)
//!                                      one pick per connection
//! ```
//!
//! Each client and replica has a veth to the node (a /30 from the cell's /24); the node
//! forwards, and its kube-proxy table (`cluster_ip`) turns the ClusterIP into one replica
//! per new connection. A scale event starts the new replicas, waits until they accept (a
//! Ready pod), then syncs the table with every endpoint, as kube-proxy does. The clients run
//! for the scenario's duration; the balance is read from the replicas' own counts.
//!
//! With a `sidecar` hop every client pod gets Istio's sidecar, with a `server-sidecar` hop
//! every replica does, each made as in the other cells (`local::mesh`): one control plane in
//! the node's namespace serves them all (`render::objects::for_grpc_cell`). A scale event
//! then also rewrites the Service's EndpointSlice in the control plane, as the endpoint
//! controller would, and waits until every client sidecar holds the new endpoints (EDS).

use super::cluster_ip;
use super::envoy::{Envoy, EnvoyFiles};
use super::netns::{self, Netns};
use super::process::{self, LabProcess};
use super::topology::link_addrs;
use crate::backend::balance::BalanceRun;
use crate::backend::{CellFailure, CellOutcome, Phase};
use crate::config::GrpcConfig;
use crate::local::grpc_replica::read_counts;
use crate::model::balance::ReplicaCount;
use crate::model::library::Library;
use crate::model::observation::Observations;
use crate::probe::grpc::{GrpcProbeReport, GrpcProbeSpec, unix_ms};
use crate::render::objects::{CellObjects, GrpcAddresses, ProxyInputs};
use anyhow::{Context, Result, anyhow, bail};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const PORT: u16 = 50051;

/// Everything the cell owns, in the order it must go: processes, namespaces, files.
struct GrpcLab {
    /// With `--capture`: every namespace's packets, from the clients' start (first, so that
    /// it stops before the namespaces go).
    capture: Option<super::capture::CellCapture>,
    /// The sidecars, by pod name (`client-0`, `grpc-3`).
    envoys: Vec<(String, Envoy)>,
    control_plane: Option<crate::local::control_plane::ControlPlane>,
    processes: Vec<LabProcess>,
    replicas: Vec<Netns>,
    clients: Vec<Netns>,
    node: Netns,
    dir: tempfile::TempDir,
    seq: u32,
    cluster_ip: Ipv4Addr,
    /// Istio's objects and the mesh's CA, when a pod has a sidecar.
    mesh: Option<(CellObjects, crate::certs::MeshCa)>,
}

impl GrpcLab {
    /// Client `k` is on link `k`, replica `i` on link 16 + `i` (at most 16 clients, 32 replicas).
    fn replica_addr(&self, i: usize) -> Ipv4Addr {
        link_addrs(self.seq, 16 + i as u32).1
    }
    fn counts_file(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("replica-{i}.counts"))
    }

    /// Start replica `i` in its namespace and wait until it accepts connections: tonic (this
    /// binary's `serve-grpc`) or grpc-go (the Go probe's, the same flags and counts).
    async fn start_replica(&mut self, i: usize, grpc: &GrpcConfig) -> Result<()> {
        let mut cmd = program_of(grpc.server_library)?;
        cmd.args(["serve-grpc", "--listen", &format!("0.0.0.0:{PORT}"), "--replica", &i.to_string(), "--counts"])
            .arg(self.counts_file(i));
        if let Some(age) = grpc.max_connection_age {
            cmd.arg("--max-connection-age-ms").arg(age.0.as_millis().to_string());
        }
        if let Some(grace) = grpc.max_connection_age_grace {
            cmd.arg("--max-connection-age-grace-ms").arg(grace.0.as_millis().to_string());
        }
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join(format!("replica-{i}.stderr")))?);
        let ns = self.replicas[i].path();
        self.processes.push(process::spawn(&format!("replica {i}"), cmd, &ns, None)?);
        netns::wait_listening(&ns, PORT, Duration::from_secs(10))
            .await
            .with_context(|| format!("replica {i} did not accept connections"))
    }

    /// kube-proxy's sync: the ClusterIP over the first `n` replicas.
    fn sync_endpoints(&self, n: usize) -> Result<()> {
        let endpoints: Vec<Ipv4Addr> = (0..n).map(|i| self.replica_addr(i)).collect();
        self.node.nft_apply("kube-proxy", &cluster_ip::ruleset(self.cluster_ip, PORT, &endpoints))
    }

    fn logs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut logs = vec![];
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".stderr") {
                    logs.push((name, e.path()));
                }
            }
        }
        logs.extend(self.envoys.iter().map(|(pod, e)| (format!("{pod}-pilot-agent.log"), e.log.clone())));
        if let Some(cp) = &self.control_plane {
            logs.push(("idlelab-xds.log".into(), cp.log.clone()));
        }
        for (name, path) in logs {
            out.push((name, std::fs::read_to_string(path).unwrap_or_default()));
        }
        out.sort();
        out
    }

    /// The proxy of pod `name` (a client's or a replica's), when the path gives it one.
    fn proxy_inputs(&self, name: &str) -> Option<&ProxyInputs> {
        self.mesh.as_ref()?.0.proxies.iter().find(|p| p.pod.name == name)
    }

    /// The namespace of pod `client-<k>` or `grpc-<i>`.
    fn netns_of(&self, pod: &str) -> Option<&Netns> {
        if let Some(k) = pod.strip_prefix("client-") {
            return self.clients.get(k.parse::<usize>().ok()?);
        }
        self.replicas.get(pod.strip_prefix("grpc-")?.parse::<usize>().ok()?)
    }

    /// Start the sidecars of these pods at once, those the path gives one; they join `envoys`.
    async fn start_sidecars(&mut self, pods: &[String]) -> Result<()> {
        let started = {
            let lab: &GrpcLab = self;
            let (Some((_, ca)), Some(cp)) = (&lab.mesh, &lab.control_plane) else { return Ok(()) };
            let mut starts = Vec::new();
            for pod in pods {
                let (Some(p), Some(ns)) = (lab.proxy_inputs(pod), lab.netns_of(pod)) else { continue };
                let files = EnvoyFiles::create(lab.dir.path().join(pod))?;
                starts.push(async move {
                    let e = super::mesh::start_proxy(p, files, ns, &cp.addr, ca).await;
                    (pod.clone(), e.with_context(|| format!("the sidecar of {pod}")))
                });
            }
            futures_util::future::join_all(starts).await
        };
        // Keep what started even when one failed, so that it is torn down.
        let mut failure = None;
        for (pod, e) in started {
            match e {
                Ok(e) => self.envoys.push((pod, e)),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// After a scale: the endpoint controller's EndpointSlice over the first `n` replicas,
    /// to the control plane; then wait until every client sidecar holds those endpoints.
    /// Returns how long the sidecars took (None without a control plane).
    async fn sync_eds(&mut self, n: usize) -> Result<Option<u64>> {
        let endpoints: Vec<Ipv4Addr> = (0..n).map(|i| self.replica_addr(i)).collect();
        let Some(cp) = self.control_plane.as_mut() else { return Ok(None) };
        let started = Instant::now();
        let ns = crate::mitigation::LOCAL_NAMESPACE;
        let svc = crate::model::service::Service::Grpc;
        cp.apply(&crate::render::objects::endpoint_slice_doc(svc.name(), ns, svc, &endpoints)).await?;
        for (pod, envoy) in self.envoys.iter().filter(|(p, _)| p.starts_with("client-")) {
            let cluster = self.proxy_inputs(pod).map(|p| p.cluster.clone()).unwrap_or_default();
            loop {
                let text = envoy.admin.get("/clusters").await?;
                if super::config_dump::healthy_hosts(&text, &cluster).len() == n {
                    break;
                }
                if started.elapsed() > Duration::from_secs(10) {
                    bail!("{pod}'s sidecar did not get {n} endpoints of {cluster} within 10 s");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(Some(started.elapsed().as_millis() as u64))
    }
}

/// The namespaces and links: the node, each client, each replica (the most the run scales to).
fn build(grpc: &GrpcConfig, tag: &str, seq: u32) -> Result<GrpcLab> {
    let dir = tempfile::Builder::new().prefix(&format!("{tag}-")).tempdir().context("creating the cell's temp dir")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let node = Netns::create(format!("{tag}-node"))?;
    // The ClusterIP: an address of the cell's /24 that no link uses (links take .0 – .191).
    let cluster_ip = Ipv4Addr::from(u32::from(link_addrs(seq, 0).0) - 1 + 252);
    let mut lab = GrpcLab {
        capture: None,
        envoys: vec![],
        control_plane: None,
        processes: vec![],
        replicas: vec![],
        clients: vec![],
        node,
        dir,
        seq,
        cluster_ip,
        mesh: None,
    };
    let mut node_lines = vec!["link set lo up".to_string()];
    let mut leaf = |name: String, link: u32, dev: String| -> Result<Netns> {
        let ns = Netns::create(name)?;
        let (node_end, _) = link_addrs(seq, link);
        node_lines.push(format!("link add {dev} type veth peer name eth0 netns {}", ns.name));
        node_lines.push(format!("addr add {node_end}/30 dev {dev}"));
        node_lines.push(format!("link set {dev} up"));
        Ok(ns)
    };
    for k in 0..grpc.clients {
        lab.clients.push(leaf(format!("{tag}-c{k}"), k as u32, format!("c{k}"))?);
    }
    for i in 0..grpc.max_replicas() as usize {
        lab.replicas.push(leaf(format!("{tag}-r{i}"), 16 + i as u32, format!("r{i}"))?);
    }
    lab.node.ip_batch(&node_lines)?;
    lab.node.sysctl("net.ipv4.ip_forward", "1")?;
    let links = (0..grpc.clients)
        .map(|k| (k as u32, &lab.clients[k]))
        .chain((0..lab.replicas.len()).map(|i| (16 + i as u32, &lab.replicas[i])));
    for (link, ns) in links {
        let (node_end, leaf_end) = link_addrs(seq, link);
        ns.ip_batch(&[
            "link set lo up".into(),
            format!("addr add {leaf_end}/30 dev eth0"),
            "link set eth0 up".into(),
            format!("route add default via {node_end}"),
        ])?;
    }
    Ok(lab)
}

/// The program that hosts `library`'s side of the lab's gRPC service: this binary for tonic,
/// the Go probe for grpc-go (both take `serve-grpc` and `probe-grpc` with the same contract).
fn program_of(library: Library) -> Result<tokio::process::Command> {
    if library != Library::GrpcGo {
        return Ok(tokio::process::Command::new(crate::tools::idlelab_exe()));
    }
    let bin = crate::tools::go_probe_bin();
    if !bin.is_file() {
        bail!("the Go probe {} is missing: run `just setup` (it builds clients/go with Go)", bin.display());
    }
    Ok(tokio::process::Command::new(bin))
}

/// One client pod's probe: its spec on stdin, its report on stdout. tonic is this binary's
/// `probe-grpc`, grpc-go the Go probe's (the same contract).
async fn run_client(lab: &GrpcLab, k: usize, spec: &GrpcProbeSpec, library: Library) -> Result<LabProcess> {
    let mut cmd = program_of(library)?;
    cmd.arg("probe-grpc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(lab.dir.path().join(format!("client-{k}.stderr")))?);
    let mut p = process::spawn(&format!("client {k}"), cmd, &lab.clients[k].path(), None)?;
    let mut stdin = p.child.stdin.take().expect("piped");
    stdin.write_all(&serde_json::to_vec(spec)?).await?;
    drop(stdin);
    Ok(p)
}

async fn client_report(mut p: LabProcess) -> Result<GrpcProbeReport> {
    use tokio::io::AsyncReadExt;
    let mut out = String::new();
    p.child.stdout.take().expect("piped").read_to_string(&mut out).await?;
    let status = p.child.wait().await?;
    if !status.success() {
        bail!("{} exited with {status}", p.name);
    }
    serde_json::from_str(out.trim()).with_context(|| format!("{}: its report is not JSON: {out}", p.name))
}

/// The resident memory of a proxy's processes: pilot-agent and Envoy both run in its dir
/// (`local::proxy`), so every process whose working directory is under `dir` is counted.
fn proxy_rss_kib(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|e| std::fs::read_link(e.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(dir)))
        .map(|e| crate::probe::status_kib_of(&e.path().join("status"), "VmRSS"))
        .sum()
}

/// What Istio gave each kind of sidecar, from its config dump (the first of each kind).
async fn sidecar_notes(lab: &GrpcLab) -> Vec<String> {
    let mut notes = Vec::new();
    for (prefix, what) in [("client-", "client sidecars"), ("grpc-", "replica sidecars")] {
        let Some((pod, envoy)) = lab.envoys.iter().find(|(p, _)| p.starts_with(prefix)) else { continue };
        let n = lab.envoys.iter().filter(|(p, _)| p.starts_with(prefix)).count();
        let Some(f) = &envoy.istio_config else { continue };
        let mut line = format!(
            "configuration: {n} {what} (Istio's config, read from {pod}'s Envoy): listener {}, cluster {}",
            f["listener"].as_str().unwrap_or("?"),
            f["cluster"].as_str().unwrap_or("?"),
        );
        if let Some(lb) = f["lb_policy"].as_str() {
            line.push_str(&format!(", lb_policy {lb}"));
        }
        if prefix == "client-" {
            let cluster = f["cluster"].as_str().unwrap_or_default();
            if let Ok(text) = envoy.admin.get("/clusters").await {
                let hosts = super::config_dump::healthy_hosts(&text, cluster);
                line.push_str(&format!(", {} endpoints (EDS): {}", hosts.len(), hosts.join(" ")));
            }
        }
        // The releases, as the running Envoy and its pilot-agent report them (`--envoy`,
        // `--istio` or the default ones).
        let (envoy_release, agent_release) = envoy.versions().await;
        if let Some(v) = envoy_release {
            line.push_str(&format!("; Envoy {v}"));
        }
        if let Some(v) = agent_release {
            line.push_str(&format!("; Istio {v}"));
        }
        notes.push(line);
    }
    notes
}

/// Each sidecar's connections after the run, from Envoy's counters: how many connections it
/// opened upstream and how many of them a GOAWAY ended (`upstream_cx_close_notify`: the
/// connection's peer asked to close; here, MaxConnectionAge), and what it accepted downstream.
async fn sidecar_counters(lab: &GrpcLab) -> Vec<String> {
    let mut notes = Vec::new();
    for (pod, envoy) in &lab.envoys {
        let Some(cluster) = lab.proxy_inputs(pod).map(|p| p.cluster.clone()) else { continue };
        let Ok(c) = envoy
            .counters(&["upstream_cx_total", "upstream_cx_close_notify", "upstream_rq_total", "downstream_cx_total"])
            .await
        else {
            continue;
        };
        // Istio's stats carry a `;` after the name their tags were extracted from.
        let get = |scope: &str, name: &str| {
            c.get(&format!("{scope};.{name}")).or_else(|| c.get(&format!("{scope}.{name}"))).copied().unwrap_or(0)
        };
        let replica = pod.starts_with("grpc-");
        let hcm = format!("http.{}_0.0.0.0_{PORT}", if replica { "inbound" } else { "outbound" });
        let (from, to, peer) =
            if replica { ("clients", "its app", "the app's") } else { ("its app", "replicas", "a replica's") };
        let cluster_scope = format!("cluster.{cluster}");
        notes.push(format!(
            "{pod}'s sidecar (Envoy's counters): accepted {} HTTP/2 connection(s) from {from} ({hcm}.downstream_cx_total); opened {} to {to} (cluster {cluster}, {} requests), {} of them ended by {peer} GOAWAY (upstream_cx_close_notify)",
            get(&hcm, "downstream_cx_total"),
            get(&cluster_scope, "upstream_cx_total"),
            get(&cluster_scope, "upstream_rq_total"),
            get(&cluster_scope, "upstream_cx_close_notify"),
        ));
    }
    notes
}

async fn run_in(
    cell: &crate::cells::Cell,
    phase: &(dyn Fn(Phase) + Send + Sync),
    slot: &mut Option<GrpcLab>,
    capture: bool,
) -> Result<(Observations, Vec<String>)> {
    let grpc = cell.scaled.grpc.clone().ok_or_else(|| anyhow!("not a gRPC cell"))?;
    phase(Phase::Setup);
    let seq = super::cell::next_cell_seq();
    let tag = format!("{}{}-c{seq}", netns::PREFIX, std::process::id());
    let lab = {
        let (g, tag, span) = (grpc.clone(), tag.clone(), tracing::Span::current());
        let built = tokio::task::spawn_blocking(move || span.in_scope(|| build(&g, &tag, seq))).await??;
        slot.insert(built)
    };
    // Istio's objects and control plane, when a pod has a sidecar.
    let addrs = GrpcAddresses {
        cluster_ip: lab.cluster_ip,
        clients: (0..grpc.clients).map(|k| link_addrs(seq, k as u32).1).collect(),
        replicas: (0..grpc.max_replicas() as usize).map(|i| lab.replica_addr(i)).collect(),
        ready: grpc.replicas as usize,
    };
    if let Some(objects) = crate::render::objects::for_grpc_cell(cell, crate::mitigation::LOCAL_NAMESPACE, &addrs) {
        let others: Vec<std::path::PathBuf> =
            objects.proxies.iter().filter_map(|p| lab.netns_of(&p.pod.name)).map(Netns::path).collect();
        let dir = lab.dir.path().join("control-plane");
        std::fs::create_dir(&dir)?;
        lab.control_plane = Some(super::mesh::start_control_plane(&objects, &lab.node, &others, &dir).await?);
        lab.mesh = Some((objects, crate::certs::MeshCa::new()?));
    }
    for i in 0..grpc.replicas as usize {
        lab.start_replica(i, &grpc).await?;
    }
    let pods: Vec<String> = (0..grpc.replicas as usize)
        .map(|i| format!("grpc-{i}"))
        .chain((0..grpc.clients).map(|k| format!("client-{k}")))
        .collect();
    lab.start_sidecars(&pods).await?;
    lab.sync_endpoints(grpc.replicas as usize)?;
    let mut notes = vec![format!(
        "configuration: ClusterIP {}:{PORT} in the node's namespace, kube-proxy's nftables form (numgen random mod {} → dnat to each replica)",
        lab.cluster_ip, grpc.replicas
    )];
    if let Some(release) = lab.control_plane.as_ref().and_then(|cp| cp.istio.as_ref()) {
        notes.push(format!("configuration: Istio {release} configured the sidecars (its control plane reported it)"));
    }
    notes.extend(sidecar_notes(lab).await);
    if let Some(age) = grpc.max_connection_age {
        notes.push(match grpc.server_library {
            Library::GrpcGo => format!(
                "configuration: every replica (grpc-go) sends GOAWAY to a connection {age} old (keepalive.ServerParameters MaxConnectionAge), calls in flight get {} (MaxConnectionAgeGrace)",
                grpc.max_connection_age_grace.map(|g| g.to_string()).unwrap_or_else(|| "as long as they need (grpc-go's default)".into())
            ),
            _ => format!("configuration: every replica sends GOAWAY to a connection {age} old (tonic max_connection_age)"),
        });
    }
    if grpc.headless {
        notes.push(format!(
            "configuration: the clients address the {} replicas Ready at their start (a headless Service's records), not the ClusterIP",
            grpc.replicas
        ));
    }

    // Headless: the addresses of the replicas Ready when the client resolves (its start).
    let targets: Vec<String> = if grpc.headless || grpc.lb.over_every_replica() {
        (0..grpc.replicas as usize).map(|i| format!("{}:{PORT}", lab.replica_addr(i))).collect()
    } else {
        vec![format!("{}:{PORT}", lab.cluster_ip)]
    };
    if capture {
        // From the clients' start (the lab's own readiness checks of the replicas are not the
        // cell's connections): each pod's namespace by its pod name, and the node's, one
        // interface block per interface, on one clock. The node forwards through kube-proxy's
        // rules; it is no middlebox, so its conntrack is not watched.
        let namespaces: Vec<(String, std::path::PathBuf)> = (lab.clients.iter().enumerate())
            .map(|(k, ns)| (format!("client-{k}"), ns.path()))
            .chain(std::iter::once(("node".to_string(), lab.node.path())))
            .chain(lab.replicas.iter().enumerate().map(|(i, ns)| (format!("grpc-{i}"), ns.path())))
            .collect();
        lab.capture = Some(super::capture::CellCapture::start(&namespaces, &[], lab.dir.path()).await?);
    }
    phase(Phase::Warm);
    let t0 = unix_ms();
    let mut clients = Vec::new();
    for k in 0..grpc.clients {
        let spec = GrpcProbeSpec::for_client(&cell.scaled, format!("client-{k}"), targets.clone());
        clients.push(run_client(lab, k, &spec, cell.scaled.client.library).await?);
    }
    let started = Instant::now();
    // Scale events, on time: new replicas start, then join the ClusterIP once they accept.
    let mut cuts = Vec::new();
    let mut replicas_now = grpc.replicas as usize;
    for (at, to) in &grpc.scale {
        tokio::time::sleep_until((started + at.0).into()).await;
        let new: Vec<usize> = (replicas_now..*to as usize).collect();
        for &i in &new {
            lab.start_replica(i, &grpc).await?;
        }
        lab.start_sidecars(&new.iter().map(|i| format!("grpc-{i}")).collect::<Vec<_>>()).await?;
        lab.sync_endpoints(*to as usize)?;
        let cut = unix_ms().saturating_sub(t0);
        let eds_ms = lab.sync_eds(*to as usize).await?;
        notes.push(format!(
            "scaled to {to} replicas at {:.1} s (asked for {at}): kube-proxy's map now has {to} entries{}",
            cut as f64 / 1000.0,
            match eds_ms {
                Some(ms) if lab.envoys.iter().any(|(p, _)| p.starts_with("client-")) =>
                    format!("; every client sidecar held {to} endpoints (EDS) {ms} ms after the EndpointSlice changed"),
                _ => String::new(),
            }
        ));
        cuts.push((cut, *to as usize));
        replicas_now = *to as usize;
    }
    let mut reports = Vec::new();
    for p in clients {
        reports.push(client_report(p).await?);
    }
    // Two sampling periods: every replica's last count is on disk.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let end_ms = unix_ms().saturating_sub(t0);
    let counts: Vec<Vec<ReplicaCount>> =
        (0..replicas_now).map(|i| read_counts(&lab.counts_file(i))).collect::<Result<_>>()?;
    notes.extend(sidecar_counters(lab).await);
    let sidecar_rss_kib: Vec<(String, u64)> =
        lab.envoys.iter().map(|(pod, _)| (pod.clone(), proxy_rss_kib(&lab.dir.path().join(pod)))).collect();
    let (balance, balance_notes) = crate::backend::balance::observe(BalanceRun {
        t0,
        end_ms,
        initial: grpc.replicas as usize,
        cuts,
        counts,
        reports,
        threshold: grpc.threshold,
        sidecar_rss_kib,
    });
    notes.extend(balance_notes);
    phase(Phase::Teardown);
    let observations = Observations::of_balance("grpc", format!("{}:{PORT}", lab.cluster_ip), end_ms, balance);
    Ok((observations, notes))
}

/// Run one gRPC balance cell. Success or failure, everything it created is gone on return.
pub async fn run_cell(
    cell: &crate::cells::Cell,
    phase: &(dyn Fn(Phase) + Send + Sync),
    captures: Option<&std::path::Path>,
) -> Result<CellOutcome, CellFailure> {
    let mut slot = None;
    let result = run_in(cell, phase, &mut slot, captures.is_some()).await;
    let mut logs = slot.as_ref().map(GrpcLab::logs).unwrap_or_default();
    // Written whether the cell passed or failed; a balance run has no connection that ended
    // badly, so nothing is attributed.
    let capture = slot.as_mut().and_then(|lab| lab.capture.take());
    let capture_note =
        super::capture::finish_cell(capture, captures, cell).await.as_ref().map(super::capture::outcome_note);
    if let Some(line) = &capture_note {
        logs.push(("capture".into(), line.clone()));
    }
    if let Some(lab) = slot {
        let span = tracing::Span::current();
        let _ = tokio::task::spawn_blocking(move || span.in_scope(|| drop(lab))).await;
    }
    match result {
        Ok((observations, mut notes)) => {
            notes.extend(capture_note);
            Ok(CellOutcome { observations, lab: None, notes, logs })
        }
        Err(error) => Err(CellFailure { error, logs }),
    }
}
