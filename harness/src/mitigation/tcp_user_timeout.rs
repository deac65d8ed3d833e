//! `tcp-user-timeout`: `TCP_USER_TIMEOUT` on the app's socket.
//!
//! ```text
//!   app socket [TCP_USER_TIMEOUT = X] ──request──▶ middlebox (drops segments of a forgotten flow)
//!              retransmits … after X unacknowledged: ETIMEDOUT, the request fails fast
//! ```
//!
//! It does not keep a flow alive; it bounds how long a write into a black hole can hang, so
//! the app fails after X instead of after its request timeout (or the kernel's ~15 min).

use super::contract::{IstioContext, IstioForm, Mitigation};
use crate::config::CellConfig;
use crate::model::duration::Dur;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(transparent)]
pub struct TcpUserTimeout(pub Dur);

impl Mitigation for TcpUserTimeout {
    fn label(&self) -> String {
        format!("tcp-user-timeout={}", self.0)
    }
    fn describe(&self) -> String {
        format!("TCP_USER_TIMEOUT {} on the app's socket: unacknowledged data fails the connection after it", self.0)
    }
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String> {
        if self.0.is_zero() {
            return Err("0s means the kernel default; give a duration".into());
        }
        knobs.client.library.setting(crate::model::library::PoolSetting::TcpUserTimeout)?;
        knobs.client.tcp_user_timeout = Some(self.0);
        Ok(())
    }
    fn istio_resources(&self, _ctx: &IstioContext) -> Vec<IstioForm> {
        vec![IstioForm::AppSetting {
            what: format!("the app sets TCP_USER_TIMEOUT={} ms on its socket", self.0.0.as_millis()),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_the_socket_option() {
        let mut k = super::super::contract::tests::test_knobs();
        TcpUserTimeout(Dur::secs(20)).apply(&mut k).unwrap();
        assert_eq!(k.client.tcp_user_timeout, Some(Dur::secs(20)));
    }
}
