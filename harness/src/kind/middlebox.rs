//! The `middlebox` hop on a cluster: a privileged pod behind a Service of its own that DNATs
//! to the next hop, its conntrack forgetting idle flows as the hop says.
//!
//! ```text
//!   previous hop ──▶ mb<i> Service ──▶ pod: conntrack (timeout, loose=0), DNAT ──▶ next hop
//!                                      forgotten flow: reset | drop, counted in `forgotten`
//! ```

use crate::hop::{MiddleboxHop, OnUnknown};
use crate::kind::cell_plan::CellPlan;
use crate::kind::device::OnCluster;
use crate::kind::plan::{Capture, Step};
use crate::render::manifests;

impl OnCluster for MiddleboxHop {
    /// Its pod and Service, forwarding to `next_host`; returns the wait for the pod.
    fn set_up(&self, plan: &mut CellPlan, index: usize, next_host: &str) -> Option<Step> {
        let name = format!("mb{index}");
        let (pod, svc) = manifests::middlebox(&name, &plan.ns, self, next_host, plan.cell.real.service);
        let then = if self.on_unknown == OnUnknown::Reset { "reset" } else { "drop" };
        plan.apply(
            format!("{}---\n{}", manifests::yaml(&pod), manifests::yaml(&svc)),
            &format!("middlebox {name}: conntrack forgets after {}, then {then}", self.idle_timeout),
        );
        Some(plan.k(
            &["-n", &plan.ns, "wait", "--for=condition=Ready", &format!("pod/{name}"), "--timeout=180s"],
            &format!("wait for {name}"),
        ))
    }

    /// Its pod `mb<i>`, the node `mb<i>` as in the local lab.
    fn pod(&self, plan: &CellPlan, index: usize) -> Option<crate::kind::capture::CapturedPod> {
        let name = format!("mb{index}");
        Some(crate::kind::capture::CapturedPod::named(&name, &plan.ns, &name))
    }

    /// Its count of forgotten-flow segments (FORWARD and INPUT paths).
    fn evidence(&self, plan: &CellPlan, index: usize) -> Option<Step> {
        let counter = manifests::MIDDLEBOX_COUNTER;
        let step = plan.k(
            &["-n", &plan.ns, "exec", &format!("mb{index}"), "--", "nft", "list", "counter", "ip", "idlelab_middlebox", counter],
            &format!("evidence: middlebox mb{index}'s forgotten-flow segments (counter {counter})"),
        );
        Some(step.with_capture(Capture::Evidence).optional())
    }
}
