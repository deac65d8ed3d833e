//! `app-keepalive`: TCP keepalive on the app's own socket.
//!
//! ```text
//!   app socket [SO_KEEPALIVE] ──probes──▶ first TCP endpoint on the path
//!                                          (the sidecar's Envoy when there is one: probes end there,
//!                                           carry no bytes, and never reset tcp_proxy's idle timer)
//! ```

use super::{IstioContext, IstioForm, Mitigation};
use crate::duration::Dur;
use crate::knobs::Knobs;
use crate::scenario::Keepalive;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppKeepalive {
    pub time: Dur,
    pub interval: Dur,
    pub probes: u32,
}

impl Mitigation for AppKeepalive {
    fn label(&self) -> String {
        format!("app-keepalive={}/{}/{}", self.time, self.interval, self.probes)
    }
    fn describe(&self) -> String {
        format!(
            "SO_KEEPALIVE on the app's socket: first probe after {} idle, then every {}, {} probes",
            self.time, self.interval, self.probes
        )
    }
    fn apply(&self, knobs: &mut Knobs) -> Result<(), String> {
        if self.probes == 0 {
            return Err("probes must be at least 1".into());
        }
        knobs.client.keepalive = Some(Keepalive { time: self.time, interval: self.interval, probes: self.probes });
        Ok(())
    }
    fn istio_resources(&self, _ctx: &IstioContext) -> Vec<IstioForm> {
        vec![IstioForm::AppSetting {
            what: format!(
                "the app sets SO_KEEPALIVE, TCP_KEEPIDLE={}, TCP_KEEPINTVL={}, TCP_KEEPCNT={} on its socket",
                self.time.0.as_secs(),
                self.interval.0.as_secs(),
                self.probes
            ),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_the_client_socket_option() {
        let mut k = super::super::test_knobs();
        let m = AppKeepalive { time: Dur::secs(600), interval: Dur::secs(75), probes: 9 };
        m.apply(&mut k).unwrap();
        assert_eq!(k.client.keepalive.unwrap().time, Dur::secs(600));
        assert_eq!(k.sidecar().unwrap().idle_timeout, Dur::secs(3600), "the sidecar is untouched");
        assert!(matches!(m.istio_resources(&super::super::test_ctx())[0], IstioForm::AppSetting { .. }));
    }
}
