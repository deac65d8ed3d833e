//! `client-sidecar`: inject Istio's sidecar into every client pod of a gRPC service, so that
//! Envoy, not the kernel's ClusterIP, picks a replica — per request.
//!
//! ```text
//!   client ══HTTP/2══▶ ClusterIP ─▶ one replica                       (none: per connection)
//!   client ══HTTP/2══▶ [sidecar Envoy: HCM on port grpc-grpc, EDS of
//!                       every Ready replica, LEAST_REQUEST] ═▶ r0 r1 r2 … (this: per request)
//! ```
//!
//! Istio treats a port named `grpc-*` as HTTP/2: the outbound listener runs the HTTP
//! connection manager, and its cluster holds one endpoint per Ready replica from the
//! EndpointSlice (EDS), so a replica added by a scale-up gets requests as soon as the control
//! plane pushes it. The cost is an Envoy per client pod. Istio's default load balancer is
//! LEAST_REQUEST; `dr-load-balancer` changes it.

use super::contract::{IstioContext, IstioForm, Mitigation, need_balance_run};
use crate::config::CellConfig;
use crate::hop::{Hop, SidecarHop};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ClientSidecar {}

impl Mitigation for ClientSidecar {
    fn label(&self) -> String {
        "client-sidecar".into()
    }
    fn describe(&self) -> String {
        "Istio's sidecar in every client pod: Envoy balances each request over the replicas (EDS)".into()
    }
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String> {
        let grpc = need_balance_run(knobs, "client-sidecar")?;
        if grpc.headless || grpc.lb.over_every_replica() {
            return Err("the clients balance over every replica's address themselves: their calls name a pod, and Istio would send them to its PassthroughCluster".into());
        }
        if knobs.sidecar().is_some() {
            return Err("the path already has a client sidecar".into());
        }
        knobs.path.insert(0, Hop::Sidecar(SidecarHop::default()));
        Ok(())
    }
    fn istio_resources(&self, _ctx: &IstioContext) -> Vec<IstioForm> {
        vec![IstioForm::PodAnnotation {
            pod: "client".into(),
            key: "sidecar.istio.io/inject".into(),
            value: "true".into(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_puts_a_sidecar_in_front_of_grpc_clients_only() {
        let mut k = super::super::contract::tests::test_knobs();
        assert!(ClientSidecar::default().apply(&mut k).unwrap_err().contains("service is redis"));
        let s = crate::scenario::parse(
            "name: g\nsummary: s\nservice: grpc\nreplicas: 2\nduration: 4s\ncells: [{mitigation: none, expect: pinned}]\n",
            std::path::Path::new("g.yaml"),
        )
        .unwrap();
        let mut k = s.base_knobs();
        ClientSidecar::default().apply(&mut k).unwrap();
        assert_eq!(k.sidecar_pods(), vec!["client".to_string()]);
        assert!(ClientSidecar::default().apply(&mut k).unwrap_err().contains("already"));
    }
}
