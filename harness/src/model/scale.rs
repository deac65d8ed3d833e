//! The time scale's words: how precisely a component takes a duration, what a duration is
//! on the path, and a cell's durations as scaled. `timescale` decides the factor; these are
//! what it, the cells and the reports share.

use crate::model::duration::Dur;
use serde::Serialize;
use std::time::Duration;

/// How a duration is handed to the component that enforces it. Reports write it as
/// `whole-seconds`, `millis` or `server-clock` (how late the latter may act is the scaled
/// value's `late_by_ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// Kernel knobs (`TCP_KEEPIDLE`, `TCP_KEEPINTVL`, conntrack timeouts): whole seconds, ≥ 1 s.
    WholeSeconds,
    /// Envoy and the probe: milliseconds.
    Millis,
    /// A server's own timer on a whole-second clock (redis `timeout`, memcached
    /// `idle_timeout`): set in whole seconds, and it acts up to `late_ms` after its value
    /// (the clock's tick plus how often the server looks), never before.
    ServerClock { late_ms: u64 },
    /// Envoy's HTTP connection manager idle timeout: exact to the millisecond, but an idle
    /// HTTP/1.1 connection is closed only after the manager's `drain_timeout` (Envoy's
    /// default 5 s, which Istio leaves alone) — a fixed delay that no time scale shrinks.
    HttpDrain { drain_ms: u64 },
    /// Milliseconds, but never below `floor_ms` once scaled: a deadline the lab's own
    /// measuring must have room for (gRPC's PING ACK timeout: shorter than the lab's gap it
    /// would be a race with the scheduler, not an experiment).
    MillisFloor { floor_ms: u64 },
}

impl Serialize for Precision {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Precision::WholeSeconds => "whole-seconds",
            Precision::Millis => "millis",
            Precision::ServerClock { .. } => "server-clock",
            Precision::HttpDrain { .. } => "millis+drain",
            Precision::MillisFloor { .. } => "millis-floor",
        })
    }
}

impl Precision {
    /// How long after its value the component may act.
    pub fn late_by(self) -> std::time::Duration {
        match self {
            Precision::ServerClock { late_ms } => std::time::Duration::from_millis(late_ms),
            Precision::HttpDrain { drain_ms } => std::time::Duration::from_millis(drain_ms),
            Precision::WholeSeconds | Precision::Millis | Precision::MillisFloor { .. } => std::time::Duration::ZERO,
        }
    }
}

/// Envoy's HTTP connection manager `drain_timeout` default (Istio does not set it).
pub const ENVOY_HTTP_DRAIN_MS: u64 = 5000;
/// How much later than idle timeout + drain the close may come when every core is busy: a
/// matrix under `--repeat 20` on two cores saw a reuse meet the closing connection (an RST,
/// not the FIN) with only the usual 1 s apart.
pub const ENVOY_HTTP_DRAIN_SLACK_MS: u64 = 1000;

/// What a duration is on the path; the time scale derives from it which orderings decide
/// the outcome (see `timescale::deciding_pairs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// How long the pool sits idle.
    Idle,
    /// A hop forgets or closes an idle connection after this. `refreshed_by_probes`: the hop
    /// keeps per-flow state that any segment refreshes (conntrack), so keepalive probes that
    /// cross it keep the flow; an Envoy hop terminates TCP and only bytes reset its timer.
    Timeout { refreshed_by_probes: bool },
    /// The app's protocol-level PING interval.
    Heartbeat,
    /// The pool's maximum idle time before it discards a connection at checkout.
    PoolMaxIdle,
    /// Idle time before the first keepalive probe (any socket: app, Envoy upstream, gateway).
    KeepaliveTime,
    /// Time between keepalive probes.
    KeepaliveInterval,
    /// `TCP_USER_TIMEOUT`: bounded by the request timeout, not by the path.
    UserTimeout,
}

/// A mutable view of one duration of the cell, for the time scale.
pub struct KnobDuration<'a> {
    pub label: String,
    pub value: &'a mut Dur,
    pub precision: Precision,
    pub role: Role,
}

impl<'a> KnobDuration<'a> {
    /// An Envoy idle timeout (tcp_proxy `idle_timeout`, on any Envoy of the path): millisecond
    /// precision, reset by bytes but never by keepalive probes. 0 disables it, so a zero has
    /// nothing to scale and gives `None`.
    pub fn envoy_idle_timeout(label: String, value: &'a mut Dur) -> Option<Self> {
        let timeout = Role::Timeout { refreshed_by_probes: false };
        (!value.is_zero()).then_some(KnobDuration { label, value, precision: Precision::Millis, role: timeout })
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ScaledValue {
    pub label: String,
    pub real: Dur,
    pub scaled: Dur,
    pub precision: Precision,
    /// How late the component may act after the value (a server's whole-second clock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub late_by_ms: Option<u64>,
    pub role: Role,
    /// Whether the value is in an ordering that decides the outcome.
    pub deciding: bool,
    /// Why the value is not simply `real / factor`, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TimeScale {
    pub factor: u32,
    pub auto: bool,
    pub values: Vec<ScaledValue>,
    /// The orderings that decide this cell, as `a < b` in real-world time.
    pub orderings: Vec<String>,
}

impl TimeScale {
    pub fn notes(&self) -> impl Iterator<Item = String> + '_ {
        self.values.iter().filter_map(|v| v.note.as_ref().map(|n| format!("{}: {n}", v.label)))
    }
}

/// A duration Envoy or the probe takes, scaled: milliseconds, at least 1 ms (`0s`, "off",
/// stays off).
pub fn scale_millis(real: Dur, factor: u32) -> Dur {
    if real.is_zero() {
        return real;
    }
    Dur(Duration::from_millis((real.0.as_secs_f64() * 1000.0 / factor.max(1) as f64).round().max(1.0) as u64))
}

/// A duration the kernel takes, scaled: whole seconds, at least 1 s.
pub fn scale_seconds(real: Dur, factor: u32) -> u64 {
    (real.0.as_secs_f64() / factor.max(1) as f64).round().max(1.0) as u64
}
