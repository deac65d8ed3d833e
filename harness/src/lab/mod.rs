//! The local backend: one cell = its own network namespaces, processes and temp dir.
//!
//! ```text
//!   netns idlelab-<pid>-c<n>-app                       netns idlelab-<pid>-c<n>-srv
//!   ┌────────────────────────────────┐   veth /30    ┌─────────────────────────┐
//!   │ idlelab probe  [+ sidecar Envoy]│──────────────│ redis-server            │
//!   │ 198.18.x.y+1                    │              │ 198.18.x.y+2            │
//!   └────────────────────────────────┘               └─────────────────────────┘
//! ```
//!
//! Addresses come from 198.18.0.0/15 (RFC 2544, for benchmarking labs) and exist only inside
//! the cell's namespaces: the host namespace gets no lab address, route or rule. Everything a
//! cell creates is owned by a guard whose `Drop` removes it, so success, failure, Ctrl-C and
//! panics all clean up the same way.

pub mod envoy;
pub mod netns;
pub mod process;
pub mod redis_server;
pub mod sidecar;
pub mod sockets;

use crate::events::Phase;
use crate::hop::Hop;
use crate::knobs::Knobs;
use crate::probe::observation::Observations;
use crate::probe::{KeepaliveSecs, ProbeLine, ProbeSpec};
use anyhow::{Context, Result, anyhow, bail};
use netns::Netns;
use serde::Serialize;
use serde_json::Value;
use sockets::SocketSnapshot;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

static CELL_SEQ: AtomicU32 = AtomicU32::new(0);

/// What the local lab recorded besides the probe's observations.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LabEvidence {
    pub namespaces: Vec<String>,
    pub addresses: BTreeMap<String, String>,
    /// Envoy counters of the sidecar (non-zero ones about connections and idle timeouts).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub envoy_counters: BTreeMap<String, u64>,
    /// The sidecar's access log: one JSON object per closed connection.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub envoy_access_log: Vec<Value>,
    /// `ss` in the app namespace after warm-up and just before the reuse.
    pub sockets: Vec<SocketSnapshot>,
    pub setup_ms: u64,
    pub teardown_ms: u64,
}

pub struct CellOutcome {
    pub observations: Observations,
    pub evidence: LabEvidence,
}

/// Everything a cell owns, in the order it must go: processes, then namespaces, then files.
struct CellLab {
    envoy: Option<envoy::Envoy>,
    server: Option<redis_server::RedisServer>,
    namespaces: Vec<Netns>,
    dir: tempfile::TempDir,
}

impl CellLab {
    fn teardown(self) -> u64 {
        let t = Instant::now();
        drop(self);
        t.elapsed().as_millis() as u64
    }
}

fn link_addrs(seq: u32, link: u32) -> (Ipv4Addr, Ipv4Addr) {
    // 512 cells × 64 /30 links in 198.18.0.0/15.
    let cell = seq % 512;
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + cell * 256 + link * 4;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

fn probe_spec(knobs: &Knobs, target: String) -> ProbeSpec {
    let ms = |d: crate::duration::Dur| d.0.as_millis() as u64;
    ProbeSpec {
        service: knobs.service,
        target,
        pool: knobs.client.pool,
        keepalive: knobs.client.keepalive.map(|k| KeepaliveSecs {
            time_s: k.time.0.as_secs().max(1),
            interval_s: k.interval.0.as_secs().max(1),
            probes: k.probes,
        }),
        idle_ms: ms(knobs.idle),
        heartbeat_ms: knobs.client.heartbeat.map(ms),
        pool_max_idle_ms: knobs.client.pool_max_idle.map(ms),
        request_timeout_ms: ms(knobs.client.request_timeout),
    }
}

/// Run one cell with already scaled knobs. `phase` is told where the cell is.
pub async fn run_cell(knobs: &Knobs, phase: &(dyn Fn(Phase) + Send + Sync)) -> Result<CellOutcome> {
    let started = Instant::now();
    phase(Phase::Setup);
    let seq = CELL_SEQ.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let tag = format!("{}{pid}-c{seq}", netns::PREFIX);
    let (app_ip, srv_ip) = link_addrs(seq, 0);
    let port = knobs.service.port();

    let dir = tempfile::Builder::new()
        .prefix(&format!("{tag}-"))
        .tempdir()
        .context("creating the cell's temp dir")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let names = [format!("{tag}-app"), format!("{tag}-srv")];
    let namespaces = tokio::task::spawn_blocking(move || -> Result<Vec<Netns>> {
        let app = Netns::create(names[0].clone())?;
        let srv = Netns::create(names[1].clone())?;
        app.ip_batch(&[
            format!("link add eth0 type veth peer name eth0 netns {}", srv.name),
            format!("addr add {app_ip}/30 dev eth0"),
            "link set eth0 up".into(),
            "link set lo up".into(),
        ])?;
        srv.ip_batch(&[
            format!("addr add {srv_ip}/30 dev eth0"),
            "link set eth0 up".into(),
            "link set lo up".into(),
        ])?;
        Ok(vec![app, srv])
    })
    .await??;
    let mut lab = CellLab {
        envoy: None,
        server: None,
        namespaces,
        dir,
    };
    let (app, srv) = (&lab.namespaces[0], &lab.namespaces[1]);
    let mut evidence = LabEvidence {
        namespaces: lab.namespaces.iter().map(|n| n.name.clone()).collect(),
        addresses: BTreeMap::from([
            ("app".into(), app_ip.to_string()),
            ("server".into(), srv_ip.to_string()),
        ]),
        ..Default::default()
    };

    let server_dir = lab.dir.path().join("server");
    std::fs::create_dir(&server_dir)?;
    lab.server = Some(
        redis_server::start(
            &server_dir,
            port,
            &srv.path(),
            &format!("{tag} redis-server"),
        )
        .await?,
    );

    for hop in &knobs.path {
        match hop {
            Hop::Sidecar(h) => {
                let dir = lab.dir.path().join("sidecar");
                std::fs::create_dir(&dir)?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
                let files = envoy::EnvoyFiles { dir };
                let name = format!("{tag} sidecar envoy");
                lab.envoy = Some(
                    sidecar::start(h, knobs.service.name(), srv_ip, port, files, app, &name)
                        .await?,
                );
            }
        }
    }
    evidence.setup_ms = started.elapsed().as_millis() as u64;
    if std::env::var("IDLELAB_FAULT").as_deref() == Ok("panic-after-setup") {
        panic!("IDLELAB_FAULT=panic-after-setup: a deliberate panic to test cleanup");
    }

    // The probe: this same binary, inside the app namespace, as root (not exempt from capture).
    let spec = probe_spec(knobs, format!("{srv_ip}:{port}"));
    let exe = std::env::current_exe().context("locating the idlelab binary for the probe")?;
    let mut cmd = tokio::process::Command::new(exe);
    let stderr = std::fs::File::create(lab.dir.path().join("probe.stderr"))?;
    cmd.arg("probe")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::from(stderr));
    let mut probe = process::spawn(&format!("{tag} probe"), cmd, &app.path(), None)?;
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
                            evidence.sockets.push(sockets::snapshot(app, "app", "after-warm"));
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
                evidence.sockets.push(sockets::snapshot(app, "app", "before-reuse"));
            }
        }
    }
    let status = probe.child.wait().await?;
    let observations =
        observations.ok_or_else(|| anyhow!("the probe exited ({status}) without observations"))?;

    if let Some(envoy) = &lab.envoy {
        evidence.envoy_counters = envoy
            .counters(&[
                "idle_timeout",
                "downstream_cx_total",
                "upstream_cx_total",
                "upstream_cx_destroy",
            ])
            .await
            .unwrap_or_default();
        // The access logger flushes every 100 ms; the last connections closed when the probe exited.
        tokio::time::sleep(Duration::from_millis(150)).await;
        evidence.envoy_access_log = envoy.access_log_entries();
    }
    phase(Phase::Teardown);
    drop(probe);
    evidence.teardown_ms = tokio::task::spawn_blocking(move || lab.teardown()).await?;
    Ok(CellOutcome {
        observations,
        evidence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_get_distinct_subnets_inside_198_18_0_0_15() {
        let (a, b) = link_addrs(0, 0);
        assert_eq!(
            (a, b),
            (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2))
        );
        let (c, _) = link_addrs(300, 1);
        assert_eq!(c, Ipv4Addr::new(198, 19, 44, 5));
        let (d, _) = link_addrs(511, 63);
        assert!(d.octets()[0] == 198 && d.octets()[1] == 19);
    }
}
