//! `dr-http-idle-timeout`: DestinationRule `connectionPool.http.idleTimeout`.
//!
//! ```text
//!   app ──▶ [client sidecar: HTTP connection manager] ══ Envoy's upstream pool ══▶ middlebox ──▶ server
//!                                                      ▲ cluster outbound|<port>||<svc>:
//!                                                        HttpProtocolOptions idle_timeout = X
//! ```
//!
//! On an `http-*` port the app's connection ends at the sidecar's connection manager, and
//! Envoy keeps its own pool of upstream connections to the service. This sets how long an
//! upstream connection may sit idle in that pool before Envoy closes it (Istio: else
//! `tcp.idleTimeout`, else 1 h). Below a middlebox's timeout, Envoy retires the connection
//! before the middlebox forgets it, and the next request opens a fresh one. It reaches only
//! the service's cluster, and only HTTP: on a `tcp-*` port it is accepted and changes nothing.

use super::contract::{IstioContext, IstioForm, Mitigation, need_sidecar, to_yaml};
use crate::config::CellConfig;
use crate::model::duration::Dur;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(transparent)]
pub struct DrHttpIdleTimeout(pub Dur);

impl Mitigation for DrHttpIdleTimeout {
    fn label(&self) -> String {
        format!("dr-http-idle-timeout={}", self.0)
    }
    fn describe(&self) -> String {
        format!(
            "DestinationRule http.idleTimeout {}: the client sidecar closes its idle upstream HTTP connections to this service",
            self.0
        )
    }
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String> {
        if self.0.is_zero() {
            return Err("dr-http-idle-timeout needs a duration above 0s (Istio's field has no 'off')".into());
        }
        let sidecar = need_sidecar(knobs, "dr-http-idle-timeout")?;
        sidecar.service_http_idle_timeout = Some(self.0);
        Ok(())
    }
    fn istio_resources(&self, ctx: &IstioContext) -> Vec<IstioForm> {
        let v = json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "idlelab-http-idle-timeout", "namespace": ctx.namespace},
            "spec": {
                "host": ctx.service_host,
                "trafficPolicy": {"connectionPool": {"http": {"idleTimeout": super::istio_idle_timeout::go_duration(ctx.millis(self.0))}}}
            }
        });
        vec![IstioForm::Manifest { kind: "DestinationRule".into(), yaml: to_yaml(&v) }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_the_services_upstream_pool_idle_and_renders_a_destination_rule() {
        let mut k = super::super::contract::tests::test_knobs();
        DrHttpIdleTimeout(Dur::secs(300)).apply(&mut k).unwrap();
        assert_eq!(k.sidecar().unwrap().service_http_idle_timeout, Some(Dur::secs(300)));
        // Not HTTP (the test knobs are redis): accepted, and it decides nothing.
        assert!(k.durations_mut().iter().all(|d| !d.label.contains("service_http_idle_timeout")));
        k.service = crate::model::service::Service::Http;
        assert!(k.durations_mut().iter().any(|d| d.label.ends_with("sidecar.service_http_idle_timeout")));
        let forms = DrHttpIdleTimeout(Dur::secs(300)).istio_resources(&super::super::contract::tests::test_ctx());
        let IstioForm::Manifest { yaml, .. } = &forms[0] else { panic!("a manifest") };
        assert!(yaml.contains("idleTimeout: 0h5m0s"), "{yaml}");
        assert!(DrHttpIdleTimeout(Dur::secs(0)).apply(&mut k).is_err());
    }
}
