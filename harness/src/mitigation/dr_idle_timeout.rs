//! `dr-idle-timeout`: DestinationRule `connectionPool.tcp.idleTimeout`.
//!
//! ```text
//!   app ──▶ [client sidecar: outbound listener of this service, tcp_proxy idle_timeout = X] ──▶ …
//!            ──▶ [server sidecar: inbound, still ISTIO_META_IDLE_TIMEOUT / 1 h] ──▶ server
//! ```
//!
//! It sets `idle_timeout` on the client sidecar's outbound listener for the service only: the
//! passthrough chain and the server pod's inbound proxy keep their own (istio#60009), which is
//! why it alone does not help when the server has a sidecar too. On a `route: passthrough`
//! sidecar it is applied and changes nothing, as Istio does: a DestinationRule selects its
//! host's chains, and the app's connection takes the catch-all chain.

use super::contract::{IstioContext, IstioForm, Mitigation, need_sidecar, to_yaml};
use crate::config::CellConfig;
use crate::model::duration::Dur;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(transparent)]
pub struct DrIdleTimeout(pub Dur);

impl Mitigation for DrIdleTimeout {
    fn label(&self) -> String {
        format!("dr-idle-timeout={}", self.0)
    }
    fn describe(&self) -> String {
        format!(
            "DestinationRule tcp.idleTimeout {}: the client sidecar's outbound listener for this service only",
            self.0
        )
    }
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String> {
        let sidecar = need_sidecar(knobs, "dr-idle-timeout")?;
        sidecar.service_idle_timeout = Some(self.0);
        Ok(())
    }
    fn istio_resources(&self, ctx: &IstioContext) -> Vec<IstioForm> {
        let v = json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "idlelab-idle-timeout", "namespace": ctx.namespace},
            "spec": {
                "host": ctx.service_host,
                "trafficPolicy": {"connectionPool": {"tcp": {"idleTimeout": super::istio_idle_timeout::go_duration(ctx.millis(self.0))}}}
            }
        });
        vec![IstioForm::Manifest { kind: "DestinationRule".into(), yaml: to_yaml(&v) }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hop::Route;

    #[test]
    fn sets_only_the_service_chain() {
        let mut k = super::super::contract::tests::test_knobs();
        DrIdleTimeout(Dur::secs(86400)).apply(&mut k).unwrap();
        let s = k.sidecar().unwrap();
        assert_eq!(s.service_idle_timeout, Some(Dur::secs(86400)));
        assert_eq!(s.idle_timeout, Dur::secs(3600), "the passthrough chain keeps its timeout");
        // On a passthrough route it is accepted, as Istio accepts it, and reaches nothing.
        k.sidecar_mut().unwrap().route = Route::Passthrough;
        DrIdleTimeout(Dur::secs(60)).apply(&mut k).unwrap();
        assert_eq!(k.sidecar().unwrap().effective_idle_timeout(), Dur::secs(3600));
        assert!(k.durations_mut().iter().all(|d| !d.label.contains("service_idle_timeout")), "decides nothing");
    }
}
