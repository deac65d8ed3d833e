//! `app-keepalive`: TCP keepalive on the app's own socket.
//!
//! ```text
//!   app socket [SO_KEEPALIVE] ──probes──▶ first TCP endpoint on the path
//!                                          (the sidecar's Envoy when there is one: probes end there,
//!                                           carry no bytes, and never reset tcp_proxy's idle timer)
//! ```

use super::contract::{IstioContext, IstioForm, Mitigation};
use crate::config::CellConfig;
use crate::model::service::Keepalive;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(transparent)]
pub struct AppKeepalive(pub Keepalive);

impl Mitigation for AppKeepalive {
    fn label(&self) -> String {
        format!("app-keepalive={}", self.0)
    }
    fn describe(&self) -> String {
        format!(
            "SO_KEEPALIVE on the app's socket: first probe after {} idle, then every {}, {} probes",
            self.0.time, self.0.interval, self.0.probes
        )
    }
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String> {
        self.0.check()?;
        knobs.client.keepalive = Some(self.0);
        Ok(())
    }
    fn istio_resources(&self, _ctx: &IstioContext) -> Vec<IstioForm> {
        vec![IstioForm::AppSetting {
            what: format!(
                "the app sets SO_KEEPALIVE, TCP_KEEPIDLE={}, TCP_KEEPINTVL={}, TCP_KEEPCNT={} on its socket",
                self.0.time.0.as_secs(),
                self.0.interval.0.as_secs(),
                self.0.probes
            ),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::duration::Dur;

    #[test]
    fn sets_the_client_socket_option() {
        let mut k = super::super::contract::tests::test_knobs();
        let m = AppKeepalive(Keepalive { time: Dur::secs(600), interval: Dur::secs(75), probes: 9 });
        m.apply(&mut k).unwrap();
        assert_eq!(k.client.keepalive.unwrap().time, Dur::secs(600));
        assert_eq!(k.sidecar().unwrap().idle_timeout, Dur::secs(3600), "the sidecar is untouched");
        assert!(matches!(m.istio_resources(&super::super::contract::tests::test_ctx())[0], IstioForm::AppSetting { .. }));
    }
}
