//! Hops: what stands between the app and the server, in path order.
//!
//! ```text
//!   app ──▶ hop[0] ──▶ hop[1] ──▶ … ──▶ server
//! ```
//!
//! Each hop kind is one small type in its own file, with the parameters a scenario sets.
//! How a hop is built in the local lab lives in `lab/`; the scenario side only describes it.

pub mod sidecar;

pub use sidecar::{Route, SidecarHop};

use crate::duration::Dur;
use serde::{Deserialize, Serialize};

/// One hop of a scenario's `path:` list, written as `- sidecar: {...}`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Hop {
    Sidecar(SidecarHop),
}

impl Hop {
    pub fn kind(&self) -> &'static str {
        match self {
            Hop::Sidecar(_) => "sidecar",
        }
    }

    /// The hop's durations, for the time scale (label, value, how they are applied).
    pub fn durations_mut(&mut self, index: usize) -> Vec<crate::knobs::KnobDuration<'_>> {
        match self {
            Hop::Sidecar(h) => h.durations_mut(index),
        }
    }

    /// True when the hop keeps per-flow state that any segment refreshes, so that the
    /// interval between keepalive probes decides whether a flow survives (a conntrack
    /// middlebox). An Envoy hop terminates TCP: probes never cross it.
    pub fn refreshed_by_probes(&self) -> bool {
        match self {
            Hop::Sidecar(_) => false,
        }
    }

    /// Envoy's idle timeout for this hop, when it has one (zero = off).
    pub fn idle_timeout(&self) -> Option<Dur> {
        match self {
            Hop::Sidecar(h) => Some(h.idle_timeout),
        }
    }
}
