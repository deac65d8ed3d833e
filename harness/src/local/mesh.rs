//! Istio's proxies of a cell in the local lab: the client sidecar, the server sidecar and the
//! ingress gateway, each a pilot-agent + Envoy configured by Istio 1.30's own code.
//!
//! ```text
//!   app netns                          gw netns                      srv netns
//!   ┌──────────────────────────────┐   ┌────────────────────────┐   ┌────────────────────────────┐
//!   │ idlelab-xds :15010 ◀──ADS──┐ │   │ :15010 (inherited fd)  │   │ :15010 (inherited fd)      │
//!   │ probe ─▶ istio-iptables    │ │   │   ▲ ADS                │   │   ▲ ADS                    │
//!   │   ─▶ Envoy :15001 (sidecar)┘ │──▶│ Envoy 0.0.0.0_<port>   │──▶│ capture ─▶ Envoy :15006    │
//!   │      outbound|<port>||<host> │   │ (router; TLS, SDS)     │   │ inbound|<port>|| ─▶ server │
//!   └──────────────────────────────┘   └────────────────────────┘   └────────────────────────────┘
//! ```
//!
//! One control plane per cell serves every pod of the cell (as istiod serves a cluster): it
//! runs in the app's namespace and also listens, through sockets opened in theirs, in the
//! gateway's and the server's. Its objects are the kind backend's
//! ([`crate::render::objects::for_cell`]). Istio decides every listener, cluster, idle timeout,
//! retry policy and certificate; the lab adds only an access log in MeshConfig.

use super::envoy::{Envoy, EnvoyFiles};
use crate::render::objects::{CellObjects, ProxyInputs};
use anyhow::Result;

/// Where each proxy's Envoy writes its access log: relative to its working directory (Envoy
/// runs in pilot-agent's, the proxy's own dir), so one MeshConfig serves every proxy.
const ACCESS_LOG: &str = "access.log";

/// MeshConfig for a cell's control plane: an access log line per connection or HTTP request
/// (JSON, [`super::envoy::access_log_fields`]), and the mesh-wide settings the path has.
pub fn mesh_config(mesh: Option<&str>) -> String {
    // The run's Envoy (`--envoy`) decides which fields its access log may ask for. With no
    // Envoy at all nothing starts; one whose release cannot be read gets the fields every
    // release takes.
    let envoy = match crate::tools::envoy_bin().map(|b| crate::tools::envoy_version(&b)) {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "the Envoy's release is unknown: its access log asks for no close reasons");
            (0, 0, 0)
        }
        None => (1, 40, 0),
    };
    let format = super::envoy::access_log_fields("%UPSTREAM_CLUSTER%", envoy);
    format!(
        "accessLogFile: {ACCESS_LOG}\naccessLogEncoding: JSON\naccessLogFormat: {}\n{}",
        serde_json::to_string(&format.to_string()).expect("a string"),
        mesh.unwrap_or("")
    )
}

/// Start Istio's control plane for a cell's objects in `home` (the app's namespace), also
/// serving in `others` (the gateway's and the server's namespaces).
pub async fn start_control_plane(
    objects: &CellObjects,
    home: &super::netns::Netns,
    others: &[std::path::PathBuf],
    dir: &std::path::Path,
) -> Result<crate::local::control_plane::ControlPlane> {
    let mesh = mesh_config(objects.mesh.as_deref());
    crate::local::control_plane::ControlPlane::start(&home.path(), others, dir, &objects.docs, Some(&mesh)).await
}

/// Start one proxy of the cell in `netns`; returns once Envoy has the chain the app's
/// connection takes through it, with the deciding fields of its config.
pub async fn start_proxy(
    p: &ProxyInputs,
    files: EnvoyFiles,
    netns: &super::netns::Netns,
    xds: &str,
    ca: &crate::certs::MeshCa,
) -> Result<Envoy> {
    let proxy_dir = files.dir.join("proxy");
    std::fs::create_dir_all(&proxy_dir)?;
    let proxy = crate::local::proxy::Proxy::start(netns, &proxy_dir, &p.pod, xds, p.role, ca).await?;
    let ms = proxy.wait_chain(p, std::time::Duration::from_secs(20)).await?;
    tracing::debug!(role = p.role.name(), listener = %p.listener, ms, "the proxy's listeners arrived over ADS");
    let mut fields = crate::local::config_dump::deciding_fields(&proxy.config_dump().await?, p);
    fields["listener_ready_ms"] = ms.into();
    Ok(Envoy {
        process: proxy.agent,
        admin: super::envoy::Admin { netns: netns.path(), port: crate::local::proxy::ADMIN_PORT },
        access_log: proxy_dir.join(ACCESS_LOG),
        log: proxy.log,
        istio_config: Some(fields),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_mesh_config_asks_for_a_json_access_log_and_keeps_the_paths_settings() {
        let m = super::mesh_config(Some("tcpKeepalive:\n  time: 1s\n"));
        let v: serde_json::Value = serde_saphyr::from_str(&m).unwrap();
        assert_eq!(v["accessLogFile"], "access.log");
        assert_eq!(v["accessLogEncoding"], "JSON");
        let format: serde_json::Value = serde_json::from_str(v["accessLogFormat"].as_str().unwrap()).unwrap();
        assert_eq!(format["close_reason"], "%DOWNSTREAM_LOCAL_CLOSE_REASON%");
        assert_eq!(format["code"], "%RESPONSE_CODE%");
        assert_eq!(v["tcpKeepalive"]["time"], "1s");
    }
}
