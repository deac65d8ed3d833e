//! One Istio proxy in the local lab: the pod it stands for (what the downward API and the
//! injector would give it), Istio's capture in the pod's namespace, pilot-agent and its Envoy.

use super::config_dump::{chains, dynamic_listener, dynamic_route_config, route_names};
use crate::local::envoy::last_lines;
use crate::local::process::{LabProcess, spawn};
use crate::render::objects::Pod;
use crate::tools::{agent_bin, bootstrap_template};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The uid Istio's proxy runs as; the capture exempts it.
pub use crate::local::envoy::ENVOY_UID as PROXY_UID;
/// Envoy's admin port in Istio's bootstrap (loopback of the pod's namespace).
pub const ADMIN_PORT: u16 = 15000;

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
        netns: &crate::local::netns::Netns,
        dir: &Path,
        pod: &Pod,
        xds: &str,
        role: crate::render::objects::ProxyRole,
        ca: &crate::certs::MeshCa,
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

        let router = role == crate::render::objects::ProxyRole::Gateway;
        if !router {
            // The capture, as the init container (root) runs it.
            let args = capture_args(pod);
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
            "proxyStatsMatcher": {"inclusionPrefixes": ["tcp.", "listener.", "cluster.outbound|", "cluster.inbound|", "cluster.PassthroughCluster", "http."]}
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
        crate::local::envoy::Admin { netns: self.netns.clone(), port: ADMIN_PORT }.get(path).await
    }

    /// Envoy's config dump (with the dynamic listeners and clusters it received over ADS).
    pub async fn config_dump(&self) -> Result<Value> {
        Ok(serde_json::from_str(&self.admin_get("/config_dump").await?)?)
    }

    /// Wait until Envoy has, from ADS, the listener and the chain that carry the app's
    /// connection through `p`, and that listener is no longer warming; returns how long it took.
    pub async fn wait_chain(&self, p: &crate::render::objects::ProxyInputs, within: Duration) -> Result<u64> {
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

/// `pilot-agent istio-iptables` arguments, as Istio's injection template renders them
/// from the pod's `traffic.sidecar.istio.io/*` annotations.
fn capture_args(pod: &Pod) -> Vec<String> {
    let uid = PROXY_UID.to_string();
    let mut args: Vec<String> =
        ["-p", "15001", "-z", "15006", "-u", &uid, "-m", "REDIRECT", "-i", "*", "-b", "*", "-d", "15090,15021,15020"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.push("-x".into());
    args.push(pod.annotation("traffic.sidecar.istio.io/excludeOutboundIPRanges").unwrap_or("").into());
    if let Some(ports) = pod.annotation("traffic.sidecar.istio.io/excludeOutboundPorts") {
        args.push("-o".into());
        args.push(ports.into());
    }
    args.push("--native-nftables".into());
    args
}
