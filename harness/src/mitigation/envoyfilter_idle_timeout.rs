//! `envoyfilter-idle-timeout`: an EnvoyFilter that merges `idle_timeout` into the client
//! sidecar's outbound `tcp_proxy` filters (`0s` turns the timeout off).
//!
//! ```text
//!   app ──▶ [sidecar: SIDECAR_OUTBOUND tcp_proxy ← MERGE {idle_timeout: X}] ──▶ …
//! ```
//!
//! The patch matches the filter by name with no port, so it reaches the per-service chains and
//! the passthrough chain alike. It uses the v3 type URL: the v2 one from old blog posts no longer
//! loads.

use super::contract::{IstioContext, IstioForm, Mitigation, need_sidecar, to_yaml};
use crate::config::CellConfig;
use crate::model::duration::Dur;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub const TCP_PROXY_TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(transparent)]
pub struct EnvoyFilterIdleTimeout(pub Dur);

impl Mitigation for EnvoyFilterIdleTimeout {
    fn label(&self) -> String {
        format!("envoyfilter-idle-timeout={}", self.0)
    }
    fn describe(&self) -> String {
        if self.0.is_zero() {
            "EnvoyFilter merges idle_timeout: 0s (off) into the sidecar's outbound tcp_proxy".into()
        } else {
            format!("EnvoyFilter merges idle_timeout: {} into the sidecar's outbound tcp_proxy", self.0)
        }
    }
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String> {
        need_sidecar(knobs, "envoyfilter-idle-timeout")?.idle_timeout = self.0;
        Ok(())
    }
    fn istio_resources(&self, ctx: &IstioContext) -> Vec<IstioForm> {
        let v = json!({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "EnvoyFilter",
            "metadata": {"name": "idlelab-tcp-idle-timeout", "namespace": ctx.namespace},
            "spec": {
                "workloadSelector": {"labels": {"app": ctx.client_app}},
                "configPatches": [{
                    "applyTo": "NETWORK_FILTER",
                    "match": {
                        "context": "SIDECAR_OUTBOUND",
                        "listener": {"filterChain": {"filter": {"name": "envoy.filters.network.tcp_proxy"}}}
                    },
                    "patch": {
                        "operation": "MERGE",
                        "value": {
                            "name": "envoy.filters.network.tcp_proxy",
                            "typed_config": {"@type": TCP_PROXY_TYPE_URL, "idle_timeout": format!("{}s", ctx.millis(self.0).as_secs_f64())}
                        }
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

    #[test]
    fn turns_the_timeout_off_and_renders_a_v3_patch() {
        let mut k = super::super::contract::tests::test_knobs();
        let m = EnvoyFilterIdleTimeout(Dur::secs(0));
        m.apply(&mut k).unwrap();
        assert!(k.sidecar().unwrap().idle_timeout.is_zero());
        let r = m.istio_resources(&super::super::contract::tests::test_ctx());
        let IstioForm::Manifest { yaml, .. } = &r[0] else { panic!("{r:?}") };
        assert!(yaml.contains(TCP_PROXY_TYPE_URL), "{yaml}");
        assert!(yaml.contains("idle_timeout: 0s"), "{yaml}");
        assert!(yaml.contains("SIDECAR_OUTBOUND"), "{yaml}");
    }
}
