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

/// `500ms`, or `{age: 500ms, grace: 1s}` (grace: grpc-go replicas only).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum ServerMaxConnectionAge {
    Age(Dur),
    WithGrace {
        age: Dur,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grace: Option<Dur>,
    },
}

impl ServerMaxConnectionAge {
    fn age(&self) -> Dur {
        match self {
            ServerMaxConnectionAge::Age(a) | ServerMaxConnectionAge::WithGrace { age: a, .. } => *a,
        }
    }
    fn grace(&self) -> Option<Dur> {
        match self {
            ServerMaxConnectionAge::Age(_) => None,
            ServerMaxConnectionAge::WithGrace { grace, .. } => *grace,
        }
    }
}

impl Mitigation for ServerMaxConnectionAge {
    fn label(&self) -> String {
        match self.grace() {
            Some(g) => format!("server-max-connection-age={}+grace={g}", self.age()),
            None => format!("server-max-connection-age={}", self.age()),
        }
    }
    fn describe(&self) -> String {
        let grace = self.grace().map(|g| format!(", calls in flight get {g} more")).unwrap_or_default();
        format!("each gRPC replica sends GOAWAY to a connection {} old{grace}; the client reconnects", self.age())
    }
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String> {
        if self.age().is_zero() {
            return Err("a max connection age of 0s would end every connection at once; give a duration".into());
        }
        let grpc = need_balance_run(knobs, "server-max-connection-age")?;
        if self.grace().is_some() && grpc.server_library != crate::model::library::Library::GrpcGo {
            return Err("tonic's server has no MaxConnectionAgeGrace; give the scenario `server: {library: grpc-go}` for a grace".into());
        }
        grpc.max_connection_age = Some(self.age());
        grpc.max_connection_age_grace = self.grace();
        Ok(())
    }
    fn istio_resources(&self, _ctx: &IstioContext) -> Vec<IstioForm> {
        let grace = self.grace().map(|g| format!(", MaxConnectionAgeGrace = {g}")).unwrap_or_default();
        vec![IstioForm::AppSetting {
            what: format!(
                "the gRPC server's MaxConnectionAge = {}{grace} (grpc-go keepalive.ServerParameters; tonic Server::max_connection_age)",
                self.age()
            ),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_needs_a_grpc_service_and_a_positive_age() {
        let mut k = super::super::contract::tests::test_knobs();
        assert!(ServerMaxConnectionAge::Age(Dur::secs(1)).apply(&mut k).unwrap_err().contains("service is redis"));
        let s = crate::scenario::parse(
            "name: g\nsummary: s\nservice: grpc\nreplicas: 2\nduration: 4s\ncells: [{mitigation: none, expect: pinned}]\n",
            std::path::Path::new("g.yaml"),
        )
        .unwrap();
        let mut k = s.base_knobs();
        assert!(ServerMaxConnectionAge::Age(Dur::secs(0)).apply(&mut k).is_err());
        ServerMaxConnectionAge::Age(Dur::secs(2)).apply(&mut k).unwrap();
        assert_eq!(k.clone().grpc.unwrap().max_connection_age, Some(Dur::secs(2)));
        // A grace: grpc-go's replicas have one, tonic's do not.
        let graced: ServerMaxConnectionAge = serde_saphyr::from_str("{age: 500ms, grace: 1s}").unwrap();
        assert_eq!(graced.label(), "server-max-connection-age=500ms+grace=1s");
        assert!(graced.apply(&mut k).unwrap_err().contains("library: grpc-go"));
        k.grpc.as_mut().unwrap().server_library = crate::model::library::Library::GrpcGo;
        graced.apply(&mut k).unwrap();
        assert_eq!(k.grpc.unwrap().max_connection_age_grace, Some(Dur::secs(1)));
        let plain: ServerMaxConnectionAge = serde_saphyr::from_str("500ms").unwrap();
        assert_eq!(plain.label(), "server-max-connection-age=500ms");
    }
}
