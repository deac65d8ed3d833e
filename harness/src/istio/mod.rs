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

/// The uid Istio's proxy runs as (the lab's other Envoys too); the capture exempts it.
pub use crate::lab::envoy::ENVOY_UID as PROXY_UID;
/// Where the control plane listens, inside the pod's namespace.
pub const XDS_ADDR: &str = "127.0.0.1:15010";
/// Envoy's admin port in Istio's bootstrap (loopback of the pod's namespace).
pub const ADMIN_PORT: u16 = 15000;

/// `idlelab-xds`, as `just setup` builds it.
pub fn xds_bin() -> PathBuf {
    crate::doctor::tools_dir().join("bin/idlelab-xds")
}

/// `pilot-agent`, built from the same Istio module.
pub fn agent_bin() -> PathBuf {
    crate::doctor::tools_dir().join("bin/pilot-agent")
}

/// Istio's Envoy bootstrap template (`tools/packaging/common/envoy_bootstrap.json`).
pub fn bootstrap_template() -> PathBuf {
    crate::doctor::tools_dir().join("share/istio/envoy_bootstrap.json")
}

/// Istio refused a resource, as its validating webhook would.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub kind: String,
    pub name: String,
    pub message: String,
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
}

impl ControlPlane {
    /// Start it in `netns`, serving `docs` (YAML documents) written under `dir`. A resource
    /// Istio rejects is a [`Rejected`] error (downcast it), nothing left running.
    pub async fn start(netns: &Path, dir: &Path, docs: &[String], mesh_config: Option<&str>) -> Result<ControlPlane> {
        let config = dir.join("config");
        std::fs::create_dir_all(&config)?;
        for (i, doc) in docs.iter().enumerate() {
            std::fs::write(config.join(format!("{i:02}.yaml")), doc)?;
        }
        let log = dir.join("idlelab-xds.log");
        let mut cmd = tokio::process::Command::new(xds_bin());
        cmd.arg("--listen").arg(XDS_ADDR);
        if let Some(mesh) = mesh_config {
            let path = dir.join("mesh.yaml");
            std::fs::write(&path, mesh)?;
            cmd.arg("--mesh").arg(path);
        }
        cmd.arg(&config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::from(std::fs::File::create(&log)?));
        let started = Instant::now();
        let mut process = spawn("idlelab-xds", cmd, netns, None)?;
        let stdout = process.child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| anyhow!("idlelab-xds was not ready within 30 s (log: {})", log.display()))??
            .ok_or_else(|| {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                anyhow!("idlelab-xds exited before it was ready: {}", last_lines(&log, 3))
            })?;
        let v: Value = serde_json::from_str(&line).with_context(|| format!("idlelab-xds printed {line}"))?;
        if let Some(r) = v.get("rejected") {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            return Err(Rejected { kind: s("kind"), name: s("name"), message: s("message") }.into());
        }
        let addr = v["ready"].as_str().ok_or_else(|| anyhow!("idlelab-xds printed {line}"))?.to_string();
        let ready_ms = started.elapsed().as_millis() as u64;
        tracing::debug!(addr, ready_ms, docs = docs.len(), "control plane ready");
        // Keep stdin open: idlelab-xds stops when it closes (when this process is gone).
        Ok(ControlPlane { process, addr, log, ready_ms })
    }
}

/// The pod a proxy stands for: what the downward API and the injector would give it.
#[derive(Clone, Debug)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
}

impl Pod {
    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
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
    /// Install the capture and start pilot-agent for `pod` in `netns`, with its files under `dir`.
    pub async fn start(netns: &crate::lab::netns::Netns, dir: &Path, pod: &Pod, xds: &str) -> Result<Proxy> {
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
        let certs = workload_certs(&pod.namespace)?;
        for (file, pem) in
            [("root-cert.pem", &certs.ca_pem), ("cert-chain.pem", &certs.cert_pem), ("key.pem", &certs.key_pem)]
        {
            std::fs::write(root("var/run/secrets/workload-spiffe-credentials").join(file), pem)?;
        }
        chown_tree(dir, PROXY_UID).with_context(|| format!("handing {} to uid {PROXY_UID}", dir.display()))?;

        // The capture, as the init container (root) runs it.
        let args = pod.capture_args();
        let agent = agent_bin().to_string_lossy().into_owned();
        // GOMEMLIMIT set: Istio's automemlimit otherwise logs an error on cgroup v2 hosts.
        let mut full = vec!["GOMEMLIMIT=256MiB", agent.as_str(), "istio-iptables"];
        full.extend(args.iter().map(String::as_str));
        netns.exec("env", &full, None).context("pilot-agent istio-iptables")?;
        tracing::debug!(netns = %netns.name, args = ?args, "capture installed by istio-iptables");

        let envoy = crate::lab::envoy::envoy_bin().ok_or_else(|| anyhow!("no Envoy (run `just setup`)"))?;
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
            .args(["proxy", "sidecar", "--domain", &domain])
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
            .env("SERVICE_ACCOUNT", "default")
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
        crate::lab::envoy::Admin::Tcp { netns: self.netns.clone(), port: ADMIN_PORT }.get(path).await
    }

    /// Envoy's config dump (with the dynamic listeners and clusters it received over ADS).
    pub async fn config_dump(&self) -> Result<Value> {
        Ok(serde_json::from_str(&self.admin_get("/config_dump").await?)?)
    }

    /// Wait until Envoy has a listener named `name` from ADS; returns how long it took.
    pub async fn wait_listener(&self, name: &str, within: Duration) -> Result<u64> {
        let started = Instant::now();
        loop {
            if let Ok(dump) = self.config_dump().await
                && dynamic_listener(&dump, name).is_some()
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

/// A throwaway root and a workload certificate (`spiffe://cluster.local/ns/<ns>/sa/default`)
/// that pilot-agent serves to Envoy over SDS, as if a CA had issued them.
fn workload_certs(namespace: &str) -> Result<crate::lab::tls::RunCa> {
    crate::lab::tls::generate_for(&format!("spiffe://cluster.local/ns/{namespace}/sa/default"))
}

/// The config dump's section of `@type` ending with `suffix`.
pub fn dump_section<'a>(dump: &'a Value, suffix: &str) -> Option<&'a Value> {
    dump["configs"].as_array()?.iter().find(|c| c["@type"].as_str().is_some_and(|t| t.ends_with(suffix)))
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

/// The fields of a sidecar's config that decide these failures, as Envoy received them from
/// Istio's control plane: for the chain the app's connection takes, its `tcp_proxy`
/// `idle_timeout` and its cluster's `upstream_connection_options.tcp_keepalive`.
pub fn deciding_fields(dump: &Value, listener: &str, cluster: &str) -> Value {
    let passthrough = listener == "virtualOutbound";
    let tcp_proxy = dynamic_listener(dump, listener).and_then(|l| {
        l["filter_chains"]
            .as_array()?
            .iter()
            .find(|fc| !passthrough || fc["name"] == "virtualOutbound-catchall-tcp")
            .and_then(|fc| fc["filters"].as_array()?.iter().find(|f| f["name"] == "envoy.filters.network.tcp_proxy"))
            .map(|f| f["typed_config"].clone())
    });
    let cluster_name = if passthrough { "PassthroughCluster" } else { cluster };
    let idle = match tcp_proxy.as_ref().map(|t| t["idle_timeout"].clone()) {
        Some(Value::String(d)) => d,
        Some(_) => "unset (Envoy's tcp_proxy default: 3600s)".into(),
        None => "no tcp_proxy on that chain".into(),
    };
    let statics: Vec<Value> = dump_section(dump, "ListenersConfigDump")
        .and_then(|l| l["static_listeners"].as_array())
        .map(|a| a.iter().map(|l| l["listener"]["name"].clone()).collect())
        .unwrap_or_default();
    let dynamic = dump_section(dump, "ListenersConfigDump")
        .and_then(|l| l["dynamic_listeners"].as_array())
        .map(|a| a.len())
        .unwrap_or(0);
    serde_json::json!({
        "source": "ADS from Istio's discovery server (idlelab-xds)",
        "listener": listener,
        "idle_timeout": idle,
        "cluster": cluster_name,
        "tcp_keepalive": dynamic_cluster(dump, cluster_name)
            .map(|c| c["upstream_connection_options"]["tcp_keepalive"].clone())
            .filter(|v| !v.is_null()),
        "dynamic_listeners": dynamic,
        "static_listeners": statics,
    })
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

/// What one client sidecar received from Istio's control plane.
pub struct SidecarRun {
    pub dump: Value,
    /// The capture istio-iptables installed (`nft list ruleset` in the pod's namespace).
    pub capture: String,
    pub control_plane_ready_ms: u64,
    /// pilot-agent start → the app's listener in Envoy.
    pub proxy_ready_ms: u64,
}

static RUN_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Run Istio's control plane and one client sidecar for `inputs` in a namespace of its own,
/// and return what Envoy received. Everything it started is removed before it returns.
pub async fn sidecar_config(inputs: &objects::SidecarInputs) -> Result<SidecarRun> {
    let seq = RUN_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tag = format!("{}{}-x{seq}", crate::lab::netns::PREFIX, std::process::id());
    let dir = tempfile::Builder::new().prefix(&format!("{tag}-")).tempdir()?;
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let ns = crate::lab::netns::Netns::create(format!("{tag}-pod"))?;
    // The pod's address on a veth pair inside the namespace (no `dummy` module here):
    // istio-iptables and pilot-agent want a local address besides loopback.
    ns.ip_batch(&[
        "link set lo up".to_string(),
        "link add pod0 type veth peer name pod1".to_string(),
        format!("addr add {}/32 dev pod0", inputs.pod.ip),
        "link set pod0 up".to_string(),
        "link set pod1 up".to_string(),
    ])?;
    let cp = ControlPlane::start(&ns.path(), dir.path(), &inputs.docs, inputs.mesh.as_deref()).await?;
    let proxy_dir = dir.path().join("proxy");
    std::fs::create_dir(&proxy_dir)?;
    let started = Instant::now();
    let proxy = Proxy::start(&ns, &proxy_dir, &inputs.pod, &cp.addr).await?;
    let listener = if inputs.listener == "virtualOutbound" { "virtualOutbound" } else { inputs.listener.as_str() };
    proxy.wait_listener(listener, Duration::from_secs(20)).await?;
    let proxy_ready_ms = started.elapsed().as_millis() as u64;
    let dump = proxy.config_dump().await?;
    let capture = ns.exec("nft", &["list", "ruleset"], None)?;
    let control_plane_ready_ms = cp.ready_ms;
    drop(proxy);
    drop(cp);
    drop(ns);
    Ok(SidecarRun { dump, capture, control_plane_ready_ms, proxy_ready_ms })
}
