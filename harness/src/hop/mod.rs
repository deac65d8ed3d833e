//! Hops: what stands between the app and the server, in path order.
//!
//! ```text
//!   app ──▶ hop[0] ──▶ hop[1] ──▶ … ──▶ server
//! ```
//!
//! Each hop kind is one small type in its own file, with the parameters a scenario sets.
//! How a hop is built in the local lab lives in `lab/`; the scenario side only describes it.

pub mod gateway;
pub mod middlebox;
pub mod server_sidecar;
pub mod sidecar;

pub use gateway::GatewayHop;
pub use middlebox::{MiddleboxHop, OnUnknown};
pub use server_sidecar::ServerSidecarHop;
pub use sidecar::{Route, SidecarHop};

use crate::model::service::Service;
use serde::{Deserialize, Serialize};

/// One hop of a scenario's `path:` list, written as `- sidecar: {...}`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Hop {
    Sidecar(SidecarHop),
    Middlebox(MiddleboxHop),
    Gateway(GatewayHop),
    ServerSidecar(ServerSidecarHop),
}

impl Hop {
    pub fn kind(&self) -> &'static str {
        match self {
            Hop::Sidecar(_) => "sidecar",
            Hop::Middlebox(_) => "middlebox",
            Hop::Gateway(_) => "gateway",
            Hop::ServerSidecar(_) => "server-sidecar",
        }
    }

    /// The hop's durations, for the time scale (label, value, how they are applied).
    pub fn durations_mut(&mut self, index: usize) -> Vec<crate::model::scale::KnobDuration<'_>> {
        match self {
            Hop::Sidecar(h) => h.durations_mut(index),
            Hop::Middlebox(h) => h.durations_mut(index),
            Hop::Gateway(h) => h.durations_mut(index),
            Hop::ServerSidecar(h) => h.durations_mut(index),
        }
    }
}

/// The ingress gateway's Service and namespace, as Istio's default profile names them.
pub const GATEWAY_NAMESPACE: &str = "istio-system";
pub const GATEWAY_SERVICE: &str = "istio-ingressgateway";

/// The host the client sidecar's upstream is, in the local lab: the gateway's Service when
/// the path has one, else the server's.
pub fn target_host(path: &[Hop], service: Service, namespace: &str) -> String {
    if path.iter().any(|h| matches!(h, Hop::Gateway(_))) {
        format!("{GATEWAY_SERVICE}.{GATEWAY_NAMESPACE}.svc.cluster.local")
    } else {
        format!("{}.{namespace}.svc.cluster.local", service.name())
    }
}
