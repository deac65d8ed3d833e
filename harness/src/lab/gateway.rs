//! The `gateway` hop in the local lab: Envoy (uid 1337) in its own namespace, listening on
//! its address, optionally terminating TLS, with keepalive socket options on the listener.
//!
//! ```text
//!   … ─▶ gateway netns: Envoy <ip>:<port> [DownstreamTlsContext] [socket_options PREBIND]
//!                        tcp_proxy idle_timeout ─▶ cluster outbound|<port>||<svc> ─▶ server
//! ```

use super::envoy::{self, Envoy, EnvoyFiles};
use super::netns::Netns;
use crate::hop::GatewayHop;
use crate::mitigation::gateway_keepalive::socket_options;
use anyhow::Result;
use serde_json::{Value, json};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Certificate and key files of the gateway (readable by uid 1337).
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn bootstrap(
    hop: &GatewayHop,
    service: &str,
    listen: Ipv4Addr,
    server: Ipv4Addr,
    port: u16,
    files: &EnvoyFiles,
    tls: Option<&TlsFiles>,
) -> Value {
    let cluster_name = format!("outbound|{port}||{service}.idlelab.svc.cluster.local");
    let mut chain = json!({
        "filters": [envoy::tcp_proxy(&format!("gateway|{port}"), &cluster_name, hop.idle_timeout, &files.access_log())]
    });
    if let Some(t) = tls {
        chain["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": {"tls_certificates": [{
                    "certificate_chain": {"filename": t.cert},
                    "private_key": {"filename": t.key}
                }]}
            }
        });
    }
    let mut listener = json!({
        "name": format!("gateway_{port}"),
        "address": {"socket_address": {"address": listen.to_string(), "port_value": port}},
        "filter_chains": [chain]
    });
    let mut options: Vec<Value> =
        hop.keepalive.as_ref().map(socket_options).and_then(|v| v.as_array().cloned()).unwrap_or_default();
    options.extend(hop.socket_options.iter().map(|o| o.envoy_json()));
    if !options.is_empty() {
        listener["socket_options"] = Value::Array(options);
    }
    let cluster = envoy::static_cluster(&cluster_name, &server.to_string(), port);
    envoy::bootstrap("router~idlelab-gateway", &files.admin(), vec![listener], vec![cluster])
}

#[allow(clippy::too_many_arguments)]
pub async fn start(
    hop: &GatewayHop,
    service: &str,
    listen: Ipv4Addr,
    server: Ipv4Addr,
    port: u16,
    files: EnvoyFiles,
    tls: Option<&TlsFiles>,
    ns: &Netns,
    name: &str,
) -> Result<Envoy> {
    let config = bootstrap(hop, service, listen, server, port, &files, tls);
    Envoy::start(name, files, &config, &ns.path()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::Dur;
    use crate::scenario::Keepalive;

    #[test]
    fn listener_with_tls_and_keepalive_options() {
        let files = EnvoyFiles { dir: "/tmp/x".into() };
        let hop = GatewayHop {
            idle_timeout: Dur::secs(6),
            tls: true,
            keepalive: Some(Keepalive { time: Dur::secs(1), interval: Dur::secs(1), probes: 3 }),
            socket_options: vec![crate::hop::gateway::SocketOption {
                level: 6,
                name: 18,
                int_value: 5000,
                state: Default::default(),
            }],
        };
        let tls = TlsFiles { cert: "/tmp/x/cert.pem".into(), key: "/tmp/x/key.pem".into() };
        let ip = Ipv4Addr::new(198, 18, 0, 6);
        let b = bootstrap(&hop, "https", ip, Ipv4Addr::new(198, 18, 0, 10), 8443, &files, Some(&tls));
        let l = &b["static_resources"]["listeners"][0];
        assert_eq!(l["socket_options"].as_array().unwrap().len(), 5);
        assert_eq!(l["socket_options"][4]["name"], 18, "TCP_USER_TIMEOUT passed as written");
        assert_eq!(l["socket_options"][0]["state"], "STATE_PREBIND");
        assert!(
            l["filter_chains"][0]["transport_socket"]["typed_config"]["@type"]
                .as_str()
                .unwrap()
                .ends_with("DownstreamTlsContext")
        );
        let plain = bootstrap(&GatewayHop::default(), "http", ip, ip, 8080, &files, None);
        assert!(plain["static_resources"]["listeners"][0].get("socket_options").is_none());
    }
}
