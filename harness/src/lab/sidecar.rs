//! The `sidecar` hop in the local lab: Envoy as uid 1337 in the app's namespace, and the
//! nftables capture that istio-iptables would install.
//!
//! ```text
//!   app netns
//!   ┌──────────────────────────────────────────────────────────────────────────┐
//!   │ probe ─connect(server:port)─▶ nat OUTPUT: uid 1337? lo? excluded port? → as is │
//!   │                                          else redirect :15001             │
//!   │ Envoy virtualOutbound :15001 (original_dst)                               │
//!   │   ├─ <ip>_<port> listener (route: service) ─▶ outbound|<port>||<svc>      │
//!   │   └─ catch-all chain (route: passthrough)   ─▶ PassthroughCluster         │
//!   └────────────────────────────────────────── Envoy's upstream (uid 1337) ───┘──▶ server
//! ```

use super::envoy::{self, Envoy, EnvoyFiles};
use crate::hop::{Route, SidecarHop};
use anyhow::Result;
use serde_json::{Value, json};
use std::net::Ipv4Addr;

pub const OUTBOUND_PORT: u16 = 15001;

/// The names Envoy's stats and access log use for the app's connection.
pub struct SidecarNames {
    pub service_cluster: String,
    pub stat_prefix: String,
}

pub fn names(hop: &SidecarHop, service: &str, port: u16) -> SidecarNames {
    let service_cluster = format!("outbound|{port}||{service}.idlelab.svc.cluster.local");
    let stat_prefix = match hop.route {
        Route::Service => service_cluster.clone(),
        Route::Passthrough => "PassthroughCluster".into(),
    };
    SidecarNames { service_cluster, stat_prefix }
}

/// The sidecar's Envoy bootstrap, as Istio would shape its outbound side.
pub fn bootstrap(hop: &SidecarHop, service: &str, server: Ipv4Addr, port: u16, files: &EnvoyFiles) -> Value {
    let n = names(hop, service, port);
    let log = files.access_log();
    let mut passthrough = json!({
        "name": "PassthroughCluster",
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "10s"
    });
    let mut listeners = vec![json!({
        "name": "virtualOutbound",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": OUTBOUND_PORT}},
        "use_original_dst": true,
        "listener_filters": [{
            "name": "envoy.filters.listener.original_dst",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"}
        }],
        "filter_chains": [{
            "name": "PassthroughFilterChain",
            "filters": [envoy::tcp_proxy("PassthroughCluster", "PassthroughCluster", hop.idle_timeout, &log)]
        }]
    })];
    // A mesh-wide keepalive reaches every cluster; a DestinationRule's only its host's.
    if let Some(ka) = hop.upstream_keepalive {
        passthrough["upstream_connection_options"] = envoy::upstream_keepalive(ka);
    }
    let keepalive = hop.service_upstream_keepalive.or(hop.upstream_keepalive).map(envoy::upstream_keepalive);
    let mut clusters = vec![passthrough];
    if hop.route == Route::Service {
        listeners.push(json!({
            "name": format!("{server}_{port}"),
            "address": {"socket_address": {"address": server.to_string(), "port_value": port}},
            "bind_to_port": false,
            "filter_chains": [{"filters": [
                envoy::tcp_proxy(&n.stat_prefix, &n.service_cluster, hop.effective_idle_timeout(), &log)
            ]}]
        }));
        let mut cluster = envoy::static_cluster(&n.service_cluster, &server.to_string(), port);
        if let Some(ka) = keepalive {
            cluster["upstream_connection_options"] = ka;
        }
        clusters.push(cluster);
    }
    envoy::bootstrap("sidecar~idlelab-probe", &files.admin(), listeners, clusters)
}

/// The outbound capture, in the order istio-iptables builds ISTIO_OUTPUT.
pub fn capture_ruleset(hop: &SidecarHop) -> String {
    let list = |items: Vec<String>| items.join(", ");
    let mut rules = Vec::new();
    if !hop.exclude_outbound_ports.is_empty() {
        let ports = list(hop.exclude_outbound_ports.iter().map(u16::to_string).collect());
        rules.push(format!("tcp dport {{ {ports} }} return comment \"excludeOutboundPorts\""));
    }
    rules.push(format!("meta skuid {} return comment \"Envoy's own traffic\"", envoy::ENVOY_UID));
    rules.push("ip daddr 127.0.0.1 return".into());
    if !hop.exclude_outbound_ip_ranges.is_empty() {
        let ranges = list(hop.exclude_outbound_ip_ranges.clone());
        rules.push(format!("ip daddr {{ {ranges} }} return comment \"excludeOutboundIPRanges\""));
    }
    rules.push(format!("meta l4proto tcp redirect to :{OUTBOUND_PORT}"));
    let body: String = rules.iter().map(|r| format!("    {r}\n")).collect();
    format!(
        "table ip idlelab_capture {{\n  chain output {{\n    type nat hook output priority -100; policy accept;\n{body}  }}\n}}\n"
    )
}

/// Install the capture and start Envoy in the app namespace.
pub async fn start(
    hop: &SidecarHop,
    service: &str,
    server: Ipv4Addr,
    port: u16,
    files: EnvoyFiles,
    app: &super::netns::Netns,
    process_name: &str,
) -> Result<Envoy> {
    let config = bootstrap(hop, service, server, port, &files);
    let envoy = Envoy::start(process_name, files, &config, &app.path()).await?;
    // Capture last: until Envoy listens, a redirected connection would be refused.
    app.nft_apply("sidecar: outbound capture", &capture_ruleset(hop))?;
    Ok(envoy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::Dur;

    fn hop(route: Route) -> SidecarHop {
        SidecarHop { idle_timeout: Dur::secs(6), route, ..Default::default() }
    }

    #[test]
    fn service_route_adds_a_listener_and_cluster() {
        let files = EnvoyFiles { dir: "/tmp/x".into() };
        let b = bootstrap(&hop(Route::Service), "redis", Ipv4Addr::new(198, 18, 0, 2), 6379, &files);
        let listeners = b["static_resources"]["listeners"].as_array().unwrap();
        assert_eq!(listeners.len(), 2);
        assert_eq!(listeners[1]["name"], "198.18.0.2_6379");
        assert_eq!(listeners[1]["bind_to_port"], false);
        let tp = &listeners[1]["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(tp["idle_timeout"], "6.000s");
        assert_eq!(tp["stat_prefix"], "outbound|6379||redis.idlelab.svc.cluster.local");
        let b = bootstrap(&hop(Route::Passthrough), "redis", Ipv4Addr::new(198, 18, 0, 2), 6379, &files);
        assert_eq!(b["static_resources"]["listeners"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn excluded_ports_return_before_the_redirect() {
        let mut h = hop(Route::Service);
        assert!(!capture_ruleset(&h).contains("dport"));
        h.exclude_outbound_ports = vec![6379, 3306];
        h.exclude_outbound_ip_ranges = vec!["198.18.0.0/15".into()];
        let r = capture_ruleset(&h);
        let excl = r.find("tcp dport { 6379, 3306 } return").unwrap();
        let range = r.find("ip daddr { 198.18.0.0/15 } return").unwrap();
        assert!(excl < r.find("redirect").unwrap() && range < r.find("redirect").unwrap(), "{r}");
    }
}
