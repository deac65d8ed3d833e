//! The client pod's sidecar: Envoy with Istio's outbound capture.
//!
//! ```text
//!   ┌──────────── app pod (netns) ─────────────────────────┐
//!   │ probe ──nft redirect──▶ Envoy :15001 (virtualOutbound)│
//!   │                          ├─ route: service     → listener <ip>_<port> → cluster outbound|<port>||<svc>
//!   │                          └─ route: passthrough → PassthroughCluster (ORIGINAL_DST)
//!   └───────────────────────────────── tcp_proxy idle_timeout ─┘──▶ next hop / server
//! ```
//!
//! Envoy's `tcp_proxy` closes a connection that carried no bytes in either direction for
//! `idle_timeout` (Istio's default: 1 h), with a FIN to both sides. Kernel keepalive probes
//! carry no bytes and end at Envoy's own socket, so they never reset that timer.

use crate::duration::Dur;
use crate::knobs::{KnobDuration, Precision};
use serde::{Deserialize, Serialize};

fn istio_default_idle_timeout() -> Dur {
    Dur::secs(3600)
}

/// How the sidecar routes the app's connection.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    /// A Kubernetes Service Istio knows: a per-service listener and cluster.
    #[default]
    Service,
    /// An address Istio does not know: the virtualOutbound catch-all to `PassthroughCluster`.
    Passthrough,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SidecarHop {
    /// `tcp_proxy` `idle_timeout` of the outbound chain; `0s` turns it off.
    #[serde(default = "istio_default_idle_timeout")]
    pub idle_timeout: Dur,
    #[serde(default)]
    pub route: Route,
    /// Ports whose outbound traffic is not captured: only the `exclude-outbound-ports`
    /// mitigation sets them, so a scenario cannot hide a mitigation in its path.
    #[serde(default, skip_deserializing, skip_serializing_if = "Vec::is_empty")]
    pub exclude_outbound_ports: Vec<u16>,
}

impl SidecarHop {
    pub fn durations_mut(&mut self, index: usize) -> Vec<KnobDuration<'_>> {
        if self.idle_timeout.is_zero() {
            return vec![];
        }
        vec![KnobDuration {
            label: format!("path[{index}].sidecar.idle_timeout"),
            value: &mut self.idle_timeout,
            precision: Precision::Millis,
            deciding: true,
        }]
    }

    /// Envoy's stat prefix for the chain the app's connection takes, as Istio names it.
    pub fn stat_prefix(&self, service: &str, port: u16) -> String {
        match self.route {
            Route::Service => format!("outbound|{port}||{service}"),
            Route::Passthrough => "PassthroughCluster".into(),
        }
    }
}
