//! Istio's own control-plane code, run on this host without Kubernetes: the one module that
//! talks to the Go side (`istio/`, built by `just setup`).
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

pub mod objects;

use crate::lab::envoy::last_lines;
use crate::lab::process::{LabProcess, spawn};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use crate::tools::{agent_bin, bootstrap_template, xds_bin};

/// The uid Istio's proxy runs as (the lab's other Envoys too); the capture exempts it.
pub use crate::lab::envoy::ENVOY_UID as PROXY_UID;
/// Where the control plane listens, inside the pod's namespace.
pub const XDS_ADDR: &str = "127.0.0.1:15010";
/// Istio's /debug endpoints, with `IDLELAB_ISTIO_DEBUG` set (loopback of the app's namespace).
pub const DEBUG_ADDR: &str = "127.0.0.1:15014";
/// Envoy's admin port in Istio's bootstrap (loopback of the pod's namespace).
pub const ADMIN_PORT: u16 = 15000;

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
    netns: PathBuf,
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
            let l = crate::lab::netns::in_netns(ns, || std::net::TcpListener::bind(XDS_ADDR))
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
        let mut process = crate::lab::process::spawn_inheriting("idlelab-xds", cmd, netns, None, &borrowed)?;
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
        tracing::debug!(addr, ready_ms, docs = docs.len(), "control plane ready");
        // Keep stdin open: idlelab-xds stops when it closes (when this process is gone).
        Ok(ControlPlane { process, addr, log, ready_ms, netns: netns.to_path_buf() })
    }

    /// Which patches of which EnvoyFilters Istio applied while generating the proxies'
    /// config, from Istio's own accounting (`pilot_envoy_filter_status`). Ask once, after
    /// every proxy has its config.
    pub async fn envoy_filter_status(&self) -> Result<Vec<Value>> {
        let body = crate::lab::envoy::Admin { netns: self.netns.clone(), port: debug_port() }
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
        .prefix(&format!("{}{}-validate-", crate::lab::netns::PREFIX, std::process::id()))
        .tempdir()?;
    for (i, doc) in docs.iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i:02}.yaml")), doc)?;
    }
    let mut cmd = tokio::process::Command::new(xds_bin());
    crate::lab::process::dies_with_runner(&mut cmd);
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

/// The pod a proxy stands for: what the downward API and the injector would give it.
#[derive(Clone, Debug)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub ip: Ipv4Addr,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
}

impl Pod {
    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Its SPIFFE identity, as Istio's CA would put it in the workload certificate.
    pub fn spiffe_id(&self) -> String {
        format!("spiffe://cluster.local/ns/{}/sa/{}", self.namespace, self.service_account)
    }

    /// `pilot-agent istio-iptables` arguments, as Istio's injection template renders them
    /// from the pod's `traffic.sidecar.istio.io/*` annotations.
    pub fn capture_args(&self) -> Vec<String> {
        let uid = PROXY_UID.to_string();
        let mut args: Vec<String> = [
            "-p",
            "15001",
            "-z",
            "15006",
            "-u",
            &uid,
            "-m",
            "REDIRECT",
            "-i",
            "*",
            "-b",
            "*",
            "-d",
            "15090,15021,15020",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push("-x".into());
        args.push(self.annotation("traffic.sidecar.istio.io/excludeOutboundIPRanges").unwrap_or("").into());
        if let Some(ports) = self.annotation("traffic.sidecar.istio.io/excludeOutboundPorts") {
            args.push("-o".into());
            args.push(ports.into());
        }
        args.push("--native-nftables".into());
        args
    }
}

/// A sidecar: Istio's capture in the pod's namespace, pilot-agent and its Envoy.
pub struct Proxy {
    pub agent: LabProcess,
    pub netns: PathBuf,
    pub log: PathBuf,
}

/// `key="value"` lines, as the downward API writes `metadata.annotations` (values Go-quoted).
fn downward_api(items: &[(String, String)]) -> String {
    items.iter().map(|(k, v)| format!("{k}={}\n", serde_json::to_string(v).expect("a string"))).collect()
}

impl Proxy {
    /// Start pilot-agent for `pod` in `netns`, with its files under `dir` and a workload
    /// certificate from `ca`. A sidecar first gets Istio's capture; a gateway (`router`) has
    /// none, as in its own Deployment.
    pub async fn start(
        netns: &crate::lab::netns::Netns,
        dir: &Path,
        pod: &Pod,
        xds: &str,
        role: objects::ProxyRole,
        ca: &crate::lab::tls::MeshCa,
    ) -> Result<Proxy> {
        let root = |p: &str| dir.join(p);
        for d in [
            "var/lib/istio/envoy",
            "etc/istio/pod",
            "etc/istio/proxy",
            "var/run/secrets/workload-spiffe-credentials",
            "var/run/secrets/workload-spiffe-uds",
            "var/run/secrets/credential-uds",
            "var/log/istio",
        ] {
            std::fs::create_dir_all(root(d))?;
        }
        std::fs::copy(bootstrap_template(), root("var/lib/istio/envoy/envoy_bootstrap_tmpl.json"))
            .with_context(|| format!("copying {} (run `just setup`)", bootstrap_template().display()))?;
        std::fs::write(root("etc/istio/pod/labels"), downward_api(&pod.labels))?;
        std::fs::write(root("etc/istio/pod/annotations"), downward_api(&pod.annotations))?;
        let (chain, key) = ca.issue(&pod.spiffe_id())?;
        for (file, pem) in [("root-cert.pem", &ca.ca_pem), ("cert-chain.pem", &chain), ("key.pem", &key)] {
            std::fs::write(root("var/run/secrets/workload-spiffe-credentials").join(file), pem)?;
        }
        chown_tree(dir, PROXY_UID).with_context(|| format!("handing {} to uid {PROXY_UID}", dir.display()))?;

        let router = role == objects::ProxyRole::Gateway;
        if !router {
            // The capture, as the init container (root) runs it.
            let args = pod.capture_args();
            let agent = agent_bin().to_string_lossy().into_owned();
            // GOMEMLIMIT set: Istio's automemlimit otherwise logs an error on cgroup v2 hosts.
            let mut full = vec!["GOMEMLIMIT=256MiB", agent.as_str(), "istio-iptables"];
            full.extend(args.iter().map(String::as_str));
            netns.exec("env", &full, None).context("pilot-agent istio-iptables")?;
            tracing::debug!(netns = %netns.name, args = ?args, "capture installed by istio-iptables");
        }

        let envoy = crate::tools::envoy_bin().ok_or_else(|| anyhow!("no Envoy (run `just setup`)"))?;
        let envoy = std::fs::canonicalize(&envoy).unwrap_or(envoy);
        let proxy_config = serde_json::json!({
            "discoveryAddress": xds,
            "controlPlaneAuthPolicy": "NONE",
            "binaryPath": envoy,
            "concurrency": 1,
            // The lab reads the access log right after the probe: flush it often (Istio: 1 s).
            "fileFlushInterval": "0.1s",
            "drainDuration": "1s",
            "terminationDrainDuration": "0s",
            "proxyStatsMatcher": {"inclusionPrefixes": ["tcp.", "listener.", "cluster.outbound|", "cluster.PassthroughCluster", "http."]}
        });
        let log = dir.join("pilot-agent.log");
        // A PID namespace of its own whose PID 1 is a root shell that waits for pilot-agent:
        // `unshare --kill-child` gives that shell the parent-death signal (a uid change would
        // clear it, so pilot-agent drops to PROXY_UID in a child), and when PID 1 dies the kernel
        // kills everything in the namespace, Envoy included.
        let mut cmd = tokio::process::Command::new("unshare");
        let agent = agent_bin();
        let domain = format!("{}.svc.cluster.local", pod.namespace);
        cmd.args(["--pid", "--fork", "--kill-child", "sh", "-c"])
            .arg(format!(r#"setpriv --reuid={PROXY_UID} --regid={PROXY_UID} --clear-groups "$@" & wait"#))
            .arg("pilot-agent")
            .arg(&agent)
            .args(["proxy", if router { "router" } else { "sidecar" }, "--domain", &domain])
            .args(["--proxyLogLevel=warning", "--proxyComponentLogLevel=misc:error", "--log_output_level=default:warn"])
            .current_dir(dir)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", dir)
            .env("GOMEMLIMIT", "256MiB")
            // No platform detection: it would query the cloud metadata address 169.254.169.254,
            // which is not the lab's to reach.
            .env("CLOUD_PLATFORM", "none")
            .env("POD_NAME", &pod.name)
            .env("POD_NAMESPACE", &pod.namespace)
            .env("INSTANCE_IP", pod.ip.to_string())
            .env("HOST_IP", pod.ip.to_string())
            .env("SERVICE_ACCOUNT", &pod.service_account)
            .env("PROXY_CONFIG", proxy_config.to_string())
            .env("ISTIO_META_CLUSTER_ID", "Kubernetes")
            .env("ISTIO_META_MESH_ID", "cluster.local")
            .env("TRUST_DOMAIN", "cluster.local")
            .env("ISTIO_META_INTERCEPTION_MODE", "REDIRECT")
            .env("ISTIO_META_WORKLOAD_NAME", &pod.name)
            .env("ISTIO_META_APP_CONTAINERS", "app")
            .env("ISTIO_META_POD_PORTS", "[]")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::from(std::fs::File::create(&log)?))
            .stderr(std::process::Stdio::from(std::fs::File::options().append(true).open(&log)?));
        let agent = spawn(&format!("pilot-agent {}", pod.name), cmd, &netns.path(), None)?;
        Ok(Proxy { agent, netns: netns.path(), log })
    }

    /// A GET on Envoy's admin (loopback of the pod's namespace).
    pub async fn admin_get(&self, path: &str) -> Result<String> {
        crate::lab::envoy::Admin { netns: self.netns.clone(), port: ADMIN_PORT }.get(path).await
    }

    /// Envoy's config dump (with the dynamic listeners and clusters it received over ADS).
    pub async fn config_dump(&self) -> Result<Value> {
        Ok(serde_json::from_str(&self.admin_get("/config_dump").await?)?)
    }

    /// Wait until Envoy has, from ADS, the listener and the chain that carry the app's
    /// connection through `p`, and that listener is no longer warming; returns how long it took.
    pub async fn wait_chain(&self, p: &objects::ProxyInputs, within: Duration) -> Result<u64> {
        let started = Instant::now();
        let name = &p.listener;
        loop {
            if let Ok(dump) = self.config_dump().await
                && let Some(l) = dynamic_listener(&dump, name)
                && !chains(l, p).is_empty()
                && route_names(l, p).iter().all(|r| dynamic_route_config(&dump, r).is_some())
            {
                return Ok(started.elapsed().as_millis() as u64);
            }
            if started.elapsed() > within {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                bail!("Envoy had no listener {name} after {within:?}; pilot-agent's log ends: {}", last_lines(&log, 3));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `chown -R uid:uid`: the proxy's working dir belongs to the proxy, as in its container.
fn chown_tree(path: &Path, uid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(uid))?;
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid)?;
        }
    }
    Ok(())
}

/// The config dump's section whose `@type` is named `name` (`ListenersConfigDump`, …).
pub fn dump_section<'a>(dump: &'a Value, name: &str) -> Option<&'a Value> {
    dump["configs"].as_array()?.iter().find(|c| c["@type"].as_str().and_then(|t| t.rsplit('.').next()) == Some(name))
}

/// A listener Envoy received over xDS, by name.
pub fn dynamic_listener<'a>(dump: &'a Value, name: &str) -> Option<&'a Value> {
    dump_section(dump, "ListenersConfigDump")?["dynamic_listeners"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == name)
        .map(|l| &l["active_state"]["listener"])
}

/// A cluster Envoy received over xDS, by name.
pub fn dynamic_cluster<'a>(dump: &'a Value, name: &str) -> Option<&'a Value> {
    dump_section(dump, "ClustersConfigDump")?["dynamic_active_clusters"]
        .as_array()?
        .iter()
        .find(|c| c["cluster"]["name"] == name)
        .map(|c| &c["cluster"])
}

/// A route configuration Envoy received over RDS, by name.
pub fn dynamic_route_config<'a>(dump: &'a Value, name: &str) -> Option<&'a Value> {
    dump_section(dump, "RoutesConfigDump")?["dynamic_route_configs"]
        .as_array()?
        .iter()
        .find(|r| r["route_config"]["name"] == name)
        .map(|r| &r["route_config"])
}

/// The filter chains of `p`'s listener that carry the app's connection: the catch-all chain
/// of `virtualOutbound` (passthrough), the chains matching the port on an inbound listener,
/// every chain otherwise.
fn chains<'a>(listener: &'a Value, p: &objects::ProxyInputs) -> Vec<&'a Value> {
    let all = listener["filter_chains"].as_array().into_iter().flatten();
    match p.listener.as_str() {
        "virtualOutbound" => all.filter(|fc| fc["name"] == "virtualOutbound-catchall-tcp").collect(),
        "virtualInbound" => {
            all.filter(|fc| fc["filter_chain_match"]["destination_port"] == u64::from(p.port)).collect()
        }
        _ => all.collect(),
    }
}

/// The RDS route configurations the chains' HTTP connection managers name (they arrive
/// after the listener).
fn route_names(listener: &Value, p: &objects::ProxyInputs) -> Vec<String> {
    chains(listener, p)
        .iter()
        .flat_map(|fc| fc["filters"].as_array().into_iter().flatten())
        .filter_map(|f| f["typed_config"]["rds"]["route_config_name"].as_str().map(str::to_string))
        .collect()
}

/// The distinct values of a field across chains, or one value when they agree.
fn distinct(values: Vec<Value>) -> Value {
    let mut out: Vec<Value> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    match out.len() {
        0 => Value::Null,
        1 => out.remove(0),
        _ => Value::Array(out),
    }
}

fn duration_or_default(v: &Value, default: &str) -> Value {
    match v {
        Value::String(d) => Value::String(d.clone()),
        _ => Value::String(format!("unset (Envoy's default: {default})")),
    }
}

/// Whether the client sidecar's upstream HTTP pool got the idle timeout the time scale
/// modelled (`expected`, scaled), read from the `cluster_http_idle_timeout` of
/// [`deciding_fields`]; unset is Envoy's 1 h. The model decides the cell's factor: a config
/// that disagrees (a rule the lab did not see sets the pool's idle timeout) would run the cell
/// on durations the time scale never checked, so it is an error, not a verdict.
pub fn http_pool_idle_mismatch(fields: &Value, expected: crate::model::duration::Dur) -> Option<String> {
    let got = fields["cluster_http_idle_timeout"].as_str().unwrap_or("unset");
    let ms = if got.starts_with("unset") {
        Some(3_600_000.0)
    } else {
        got.strip_suffix('s').and_then(|v| v.parse::<f64>().ok()).map(|s| s * 1000.0)
    };
    let want = expected.0.as_millis() as f64;
    match ms {
        Some(ms) if (ms - want).abs() < 0.5 => None,
        _ => Some(format!(
            "its upstream HTTP pool's idle timeout is {got} in the config Envoy received, but the time scale modelled {expected}: a resource the lab does not model sets it, and the cell's orderings were not checked against it"
        )),
    }
}

/// The fields of a proxy's config that decide these failures, as Envoy received them from
/// Istio's control plane, for the chain the app's connection takes through it: the
/// `tcp_proxy` `idle_timeout`, or for HTTP the connection manager's idle timeout and the
/// route's retry policy; the cluster's `tcp_keepalive` and HTTP pool idle timeout; the
/// listener's `socket_options`.
pub fn deciding_fields(dump: &Value, p: &objects::ProxyInputs) -> Value {
    let listener = dynamic_listener(dump, &p.listener);
    let chains = listener.map(|l| chains(l, p)).unwrap_or_default();
    let filters: Vec<&Value> = chains
        .iter()
        .flat_map(|fc| fc["filters"].as_array().into_iter().flatten())
        .map(|f| &f["typed_config"])
        .collect();
    let is = |f: &&&Value, suffix: &str| f["@type"].as_str().is_some_and(|t| t.ends_with(suffix));
    let tcp: Vec<&Value> = filters.iter().filter(|f| is(f, "TcpProxy")).copied().collect();
    let hcm: Vec<&Value> = filters.iter().filter(|f| is(f, "HttpConnectionManager")).copied().collect();
    let mut fields = serde_json::json!({
        "source": "ADS from Istio's discovery server (idlelab-xds)",
        "role": p.role.name(),
        "listener": p.listener,
        "cluster": p.cluster,
    });
    if !tcp.is_empty() {
        fields["idle_timeout"] =
            distinct(tcp.iter().map(|t| duration_or_default(&t["idle_timeout"], "3600s")).collect());
    }
    if !hcm.is_empty() {
        fields["http_idle_timeout"] = distinct(
            hcm.iter()
                .map(|h| duration_or_default(&h["common_http_protocol_options"]["idle_timeout"], "3600s"))
                .collect(),
        );
        let retries: Vec<Value> = hcm
            .iter()
            .filter_map(|h| h["rds"]["route_config_name"].as_str())
            .filter_map(|name| dynamic_route_config(dump, name))
            .flat_map(|rc| rc["virtual_hosts"].as_array().cloned().unwrap_or_default())
            .filter(|vh| {
                vh["domains"].as_array().is_some_and(|d| {
                    d.iter()
                        .any(|d| d.as_str().is_some_and(|d| d.starts_with(p.cluster.rsplit('|').next().unwrap_or(""))))
                })
            })
            .flat_map(|vh| vh["routes"].as_array().cloned().unwrap_or_default())
            .map(|r| r["route"]["retry_policy"].clone())
            .collect();
        fields["retry_policy"] = distinct(retries);
    }
    if tcp.is_empty() && hcm.is_empty() {
        fields["idle_timeout"] = "no tcp_proxy or HTTP connection manager on that chain".into();
    }
    if let Some(c) = dynamic_cluster(dump, &p.cluster) {
        let ka = &c["upstream_connection_options"]["tcp_keepalive"];
        fields["tcp_keepalive"] = if ka.is_null() { Value::Null } else { ka.clone() };
        let http = &c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        if !http.is_null() {
            fields["cluster_http_idle_timeout"] =
                duration_or_default(&http["common_http_protocol_options"]["idle_timeout"], "3600s");
        }
    }
    if let Some(opts) = listener.map(|l| &l["socket_options"]).filter(|o| !o.is_null()) {
        fields["socket_options"] = opts.clone();
    }
    let section = dump_section(dump, "ListenersConfigDump");
    fields["dynamic_listeners"] =
        section.and_then(|l| l["dynamic_listeners"].as_array()).map(|a| a.len()).unwrap_or(0).into();
    fields["static_listeners"] = section
        .and_then(|l| l["static_listeners"].as_array())
        .map(|a| a.iter().map(|l| l["listener"]["name"].clone()).collect())
        .unwrap_or_default();
    fields
}

/// Every `tcp_proxy` of a listener (each filter chain), as Istio generated it.
pub fn tcp_proxies(listener: &Value) -> Vec<&Value> {
    listener["filter_chains"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|fc| fc["filters"].as_array().into_iter().flatten())
        .filter(|f| f["name"] == "envoy.filters.network.tcp_proxy")
        .map(|f| &f["typed_config"])
        .collect()
}

/// What one proxy received from Istio's control plane.
pub struct ProxyRun {
    pub role: objects::ProxyRole,
    pub dump: Value,
    /// The capture istio-iptables installed (`nft list ruleset` in the pod's namespace).
    pub capture: String,
    /// pilot-agent start → the listener of the app's chain in Envoy.
    pub proxy_ready_ms: u64,
}

/// What every proxy of a cell's objects received.
pub struct ObjectsRun {
    pub proxies: Vec<ProxyRun>,
    pub control_plane_ready_ms: u64,
}

impl ObjectsRun {
    pub fn proxy(&self, role: objects::ProxyRole) -> &ProxyRun {
        self.proxies.iter().find(|p| p.role == role).unwrap_or_else(|| panic!("no {} in the objects", role.name()))
    }
}

static RUN_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Run Istio's control plane and every proxy of `objects`, each pod in a namespace of its own
/// (no path between them), and return what each Envoy received. Everything it started is
/// removed before it returns.
pub async fn objects_config(objects: &objects::CellObjects) -> Result<ObjectsRun> {
    let seq = RUN_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tag = format!("{}{}-x{seq}", crate::lab::netns::PREFIX, std::process::id());
    let dir = tempfile::Builder::new().prefix(&format!("{tag}-")).tempdir()?;
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let mut namespaces = Vec::new();
    for (i, p) in objects.proxies.iter().enumerate() {
        let ns = crate::lab::netns::Netns::create(format!("{tag}-p{i}"))?;
        // The pod's address on a veth pair inside the namespace (no `dummy` module here):
        // istio-iptables and pilot-agent want a local address besides loopback.
        ns.ip_batch(&[
            "link set lo up".to_string(),
            "link add pod0 type veth peer name pod1".to_string(),
            format!("addr add {}/32 dev pod0", p.pod.ip),
            "link set pod0 up".to_string(),
            "link set pod1 up".to_string(),
        ])?;
        namespaces.push(ns);
    }
    let others: Vec<PathBuf> = namespaces.iter().skip(1).map(|n| n.path()).collect();
    let cp =
        ControlPlane::start(&namespaces[0].path(), &others, dir.path(), &objects.docs, objects.mesh.as_deref()).await?;
    let ca = crate::lab::tls::MeshCa::new()?;
    let mut proxies = Vec::new();
    let mut runs = Vec::new();
    for (p, ns) in objects.proxies.iter().zip(&namespaces) {
        let proxy_dir = dir.path().join(p.role.name());
        std::fs::create_dir(&proxy_dir)?;
        let started = Instant::now();
        let proxy = Proxy::start(ns, &proxy_dir, &p.pod, &cp.addr, p.role, &ca).await?;
        proxies.push((proxy, started, p));
    }
    for (proxy, started, p) in &proxies {
        proxy.wait_chain(p, Duration::from_secs(20)).await?;
        let ns = namespaces.iter().find(|n| n.path() == proxy.netns).expect("its namespace");
        runs.push(ProxyRun {
            role: p.role,
            proxy_ready_ms: started.elapsed().as_millis() as u64,
            dump: proxy.config_dump().await?,
            capture: ns.exec("nft", &["list", "ruleset"], None)?,
        });
    }
    let control_plane_ready_ms = cp.ready_ms;
    drop(proxies);
    drop(cp);
    drop(namespaces);
    Ok(ObjectsRun { proxies: runs, control_plane_ready_ms })
}
