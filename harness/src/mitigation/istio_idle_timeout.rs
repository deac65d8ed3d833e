//! `istio-idle-timeout`: `ISTIO_META_IDLE_TIMEOUT` through `proxy.istio.io/config` on every
//! pod of the path that has a sidecar.
//!
//! ```text
//!   app ──▶ [client sidecar: every outbound tcp_proxy, PassthroughCluster included, = X] ──▶ …
//!       ──▶ [server sidecar: inbound tcp_proxy = X] ──▶ server
//! ```
//!
//! Istio reads it at bootstrap as node metadata `IdleTimeout` and uses it for every outbound
//! TCP chain without a DestinationRule value, the virtualOutbound passthrough chain (since
//! 1.14) and inbound chains.

use super::contract::{IstioContext, IstioForm, Mitigation};
use crate::config::CellConfig;
use crate::model::duration::Dur;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(transparent)]
pub struct IstioIdleTimeout(pub Dur);

impl Mitigation for IstioIdleTimeout {
    fn label(&self) -> String {
        format!("istio-idle-timeout={}", self.0)
    }
    fn describe(&self) -> String {
        format!("pod annotation proxy.istio.io/config: ISTIO_META_IDLE_TIMEOUT={} on every pod with a sidecar", self.0)
    }
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String> {
        let mut applied = false;
        if let Some(s) = knobs.sidecar_mut() {
            s.idle_timeout = self.0;
            applied = true;
        }
        for s in knobs.server_sidecars_mut() {
            s.idle_timeout = self.0;
            applied = true;
        }
        if applied { Ok(()) } else { Err("istio-idle-timeout changes sidecars, and this path has none".into()) }
    }
    fn istio_resources(&self, ctx: &IstioContext) -> Vec<IstioForm> {
        let value = format!("proxyMetadata:\n  ISTIO_META_IDLE_TIMEOUT: {}\n", go_duration(ctx.millis(self.0)));
        ctx.sidecar_pods
            .iter()
            .map(|pod| IstioForm::PodAnnotation {
                pod: pod.clone(),
                key: "proxy.istio.io/config".into(),
                value: value.clone(),
            })
            .collect()
    }
}

/// Istio parses Go durations: `24h0m0s`, `0s`.
pub(crate) fn go_duration(d: Dur) -> String {
    let ms = d.0.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.0.as_secs();
    if s == 0 {
        return "0s".into();
    }
    format!("{}h{}m{}s", s / 3600, (s % 3600) / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_the_sidecar_timeout_and_renders_the_annotation() {
        let mut k = super::super::contract::tests::test_knobs();
        let m = IstioIdleTimeout(Dur::secs(86400));
        m.apply(&mut k).unwrap();
        assert_eq!(k.sidecar().unwrap().idle_timeout, Dur::secs(86400));
        let r = m.istio_resources(&super::super::contract::tests::test_ctx());
        assert_eq!(
            r,
            vec![IstioForm::PodAnnotation {
                pod: "client".into(),
                key: "proxy.istio.io/config".into(),
                value: "proxyMetadata:\n  ISTIO_META_IDLE_TIMEOUT: 24h0m0s\n".into()
            }]
        );
    }
}
