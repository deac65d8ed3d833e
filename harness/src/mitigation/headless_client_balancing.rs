//! `headless-client-balancing`: the clients resolve a headless Service (one address per
//! replica) and balance per request themselves, instead of one connection to the ClusterIP.
//!
//! ```text
//!   client ─ClusterIP─▶ node DNAT ─▶ one replica          (none: pinned per connection)
//!   client ─balance_list[r0 r1 r2 r3]─▶ every replica      (this: per request)
//! ```
//!
//! The client balances over the addresses it was given when its channel was made: tonic's
//! `Channel::balance_list` takes a fixed list, and grpc-go's `round_robin` gets its list from
//! the resolver, whose DNS form re-resolves only when a connection fails. A replica added
//! later gets nothing until the client resolves again.

use super::contract::{IstioContext, IstioForm, Mitigation, need_balance_run};
use crate::config::CellConfig;
use crate::model::balance::GrpcLb;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct HeadlessClientBalancing {}

impl Mitigation for HeadlessClientBalancing {
    fn label(&self) -> String {
        "headless-client-balancing".into()
    }
    fn describe(&self) -> String {
        "the clients resolve a headless Service and balance per request (tonic balance_list, grpc-go round_robin)".into()
    }
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String> {
        let library = knobs.client.library;
        need_balance_run(knobs, "headless-client-balancing")?;
        if knobs.sidecar().is_some() {
            return Err("with a client sidecar the calls would name a pod, not the Service, and Istio would send them to its PassthroughCluster: the sidecar would balance nothing".into());
        }
        let grpc = need_balance_run(knobs, "headless-client-balancing")?;
        grpc.headless = true;
        grpc.lb = GrpcLb::per_request(library);
        Ok(())
    }
    fn istio_resources(&self, _ctx: &IstioContext) -> Vec<IstioForm> {
        vec![IstioForm::AppSetting {
            what: "a headless Service (clusterIP: None) for the replicas, and the client's own balancing over its addresses (tonic balance_list, grpc-go round_robin)"
                .into(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_needs_a_grpc_service_and_switches_the_client_to_every_replica() {
        let mut k = super::super::contract::tests::test_knobs();
        assert!(HeadlessClientBalancing::default().apply(&mut k).unwrap_err().contains("service is redis"));
        k.grpc = Some(crate::config::GrpcConfig {
            replicas: 4,
            clients: 3,
            channels: 1,
            lb: GrpcLb::PickFirst,
            headless: false,
            duration: crate::model::duration::Dur::secs(20),
            request_interval: crate::model::duration::Dur::secs(1),
            scale: vec![],
            max_connection_age: None,
            max_connection_age_grace: None,
            server_library: crate::model::library::Library::Tonic,
            threshold: Default::default(),
        });
        assert!(HeadlessClientBalancing::default().apply(&mut k).unwrap_err().contains("client sidecar"));
        k.path.clear();
        HeadlessClientBalancing::default().apply(&mut k).unwrap();
        let g = k.grpc.unwrap();
        assert!(g.headless);
        assert_eq!(g.lb, GrpcLb::BalanceList);
    }
}
