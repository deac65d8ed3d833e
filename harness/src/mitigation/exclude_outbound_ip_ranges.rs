//! `exclude-outbound-ip-ranges`: `traffic.sidecar.istio.io/excludeOutboundIPRanges`.
//!
//! ```text
//!   app ──(capture skips these destinations)───────────────────▶ next hop
//!         the app's own socket, with its own options, crosses the path
//! ```
//!
//! The local lab's addresses are in 198.18.0.0/15 (`[198.18.0.0/15]` excludes every lab
//! destination); on a cluster that range stands for the cluster's service and pod ranges
//! (`render::KIND_RANGES`), other ranges are used as written.

use super::contract::{IstioContext, IstioForm, Mitigation, need_sidecar};
use crate::config::CellConfig;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(transparent)]
pub struct ExcludeOutboundIpRanges(pub Vec<String>);

fn valid_cidr(c: &str) -> bool {
    match c.split_once('/') {
        Some((ip, len)) => ip.parse::<Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 32),
        None => false,
    }
}

impl ExcludeOutboundIpRanges {
    /// The ranges where `ctx` runs: on a cluster a range inside the lab's 198.18.0.0/15 stands
    /// for the cluster's own service and pod ranges (the lab's addresses exist only locally).
    pub fn on(&self, ctx: &IstioContext) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.0 {
            let in_lab = r
                .split_once('/')
                .and_then(|(ip, len)| Some((ip.parse::<Ipv4Addr>().ok()?, len.parse::<u8>().ok()?)))
                .is_some_and(|(ip, len)| {
                    len >= 15 && u32::from(ip) & 0xfffe_0000 == u32::from(Ipv4Addr::new(198, 18, 0, 0))
                });
            match (&ctx.cluster_ranges, in_lab) {
                (Some(cluster), true) => out.extend(cluster.iter().cloned()),
                _ => out.push(r.clone()),
            }
        }
        out.dedup();
        out
    }
}

impl Mitigation for ExcludeOutboundIpRanges {
    fn label(&self) -> String {
        format!("exclude-outbound-ip-ranges={}", self.0.join(","))
    }
    fn describe(&self) -> String {
        format!("outbound capture skips {}: the app's socket reaches the next hop itself", self.0.join(", "))
    }
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String> {
        if self.0.is_empty() {
            return Err("list at least one IPv4 CIDR, e.g. 198.18.0.0/15".into());
        }
        if let Some(bad) = self.0.iter().find(|c| !valid_cidr(c)) {
            return Err(format!("`{bad}` is not an IPv4 CIDR such as 198.18.0.0/15"));
        }
        need_sidecar(knobs, "exclude-outbound-ip-ranges")?.exclude_outbound_ip_ranges.extend(self.0.iter().cloned());
        Ok(())
    }
    fn istio_resources(&self, ctx: &IstioContext) -> Vec<IstioForm> {
        vec![IstioForm::PodAnnotation {
            pod: "client".into(),
            key: "traffic.sidecar.istio.io/excludeOutboundIPRanges".into(),
            value: self.on(ctx).join(","),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_and_applies_ranges() {
        let mut k = super::super::contract::tests::test_knobs();
        ExcludeOutboundIpRanges(vec!["198.18.0.0/15".into()]).apply(&mut k).unwrap();
        assert_eq!(k.sidecar().unwrap().exclude_outbound_ip_ranges, vec!["198.18.0.0/15"]);
        assert!(ExcludeOutboundIpRanges(vec!["198.18.0.0".into()]).apply(&mut k).unwrap_err().contains("CIDR"));
        assert!(ExcludeOutboundIpRanges(vec!["10.0.0.0/33".into()]).apply(&mut k).is_err());
        let m = ExcludeOutboundIpRanges(vec!["198.18.0.0/15".into(), "10.1.0.0/16".into()]);
        assert_eq!(m.on(&super::super::contract::tests::test_ctx()), vec!["198.18.0.0/15", "10.1.0.0/16"]);
        let kind =
            IstioContext { cluster_ranges: Some(vec!["10.96.0.0/16".into()]), ..super::super::contract::tests::test_ctx() };
        assert_eq!(m.on(&kind), vec!["10.96.0.0/16", "10.1.0.0/16"], "the lab's range stands for the cluster's");
    }
}
