//! `grpc-keepalive`: the gRPC client's own HTTP/2 keepalive (tonic `http2_keep_alive_interval`
//! + `keep_alive_timeout`, `keep_alive_while_idle: true`; grpc-go `keepalive.ClientParameters`).
//!
//! ```text
//!   app ══PING every interval══▶ server                       (direct: every hop sees the frames)
//!   app ══PING══▶ [client sidecar: Envoy ACKs it] ──(silent)──▶ middlebox ──▶ server
//! ```
//!
//! A PING is an HTTP/2 frame, answered by the first hop that speaks HTTP/2. Direct, the PINGs
//! cross every middlebox and refresh its flow, or, when one forgot the flow anyway, meet its RST
//! (or no ACK within `timeout`), so the client learns the connection is dead before it needs
//! it. Through a sidecar they end at Envoy (istio/istio#57804): Envoy's own upstream
//! connection stays silent, and a middlebox behind it forgets it just the same.

use super::contract::{IstioContext, IstioForm, Mitigation};
use crate::config::CellConfig;
use crate::model::duration::Dur;
use crate::model::service::{Http2Keepalive, Service};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GrpcKeepalive {
    pub interval: Dur,
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
}

fn default_timeout() -> Dur {
    Dur::secs(20)
}

impl Mitigation for GrpcKeepalive {
    fn label(&self) -> String {
        format!("grpc-keepalive={}/{}", self.interval, self.timeout)
    }
    fn describe(&self) -> String {
        format!("the gRPC client PINGs each connection every {} and gives up after {} without an ACK", self.interval, self.timeout)
    }
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String> {
        if knobs.service != Service::Grpc || knobs.grpc.is_some() {
            return Err("it is a gRPC client's keepalive, for a gRPC idle cell (`service: grpc` without `replicas`)".into());
        }
        if self.interval.is_zero() || self.timeout.is_zero() {
            return Err("interval and timeout must be above 0s".into());
        }
        knobs.client.http2_keepalive = Some(Http2Keepalive { interval: self.interval, timeout: self.timeout, while_idle: true });
        Ok(())
    }
    fn istio_resources(&self, _ctx: &IstioContext) -> Vec<IstioForm> {
        vec![IstioForm::AppSetting {
            what: format!(
                "the gRPC client's keepalive: tonic Endpoint::http2_keep_alive_interval({}), keep_alive_timeout({}), keep_alive_while_idle(true) (grpc-go keepalive.ClientParameters Time, Timeout, PermitWithoutStream)",
                self.interval, self.timeout
            ),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_sets_the_clients_http2_keepalive_on_grpc_idle_cells_only() {
        let m = GrpcKeepalive { interval: Dur::secs(60), timeout: Dur::secs(20) };
        let mut redis = super::super::contract::tests::test_knobs();
        assert!(m.apply(&mut redis).unwrap_err().contains("gRPC idle cell"));
        let s = crate::scenario::parse(
            "name: g\nsummary: s\nservice: grpc\nidle: 10m\ncells: [{mitigation: none, expect: survived}]\n",
            std::path::Path::new("g.yaml"),
        )
        .unwrap();
        let mut k = s.base_knobs();
        assert!(k.grpc.is_none(), "no replicas: an idle cell");
        m.apply(&mut k).unwrap();
        assert_eq!(k.client.http2_keepalive.unwrap().interval, Dur::secs(60));
        assert!(k.durations_mut().iter().any(|d| d.label == "client.http2_keepalive.interval"));
        assert_eq!(m.label(), "grpc-keepalive=1m/20s");
    }
}
