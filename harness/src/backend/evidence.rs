//! What a backend measured besides the probe's observations: the local lab's sockets,
//! middleboxes and Envoys. Types only, so that the runner and the reporters read them without
//! knowing the backend that filled them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// What the local lab recorded besides the probe's observations.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LabEvidence {
    pub namespaces: Vec<String>,
    pub addresses: BTreeMap<String, String>,
    /// The Istio release of the cell's control plane, as the running binary reported it
    /// (`1.30-dev (9739e10eb9d7)`); None: the cell has no proxy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub istio_release: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub envoys: Vec<EnvoyEvidence>,
    /// The TCP sockets of the namespaces with sockets (sock_diag, what `ss -tano` shows),
    /// after warm-up and just before the reuse.
    pub sockets: Vec<SocketSnapshot>,
    /// Each middlebox's conntrack entries and forgotten-segment counter, after warm-up,
    /// before and after the reuse.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub middleboxes: Vec<MiddleboxView>,
    /// HTTP: how many requests the server received, per path (warm-up and reuse). More
    /// reuse requests than the app sent means a proxy retried one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_requests: Option<BTreeMap<String, u64>>,
    /// Per EnvoyFilter of the cell, what Istio's own accounting says it applied: its patch
    /// types, or none (it matched nothing); and Istio's patch errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub envoy_filters: Vec<EnvoyFilterStatus>,
    /// HTTP: one sentence of what the app got on reuse, what the first proxy's Envoy logged
    /// for those requests (code, flags, attempts: more than one is a retry) and how many the
    /// server received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// With `--capture`: the cell's pcapng and, per connection of the app that ended badly,
    /// the hop that acted first (`capture::attribute`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureEvidence>,
    pub setup_ms: u64,
    /// Of the setup: starting the server until it accepts connections (MariaDB includes
    /// copying the template data directory; the run's one-time initialisation is not counted).
    pub server_start_ms: u64,
    pub teardown_ms: u64,
}

/// A cell's capture and what it says about each connection of the app that ended badly.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CaptureEvidence {
    pub file: String,
    pub packets: usize,
    /// The interface blocks' names: `<node> <interface>`.
    pub interfaces: Vec<String>,
    pub attributions: Vec<crate::capture::attribute::Attribution>,
    /// The hops the lab configured to act first (`CellConfig::configured_first_acts`).
    pub configured: Vec<crate::config::ConfiguredAct>,
    /// Of the attributions, how many name that hop and that act.
    pub agree: usize,
    /// Per node whose capture socket lost packets (the kernel's count): how many.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub lost: std::collections::BTreeMap<String, u32>,
}

/// What one Envoy of the path recorded.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EnvoyEvidence {
    /// `sidecar`, …
    pub role: String,
    /// Its release, as the running Envoy reported it (admin `/server_info`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The Istio release of the pilot-agent that bootstrapped it (its node metadata's
    /// `ISTIO_VERSION` in `/server_info`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub istio_agent: Option<String>,
    /// Non-zero counters about connections and idle timeouts.
    pub counters: BTreeMap<String, u64>,
    /// One JSON object per closed connection (duration, response flags, close reason).
    pub access_log: Vec<Value>,
    /// For a sidecar configured by Istio's code: what decides the outcome, from its config
    /// dump (idle timeout of the app's chain, its cluster's keepalive, where it came from).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub istio_config: Option<Value>,
}

/// One EnvoyFilter as Istio applied it (`ControlPlane::envoy_filter_status`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct EnvoyFilterStatus {
    /// `namespace/name`.
    pub name: String,
    /// The patch types (`cluster`, `listener`, `networkfilter`, …) Istio applied.
    pub applied: Vec<String>,
    /// "applied", or "not applied: it matched nothing on any proxy of the cell".
    pub status: String,
}

/// One moment's view of a namespace's sockets.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct SocketSnapshot {
    pub netns_role: String,
    pub moment: String,
    pub sockets: Vec<SocketView>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct SocketView {
    pub state: String,
    pub local: String,
    pub peer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    pub uid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer: Option<String>,
    /// SO_KEEPALIVE as read from the socket (or, when its owner could not be reached, whether
    /// the timer is a keepalive timer: see `keepalive_read_from`).
    pub keepalive: bool,
    /// The socket's keepalive settings when keepalive is on and the socket could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_options: Option<KeepaliveOptions>,
    /// `getsockopt` (read from the socket) or `timer` (inferred from `ss -o`'s timer).
    #[serde(default = "timer_source")]
    pub keepalive_read_from: String,
}

/// A socket's keepalive settings, in the kernel's whole seconds.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
pub struct KeepaliveOptions {
    pub idle_s: u32,
    pub interval_s: u32,
    pub probes: u32,
}

pub fn timer_source() -> String {
    "timer".into()
}

/// What the middlebox knew at one moment.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct MiddleboxView {
    pub role: String,
    pub moment: String,
    /// Segments of forgotten flows answered with RST or dropped, so far.
    pub forgotten_segments: u64,
    /// `conntrack -L -p tcp` lines.
    pub conntrack: Vec<String>,
}
