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

use super::cluster_ip;
use super::netns::{self, Netns};
use super::process::{self, LabProcess};
use super::topology::link_addrs;
use crate::backend::{CellFailure, CellOutcome, Phase};
use crate::config::GrpcConfig;
use crate::local::grpc_replica::{ReplicaCount, read_counts};
use crate::model::balance::{BalanceObservation, GrpcLb, segments};
use crate::model::duration::Dur;
use crate::model::observation::Observations;
use crate::probe::grpc::{GrpcProbeReport, GrpcProbeSpec, unix_ms};
use anyhow::{Context, Result, anyhow, bail};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const PORT: u16 = 50051;

/// Everything the cell owns, in the order it must go: processes, namespaces, files.
struct GrpcLab {
    processes: Vec<LabProcess>,
    replicas: Vec<Netns>,
    clients: Vec<Netns>,
    node: Netns,
    dir: tempfile::TempDir,
    seq: u32,
    cluster_ip: Ipv4Addr,
}

impl GrpcLab {
    /// Client `k` is on link `k`, replica `i` on link 16 + `i` (at most 16 clients, 32 replicas).
    fn replica_addr(&self, i: usize) -> Ipv4Addr {
        link_addrs(self.seq, 16 + i as u32).1
    }
    fn counts_file(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("replica-{i}.counts"))
    }

    /// Start replica `i` in its namespace and wait until it accepts connections.
    async fn start_replica(&mut self, i: usize, max_connection_age: Option<Dur>) -> Result<()> {
        let mut cmd = tokio::process::Command::new(crate::tools::idlelab_exe());
        cmd.args(["serve-grpc", "--listen", &format!("0.0.0.0:{PORT}"), "--replica", &i.to_string(), "--counts"])
            .arg(self.counts_file(i));
        if let Some(age) = max_connection_age {
            cmd.arg("--max-connection-age-ms").arg(age.0.as_millis().to_string());
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
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".stderr") {
                    out.push((name, std::fs::read_to_string(e.path()).unwrap_or_default()));
                }
            }
        }
        out.sort();
        out
    }
}

/// The namespaces and links: the node, each client, each replica (the most the run scales to).
fn build(grpc: &GrpcConfig, tag: &str, seq: u32) -> Result<GrpcLab> {
    let dir = tempfile::Builder::new().prefix(&format!("{tag}-")).tempdir().context("creating the cell's temp dir")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let node = Netns::create(format!("{tag}-node"))?;
    // The ClusterIP: an address of the cell's /24 that no link uses (links take .0 – .191).
    let cluster_ip = Ipv4Addr::from(u32::from(link_addrs(seq, 0).0) - 1 + 252);
    let mut lab = GrpcLab { processes: vec![], replicas: vec![], clients: vec![], node, dir, seq, cluster_ip };
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

/// One client pod's probe: its spec on stdin, its report on stdout.
async fn run_client(lab: &GrpcLab, k: usize, spec: &GrpcProbeSpec) -> Result<LabProcess> {
    let mut cmd = tokio::process::Command::new(crate::tools::idlelab_exe());
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

/// The replicas' counts as one timeline: every 200 ms from `t0`, what each had served.
fn timeline(counts: &[Vec<ReplicaCount>], t0: u64, end_ms: u64) -> Vec<(u64, Vec<u64>)> {
    (0..=end_ms / 200)
        .map(|step| {
            let at = t0 + step * 200;
            let served = counts
                .iter()
                .map(|c| c.iter().take_while(|x| x.unix_ms <= at).last().map(|x| x.served).unwrap_or(0))
                .collect();
            (step * 200, served)
        })
        .collect()
}

/// For each replica added at `cut` (ms): when it had served half its fair share of the
/// segment that starts there (the segment's total / replicas / 2), counted from `cut`.
fn time_to_share(
    timeline: &[(u64, Vec<u64>)],
    seg: &crate::model::balance::Segment,
    added: &[usize],
) -> Vec<(usize, Option<u64>)> {
    let n = seg.served.len().max(1) as u64;
    let half_share = (seg.total() / n / 2).max(1);
    let base = |i: usize| {
        timeline.iter().take_while(|(t, _)| *t <= seg.from_ms).last().and_then(|(_, v)| v.get(i).copied()).unwrap_or(0)
    };
    added
        .iter()
        .map(|&i| {
            let b = base(i);
            let when = timeline
                .iter()
                .filter(|(t, _)| *t >= seg.from_ms && *t <= seg.to_ms)
                .find(|(_, v)| v.get(i).copied().unwrap_or(0).saturating_sub(b) >= half_share)
                .map(|(t, _)| t - seg.from_ms);
            (i, when)
        })
        .collect()
}

async fn run_in(
    cell: &crate::cells::Cell,
    phase: &(dyn Fn(Phase) + Send + Sync),
    slot: &mut Option<GrpcLab>,
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
    for i in 0..grpc.replicas as usize {
        lab.start_replica(i, grpc.max_connection_age).await?;
    }
    lab.sync_endpoints(grpc.replicas as usize)?;
    let mut notes = vec![format!(
        "configuration: ClusterIP {}:{PORT} in the node's namespace, kube-proxy's nftables form (numgen random mod {} → dnat to each replica)",
        lab.cluster_ip, grpc.replicas
    )];
    if let Some(age) = grpc.max_connection_age {
        notes.push(format!(
            "configuration: every replica sends GOAWAY to a connection {age} old (tonic max_connection_age)"
        ));
    }
    if grpc.headless {
        notes.push(format!(
            "configuration: the clients address the {} replicas Ready at their start (a headless Service's records), not the ClusterIP",
            grpc.replicas
        ));
    }

    // Headless: the addresses of the replicas Ready when the client resolves (its start).
    let targets: Vec<std::net::SocketAddr> = match (grpc.headless, grpc.lb) {
        (true, _) | (_, GrpcLb::BalanceList) => {
            (0..grpc.replicas as usize).map(|i| (lab.replica_addr(i), PORT).into()).collect()
        }
        _ => vec![(lab.cluster_ip, PORT).into()],
    };
    phase(Phase::Warm);
    let t0 = unix_ms();
    let mut clients = Vec::new();
    for k in 0..grpc.clients {
        let spec = GrpcProbeSpec {
            client: format!("client-{k}"),
            targets: targets.clone(),
            lb: grpc.lb,
            channels: grpc.channels,
            duration_ms: grpc.duration.0.as_millis() as u64,
            interval_ms: grpc.request_interval.0.as_millis() as u64,
            request_timeout_ms: cell.scaled.client.request_timeout.0.as_millis() as u64,
        };
        clients.push(run_client(lab, k, &spec).await?);
    }
    let started = Instant::now();
    // Scale events, on time: new replicas start, then join the ClusterIP once they accept.
    let mut cuts = Vec::new();
    let mut replicas_now = grpc.replicas as usize;
    let mut added: Vec<Vec<usize>> = Vec::new();
    for (at, to) in &grpc.scale {
        tokio::time::sleep_until((started + at.0).into()).await;
        let new: Vec<usize> = (replicas_now..*to as usize).collect();
        for &i in &new {
            lab.start_replica(i, grpc.max_connection_age).await?;
        }
        lab.sync_endpoints(*to as usize)?;
        let cut = unix_ms().saturating_sub(t0);
        notes.push(format!(
            "scaled to {to} replicas at {:.1} s (asked for {at}): kube-proxy's map now has {to} entries",
            cut as f64 / 1000.0
        ));
        cuts.push((cut, *to as usize));
        added.push(new);
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
    let timeline = timeline(&counts, t0, end_ms);
    let cut_ms: Vec<u64> = cuts.iter().map(|(c, _)| *c).collect();
    let segs = segments(&timeline, &cut_ms, |ms| {
        cuts.iter().filter(|(c, _)| *c <= ms).last().map(|(_, n)| *n).unwrap_or(grpc.replicas as usize)
    });
    let mut time_to_share_ms = Vec::new();
    for (j, new) in added.iter().enumerate() {
        if let Some(seg) = segs.get(j + 1) {
            time_to_share_ms.extend(time_to_share(&timeline, seg, new));
        }
    }
    let requests: u64 = reports.iter().map(|r| r.requests.len() as u64).sum();
    let mut failed: Vec<String> = Vec::new();
    for r in &reports {
        for q in r.requests.iter().filter(|q| q.code.is_some()) {
            failed.push(format!(
                "{} at {:.1} s: {} {}",
                r.client,
                q.unix_ms.saturating_sub(t0) as f64 / 1000.0,
                q.code.as_deref().unwrap_or_default(),
                q.message.as_deref().unwrap_or_default()
            ));
        }
    }
    // What each client's channels reached: one replica per connection, or all of them.
    for r in &reports {
        let mut per_channel: std::collections::BTreeMap<usize, std::collections::BTreeSet<u32>> = Default::default();
        for q in &r.requests {
            if let Some(rep) = q.replica {
                per_channel.entry(q.channel).or_default().insert(rep);
            }
        }
        let desc: Vec<String> = per_channel
            .iter()
            .map(|(ch, set)| {
                format!(
                    "channel {ch} → replica{} {}",
                    if set.len() > 1 { "s" } else { "" },
                    set.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(",")
                )
            })
            .collect();
        notes.push(format!("{}: {} requests; {}", r.client, r.requests.len(), desc.join("; ")));
    }
    for s in &segs {
        notes.push(format!(
            "{:.1}–{:.1} s: requests per replica [{}]; largest share {:.0} %, coefficient of variation {:.2}",
            s.from_ms as f64 / 1000.0,
            s.to_ms as f64 / 1000.0,
            s.served.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", "),
            s.largest_share() * 100.0,
            s.coefficient_of_variation()
        ));
    }
    for (i, t) in &time_to_share_ms {
        notes.push(match t {
            Some(ms) => format!(
                "replica {i} (added by scale) reached half its fair share {:.1} s after it joined",
                *ms as f64 / 1000.0
            ),
            None => format!("replica {i} (added by scale) never reached half its fair share before the end"),
        });
    }
    let rss_kib: Vec<u64> = counts.iter().map(|c| c.last().map(|x| x.rss_kib).unwrap_or(0)).collect();
    notes.push(format!(
        "replicas' resident memory (KiB): [{}]",
        rss_kib.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
    ));
    let balance = BalanceObservation {
        timeline,
        segments: segs,
        requests,
        failed,
        rss_kib,
        time_to_share_ms,
        threshold: grpc.threshold,
    };
    phase(Phase::Teardown);
    let observations = Observations {
        service: "grpc".into(),
        target: format!("{}:{PORT}", lab.cluster_ip),
        pool: 0,
        idle_started_ms: 0,
        idle_ms: 0,
        reuse_started_ms: 0,
        connections: vec![],
        finished_ms: end_ms,
        peak_rss_kib: 0,
        notes: vec![],
        balance: Some(balance),
    };
    Ok((observations, notes))
}

/// Run one gRPC balance cell. Success or failure, everything it created is gone on return.
pub async fn run_cell(
    cell: &crate::cells::Cell,
    phase: &(dyn Fn(Phase) + Send + Sync),
) -> Result<CellOutcome, CellFailure> {
    let mut slot = None;
    let result = run_in(cell, phase, &mut slot).await;
    let logs = slot.as_ref().map(GrpcLab::logs).unwrap_or_default();
    if let Some(lab) = slot {
        let span = tracing::Span::current();
        let _ = tokio::task::spawn_blocking(move || span.in_scope(|| drop(lab))).await;
    }
    match result {
        Ok((observations, notes)) => Ok(CellOutcome { observations, lab: None, notes, logs }),
        Err(error) => Err(CellFailure { error, logs }),
    }
}
