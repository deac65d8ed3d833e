//! The lab's knobs for one cell: the scenario's settings after its mitigation was applied.
//!
//! Scenario files and mitigations speak in real-world durations; `timescale` turns the
//! same struct into the compressed values the local lab runs with.

use crate::duration::Dur;
use crate::hop::Hop;
use crate::scenario::{Keepalive, Service};
use serde::Serialize;

/// How a duration is handed to the component that enforces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// Kernel knobs (`TCP_KEEPIDLE`, `TCP_KEEPINTVL`, conntrack timeouts): whole seconds, ≥ 1 s.
    WholeSeconds,
    /// Envoy and the probe: milliseconds.
    Millis,
}

/// A mutable view of one duration of the cell, for the time scale.
pub struct KnobDuration<'a> {
    pub label: String,
    pub value: &'a mut Dur,
    pub precision: Precision,
    /// Whether its ordering against the other deciding durations decides the outcome.
    /// A duration that decides nothing may be clamped to the kernel's minimum.
    pub deciding: bool,
}

/// Client-side settings: the app's pool and socket.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClientKnobs {
    pub pool: usize,
    pub keepalive: Option<Keepalive>,
    /// The pool drops a connection idle longer than this at checkout, before use.
    pub pool_max_idle: Option<Dur>,
    /// The app sends a protocol-level PING on each idle pooled connection at this interval.
    pub heartbeat: Option<Dur>,
    /// How long the probe waits for one answer; the lab's patience, not a modelled duration,
    /// so it is not scaled.
    pub request_timeout: Dur,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Knobs {
    pub service: Service,
    pub client: ClientKnobs,
    pub path: Vec<Hop>,
    pub idle: Dur,
}

impl Knobs {
    /// Every duration the time scale applies to, with what it decides.
    pub fn durations_mut(&mut self) -> Vec<KnobDuration<'_>> {
        let probes_matter = self.path.iter().any(Hop::refreshed_by_probes);
        let mut out = vec![KnobDuration {
            label: "idle".into(),
            value: &mut self.idle,
            precision: Precision::Millis,
            deciding: true,
        }];
        if let Some(ka) = self.client.keepalive.as_mut() {
            out.push(KnobDuration {
                label: "client.keepalive.time".into(),
                value: &mut ka.time,
                precision: Precision::WholeSeconds,
                deciding: true,
            });
            out.push(KnobDuration {
                label: "client.keepalive.interval".into(),
                value: &mut ka.interval,
                precision: Precision::WholeSeconds,
                deciding: probes_matter,
            });
        }
        if let Some(d) = self.client.pool_max_idle.as_mut() {
            out.push(KnobDuration {
                label: "client.pool_max_idle".into(),
                value: d,
                precision: Precision::Millis,
                deciding: true,
            });
        }
        if let Some(d) = self.client.heartbeat.as_mut() {
            out.push(KnobDuration {
                label: "client.heartbeat".into(),
                value: d,
                precision: Precision::Millis,
                deciding: true,
            });
        }
        for (i, hop) in self.path.iter_mut().enumerate() {
            out.extend(hop.durations_mut(i));
        }
        out
    }

    pub fn sidecar(&self) -> Option<&crate::hop::SidecarHop> {
        self.path.iter().find_map(|h| match h {
            Hop::Sidecar(s) => Some(s),
        })
    }

    pub fn sidecar_mut(&mut self) -> Option<&mut crate::hop::SidecarHop> {
        self.path.iter_mut().find_map(|h| match h {
            Hop::Sidecar(s) => Some(s),
        })
    }
}
