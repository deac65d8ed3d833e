//! `pool-max-idle`: the app's pool discards a connection that sat idle longer than this
//! when it is checked out, and opens a fresh one.
//!
//! ```text
//!   pool.get() ── idle > max? ──yes──▶ close, connect anew ──▶ command   (verdict: recovered)
//!                           └──no───▶ command on the pooled connection
//! ```
//!
//! Below the proxy's idle timeout this means no request ever meets a connection the path
//! has already closed; the cost is a new connection after every long idle.

use super::contract::{IstioContext, IstioForm, Mitigation};
use crate::config::CellConfig;
use crate::model::duration::Dur;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(transparent)]
pub struct PoolMaxIdle(pub Dur);

impl Mitigation for PoolMaxIdle {
    fn label(&self) -> String {
        format!("pool-max-idle={}", self.0)
    }
    fn describe(&self) -> String {
        format!("the pool discards connections idle longer than {} at checkout", self.0)
    }
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String> {
        if self.0.is_zero() {
            return Err("a max idle of 0s would discard every connection; give a duration".into());
        }
        knobs.client.library.setting(crate::model::library::PoolSetting::MaxIdle)?;
        knobs.client.pool_max_idle = Some(self.0);
        Ok(())
    }
    fn istio_resources(&self, _ctx: &IstioContext) -> Vec<IstioForm> {
        vec![IstioForm::AppSetting {
            what: format!("the app's pool: max idle time {} (e.g. SetConnMaxIdleTime)", self.0),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_the_pool_policy() {
        let mut k = super::super::contract::tests::test_knobs();
        PoolMaxIdle(Dur::secs(1800)).apply(&mut k).unwrap();
        assert_eq!(k.client.pool_max_idle, Some(Dur::secs(1800)));
        assert!(PoolMaxIdle(Dur::secs(0)).apply(&mut k).is_err());
    }
}
