//! `app-heartbeat`: the app sends a protocol-level PING on every idle pooled connection at
//! this interval.
//!
//! ```text
//!   app ──PING──▶ sidecar ──PING──▶ … ──▶ server      bytes cross every hop, so every idle
//!       ◀─PONG──          ◀─PONG──                    timer on the path starts over
//! ```

use super::contract::{IstioContext, IstioForm, Mitigation};
use crate::config::CellConfig;
use crate::model::duration::Dur;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(transparent)]
pub struct AppHeartbeat(pub Dur);

impl Mitigation for AppHeartbeat {
    fn label(&self) -> String {
        format!("app-heartbeat={}", self.0)
    }
    fn describe(&self) -> String {
        format!("the app PINGs each idle pooled connection every {}", self.0)
    }
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String> {
        if self.0.is_zero() {
            return Err("a heartbeat interval of 0s would never idle; give a duration".into());
        }
        if knobs.client_library_pool() {
            return Err(format!(
                "{} pools its own connections, so the probe cannot ping each idle one; use pool-max-idle",
                knobs.client.library.describe()
            ));
        }
        knobs.client.heartbeat = Some(self.0);
        Ok(())
    }
    fn istio_resources(&self, _ctx: &IstioContext) -> Vec<IstioForm> {
        vec![IstioForm::AppSetting { what: format!("the app pings idle pooled connections every {}", self.0) }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_the_heartbeat() {
        let mut k = super::super::contract::tests::test_knobs();
        AppHeartbeat(Dur::secs(1200)).apply(&mut k).unwrap();
        assert_eq!(k.client.heartbeat, Some(Dur::secs(1200)));
    }
}
