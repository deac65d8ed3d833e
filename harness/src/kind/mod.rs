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
//! - `--capture` (`capture`): every pod of the path captured on this machine's kernel around
//!   the probe, each proxy's access log read, the failures attributed as in the local lab.
//! - A gRPC balance cell (`service: grpc` with `replicas`) has steps of its own
//!   (`grpc_cell`): a StatefulSet of replicas behind the cluster's own ClusterIP, client pods,
//!   `kubectl scale` on time, and the replicas' counts read back into the local lab's numbers.

pub mod capture;
pub mod cell;
pub mod cell_plan;
pub mod device;
pub mod engine;
pub mod grpc_cell;
pub mod plan;
pub mod run;
pub mod target;

pub use target::{KubeTarget, namespace_of};

use crate::cells::Cell;
use plan::{Capture, Plan, Step};

/// The label every cell namespace carries: a sweep finds what a killed run left with it.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by=idlelab";

/// The `idlelab` the lab image carries (`$IDLELAB_EXE` in the plan): this very binary, by its
/// real path (a file the image build can copy and hash).
pub fn lab_binary() -> String {
    let exe = crate::tools::idlelab_exe();
    std::fs::canonicalize(&exe).unwrap_or(exe).display().to_string()
}

/// A repository file by absolute path, for what runs outside a plan (`idlelab bench`). A plan
/// names repository files relative to the repository, where `idlelab` runs (as `scenarios/`).
pub fn repo_file(rel: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel).display().to_string()
}

/// Steps before the cells: the lab image into the cluster, Istio's version checked, and a sweep
/// of whatever an earlier run left (cell namespaces, the gateway's per-cell objects in
/// istio-system). The cluster itself comes from `just kind-up` and is reused by every run.
pub fn cluster_steps(target: &KubeTarget) -> Vec<Step> {
    let k = |args: &[&str], purpose: &str| target.kubectl_step(args, purpose);
    let mut steps = match &target.context {
        None => vec![
            Step::Note {
                text: "the kind cluster `idlelab` with Istio comes from `just kind-up` (kind-images/kind-up.sh), once; every run reuses it".into(),
            },
            Step::command(
                "bash",
                &["kind-images/build.sh", "lab", "$IDLELAB_EXE"],
                "the lab image: Debian's servers, nftables and this build's probes (built when its inputs changed)",
            )
            .with_capture(Capture::Var("LAB_IMAGE".into()))
            .with_timeout(1800),
            Step::command(
                "bash",
                &["kind-images/kind-up.sh", "--load", "$LAB_IMAGE"],
                "put the lab image into the node, unless the node has it (its tag names its content)",
            )
            .with_timeout(600),
        ],
        Some(ctx) => vec![
            Step::Note { text: format!("existing cluster `{ctx}`: Istio installed, the lab image pullable by its nodes") },
            Step::command("printenv", &["IDLELAB_LAB_IMAGE"], "the lab image the cluster's nodes can pull ($IDLELAB_LAB_IMAGE)")
                .with_capture(Capture::Var("LAB_IMAGE".into())),
        ],
    };
    let istio = engine::pinned("ISTIO_RELEASE");
    steps.push(
        k(
            &[
                "-n",
                "istio-system",
                "get",
                "deploy",
                "istiod",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}",
            ],
            &format!("Istio {istio} is installed (istiod's image)"),
        )
        .with_capture(Capture::Expect(istio.into())),
    );
    steps.extend(sweep_steps(target));
    steps
}

/// What any run of the lab leaves on the cluster when it is killed: cell namespaces (by their
/// label) and the gateway's per-cell objects in istio-system (by theirs). A run starts with
/// these, and `idlelab reap` runs them.
pub fn sweep_steps(target: &KubeTarget) -> Vec<Step> {
    let k = |args: &[&str], purpose: &str| target.kubectl_step(args, purpose);
    vec![
        k(
            &["delete", "namespace", "-l", MANAGED_BY, "--ignore-not-found", "--wait=true", "--timeout=180s"],
            "sweep: cell namespaces an earlier run left",
        ),
        k(
            &[
                "-n",
                "istio-system",
                "delete",
                crate::render::istio::CELL_KINDS_IN_ISTIO_SYSTEM,
                "-l",
                crate::render::istio::CELL_LABEL,
                "--ignore-not-found",
                "--wait=true",
                "--timeout=60s",
            ],
            "sweep: gateway objects an earlier run's cells left in istio-system",
        ),
    ]
}

/// `idlelab reap` on the kind cluster: the sweep, when the lab's own engine runs (a cluster
/// of the user's own is left alone unless a run is started on it). Returns what it removed
/// (kubectl's own lines) or why it could not.
pub fn reap() -> Vec<String> {
    let Some(engine) = engine::LabEngine::detect() else { return vec![] };
    let mut runner = plan::ProcessRunner::on(Some(engine));
    let mut out = Vec::new();
    for step in sweep_steps(&KubeTarget { context: None }) {
        if let Step::Command { program, args, timeout_s, purpose, .. } = step {
            use plan::CommandRunner;
            match runner.run(&program, &args, None, std::time::Duration::from_secs(timeout_s)) {
                Ok(text) => {
                    out.extend(text.lines().filter(|l| !l.trim().is_empty()).map(|l| format!("kind cluster: {l}")))
                }
                Err(e) => out.push(format!("kind cluster: {purpose} failed: {e:#}")),
            }
        }
    }
    out
}

/// Every step of one cell, in order: a gRPC balance cell's (`grpc_cell`), or any other's
/// (`cell`). With `capture`, the cell's pods are captured around the probe (or the clients).
pub fn cell_steps(cell: &Cell, index: usize, target: &KubeTarget, capture: bool) -> Vec<Step> {
    if cell.scaled.grpc.is_some() {
        return grpc_cell::grpc_cell_steps(cell, index, target, capture);
    }
    cell::cell_steps(cell, index, target, capture)
}

/// The whole plan for these cells (with `capture`: `--capture`'s steps too).
pub fn plan(cells: &[Cell], target: &KubeTarget, capture: bool) -> Plan {
    let mut p = Plan::default();
    for s in cluster_steps(target) {
        p.push(s);
    }
    for (i, c) in cells.iter().enumerate() {
        for s in cell_steps(c, i, target, capture) {
            p.push(s);
        }
    }
    p
}
