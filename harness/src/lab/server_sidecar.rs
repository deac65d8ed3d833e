//! The `server-sidecar` hop in the local lab: Envoy's inbound side as uid 1337 in the
//! server's namespace, and the nftables inbound capture istio-iptables would install.
//!
//! ```text
//!   server netns
//!   ┌─────────────────────────────────────────────────────────────────────────────┐
//!   │ to-app ─▶ nat PREROUTING: tcp → redirect :15006                              │
//!   │ Envoy virtualInbound :15006 (original_dst) ─ port match ─▶ inbound|<port>||  │
//!   │                                    ──▶ 127.0.0.1:<port> (the server)          │
//!   └─────────────────────────────────────────────────────────────────────────────┘
//! ```

use super::envoy::{self, Envoy, EnvoyFiles};
use super::netns::Netns;
use crate::hop::ServerSidecarHop;
use anyhow::Result;
use serde_json::{Value, json};

pub const INBOUND_PORT: u16 = 15006;

pub fn bootstrap(hop: &ServerSidecarHop, port: u16, files: &EnvoyFiles) -> Value {
    let name = ServerSidecarHop::stat_prefix(port);
    let listener = json!({
        "name": "virtualInbound",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": INBOUND_PORT}},
        "listener_filters": [{
            "name": "envoy.filters.listener.original_dst",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"}
        }],
        "filter_chains": [{
            "name": format!("0.0.0.0_{port}"),
            "filter_chain_match": {"destination_port": port},
            "filters": [envoy::tcp_proxy(&name, &name, hop.idle_timeout, &files.access_log())]
        }]
    });
    let cluster = envoy::static_cluster(&name, "127.0.0.1", port);
    envoy::bootstrap("sidecar~idlelab-server", &files.admin(), vec![listener], vec![cluster])
}

/// Inbound capture: every TCP connection arriving from the path goes to :15006.
pub fn capture_ruleset() -> String {
    format!(
        "table ip idlelab_inbound {{\n  chain prerouting {{\n    type nat hook prerouting priority -100; policy accept;\n    iifname \"to-app\" meta l4proto tcp redirect to :{INBOUND_PORT}\n  }}\n}}\n"
    )
}

pub async fn start(hop: &ServerSidecarHop, port: u16, files: EnvoyFiles, ns: &Netns, name: &str) -> Result<Envoy> {
    let config = bootstrap(hop, port, &files);
    let envoy = Envoy::start(name, files, &config, &ns.path()).await?;
    ns.nft_apply("server sidecar: inbound capture", &capture_ruleset())?;
    Ok(envoy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::Dur;

    #[test]
    fn inbound_chain_matches_the_port_and_targets_loopback() {
        let files = EnvoyFiles { dir: "/tmp/x".into() };
        let b = bootstrap(&ServerSidecarHop { idle_timeout: Dur::secs(6) }, 6379, &files);
        let chain = &b["static_resources"]["listeners"][0]["filter_chains"][0];
        assert_eq!(chain["filter_chain_match"]["destination_port"], 6379);
        assert_eq!(chain["filters"][0]["typed_config"]["stat_prefix"], "inbound|6379||");
        assert_eq!(chain["filters"][0]["typed_config"]["idle_timeout"], "6.000s");
        let ep = &b["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0];
        assert_eq!(ep["endpoint"]["address"]["socket_address"]["address"], "127.0.0.1");
        assert!(capture_ruleset().contains("redirect to :15006"));
    }
}
