//! `exclude-outbound-ports`: `traffic.sidecar.istio.io/excludeOutboundPorts`.
//!
//! ```text
//!   app ──(capture skips these ports)──────────────────────────▶ server
//!         sidecar Envoy is still in the pod, but never sees the connection
//! ```
//!
//! In the lab this is the capture rule's exclusion set, as istio-iptables builds it: the
//! connection goes straight out of the pod with the app's own socket options.

use super::contract::{IstioContext, IstioForm, Mitigation, need_sidecar};
use crate::config::CellConfig;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(transparent)]
pub struct ExcludeOutboundPorts(pub Vec<u16>);

impl ExcludeOutboundPorts {
    fn list(&self) -> String {
        self.0.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
    }
}

impl Mitigation for ExcludeOutboundPorts {
    fn label(&self) -> String {
        format!("exclude-outbound-ports={}", self.list())
    }
    fn describe(&self) -> String {
        format!("outbound capture skips port(s) {}: the app's socket reaches the next hop itself", self.list())
    }
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String> {
        if self.0.is_empty() {
            return Err("list at least one port".into());
        }
        if self.0.iter().any(|p| matches!(p, 0 | 15000 | 15001 | 15006)) {
            return Err("0 and Envoy's own ports 15000/15001/15006 cannot be excluded".into());
        }
        let sidecar = need_sidecar(knobs, "exclude-outbound-ports")?;
        sidecar.exclude_outbound_ports.extend(&self.0);
        Ok(())
    }
    fn istio_resources(&self, _ctx: &IstioContext) -> Vec<IstioForm> {
        vec![IstioForm::PodAnnotation {
            pod: "client".into(),
            key: "traffic.sidecar.istio.io/excludeOutboundPorts".into(),
            value: self.list(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_the_port_out_of_the_capture() {
        let mut k = super::super::contract::tests::test_knobs();
        let m = ExcludeOutboundPorts(vec![6379]);
        m.apply(&mut k).unwrap();
        assert_eq!(k.sidecar().unwrap().exclude_outbound_ports, vec![6379]);
        assert!(ExcludeOutboundPorts(vec![15001]).apply(&mut k).is_err());
        assert_eq!(
            m.istio_resources(&super::super::contract::tests::test_ctx()),
            vec![IstioForm::PodAnnotation {
                pod: "client".into(),
                key: "traffic.sidecar.istio.io/excludeOutboundPorts".into(),
                value: "6379".into()
            }]
        );
    }
}
