//! Istio's control plane and every proxy of a set of objects, with no path between them:
//! what each Envoy received (for `idlelab try`'s diff and the tests of what Istio generates).

use super::control_plane::ControlPlane;
use super::proxy::Proxy;
use crate::render::objects;
use anyhow::Result;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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
    let tag = format!("{}{}-x{seq}", crate::local::netns::PREFIX, std::process::id());
    let dir = tempfile::Builder::new().prefix(&format!("{tag}-")).tempdir()?;
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let mut namespaces = Vec::new();
    for (i, p) in objects.proxies.iter().enumerate() {
        let ns = crate::local::netns::Netns::create(format!("{tag}-p{i}"))?;
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
    let ca = crate::certs::MeshCa::new()?;
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
