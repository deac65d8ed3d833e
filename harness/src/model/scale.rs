//! The time scale's words: how precisely a component takes a duration, what a duration is
//! on the path, and a cell's durations as scaled. `timescale` decides the factor; these are
//! what it, the cells and the reports share.

use crate::model::duration::Dur;
use serde::{Deserialize, Serialize};
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
    /// HTTP/1.1 connection is closed only `drain_ms` later (the manager's `drain_timeout`,
    /// then its `delayed_close_timeout`, which Istio leaves alone: 6 s, measured per Envoy
    /// binary, [`EnvoyTiming`]) — a fixed delay that no time scale shrinks.
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

/// How long after its idle timeout Envoy's HTTP connection manager closes an idle HTTP/1.1
/// connection, as measured on Envoy 1.40.0 (5 s `drain_timeout`, then 1 s
/// `delayed_close_timeout`): what the time scale assumes where no Envoy was measured.
pub const ENVOY_HTTP_CLOSE_DELAY_MS: u64 = 6000;

/// The timing facts of one Envoy binary that the time scale rests on. A release may change
/// them, so each binary's are measured once (`local::envoy_timing`: a throwaway Envoy on
/// loopback) and cached; a cell is scaled with the facts of the Envoy that runs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvoyTiming {
    /// The release the binary reported (`1.36.4`); empty when assumed.
    pub release: String,
    /// How long after its idle timeout the HTTP connection manager closes an idle HTTP/1.1
    /// connection, to the nearest 0.5 s: its `drain_timeout` (5 s by default) and then its
    /// `delayed_close_timeout` (1 s), neither of which Istio sets.
    pub http_close_delay_ms: u64,
    /// Whether tcp_proxy's `idle_timeout` runs while its upstream connect is still pending
    /// (it then ends a connection whose connect hangs before the connect timeout does).
    pub tcp_idle_timer_while_connecting: bool,
    /// Whether an upstream HTTP connection's `idle_timeout` runs while it is still connecting.
    pub http_upstream_idle_timer_while_connecting: bool,
    pub source: TimingSource,
}

/// Where an [`EnvoyTiming`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimingSource {
    /// From the binary (`local::envoy_timing`).
    Measured,
    /// No Envoy measured: the values measured on Envoy 1.40.0.
    Assumed,
}

impl std::fmt::Display for TimingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimingSource::Measured => "measured",
            TimingSource::Assumed => "assumed",
        })
    }
}

impl Default for EnvoyTiming {
    fn default() -> Self {
        EnvoyTiming {
            release: String::new(),
            http_close_delay_ms: ENVOY_HTTP_CLOSE_DELAY_MS,
            tcp_idle_timer_while_connecting: true,
            http_upstream_idle_timer_while_connecting: false,
            source: TimingSource::Assumed,
        }
    }
}

impl EnvoyTiming {
    /// What the time scale allows between the connection manager's idle timeout and its close.
    pub fn http_drain(&self) -> Precision {
        Precision::HttpDrain { drain_ms: self.http_close_delay_ms }
    }

    /// "Envoy 1.36.4 (measured): an idle HTTP/1.1 connection closes 6 s after …".
    pub fn describe(&self) -> String {
        let release = if self.release.is_empty() { String::new() } else { format!(" {}", self.release) };
        let yes = |b: bool| if b { "yes" } else { "no" };
        format!(
            "Envoy{release} ({}): an idle HTTP/1.1 connection closes {} s after the connection manager's idle timeout; idle timers run while connecting: tcp_proxy {}, HTTP upstream {}",
            self.source,
            self.http_close_delay_ms as f64 / 1000.0,
            yes(self.tcp_idle_timer_while_connecting),
            yes(self.http_upstream_idle_timer_while_connecting)
        )
    }
}

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
    /// The facts of the Envoy the cell was scaled for.
    pub envoy: EnvoyTiming,
    pub values: Vec<ScaledValue>,
    /// The orderings that decide this cell, as `a < b` in real-world time.
    pub orderings: Vec<String>,
}

impl TimeScale {
    /// Why values are not simply `real / factor`, and, where a value waits for Envoy's drain,
    /// the facts of the Envoy it was scaled for.
    pub fn notes(&self) -> impl Iterator<Item = String> + '_ {
        let drain = self.values.iter().any(|v| matches!(v.precision, Precision::HttpDrain { .. }));
        self.values
            .iter()
            .filter_map(|v| v.note.as_ref().map(|n| format!("{}: {n}", v.label)))
            .chain(drain.then(|| self.envoy.describe()))
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
