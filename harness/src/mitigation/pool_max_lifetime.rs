//! `pool-max-lifetime`: the pool discards a connection older than this at checkout
//! (MySQL: `mysql_async`'s `abs_conn_ttl`; go-sql-driver's `SetConnMaxLifetime`).
//!
//! ```text
//!   pool.get() ── age > max lifetime? ──yes──▶ close, connect anew ──▶ command  (recovered)
//!                                     └──no───▶ command on the pooled connection
//! ```

use super::contract::{IstioContext, IstioForm, Mitigation};
use crate::config::CellConfig;
use crate::model::duration::Dur;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(transparent)]
pub struct PoolMaxLifetime(pub Dur);

impl Mitigation for PoolMaxLifetime {
    fn label(&self) -> String {
        format!("pool-max-lifetime={}", self.0)
    }
    fn describe(&self) -> String {
        format!("the pool discards connections older than {} at checkout", self.0)
    }
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String> {
        if self.0.is_zero() {
            return Err("a max lifetime of 0s would discard every connection; give a duration".into());
        }
        knobs.client.library.setting(crate::model::library::PoolSetting::MaxLifetime)?;
        knobs.client.pool_max_lifetime = Some(self.0);
        Ok(())
    }
    fn istio_resources(&self, _ctx: &IstioContext) -> Vec<IstioForm> {
        vec![IstioForm::AppSetting {
            what: format!("the app's pool: max connection lifetime {} (e.g. SetConnMaxLifetime)", self.0),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_the_lifetime() {
        let mut k = super::super::contract::tests::test_knobs();
        PoolMaxLifetime(Dur::secs(1800)).apply(&mut k).unwrap();
        assert_eq!(k.client.pool_max_lifetime, Some(Dur::secs(1800)));
    }
}
