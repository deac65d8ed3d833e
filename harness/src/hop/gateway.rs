//! An ingress gateway: Istio's ingress gateway in front of the server.
//!
//! ```text
//!   … ──▶ ┌ gateway netns ──────────────────────────────────────────────────┐ ──▶ server
//!         │ pilot-agent proxy router + Envoy, configured by Istio from the    │
//!         │ cell's Gateway + VirtualService: listener 0.0.0.0_<port>          │
//!         │   [TLS from the Gateway's credentialName Secret, over SDS]        │
//!         │   [socket_options from an EnvoyFilter]  tcp_proxy ──▶ server      │
//!         └───────────────────────────────────────────────────────────────────┘
//! ```
//!
//! The app connects to the gateway's Service (`istio-ingressgateway.istio-system`). With
//! `keepalive` (set by the `gateway-keepalive` mitigation, or here for a gateway that has it
//! already), an EnvoyFilter puts SO_KEEPALIVE / TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT at
//! STATE_PREBIND on the listener, so every accepted downstream socket probes back through
//! whatever sits in front of the gateway. Its idle timeout is Envoy's `tcp_proxy` default
//! (1 h); a compressed run sets the scaled value with an EnvoyFilter (`render::istio`).

use super::contract::{PathHop, ProxyRole, Toward};
use crate::model::duration::Dur;
use crate::model::scale::KnobDuration;
use crate::model::service::Keepalive;
use serde::{Deserialize, Serialize};

fn istio_default_idle_timeout() -> Dur {
    Dur::secs(3600)
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayHop {
    /// The gateway's `tcp_proxy` `idle_timeout`; `0s` turns it off.
    #[serde(default = "istio_default_idle_timeout")]
    pub idle_timeout: Dur,
    /// Terminate TLS at the gateway (a certificate from a CA generated for the run).
    #[serde(default)]
    pub tls: bool,
    /// Keepalive socket options on the listener (inherited by accepted sockets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<Keepalive>,
    /// Further listener `socket_options`, passed to Envoy as written (not time-scaled: put
    /// durations in `keepalive`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub socket_options: Vec<SocketOption>,
}


/// The ingress gateway's Service and namespace, as Istio's default profile names them.
pub const GATEWAY_NAMESPACE: &str = "istio-system";
pub const GATEWAY_SERVICE: &str = "istio-ingressgateway";

/// One Envoy `SocketOption` with an integer value.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SocketOption {
    pub level: i64,
    pub name: i64,
    pub int_value: i64,
    #[serde(default)]
    pub state: SocketState,
}

/// When Envoy applies the option (`socket_option.proto`).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SocketState {
    /// Before bind(): inherited by accepted sockets.
    #[default]
    Prebind,
    Bound,
    /// After listen(); Istio ≥ 1.9 fails these on listeners (istio#28879).
    Listening,
}

impl SocketOption {
    pub fn envoy_json(&self) -> serde_json::Value {
        let state = match self.state {
            SocketState::Prebind => "STATE_PREBIND",
            SocketState::Bound => "STATE_BOUND",
            SocketState::Listening => "STATE_LISTENING",
        };
        serde_json::json!({"level": self.level, "name": self.name, "int_value": self.int_value, "state": state})
    }
}

impl Default for GatewayHop {
    fn default() -> Self {
        GatewayHop { idle_timeout: istio_default_idle_timeout(), tls: false, keepalive: None, socket_options: vec![] }
    }
}

impl PathHop for GatewayHop {
    fn kind(&self) -> &'static str {
        "gateway"
    }
    fn durations_mut(&mut self, index: usize) -> Vec<KnobDuration<'_>> {
        let mut out = Vec::new();
        out.extend(KnobDuration::envoy_idle_timeout(
            format!("path[{index}].gateway.idle_timeout"),
            &mut self.idle_timeout,
        ));
        if let Some(ka) = self.keepalive.as_mut() {
            out.extend(ka.durations_mut(&format!("path[{index}].gateway.keepalive")));
        }
        out
    }
    fn terminates_tcp(&self, _port: u16) -> bool {
        true
    }
    fn own_keepalive(&self, index: usize) -> Option<(String, Keepalive, Toward)> {
        self.keepalive.map(|ka| (format!("path[{index}].gateway.keepalive"), ka, Toward::App))
    }
    fn proxy_role(&self) -> Option<ProxyRole> {
        Some(ProxyRole::Gateway)
    }
    fn own_node(&self, index: usize) -> Option<String> {
        Some(format!("gw{index}"))
    }
    fn cluster_host(&self, _index: usize, _ns: &str) -> Option<String> {
        self.local_host()
    }
    fn local_host(&self) -> Option<String> {
        Some(format!("{GATEWAY_SERVICE}.{GATEWAY_NAMESPACE}.svc.cluster.local"))
    }
}
