//! `gateway-keepalive`: keepalive socket options on the ingress gateway's listener
//! (EnvoyFilter `socket_options` at STATE_PREBIND), inherited by every accepted socket.
//!
//! ```text
//!   client ──▶ middlebox ──▶ [gateway listener: SO_KEEPALIVE, TCP_KEEPIDLE/INTVL/CNT]
//!                  ▲                 │ accepted socket probes the client side
//!                  └──── probes ─────┘ and so refreshes the middlebox's flow
//! ```
//!
//! Linux numbers: SOL_SOCKET=1, SO_KEEPALIVE=9, IPPROTO_TCP=6, TCP_KEEPIDLE=4,
//! TCP_KEEPINTVL=5, TCP_KEEPCNT=6. STATE_LISTENING fails on Istio ≥ 1.9 (istio#28879).

use super::contract::{IstioContext, IstioForm, Mitigation, to_yaml};
use crate::config::CellConfig;
use crate::hop::Hop;
use crate::model::duration::Dur;
use crate::model::service::Keepalive;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(transparent)]
pub struct GatewayKeepalive(pub Keepalive);

/// The listener `socket_options` that turn keepalive on, as Envoy's config takes them.
pub fn socket_options(ka: &Keepalive) -> Value {
    let (time_s, interval_s) = ka.whole_seconds();
    json!([
        {"level": 1, "name": 9, "int_value": 1, "state": "STATE_PREBIND"},
        {"level": 6, "name": 4, "int_value": time_s, "state": "STATE_PREBIND"},
        {"level": 6, "name": 5, "int_value": interval_s, "state": "STATE_PREBIND"},
        {"level": 6, "name": 6, "int_value": ka.probes, "state": "STATE_PREBIND"}
    ])
}

impl Mitigation for GatewayKeepalive {
    fn label(&self) -> String {
        format!("gateway-keepalive={}", self.0)
    }
    fn describe(&self) -> String {
        format!(
            "EnvoyFilter socket_options on the gateway listener (STATE_PREBIND): accepted sockets probe after {} idle, every {}, {} probes",
            self.0.time, self.0.interval, self.0.probes
        )
    }
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String> {
        self.0.check()?;
        let gateway = knobs.path.iter_mut().find_map(|h| match h {
            Hop::Gateway(g) => Some(g),
            _ => None,
        });
        let gateway =
            gateway.ok_or("gateway-keepalive changes the ingress gateway, and this path has no `gateway` hop")?;
        gateway.keepalive = Some(self.0);
        Ok(())
    }
    fn istio_resources(&self, ctx: &IstioContext) -> Vec<IstioForm> {
        let v = json!({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "EnvoyFilter",
            // In istio-system, beside the one shared ingress gateway: named and labelled per
            // cell, so that the cell's teardown removes it before another cell uses the gateway.
            "metadata": {
                "name": format!("idlelab-gateway-keepalive-{}", ctx.namespace),
                "namespace": "istio-system",
                "labels": {super::contract::CELL_LABEL: ctx.namespace}
            },
            "spec": {
                "workloadSelector": {"labels": {"istio": "ingressgateway"}},
                "configPatches": [{
                    "applyTo": "LISTENER",
                    "match": {"context": "GATEWAY", "listener": {"portNumber": ctx.service_port}},
                    "patch": {"operation": "MERGE", "value": {"socket_options": socket_options(&Keepalive {
                        time: Dur::secs(ctx.seconds(self.0.time)),
                        interval: Dur::secs(ctx.seconds(self.0.interval)),
                        probes: self.0.probes,
                    })}}
                }]
            }
        });
        vec![IstioForm::Manifest { kind: "EnvoyFilter".into(), yaml: to_yaml(&v) }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hop::GatewayHop;

    #[test]
    fn sets_the_gateway_listener_options() {
        let mut k = super::super::contract::tests::test_knobs();
        let m = GatewayKeepalive(Keepalive { time: Dur::secs(300), interval: Dur::secs(75), probes: 9 });
        assert!(m.apply(&mut k).unwrap_err().contains("no `gateway` hop"));
        k.path.push(Hop::Gateway(GatewayHop::default()));
        m.apply(&mut k).unwrap();
        let opts = socket_options(&m.0);
        assert_eq!(opts[0]["name"], 9);
        assert_eq!(opts[1]["int_value"], 300);
        let IstioForm::Manifest { yaml, .. } = &m.istio_resources(&super::super::contract::tests::test_ctx())[0] else {
            panic!()
        };
        assert!(yaml.contains("STATE_PREBIND") && yaml.contains("GATEWAY"), "{yaml}");
    }
}
