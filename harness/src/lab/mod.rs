//! The local backend: one cell = its own network namespaces, processes and temp dir.
//!
//! ```text
//!   netns …-app                    netns …-mb<i> / …-gw<i> (per hop)   netns …-srv
//!   ┌──────────────────────────┐   ┌──────────────────────────────┐   ┌──────────────────────────┐
//!   │ idlelab probe            │──▶│ middlebox: forward+conntrack │──▶│ server (redis, MariaDB,  │
//!   │ [sidecar Envoy + capture]│   │ gateway: Envoy listener (TLS)│   │  memcached, hyper)       │
//!   └──────────────────────────┘   └──────────────────────────────┘   │ [server-sidecar Envoy]   │
//!                                                                     └──────────────────────────┘
//! ```
//!
//! Addresses come from 198.18.0.0/15 (RFC 2544, for benchmarking labs) and exist only inside
//! the cell's namespaces (`topology`): the host namespace gets no lab address, route or rule.
//! Everything a cell creates is owned by a guard whose `Drop` removes it, so success,
//! failure, Ctrl-C and panics all clean up the same way.

pub mod envoy;
pub mod gateway;
pub mod http_server;
pub mod memcached_server;
pub mod middlebox;
pub mod mysql_server;
pub mod netns;
pub mod process;
pub mod redis_server;
pub mod server_sidecar;
pub mod sidecar;
pub mod sockets;
pub mod tls;
pub mod topology;

use crate::events::Phase;
use crate::hop::Hop;
use crate::knobs::Knobs;
use crate::probe::observation::Observations;
use crate::probe::{KeepaliveSecs, ProbeLine, ProbeSpec};
use crate::scenario::Service;
use anyhow::{Context, Result, anyhow, bail};
use middlebox::MiddleboxView;
use serde::Serialize;
use serde_json::Value;
use sockets::SocketSnapshot;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use topology::Topology;

static CELL_SEQ: AtomicU32 = AtomicU32::new(0);

/// What the cells of one run share, removed when the run ends: the MariaDB template data
/// directory, initialised once by the first cell that needs it.
pub struct RunShared {
    dir: tempfile::TempDir,
    mysql_template: tokio::sync::OnceCell<std::path::PathBuf>,
}

impl RunShared {
    pub fn new() -> Result<RunShared> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}{}-run-", netns::PREFIX, std::process::id()))
            .tempdir()
            .context("creating the run's temp dir")?;
        Ok(RunShared { dir, mysql_template: tokio::sync::OnceCell::new() })
    }

    async fn mysql_template(&self) -> Result<&std::path::Path> {
        let dir = self.dir.path();
        self.mysql_template.get_or_try_init(|| mysql_server::init_template(dir)).await.map(|p| p.as_path())
    }
}

/// What one Envoy of the path recorded.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EnvoyEvidence {
    /// `sidecar`, …
    pub role: String,
    /// Non-zero counters about connections and idle timeouts.
    pub counters: BTreeMap<String, u64>,
    /// One JSON object per closed connection (duration, response flags, close reason).
    pub access_log: Vec<Value>,
    /// For a sidecar configured by Istio's code: what decides the outcome, from its config
    /// dump (idle timeout of the app's chain, its cluster's keepalive, where it came from).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub istio_config: Option<Value>,
}

/// What the local lab recorded besides the probe's observations.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LabEvidence {
    pub namespaces: Vec<String>,
    pub addresses: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub envoys: Vec<EnvoyEvidence>,
    /// The TCP sockets of the namespaces with sockets (sock_diag, what `ss -tano` shows),
    /// after warm-up and just before the reuse.
    pub sockets: Vec<SocketSnapshot>,
    /// Each middlebox's conntrack entries and forgotten-segment counter, after warm-up,
    /// before and after the reuse.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub middleboxes: Vec<MiddleboxView>,
    pub setup_ms: u64,
    /// Of the setup: starting the server until it accepts connections (MariaDB includes
    /// copying the template data directory; the run's one-time initialisation is not counted).
    pub server_start_ms: u64,
    pub teardown_ms: u64,
}

pub struct CellOutcome {
    pub observations: Observations,
    pub evidence: LabEvidence,
    /// The logs of the cell's Envoys, pilot-agents and control plane (file name, text), read
    /// before teardown: the runner keeps them for a cell that did not match.
    pub logs: Vec<(String, String)>,
}

/// Everything a cell owns, in the order it must go: processes, then namespaces, then files.
struct CellLab {
    envoys: Vec<(String, envoy::Envoy)>,
    /// Istio's control plane for the cell's sidecar (in the app's namespace).
    control_planes: Vec<crate::istio::ControlPlane>,
    server: Option<process::LabProcess>,
    topology: Topology,
    dir: tempfile::TempDir,
}

impl CellLab {
    /// A directory for one Envoy's files, writable by its uid (1337).
    fn envoy_files(&self, role: &str) -> Result<envoy::EnvoyFiles> {
        let dir = self.dir.path().join(role);
        std::fs::create_dir(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
        Ok(envoy::EnvoyFiles { dir })
    }

    fn teardown(self) -> u64 {
        let t = Instant::now();
        drop(self);
        t.elapsed().as_millis() as u64
    }

    /// Sockets in every namespace that has some, and every middlebox's view.
    async fn snapshot(&self, knobs: &Knobs, moment: &str, evidence: &mut LabEvidence) {
        for node in &self.topology.nodes {
            if node.role.starts_with("mb") {
                if let Some(Hop::Middlebox(_)) = hop_of(knobs, &node.role) {
                    evidence.middleboxes.push(middlebox::snapshot(&node.netns, &node.role, moment));
                }
            } else if moment != "after-reuse" {
                evidence.sockets.push(sockets::snapshot(&node.netns, &node.role, moment).await);
            }
        }
    }
}

/// The node role of each path hop that has its own namespace: `mb<index>`.
fn node_role(index: usize, hop: &Hop) -> Option<String> {
    match hop {
        Hop::Middlebox(_) => Some(format!("mb{index}")),
        Hop::Gateway(_) => Some(format!("gw{index}")),
        Hop::Sidecar(_) | Hop::ServerSidecar(_) => None,
    }
}

fn hop_of<'a>(knobs: &'a Knobs, role: &str) -> Option<&'a Hop> {
    knobs.path.iter().enumerate().find(|(i, h)| node_role(*i, h).as_deref() == Some(role)).map(|(_, h)| h)
}

/// The probe's spec for these (scaled) knobs, connecting to `target`.
pub fn probe_spec_for(knobs: &Knobs, target: String) -> ProbeSpec {
    let ms = |d: crate::duration::Dur| d.0.as_millis() as u64;
    ProbeSpec {
        service: knobs.service,
        target,
        pool: knobs.client.pool,
        keepalive: knobs.client.keepalive.map(|k| {
            let (time_s, interval_s) = k.whole_seconds();
            KeepaliveSecs { time_s, interval_s, probes: k.probes }
        }),
        idle_ms: ms(knobs.idle),
        heartbeat_ms: knobs.client.heartbeat.map(ms),
        pool_max_idle_ms: knobs.client.pool_max_idle.map(ms),
        tcp_user_timeout_ms: knobs.client.tcp_user_timeout.map(ms),
        request_timeout_ms: ms(knobs.client.request_timeout),
        tls_ca_pem: None,
        test_on_borrow: knobs.client.test_on_borrow,
        pool_max_lifetime_ms: knobs.client.pool_max_lifetime.map(ms),
    }
}

/// What every hop of a cell needs to know to start.
struct HopContext<'a> {
    tag: &'a str,
    port: u16,
    /// Where the app connects: the gateway, else the server.
    target_ip: std::net::Ipv4Addr,
    server_ip: std::net::Ipv4Addr,
    /// The app pod's address (its end of the first link).
    app_ip: std::net::Ipv4Addr,
    run_ca: Option<&'a tls::RunCa>,
}

/// Start the server; returns it and how long it took to accept connections.
async fn start_server(
    lab: &CellLab,
    knobs: &Knobs,
    shared: &RunShared,
    tag: &str,
) -> Result<(process::LabProcess, u64)> {
    let dir = lab.dir.path().join("server");
    std::fs::create_dir(&dir)?;
    let ns = lab.topology.server().netns.path();
    let name = format!("{tag} {} server", knobs.service.name());
    let port = knobs.service.port();
    let idle_s = knobs.server_idle_timeout.0.as_secs();
    let started = Instant::now();
    let server = match knobs.service {
        Service::Redis => redis_server::start(&dir, port, idle_s, &ns, &name).await?,
        Service::Mysql => mysql_server::start(shared.mysql_template().await?, &dir, port, idle_s, &ns, &name).await?,
        Service::Memcached => memcached_server::start(port, idle_s, &ns, &name).await?,
        Service::Http | Service::Https => http_server::start(port, &ns, &name).await?,
    };
    Ok((server, started.elapsed().as_millis() as u64))
}

/// What a hop started: its Envoy (by role), and for the client sidecar Istio's control plane.
type StartedHop = Option<(String, envoy::Envoy, Option<crate::istio::ControlPlane>)>;

/// Set up one hop; returns its Envoy (with the role it plays) when it has one.
async fn start_hop(
    lab: &CellLab,
    cell: &crate::cells::Cell,
    ctx: &HopContext<'_>,
    i: usize,
    hop: &Hop,
) -> Result<StartedHop> {
    let knobs = &cell.scaled;
    let (tag, port, service) = (ctx.tag, ctx.port, knobs.service.name());
    Ok(match hop {
        Hop::Sidecar(_) => {
            let files = lab.envoy_files("sidecar")?;
            let app = lab.topology.app();
            let inputs = crate::istio::objects::for_cell(cell, ISTIO_NAMESPACE, ctx.app_ip, ctx.target_ip)
                .expect("a client sidecar on the path");
            let (envoy, cp) = sidecar::start(&inputs, files, &app.netns).await?;
            Some(("sidecar".into(), envoy, Some(cp)))
        }
        Hop::Middlebox(h) => {
            let role = node_role(i, hop).expect("a middlebox has a node");
            let ns = &lab.topology.node(&role).netns;
            middlebox::start(h, ns).with_context(|| format!("setting up middlebox {role}"))?;
            None
        }
        Hop::Gateway(h) => {
            let role = node_role(i, hop).expect("a gateway has a node");
            let files = lab.envoy_files(&role)?;
            let tls_files = match ctx.run_ca {
                Some(ca) if h.tls => {
                    let t = gateway::TlsFiles { cert: files.dir.join("cert.pem"), key: files.dir.join("key.pem") };
                    std::fs::write(&t.cert, &ca.cert_pem)?;
                    std::fs::write(&t.key, &ca.key_pem)?;
                    std::fs::set_permissions(&t.key, std::fs::Permissions::from_mode(0o644))?;
                    Some(t)
                }
                _ => None,
            };
            let node = lab.topology.node(&role);
            let listen = node.toward_app.expect("a gateway has an address");
            let name = format!("{tag} gateway envoy");
            let envoy =
                gateway::start(h, service, listen, ctx.server_ip, port, files, tls_files.as_ref(), &node.netns, &name)
                    .await?;
            Some(("gateway".into(), envoy, None))
        }
        Hop::ServerSidecar(h) => {
            let files = lab.envoy_files("server-sidecar")?;
            let ns = &lab.topology.server().netns;
            let envoy = server_sidecar::start(h, port, files, ns, &format!("{tag} server-sidecar envoy")).await?;
            Some(("server-sidecar".into(), envoy, None))
        }
    })
}

/// The Kubernetes namespace of the objects Istio's control plane serves for a cell.
pub const ISTIO_NAMESPACE: &str = "idlelab";

/// Run one cell (its scaled knobs; its mitigation's Istio resources). `phase` is told where
/// the cell is.
pub async fn run_cell(
    cell: &crate::cells::Cell,
    shared: &RunShared,
    phase: &(dyn Fn(Phase) + Send + Sync),
) -> Result<CellOutcome> {
    let knobs = &cell.scaled;
    let started = Instant::now();
    phase(Phase::Setup);
    let seq = CELL_SEQ.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let tag = format!("{}{pid}-c{seq}", netns::PREFIX);
    let port = knobs.service.port();

    let dir = tempfile::Builder::new().prefix(&format!("{tag}-")).tempdir().context("creating the cell's temp dir")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let mut roles = vec!["app".to_string()];
    roles.extend(knobs.path.iter().enumerate().filter_map(|(i, h)| node_role(i, h)));
    roles.push("srv".into());
    let topology = {
        let (tag, span) = (tag.clone(), tracing::Span::current());
        tokio::task::spawn_blocking(move || span.in_scope(|| Topology::build(&tag, seq, &roles))).await??
    };
    let mut lab = CellLab { envoys: Vec::new(), control_planes: Vec::new(), server: None, topology, dir };
    let srv_ip = lab.topology.server().toward_app.expect("the server has an address");
    let mut evidence = LabEvidence {
        namespaces: lab.topology.nodes.iter().map(|n| n.netns.name.clone()).collect(),
        addresses: lab
            .topology
            .nodes
            .iter()
            .map(|n| {
                let ip = n.toward_app.unwrap_or_else(|| topology::link_addrs(seq, 0).0);
                (n.role.clone(), ip.to_string())
            })
            .collect(),
        ..Default::default()
    };

    // Probe interval and count for libraries that only set the idle time (mysql_async) come
    // from the namespace's sysctls, as they would from the pod's.
    if let Some(ka) = knobs.client.keepalive {
        let app = &lab.topology.app().netns;
        app.sysctl("net.ipv4.tcp_keepalive_intvl", &ka.whole_seconds().1.to_string())?;
        app.sysctl("net.ipv4.tcp_keepalive_probes", &ka.probes.to_string())?;
    }
    // The app connects to the gateway when there is one, else to the server.
    let target_ip = knobs
        .path
        .iter()
        .enumerate()
        .find_map(|(i, h)| matches!(h, Hop::Gateway(_)).then(|| node_role(i, h)).flatten())
        .map(|role| lab.topology.node(&role).toward_app.expect("a gateway has an address"))
        .unwrap_or(srv_ip);
    let run_ca =
        if knobs.service == Service::Https { Some(tls::generate().context("generating the run's CA")?) } else { None };
    if knobs.service == Service::Mysql {
        shared.mysql_template().await?;
    }

    // The server and every hop start at once: they do not depend on each other, and each
    // Envoy needs tens of milliseconds to come up.
    let app_ip = topology::link_addrs(seq, 0).0;
    let ctx = HopContext { tag: &tag, port, target_ip, server_ip: srv_ip, app_ip, run_ca: run_ca.as_ref() };
    let hops = futures_util::future::join_all(
        knobs.path.iter().enumerate().map(|(i, hop)| start_hop(&lab, cell, &ctx, i, hop)),
    );
    let (server, hops) = tokio::join!(start_server(&lab, knobs, shared, &tag), hops);
    // Keep what started even when something else failed, so that it is torn down.
    let mut failure = None;
    for h in hops {
        match h {
            Ok(Some((role, envoy, cp))) => {
                lab.envoys.push((role, envoy));
                lab.control_planes.extend(cp);
            }
            Ok(None) => {}
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    let (server, server_start_ms) = server?;
    lab.server = Some(server);
    if let Some(e) = failure {
        return Err(e);
    }
    evidence.server_start_ms = server_start_ms;
    evidence.setup_ms = started.elapsed().as_millis() as u64;
    if std::env::var("IDLELAB_FAULT").as_deref() == Ok("panic-after-setup") {
        panic!("IDLELAB_FAULT=panic-after-setup: a deliberate panic to test cleanup");
    }

    // The probe: this same binary, inside the app namespace, as root (not exempt from capture).
    let mut spec = probe_spec_for(knobs, format!("{target_ip}:{port}"));
    spec.tls_ca_pem = run_ca.as_ref().map(|ca| ca.ca_pem.clone());
    // /proc/self/exe: this very binary, even if the file was rebuilt since the run started.
    let mut cmd = tokio::process::Command::new("/proc/self/exe");
    let stderr = std::fs::File::create(lab.dir.path().join("probe.stderr"))?;
    cmd.arg("probe")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::from(stderr));
    let mut probe = process::spawn(&format!("{tag} probe"), cmd, &lab.topology.app().netns.path(), None)?;
    let mut stdin = probe.child.stdin.take().expect("piped");
    stdin.write_all(&serde_json::to_vec(&spec)?).await?;
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
                            lab.snapshot(knobs, "after-warm", &mut evidence).await;
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
                lab.snapshot(knobs, "before-reuse", &mut evidence).await;
            }
        }
    }
    let status = probe.child.wait().await?;
    let observations = observations.ok_or_else(|| anyhow!("the probe exited ({status}) without observations"))?;

    lab.snapshot(knobs, "after-reuse", &mut evidence).await;
    // The access loggers flush every 100 ms; the last connections closed when the probe exited.
    tokio::time::sleep(Duration::from_millis(150)).await;
    for (role, envoy) in &lab.envoys {
        evidence.envoys.push(EnvoyEvidence {
            role: role.clone(),
            counters: envoy
                .counters(&["idle_timeout", "downstream_cx_total", "upstream_cx_total", "upstream_cx_destroy"])
                .await
                .unwrap_or_default(),
            access_log: envoy.access_log_entries(),
            istio_config: envoy.istio_config.clone(),
        });
    }
    let mut logs = Vec::new();
    for (role, envoy) in &lab.envoys {
        let name = envoy.log.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        logs.push((format!("{role}-{name}"), std::fs::read_to_string(&envoy.log).unwrap_or_default()));
    }
    for cp in &lab.control_planes {
        logs.push(("idlelab-xds.log".into(), std::fs::read_to_string(&cp.log).unwrap_or_default()));
    }
    phase(Phase::Teardown);
    drop(probe);
    let span = tracing::Span::current();
    evidence.teardown_ms = tokio::task::spawn_blocking(move || span.in_scope(|| lab.teardown())).await?;
    Ok(CellOutcome { observations, evidence, logs })
}
