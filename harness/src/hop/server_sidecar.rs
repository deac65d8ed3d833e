//! The server pod's sidecar: Istio's inbound side, pilot-agent + Envoy in the server's
//! namespace with `istio-iptables`' inbound capture.
//!
//! ```text
//!   … ──▶ ┌──────────── server pod (netns) ──────────────────────────────────┐
//!         │ capture (istio-iptables): tcp → :15006                            │
//!         │ Envoy virtualInbound :15006 ── inbound|<port>|| ──▶ <pod IP>:<port>│
//!         └──────────────── tcp_proxy idle_timeout (Istio mTLS from a sidecar)┘
//! ```
//!
//! Its idle timeout is Istio's 1 h by default, set per pod by `ISTIO_META_IDLE_TIMEOUT`; a
//! DestinationRule `idleTimeout` on the client side does not reach it (istio#60009). It must
//! be the last hop of a path.

use super::contract::{PathHop, ProxyRole};
use crate::model::duration::Dur;
use crate::model::scale::KnobDuration;
use serde::{Deserialize, Serialize};

fn istio_default_idle_timeout() -> Dur {
    Dur::secs(3600)
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerSidecarHop {
    /// The inbound `tcp_proxy` `idle_timeout`; `0s` turns it off.
    #[serde(default = "istio_default_idle_timeout")]
    pub idle_timeout: Dur,
}

impl Default for ServerSidecarHop {
    fn default() -> Self {
        ServerSidecarHop { idle_timeout: istio_default_idle_timeout() }
    }
}

impl PathHop for ServerSidecarHop {
    fn kind(&self) -> &'static str {
        "server-sidecar"
    }
    fn durations_mut(&mut self, index: usize) -> Vec<KnobDuration<'_>> {
        KnobDuration::envoy_idle_timeout(format!("path[{index}].server-sidecar.idle_timeout"), &mut self.idle_timeout)
            .into_iter()
            .collect()
    }
    fn terminates_tcp(&self, _port: u16) -> bool {
        true
    }
    fn proxy_role(&self) -> Option<ProxyRole> {
        Some(ProxyRole::ServerSidecar)
    }
    fn sidecar_pod(&self) -> Option<&'static str> {
        Some("server")
    }
}
