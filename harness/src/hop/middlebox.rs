//! A middlebox: a cloud load balancer or NAT that tracks flows and forgets idle ones.
//!
//! ```text
//!   … ──▶ ┌ middlebox netns ───────────────────────────────┐ ──▶ …
//!         │ forward + conntrack                            │
//!         │ nf_conntrack_tcp_timeout_established = idle_timeout
//!         │ nf_conntrack_tcp_loose = 0 (no mid-stream pickup)│
//!         │ ct state invalid → reject with tcp reset | drop  │
//!         └────────────────────────────────────────────────┘
//! ```
//!
//! The device never sends a FIN: after `idle_timeout` without a segment, the flow is simply
//! gone, and the next segment of it is answered with an RST (`on_unknown: reset`, as CLB and
//! AWS NLB do) or silently dropped (`on_unknown: drop`). Any segment refreshes the flow,
//! keepalive probes included.

use super::contract::PathHop;
use crate::model::keepalive::Forgetter;
use crate::model::duration::Dur;
use crate::model::scale::{KnobDuration, Precision, Role};
use serde::{Deserialize, Serialize};

pub use crate::model::keepalive::OnUnknown;

/// Devices with documented idle figures (each vendor's documentation, as quoted per variant).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Tencent CLB TCP listener: `idle_connect_timeout` 900 s; the field report saw RSTs.
    Clb,
    /// AWS NLB: 350 s; "the next packet gets an RST".
    Nlb,
    /// Azure Load Balancer: 4 min default; silent drop unless "TCP reset on idle" is enabled.
    AzureLb,
    /// GCP Cloud NAT: tcpEstablished 1200 s; what follows is not documented, drop assumed.
    GcpNat,
}

impl Preset {
    pub fn defaults(self) -> (Dur, OnUnknown) {
        match self {
            Preset::Clb => (Dur::secs(900), OnUnknown::Reset),
            Preset::Nlb => (Dur::secs(350), OnUnknown::Reset),
            Preset::AzureLb => (Dur::secs(240), OnUnknown::Drop),
            Preset::GcpNat => (Dur::secs(1200), OnUnknown::Drop),
        }
    }
}

/// As written: `{preset: nlb}`, `{idle_timeout: 350s, on_unknown: drop}`, or a preset with overrides.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MiddleboxSpec {
    preset: Option<Preset>,
    idle_timeout: Option<Dur>,
    on_unknown: Option<OnUnknown>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(try_from = "MiddleboxSpec")]
pub struct MiddleboxHop {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// The conntrack established-flow timeout.
    pub idle_timeout: Dur,
    pub on_unknown: OnUnknown,
}

impl TryFrom<MiddleboxSpec> for MiddleboxHop {
    type Error = String;
    fn try_from(s: MiddleboxSpec) -> Result<Self, String> {
        let (idle_timeout, on_unknown) = match (s.preset.map(Preset::defaults), s.idle_timeout) {
            (Some((t, o)), t2) => (t2.unwrap_or(t), s.on_unknown.unwrap_or(o)),
            (None, Some(t)) => (t, s.on_unknown.unwrap_or(OnUnknown::Reset)),
            (None, None) => {
                return Err(
                    "a middlebox needs `idle_timeout` (e.g. 350s) or a `preset` (clb, nlb, azure-lb, gcp-nat)".into()
                );
            }
        };
        if idle_timeout.0.as_secs() < 1 || idle_timeout.0.subsec_nanos() != 0 {
            return Err(format!(
                "middlebox idle_timeout {idle_timeout}: conntrack timeouts are whole seconds, at least 1s"
            ));
        }
        Ok(MiddleboxHop { preset: s.preset, idle_timeout, on_unknown })
    }
}

impl MiddleboxHop {
    /// `nf_conntrack_tcp_timeout_established` for this hop: whole seconds, at least 1.
    pub fn conntrack_timeout_s(&self) -> u64 {
        self.idle_timeout.0.as_secs().max(1)
    }

}

impl PathHop for MiddleboxHop {
    fn kind(&self) -> &'static str {
        "middlebox"
    }
    fn durations_mut(&mut self, index: usize) -> Vec<KnobDuration<'_>> {
        vec![KnobDuration {
            label: format!("path[{index}].middlebox.idle_timeout"),
            value: &mut self.idle_timeout,
            precision: Precision::WholeSeconds,
            role: Role::Timeout { refreshed_by_probes: true },
        }]
    }
    fn forgets_flows(&self) -> Option<Forgetter> {
        Some(Forgetter { timeout: self.idle_timeout.0, on_unknown: self.on_unknown })
    }
    fn own_node(&self, index: usize) -> Option<String> {
        Some(format!("mb{index}"))
    }
    fn cluster_host(&self, index: usize, ns: &str) -> Option<String> {
        Some(format!("mb{index}.{ns}.svc.cluster.local"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<MiddleboxHop, String> {
        serde_saphyr::from_str::<MiddleboxHop>(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn presets_and_overrides() {
        let nlb = parse("{preset: nlb}").unwrap();
        assert_eq!((nlb.idle_timeout, nlb.on_unknown), (Dur::secs(350), OnUnknown::Reset));
        let azure = parse("{preset: azure-lb, on_unknown: reset}").unwrap();
        assert_eq!((azure.idle_timeout, azure.on_unknown), (Dur::secs(240), OnUnknown::Reset));
        let plain = parse("{idle_timeout: 60s, on_unknown: drop}").unwrap();
        assert_eq!(plain.on_unknown, OnUnknown::Drop);
        assert!(parse("{on_unknown: drop}").unwrap_err().contains("needs `idle_timeout`"));
        assert!(parse("{idle_timeout: 1500ms}").unwrap_err().contains("whole seconds"));
    }
}
