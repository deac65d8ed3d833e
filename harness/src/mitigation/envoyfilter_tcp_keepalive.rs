//! `envoyfilter-tcp-keepalive`: an EnvoyFilter that merges `upstream_connection_options.tcp_keepalive`
//! into the client sidecar's cluster of the service: keepalive on the sidecar's *upstream*
//! socket, the way teams set it before DestinationRule had `tcpKeepalive`.
//!
//! ```text
//!   app ──▶ [sidecar: CLUSTER outbound|<port>||<host> ← MERGE {upstream_connection_options:
//!             {tcp_keepalive: {keepalive_time, keepalive_interval, keepalive_probes}}}]
//!            ══upstream socket, SO_KEEPALIVE══▶ middlebox ──▶ server
//! ```
//!
//! It matches the service's cluster by host and port, as a DestinationRule selects it, so a
//! `route: passthrough` sidecar (PassthroughCluster) gets none: applied, and changing nothing.
//! Whether Istio applied it is Istio's to say: the local lab feeds it to Istio's control plane
//! and reports Istio's own accounting of the patch.

use super::contract::{IstioContext, IstioForm, Mitigation, need_sidecar, to_yaml};
use crate::config::CellConfig;
use crate::model::service::Keepalive;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(transparent)]
pub struct EnvoyFilterTcpKeepalive(pub Keepalive);

impl Mitigation for EnvoyFilterTcpKeepalive {
    fn label(&self) -> String {
        format!("envoyfilter-tcp-keepalive={}", self.0)
    }
    fn describe(&self) -> String {
        format!(
            "EnvoyFilter merges tcp_keepalive into the sidecar's cluster of the service: its upstream sockets probe after {} idle, every {}, {} probes",
            self.0.time, self.0.interval, self.0.probes
        )
    }
    fn apply(&self, config: &mut CellConfig) -> Result<(), String> {
        self.0.check()?;
        need_sidecar(config, "envoyfilter-tcp-keepalive")?.service_upstream_keepalive = Some(self.0);
        Ok(())
    }
    fn istio_resources(&self, ctx: &IstioContext) -> Vec<IstioForm> {
        let v = json!({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "EnvoyFilter",
            "metadata": {"name": "idlelab-tcp-keepalive", "namespace": ctx.namespace},
            "spec": {
                "workloadSelector": {"labels": {"app": ctx.client_app}},
                "configPatches": [{
                    "applyTo": "CLUSTER",
                    "match": {
                        "context": "SIDECAR_OUTBOUND",
                        "cluster": {"service": ctx.service_host, "portNumber": ctx.service_port}
                    },
                    "patch": {
                        "operation": "MERGE",
                        "value": {"upstream_connection_options": {"tcp_keepalive": {
                            "keepalive_time": ctx.seconds(self.0.time),
                            "keepalive_interval": ctx.seconds(self.0.interval),
                            "keepalive_probes": self.0.probes
                        }}}
                    }
                }]
            }
        });
        vec![IstioForm::Manifest { kind: "EnvoyFilter".into(), yaml: to_yaml(&v) }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::duration::Dur;

    #[test]
    fn keepalive_on_the_sidecars_cluster_of_the_service() {
        let mut k = super::super::contract::tests::test_knobs();
        let m = EnvoyFilterTcpKeepalive(Keepalive { time: Dur::secs(60), interval: Dur::secs(10), probes: 3 });
        m.apply(&mut k).unwrap();
        assert_eq!(k.sidecar().unwrap().effective_upstream_keepalive().unwrap().interval, Dur::secs(10));
        assert!(k.client.keepalive.is_none(), "the app's socket is untouched");
        let ctx = IstioContext { factor: 10, ..super::super::contract::tests::test_ctx() };
        let IstioForm::Manifest { yaml, .. } = &m.istio_resources(&ctx)[0] else { panic!() };
        let v: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
        let patch = &v["spec"]["configPatches"][0];
        assert_eq!(patch["applyTo"], "CLUSTER");
        assert_eq!(patch["match"]["cluster"]["service"], "redis.cell-1.svc.cluster.local");
        assert_eq!(patch["match"]["cluster"]["portNumber"], 6379);
        let ka = &patch["patch"]["value"]["upstream_connection_options"]["tcp_keepalive"];
        assert_eq!((ka["keepalive_time"].as_u64(), ka["keepalive_interval"].as_u64()), (Some(6), Some(1)), "scaled ×10");
    }

    #[test]
    fn a_passthrough_route_keeps_no_keepalive_and_zero_probes_are_refused() {
        let mut k = super::super::contract::tests::test_knobs();
        k.sidecar_mut().unwrap().route = crate::hop::Route::Passthrough;
        let ka = Keepalive { time: Dur::secs(60), interval: Dur::secs(10), probes: 3 };
        EnvoyFilterTcpKeepalive(ka).apply(&mut k).unwrap();
        assert_eq!(k.sidecar().unwrap().effective_upstream_keepalive(), None);
        let e = EnvoyFilterTcpKeepalive(Keepalive { probes: 0, ..ka }).apply(&mut k).unwrap_err();
        assert!(e.contains("probes"), "{e}");
    }
}
