//! The `gateway` hop on a cluster: Istio's ingress gateway in istio-system, shared by the
//! cells one after another, so what a cell puts there is labelled with it and removed after.
//!
//! ```text
//!   probe ──▶ istio-ingressgateway.istio-system ──Gateway + VirtualService──▶ next hop
//!             (+ EnvoyFilters: scaled idle timeout, socket options; TLS Secret of the run's CA)
//! ```

use crate::hop::GatewayHop;
use crate::kind::cell_plan::CellPlan;
use crate::kind::device::OnCluster;
use crate::kind::plan::Step;
use crate::render::istio;

impl OnCluster for GatewayHop {
    /// Its certificate, Gateway + VirtualService to `next_host`, and the EnvoyFilters of its
    /// scaled idle timeout and socket options. Its pod is Istio's: nothing to wait for.
    fn set_up(&self, plan: &mut CellPlan, _index: usize, next_host: &str) -> Option<Step> {
        let port = plan.cell.real.service.port();
        if self.tls {
            plan.note("the gateway's certificate comes from a CA generated for the run ($RUN_DIR/cert.pem, key.pem); the probe trusts only that CA".into());
            let secret = istio::gateway_secret_manifest(&plan.ns);
            plan.apply(secret, "the gateway's TLS certificate (apply: a re-run replaces it), labelled with its cell");
        }
        let routes = istio::gateway_manifests(self, &plan.ns, next_host, port);
        plan.apply(routes, "ingress gateway: Gateway + VirtualService to the next hop");
        for (yaml, purpose) in istio::gateway_extras(plan.cell, &plan.ns, port) {
            plan.apply(yaml, purpose);
        }
        None
    }

    /// Istio's ingress gateway pod, the node `gw<i>` as in the local lab. It is shared: its
    /// capture holds whatever else it carried meanwhile (none while cells run one at a time).
    fn pod(&self, _plan: &CellPlan, index: usize) -> Option<crate::kind::capture::CapturedPod> {
        Some(crate::kind::capture::CapturedPod::labelled(&format!("gw{index}"), "istio-system", "istio=ingressgateway"))
    }

    /// Waited for, and run after a failure too (the stage makes it a cleanup step): what the
    /// cell put in istio-system (the gateway's EnvoyFilters and certificate) must be gone
    /// before the next cell uses the one shared gateway.
    fn teardown(&self, plan: &CellPlan) -> Option<Step> {
        let selector = format!("{}={}", istio::CELL_LABEL, plan.ns);
        Some(plan.k(
            &[
                "-n",
                "istio-system",
                "delete",
                istio::CELL_KINDS_IN_ISTIO_SYSTEM,
                "-l",
                &selector,
                "--ignore-not-found",
                "--wait=true",
                "--timeout=120s",
            ],
            "remove the cell's gateway EnvoyFilters and certificate (by label), and wait",
        ))
    }
}
