//! `dr-tcp-keepalive`: DestinationRule `connectionPool.tcp.tcpKeepalive`: keepalive on the
//! client sidecar's *upstream* socket.
//!
//! ```text
//!   app ──▶ [sidecar Envoy] ══upstream socket, SO_KEEPALIVE══▶ middlebox ──▶ server
//!                            probes cross the middlebox and refresh its flow
//! ```
//!
//! Envoy renders it as the cluster's `upstream_connection_options.tcp_keepalive`. The app's
//! own keepalive never reaches this socket: it ends at the local Envoy.
//!
//! On a `route: passthrough` sidecar it is applied, and changes nothing: a DestinationRule
//! selects the clusters of its host, and the app's connection goes through
//! PassthroughCluster, which no DestinationRule selects. Istio accepts such a rule without a
//! word, so the lab does not refuse it either: the cell shows what a team applying it would
//! see (the failure still reproduces).

use super::contract::{IstioContext, IstioForm, Mitigation, need_sidecar, to_yaml};
use crate::config::CellConfig;
use crate::model::service::Keepalive;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(transparent)]
pub struct DrTcpKeepalive(pub Keepalive);

impl Mitigation for DrTcpKeepalive {
    fn label(&self) -> String {
        format!("dr-tcp-keepalive={}", self.0)
    }
    fn describe(&self) -> String {
        format!(
            "DestinationRule tcpKeepalive: the client sidecar's upstream sockets probe after {} idle, every {}, {} probes",
            self.0.time, self.0.interval, self.0.probes
        )
    }
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String> {
        self.0.check()?;
        let sidecar = need_sidecar(knobs, "dr-tcp-keepalive")?;
        sidecar.service_upstream_keepalive = Some(self.0);
        Ok(())
    }
    fn istio_resources(&self, ctx: &IstioContext) -> Vec<IstioForm> {
        let v = json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "idlelab-tcp-keepalive", "namespace": ctx.namespace},
            "spec": {
                "host": ctx.service_host,
                "trafficPolicy": {"connectionPool": {"tcp": {"tcpKeepalive": {
                    "time": format!("{}s", ctx.seconds(self.0.time)),
                    "interval": format!("{}s", ctx.seconds(self.0.interval)),
                    "probes": self.0.probes
                }}}}
            }
        });
        vec![IstioForm::Manifest { kind: "DestinationRule".into(), yaml: to_yaml(&v) }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::duration::Dur;

    #[test]
    fn keepalive_on_the_sidecars_upstream() {
        let mut k = super::super::contract::tests::test_knobs();
        let m = DrTcpKeepalive(Keepalive { time: Dur::secs(60), interval: Dur::secs(10), probes: 3 });
        m.apply(&mut k).unwrap();
        assert_eq!(k.sidecar().unwrap().effective_upstream_keepalive().unwrap().time, Dur::secs(60));
        assert!(k.client.keepalive.is_none(), "the app's socket is untouched");
        let IstioForm::Manifest { yaml, .. } = &m.istio_resources(&super::super::contract::tests::test_ctx())[0] else {
            panic!()
        };
        assert!(
            yaml.contains("tcpKeepalive")
                && yaml.contains("time: 60s")
                && yaml.contains("redis.cell-1.svc.cluster.local"),
            "{yaml}"
        );
    }

    /// Issue 9: on a passthrough route the DestinationRule reaches no cluster the app uses.
    #[test]
    fn a_passthrough_route_keeps_no_keepalive() {
        let mut k = super::super::contract::tests::test_knobs();
        k.sidecar_mut().unwrap().route = crate::hop::Route::Passthrough;
        DrTcpKeepalive(Keepalive { time: Dur::secs(60), interval: Dur::secs(10), probes: 3 }).apply(&mut k).unwrap();
        // What Envoy receives is Istio's to decide: tests/istio_xds.rs reads it from the config dump.
        assert_eq!(k.sidecar().unwrap().effective_upstream_keepalive(), None);
    }
}
