//! The kind backend: the same cells on a Kubernetes cluster with Istio, the mitigations as
//! real Istio resources.
//!
//! ```text
//!   cells ──plan()──▶ Plan: kind / istioctl / docker / kubectl commands + manifests, in order
//!                       │   `idlelab plan` prints it
//!                       └──▶ execute(plan, &mut dyn CommandRunner) ── probe's log ──▶ verdict
//! ```
//!
//! - `kind-config/cluster.yaml` and `istio-profiles/*.yaml` define the cluster (`just kind-up`).
//! - Per cell, a namespace `idlelab-<scenario>-<n>` with the server (Deployment + Service, the
//!   same server settings as the local lab), a pod per middlebox hop, an Istio Gateway +
//!   VirtualService for a gateway hop, the mitigation's Istio resources, and the probe pod
//!   (`idlelab probe --spec`), injected or not as the path says.
//! - Time scale: with `--time-scale 1` Istio's own defaults stand (the nightly real-hour run);
//!   a compressed run sets each sidecar's scaled idle timeout explicitly, and the plan says so.
//! - Evidence: `istioctl proxy-config` of the probe's sidecar (listeners, clusters) and its
//!   stats, kept with the cell.

pub mod cell;
pub mod cell_plan;
pub mod device;
pub mod plan;
pub mod run;
pub mod target;

pub use cell::cell_steps;
pub use target::{KubeTarget, namespace_of};

use crate::cells::Cell;
use plan::{Plan, Step};

/// Steps that bring up the cluster (kind backend) or check it (existing context).
pub fn cluster_steps(target: &KubeTarget) -> Vec<Step> {
    match &target.context {
        None => vec![
            Step::Note {
                text: "the kind cluster `idlelab` and Istio are reused when they already exist (just kind-up)".into(),
            },
            Step::command(
                "kind",
                &["create", "cluster", "--name", "idlelab", "--config", "kind-config/cluster.yaml"],
                "create the kind cluster (pinned node image)",
            )
            .optional(),
            Step::command(
                "istioctl",
                &["install", "--context", "kind-idlelab", "-y", "-f", "istio-profiles/minimal.yaml"],
                "install Istio with an ingress gateway (pinned version)",
            ),
            Step::command(
                "docker",
                &["build", "-t", crate::render::manifests::PROBE_IMAGE, "."],
                "build the probe image (Dockerfile)",
            ),
            Step::command(
                "kind",
                &["load", "docker-image", crate::render::manifests::PROBE_IMAGE, "--name", "idlelab"],
                "put the probe image into the cluster (no registry)",
            ),
        ],
        Some(ctx) => vec![
            Step::Note {
                text: format!(
                    "existing cluster `{ctx}`: Istio must be installed and {} pullable by its nodes",
                    crate::render::manifests::PROBE_IMAGE
                ),
            },
            Step::command(
                "kubectl",
                &["--context", ctx, "get", "namespace", "istio-system"],
                "check that Istio is installed",
            ),
        ],
    }
}

/// The whole plan for these cells.
pub fn plan(cells: &[Cell], target: &KubeTarget) -> Plan {
    let mut p = Plan::default();
    for s in cluster_steps(target) {
        p.push(s);
    }
    for (i, c) in cells.iter().enumerate() {
        for s in cell_steps(c, i, target) {
            p.push(s);
        }
    }
    p
}
