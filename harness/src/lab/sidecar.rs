//! The `sidecar` hop in the local lab: the client pod's sidecar, as Istio 1.30's own code makes
//! it.
//!
//! ```text
//!   app netns
//!   ┌───────────────────────────────────────────────────────────────────────────────────┐
//!   │ idlelab-xds (Istio's generators) over the cell's objects ◀─ADS─ pilot-agent (1337)  │
//!   │ probe ─connect(server:port)─▶ istio-iptables' nat OUTPUT ─▶ Envoy :15001          │
//!   │   virtualOutbound ─▶ <ip>_<port> (a Service Istio knows) or the catch-all chain    │
//!   └──────────────────────────────────── Envoy's upstream (uid 1337, not captured) ─────┘──▶ next hop
//! ```
//!
//! The objects are the kind backend's ([`crate::istio::objects::for_cell`]): the Service and
//! EndpointSlice, the client Pod with the cell's annotations (the explicit scaled idle
//! timeout, the mitigation's), the mitigation's DestinationRule or EnvoyFilter. Istio decides
//! every listener, cluster and idle timeout; the lab adds only an access log in MeshConfig.

use super::envoy::{Envoy, EnvoyFiles};
use anyhow::Result;

/// MeshConfig for a cell's control plane: an access log line per connection (JSON, the same
/// fields as the lab's other Envoys) in `access_log`, and the mesh-wide settings the path has.
pub fn mesh_config(access_log: &std::path::Path, mesh: Option<&str>) -> String {
    let format = super::envoy::access_log_fields("%UPSTREAM_CLUSTER%");
    format!(
        "accessLogFile: {}\naccessLogEncoding: JSON\naccessLogFormat: {}\n{}",
        serde_json::to_string(&access_log.to_string_lossy()).expect("a string"),
        serde_json::to_string(&format.to_string()).expect("a string"),
        mesh.unwrap_or("")
    )
}

/// The client sidecar as Istio makes it: a control plane (Istio 1.30's generators) over the
/// cell's objects, in the app's namespace; the capture by `istio-iptables`; pilot-agent and its
/// Envoy. Returns once Envoy has the listener the app's connection takes.
pub async fn start(
    inputs: &crate::istio::objects::SidecarInputs,
    files: EnvoyFiles,
    app: &super::netns::Netns,
) -> Result<(Envoy, crate::istio::ControlPlane)> {
    let proxy_dir = files.dir.join("proxy");
    std::fs::create_dir_all(&proxy_dir)?;
    let access_log = proxy_dir.join("access.log");
    let mesh = mesh_config(&access_log, inputs.mesh.as_deref());
    let cp = crate::istio::ControlPlane::start(&app.path(), &files.dir, &inputs.docs, Some(&mesh)).await?;
    let proxy = crate::istio::Proxy::start(app, &proxy_dir, &inputs.pod, &cp.addr).await?;
    let ms = proxy.wait_listener(&inputs.listener, std::time::Duration::from_secs(20)).await?;
    tracing::debug!(listener = %inputs.listener, ms, "sidecar's listeners arrived over ADS");
    let mut fields = crate::istio::deciding_fields(&proxy.config_dump().await?, &inputs.listener, &inputs.cluster);
    fields["control_plane_ready_ms"] = cp.ready_ms.into();
    fields["listener_ready_ms"] = ms.into();
    let envoy = Envoy {
        process: proxy.agent,
        admin: super::envoy::Admin::Tcp { netns: app.path(), port: crate::istio::ADMIN_PORT },
        access_log,
        log: proxy.log,
        istio_config: Some(fields),
    };
    Ok((envoy, cp))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_mesh_config_asks_for_a_json_access_log_and_keeps_the_paths_settings() {
        let m = super::mesh_config(std::path::Path::new("/tmp/x/access.log"), Some("tcpKeepalive:\n  time: 1s\n"));
        let v: serde_json::Value = serde_saphyr::from_str(&m).unwrap();
        assert_eq!(v["accessLogFile"], "/tmp/x/access.log");
        assert_eq!(v["accessLogEncoding"], "JSON");
        let format: serde_json::Value = serde_json::from_str(v["accessLogFormat"].as_str().unwrap()).unwrap();
        assert_eq!(format["close_reason"], "%DOWNSTREAM_LOCAL_CLOSE_REASON%");
        assert_eq!(v["tcpKeepalive"]["time"], "1s");
    }
}
