//! `pool-test-on-borrow`: the pool pings a connection before handing it out and replaces it
//! when the ping fails (redis `PING`, memcached `version`, MySQL `COM_PING`).
//!
//! ```text
//!   pool.get() ── ping ──ok──▶ command on the pooled connection
//!                   └─fail──▶ close, connect anew ──▶ command            (verdict: recovered)
//! ```
//!
//! It hides both failures: an idle close and a forgotten flow both fail the ping instead of
//! the request. The cost is a round trip on every checkout.

use super::contract::{IstioContext, IstioForm, Mitigation};
use crate::config::CellConfig;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(transparent)]
pub struct PoolTestOnBorrow(pub bool);

impl Mitigation for PoolTestOnBorrow {
    fn label(&self) -> String {
        format!("pool-test-on-borrow={}", self.0)
    }
    fn describe(&self) -> String {
        if self.0 {
            "the pool pings each connection at checkout and replaces it if the ping fails".into()
        } else {
            "no ping at checkout".into()
        }
    }
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String> {
        if self.0 {
            knobs.client.library.setting(crate::model::library::PoolSetting::TestOnBorrow)?;
        }
        knobs.client.test_on_borrow = self.0;
        Ok(())
    }
    fn istio_resources(&self, _ctx: &IstioContext) -> Vec<IstioForm> {
        vec![IstioForm::AppSetting { what: "the app's pool validates connections on borrow (testOnBorrow)".into() }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_the_ping_on() {
        let mut k = super::super::contract::tests::test_knobs();
        PoolTestOnBorrow(true).apply(&mut k).unwrap();
        assert!(k.client.test_on_borrow);
    }
}
