//! `server-max-connection-age`: each gRPC replica ends a connection once it is this old (an
//! HTTP/2 GOAWAY), so its client reconnects, and the ClusterIP picks a replica anew.
//!
//! ```text
//!   client ══HTTP/2══▶ ClusterIP ─▶ replica 1   … age reached: GOAWAY
//!   client ══HTTP/2══▶ ClusterIP ─▶ replica 4   (new connection, new random pick)
//! ```
//!
//! grpc-go calls it `keepalive.ServerParameters.MaxConnectionAge`, tonic
//! `Server::max_connection_age` (tonic has no grace: the GOAWAY waits for open calls). The
//! cost: a reconnect per connection per age, and the calls that race a GOAWAY.

use super::contract::{IstioContext, IstioForm, Mitigation, need_balance_run};
use crate::config::CellConfig;
use crate::model::duration::Dur;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(transparent)]
pub struct ServerMaxConnectionAge(pub Dur);

impl Mitigation for ServerMaxConnectionAge {
    fn label(&self) -> String {
        format!("server-max-connection-age={}", self.0)
    }
    fn describe(&self) -> String {
        format!("each gRPC replica sends GOAWAY to a connection {} old; the client reconnects", self.0)
    }
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String> {
        if self.0.is_zero() {
            return Err("a max connection age of 0s would end every connection at once; give a duration".into());
        }
        let grpc = need_balance_run(knobs, "server-max-connection-age")?;
        grpc.max_connection_age = Some(self.0);
        Ok(())
    }
    fn istio_resources(&self, _ctx: &IstioContext) -> Vec<IstioForm> {
        vec![IstioForm::AppSetting {
            what: format!("the gRPC server's MaxConnectionAge = {} (grpc-go keepalive.ServerParameters)", self.0),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_needs_a_grpc_service_and_a_positive_age() {
        let mut k = super::super::contract::tests::test_knobs();
        assert!(ServerMaxConnectionAge(Dur::secs(1)).apply(&mut k).unwrap_err().contains("service is redis"));
        let s = crate::scenario::parse(
            "name: g\nsummary: s\nservice: grpc\nreplicas: 2\nduration: 4s\ncells: [{mitigation: none, expect: pinned}]\n",
            std::path::Path::new("g.yaml"),
        )
        .unwrap();
        let mut k = s.base_knobs();
        assert!(ServerMaxConnectionAge(Dur::secs(0)).apply(&mut k).is_err());
        ServerMaxConnectionAge(Dur::secs(2)).apply(&mut k).unwrap();
        assert_eq!(k.grpc.unwrap().max_connection_age, Some(Dur::secs(2)));
    }
}
