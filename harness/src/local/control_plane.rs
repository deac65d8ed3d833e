//! Istio's control plane on this host: `idlelab-xds` (Istio 1.30's discovery server over an
//! in-memory store, built from `istio/` by `just setup`), and Istio's validation.
//!
//! ```text
//!   Kubernetes + Istio objects (YAML) ──▶ idlelab-xds: Istio 1.30's xDS generators over an
//!                                         in-memory store; every Istio resource first through
//!                                         Istio's own validation (a rejection names Istio's reason)
//!                                                  ▲ ADS, plaintext, 127.0.0.1:15010
//!   pod netns ── capture: `pilot-agent istio-iptables --native-nftables` (as the init container)
//!             └─ pilot-agent (uid 1337, the pod's annotations in ./etc/istio/pod) ── Envoy 1.40
//! ```
//!
//! What Istio decides (listeners, clusters, idle timeouts, keepalive, EnvoyFilter patches)
//! comes from Istio's code; the lab only supplies the objects a cluster would hold and reads
//! back what Envoy received (its config dump). Every process here dies with the harness:
//! pilot-agent runs as PID 1 of its own PID namespace, so Envoy, its child, dies with it.

use crate::local::envoy::last_lines;
use crate::local::process::LabProcess;
use crate::tools::xds_bin;
use anyhow::{Context, Result, anyhow};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Where the control plane listens, inside the pod's namespace.
pub const XDS_ADDR: &str = "127.0.0.1:15010";
/// Istio's /debug endpoints, with `IDLELAB_ISTIO_DEBUG` set (loopback of the app's namespace).
pub const DEBUG_ADDR: &str = "127.0.0.1:15014";

/// Istio refused a resource, as its validating webhook would.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub kind: String,
    pub name: String,
    pub message: String,
    /// Which of the documents given (when known), to point back at the user's file and line.
    pub index: Option<usize>,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Istio rejected {} {}: {}", self.kind, self.name, self.message)
    }
}

impl std::error::Error for Rejected {}

/// One control plane: Istio's discovery server over the objects it was started with.
pub struct ControlPlane {
    pub process: LabProcess,
    pub addr: String,
    /// Its log (pushes per proxy and type).
    pub log: PathBuf,
    /// From start to its `ready` line.
    pub ready_ms: u64,
    /// The Istio release it was built from, as it reports it: `1.30-dev (9739e10eb9d7)`.
    pub istio: Option<String>,
    netns: PathBuf,
    /// Its stdout after the `ready` line: one answer per change ([`ControlPlane::apply`]).
    answers: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl ControlPlane {
    /// Start it in `netns`, serving `docs` (YAML documents) written under `dir`, on
    /// [`XDS_ADDR`] of `netns` and of each namespace of `also_in` (one control plane serves
    /// every pod of the cell, as istiod does). A resource Istio rejects is a [`Rejected`]
    /// error (downcast it), nothing left running.
    pub async fn start(
        netns: &Path,
        also_in: &[PathBuf],
        dir: &Path,
        docs: &[String],
        mesh_config: Option<&str>,
    ) -> Result<ControlPlane> {
        let config = dir.join("config");
        std::fs::create_dir_all(&config)?;
        for (i, doc) in docs.iter().enumerate() {
            std::fs::write(config.join(format!("{i:02}.yaml")), doc)?;
        }
        let log = dir.join("idlelab-xds.log");
        let mut cmd = tokio::process::Command::new(xds_bin());
        cmd.arg("--listen").arg(XDS_ADDR);
        // Istio's own /debug endpoints (syncz, config_dump?proxyID=…) on the loopback of the
        // app's namespace, for a user who wants to see what Istio generated, and for the
        // EnvoyFilter accounting ([`ControlPlane::envoy_filter_status`]).
        let has_envoyfilter = docs.iter().any(|d| d.contains("kind: EnvoyFilter"));
        if has_envoyfilter || std::env::var_os("IDLELAB_ISTIO_DEBUG").is_some() {
            cmd.arg("--debug").arg(DEBUG_ADDR);
        }
        if let Some(mesh) = mesh_config {
            let path = dir.join("mesh.yaml");
            std::fs::write(&path, mesh)?;
            cmd.arg("--mesh").arg(path);
        }
        // A listening socket on 127.0.0.1:15010 of each other pod's namespace, inherited at
        // its own descriptor number: the control plane itself stays in one namespace.
        let mut inherited = Vec::new();
        for ns in also_in {
            let l = crate::local::netns::in_netns(ns, || std::net::TcpListener::bind(XDS_ADDR))
                .await?
                .with_context(|| format!("listening on {XDS_ADDR} in {}", ns.display()))?;
            let fd = std::os::fd::OwnedFd::from(l);
            cmd.arg("--listen-fd").arg(std::os::fd::AsRawFd::as_raw_fd(&fd).to_string());
            inherited.push(fd);
        }
        cmd.arg(&config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let started = Instant::now();
        let borrowed: Vec<_> = inherited.iter().map(std::os::fd::AsFd::as_fd).collect();
        let mut process = crate::local::process::spawn_inheriting("idlelab-xds", cmd, netns, None, &borrowed)?;
        drop(inherited);
        // Its log goes to a file and, one event per xDS push, to the lab's own log (`-v`).
        let stderr = process.child.stderr.take().expect("piped");
        let file = std::fs::File::create(&log)?;
        tokio::spawn(tracing::Instrument::instrument(relay_log(stderr, file), tracing::Span::current()));
        let stdout = process.child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| anyhow!("idlelab-xds was not ready within 30 s (log: {})", log.display()))??
            .ok_or_else(|| {
                // The relay copies its last lines within milliseconds of its exit.
                std::thread::sleep(Duration::from_millis(100));
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                anyhow!("idlelab-xds exited before it was ready: {}", last_lines(&log, 3))
            })?;
        let v: Value = serde_json::from_str(&line).with_context(|| format!("idlelab-xds printed {line}"))?;
        if let Some(r) = v.get("rejected") {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            return Err(Rejected { kind: s("kind"), name: s("name"), message: s("message"), index: None }.into());
        }
        let addr = v["ready"].as_str().ok_or_else(|| anyhow!("idlelab-xds printed {line}"))?.to_string();
        let ready_ms = started.elapsed().as_millis() as u64;
        let istio = v["istio"].as_str().map(String::from);
        tracing::debug!(addr, ready_ms, docs = docs.len(), istio, "control plane ready");
        // Keep stdin open: idlelab-xds stops when it closes (when this process is gone).
        Ok(ControlPlane { process, addr, log, ready_ms, istio, netns: netns.to_path_buf(), answers: lines })
    }

    /// Change one Kubernetes object while serving (an EndpointSlice after a scale-up, as the
    /// endpoint controller would): Istio's controllers see the change and push what it changes
    /// to the proxies. Returns once the control plane has applied it (not once proxies have it).
    pub async fn apply(&mut self, doc: &str) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let stdin = self.process.child.stdin.as_mut().ok_or_else(|| anyhow!("idlelab-xds has no stdin"))?;
        let mut line = serde_json::to_vec(&serde_json::json!({ "apply": doc }))?;
        line.push(b'\n');
        stdin.write_all(&line).await?;
        stdin.flush().await?;
        let answer = tokio::time::timeout(Duration::from_secs(10), self.answers.next_line())
            .await
            // The cell fails with this error and its control plane goes with it, so a late
            // answer is never read as the next change's.
            .map_err(|_| anyhow!("idlelab-xds did not answer a change within 10 s"))??
            .ok_or_else(|| anyhow!("idlelab-xds exited (log: {})", self.log.display()))?;
        let v: Value = serde_json::from_str(&answer).with_context(|| format!("idlelab-xds answered {answer}"))?;
        match v["applied"].as_str() {
            Some(what) => {
                tracing::debug!(what, "control plane applied a change");
                Ok(())
            }
            None => Err(anyhow!("idlelab-xds refused the change: {}", v["error"].as_str().unwrap_or(&answer))),
        }
    }

    /// Which patches of which EnvoyFilters Istio applied while generating the proxies'
    /// config, from Istio's own accounting (`pilot_envoy_filter_status`). Ask once, after
    /// every proxy has its config.
    pub async fn envoy_filter_status(&self) -> Result<Vec<Value>> {
        let body = crate::local::envoy::Admin { netns: self.netns.clone(), port: debug_port() }
            .get("/idlelab/envoyfilters")
            .await?;
        Ok(serde_json::from_str(&body)?)
    }
}

fn debug_port() -> u16 {
    DEBUG_ADDR.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port")
}

/// Run Istio's validation (the webhook's, after a strict decode) over `docs` without serving
/// anything: Ok(warnings) or a [`Rejected`] error whose `index` names the document.
pub async fn validate(docs: &[String]) -> Result<Vec<String>> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("{}{}-validate-", crate::local::netns::PREFIX, std::process::id()))
        .tempdir()?;
    for (i, doc) in docs.iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i:02}.yaml")), doc)?;
    }
    let mut cmd = tokio::process::Command::new(xds_bin());
    crate::local::process::dies_with_runner(&mut cmd);
    let out = cmd
        .arg("--validate")
        .arg(dir.path())
        .output()
        .await
        .with_context(|| format!("running {}", xds_bin().display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout.lines().next().unwrap_or_default();
    let v: Value =
        serde_json::from_str(line).map_err(|_| anyhow!("idlelab-xds --validate said: {}", last_lines(&stderr, 3)))?;
    if let Some(r) = v.get("rejected") {
        let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
        let index = std::path::Path::new(&s("file")).file_stem().and_then(|n| n.to_string_lossy().parse().ok());
        return Err(Rejected { kind: s("kind"), name: s("name"), message: s("message"), index }.into());
    }
    Ok(stderr.lines().filter(|l| l.contains("\twarn\t")).map(|l| l.to_string()).collect())
}

/// Copy the control plane's stderr to its log file; for each push line (`LDS: PUSH request
/// for node:client.idlelab resources:4 …`) emit a debug event naming the proxy and the type.
async fn relay_log(stderr: tokio::process::ChildStderr, file: std::fs::File) {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(file);
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some((kind, rest)) = line.split_once(": PUSH")
            && let Some(node) = rest.split("node:").nth(1)
        {
            let xds = kind.rsplit(char::is_whitespace).next().unwrap_or(kind);
            let proxy = node.split_whitespace().next().unwrap_or(node);
            tracing::debug!(proxy, xds, "xDS push to a proxy");
        }
        let _ = writeln!(file, "{line}");
        let _ = file.flush();
    }
}
