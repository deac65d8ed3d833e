//! `dr-load-balancer`: DestinationRule `trafficPolicy.loadBalancer.simple` for the service.
//!
//! ```text
//!   client ══HTTP/2══▶ [client sidecar: cluster outbound|<port>||<svc>, lb_policy = X] ═▶ replicas
//! ```
//!
//! It picks the algorithm the client sidecar's Envoy uses to spread requests over the
//! service's endpoints (Istio's default: LEAST_REQUEST). On an HTTP/2 (gRPC) port that choice
//! is per request; on a TCP port it is per connection, which is why it does not unpin a TCP
//! client. It needs a client sidecar: a DestinationRule changes Envoy, not the kernel's ClusterIP.

use super::contract::{IstioContext, IstioForm, Mitigation, need_sidecar, to_yaml};
use crate::config::CellConfig;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Istio's `LoadBalancerSettings.SimpleLB`, by its names.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    LeastRequest,
    RoundRobin,
    Random,
}

impl SimpleLb {
    pub fn name(self) -> &'static str {
        match self {
            SimpleLb::LeastRequest => "LEAST_REQUEST",
            SimpleLb::RoundRobin => "ROUND_ROBIN",
            SimpleLb::Random => "RANDOM",
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(transparent)]
pub struct DrLoadBalancer(pub SimpleLb);

impl Mitigation for DrLoadBalancer {
    fn label(&self) -> String {
        format!("dr-load-balancer={}", self.0.name())
    }
    fn describe(&self) -> String {
        format!("DestinationRule loadBalancer.simple {}: the client sidecar's choice of endpoint", self.0.name())
    }
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String> {
        need_sidecar(knobs, "dr-load-balancer")?;
        Ok(())
    }
    fn istio_resources(&self, ctx: &IstioContext) -> Vec<IstioForm> {
        let v = json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "idlelab-load-balancer", "namespace": ctx.namespace},
            "spec": {"host": ctx.service_host, "trafficPolicy": {"loadBalancer": {"simple": self.0.name()}}}
        });
        vec![IstioForm::Manifest { kind: "DestinationRule".into(), yaml: to_yaml(&v) }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_needs_a_client_sidecar_and_renders_the_simple_policy() {
        let mut k = super::super::contract::tests::test_knobs();
        DrLoadBalancer(SimpleLb::RoundRobin).apply(&mut k).unwrap();
        k.path.clear();
        assert!(DrLoadBalancer(SimpleLb::RoundRobin).apply(&mut k).unwrap_err().contains("no `sidecar` hop"));
        let forms = DrLoadBalancer(SimpleLb::RoundRobin).istio_resources(&super::super::contract::tests::test_ctx());
        let IstioForm::Manifest { yaml, .. } = &forms[0] else { panic!("a manifest") };
        assert!(yaml.contains("simple: ROUND_ROBIN"), "{yaml}");
        let m: DrLoadBalancer = serde_saphyr::from_str("LEAST_REQUEST").unwrap();
        assert_eq!(m.label(), "dr-load-balancer=LEAST_REQUEST");
        assert!(serde_saphyr::from_str::<DrLoadBalancer>("round_robin").is_err());
    }
}
