//! One cell's steps on a cluster, in the order they run:
//!
//! ```text
//!   setup     namespace · the mitigation's annotations and notes
//!             server → hops from the server back to the app (each forwards to the next)
//!             the mitigation's resources · waits
//!   warm      the probe pod (its target: the first hop with an address, or a pod IP)
//!   idle      evidence while it holds its connections (proxy-config, the sidecar's stats)
//!   reuse     the probe's log (its observations) · each middlebox's counter
//!   teardown  what the cell put in istio-system, then its namespace
//! ```

use super::cell_plan::CellPlan;
use super::device;
use super::plan::{Capture, Step};
use super::target::KubeTarget;
use crate::backend::Phase;
use crate::cells::Cell;
use crate::hop::Route;
use crate::mitigation::{IstioContext, IstioForm};
use crate::model::service::Service;
use crate::probe::ProbeSpec;
use crate::render::{istio, manifests};
use std::collections::BTreeMap;

/// Every step of one cell, in order.
pub fn cell_steps(cell: &Cell, index: usize, target: &KubeTarget) -> Vec<Step> {
    let mut plan = CellPlan::new(cell, index, target);
    let ctx = crate::render::cluster_context(cell, &plan.ns);
    let mut annotations = plan.setup(&ctx);
    let (next_host, waits) = plan.server_and_hops(annotations.remove("server").unwrap_or_default());
    plan.mitigation_resources(&ctx);
    plan.steps.extend(waits);
    plan.probe(&next_host, annotations.remove("client").unwrap_or_default());
    if ctx.sidecar_pods.iter().any(|p| p == "client") {
        plan.sidecar_evidence();
    }
    plan.observations();
    plan.teardown();
    plan.steps
}

/// The pods' annotations, by pod (`client`, `server`).
type Annotations = BTreeMap<&'static str, BTreeMap<String, String>>;

impl CellPlan<'_> {
    /// The time scale's note, the namespace, and the pods' annotations (the mitigation's and
    /// the explicit scaled idle timeouts); a mitigation with no cluster form is noted.
    fn setup(&mut self, ctx: &IstioContext) -> Annotations {
        let factor = self.cell.time_scale.factor;
        if factor > 1 {
            let scaled_sidecars = istio::scaled_idle_timeouts(self.cell);
            self.note(format!(
                "time scale ×{factor}: each sidecar's idle timeout is set explicitly to its scaled value ({}); the baseline is then an explicit value, not Istio's default. Run with --time-scale 1 for Istio's own defaults.",
                scaled_sidecars.iter().map(|(pod, d)| format!("{pod} {d}")).collect::<Vec<_>>().join(", ")
            ));
        }
        let namespace = manifests::yaml(&manifests::namespace(&self.ns));
        self.apply(namespace, "the cell's namespace (sidecar injection enabled; each pod opts in or out)");
        let forms = self.cell.mitigation.as_mitigation().istio_resources(ctx);
        for f in &forms {
            if let IstioForm::AppSetting { what } = f {
                self.note(format!("no cluster form: {what} (the probe does it, as in the local lab)"));
            }
        }
        crate::render::pod_annotations(self.cell, ctx, &forms)
    }

    /// The server, then the hops from the server back to the app, each forwarding to the host
    /// of the one after it. Returns the host the app addresses and the waits for them all.
    fn server_and_hops(&mut self, server_annotations: BTreeMap<String, String>) -> (String, Vec<Step>) {
        let service = self.cell.real.service;
        let (deployment, svc) = manifests::server(&self.cell.scaled, &self.ns, server_annotations);
        self.apply(
            format!("{}---\n{}", manifests::yaml(&deployment), manifests::yaml(&svc)),
            &format!("the {} server", service.name()),
        );
        let mut next_host = format!("{}.{}.svc.cluster.local", service.name(), self.ns);
        let mut waits = vec![self.k(
            &["-n", &self.ns, "rollout", "status", &format!("deployment/{}", service.name()), "--timeout=180s"],
            "wait for the server",
        )];
        let cell = self.cell;
        for (i, hop) in cell.scaled.path.iter().enumerate().rev() {
            if let Some(device) = device::on_cluster(hop) {
                waits.extend(device.set_up(self, i, &next_host));
            }
            if let Some(host) = hop.on_path().cluster_host(i, &self.ns) {
                next_host = host;
            }
        }
        (next_host, waits)
    }

    /// The mitigation's own resources, and the client sidecar's scaled HTTP pool idle timeout.
    fn mitigation_resources(&mut self, ctx: &IstioContext) {
        for f in self.cell.mitigation.as_mitigation().istio_resources(ctx) {
            if let IstioForm::Manifest { yaml, kind } = f {
                self.apply(yaml, &format!("the mitigation: {kind}"));
            }
        }
        if let Some((yaml, purpose)) = istio::sidecar_http_pool_idle(self.cell, ctx) {
            self.apply(yaml, purpose);
        }
    }

    /// The probe pod, its spec in a ConfigMap. A passthrough route means an address the mesh
    /// does not know: the next hop's pod IP, not its Service name (which would take the
    /// service's own listener and cluster).
    fn probe(&mut self, next_host: &str, client_annotations: BTreeMap<String, String>) {
        let port = self.cell.real.service.port();
        let passthrough = self.cell.real.sidecar().is_some_and(|s| s.route == Route::Passthrough);
        let target_addr = if passthrough {
            let app = next_host.split('.').next().unwrap_or_default().to_string();
            let step = self
                .k(
                    &[
                        "-n",
                        &self.ns,
                        "get",
                        "pod",
                        "-l",
                        &format!("app={app}"),
                        "-o",
                        "jsonpath={.items[0].status.podIP}",
                    ],
                    "the next hop's pod IP (an address the mesh does not know)",
                )
                .with_capture(Capture::Var("NEXT_POD_IP".into()));
            self.steps.push(step);
            format!("$NEXT_POD_IP:{port}")
        } else {
            format!("{next_host}:{port}")
        };
        let spec = serde_json::to_string_pretty(&probe_spec(self.cell, target_addr)).expect("a probe spec serializes");
        let (cm, pod) = manifests::probe(&self.ns, &spec, &self.cell.scaled, client_annotations);
        self.steps.push(Step::Phase { phase: Phase::Warm });
        self.apply(format!("{}---\n{}", manifests::yaml(&cm), manifests::yaml(&pod)), "the probe pod");
        // A probe that fails at once goes straight to Completed and never becomes Ready: the
        // wait may fail, and its log is still fetched.
        let wait = self.k(
            &["-n", &self.ns, "wait", "--for=condition=Ready", "pod/idlelab-probe", "--timeout=60s"],
            "wait for the probe",
        );
        self.steps.push(wait.optional());
        self.steps.push(Step::Phase { phase: Phase::Idle { ms: self.cell.scaled.idle.0.as_millis() as u64 } });
    }

    /// Evidence while the probe holds its connections: just before the reuse (warm-up ≈ 1 s,
    /// then the idle period), the sidecar's config as Istio set it and its counters.
    fn sidecar_evidence(&mut self) {
        let idle_s = self.cell.scaled.idle.0.as_secs_f64();
        let wait = format!("{:.1}", (idle_s * 0.8).max(0.5));
        self.steps.push(
            Step::command("sleep", &[&wait], "wait until just before the reuse (80 % of the scaled idle period)")
                .with_timeout(idle_s as u64 + 30),
        );
        let pod_ref = format!("idlelab-probe.{}", self.ns);
        let ctx_name = self.target.context();
        for what in ["listener", "cluster"] {
            self.steps.push(
                Step::command(
                    "istioctl",
                    &["--context", &ctx_name, "proxy-config", what, &pod_ref, "-o", "json"],
                    &format!("evidence: the probe sidecar's effective {what}s (tcp_proxy idle_timeout, tcp_keepalive)"),
                )
                .with_capture(Capture::Evidence)
                .optional(),
            );
        }
        let stats = self.k(
            &[
                "-n",
                &self.ns,
                "exec",
                "idlelab-probe",
                "-c",
                "istio-proxy",
                "--",
                "pilot-agent",
                "request",
                "GET",
                "stats",
            ],
            "evidence: the sidecar's counters (idle_timeout …), while the probe holds its connections",
        );
        self.steps.push(stats.with_capture(Capture::Evidence).optional());
    }

    /// The probe's log (always fetched, also from a probe that already completed or failed),
    /// then each middlebox's count of forgotten-flow segments (FORWARD and INPUT paths).
    fn observations(&mut self) {
        self.steps.push(Step::Phase { phase: Phase::Reuse });
        let log_timeout = self.cell.scaled.idle.0.as_secs_f64() as u64 + 600;
        let log = self.k(
            &["-n", &self.ns, "logs", "-f", "idlelab-probe", "-c", "probe", "--pod-running-timeout=180s"],
            "the probe's observations",
        );
        self.steps.push(log.with_capture(Capture::ProbeLog).with_timeout(log_timeout));
        let cell = self.cell;
        for (i, hop) in cell.scaled.path.iter().enumerate() {
            if let Some(step) = device::on_cluster(hop).and_then(|d| d.evidence(self, i)) {
                self.steps.push(step);
            }
        }
    }

    /// Teardown, waited for: what the cell put in istio-system (the gateway's EnvoyFilters and
    /// certificate) must be gone before the next cell uses the one shared gateway.
    fn teardown(&mut self) {
        self.steps.push(Step::Phase { phase: Phase::Teardown });
        let cell = self.cell;
        for hop in &cell.scaled.path {
            if let Some(step) = device::on_cluster(hop).and_then(|d| d.teardown(self)) {
                self.steps.push(step);
            }
        }
        let step = self.k(
            &["delete", "namespace", &self.ns, "--ignore-not-found", "--wait=true", "--timeout=180s"],
            "remove the cell, and wait",
        );
        self.steps.push(step.optional());
    }
}

/// The probe's spec on the cluster: the same scaled configuration, the first hop's address as
/// target; HTTPS trusts the run's CA.
fn probe_spec(cell: &Cell, target: String) -> ProbeSpec {
    let mut spec = ProbeSpec::for_cell(&cell.scaled, target);
    if cell.scaled.service == Service::Https {
        spec.tls_ca_pem = Some("$RUN_CA_PEM".into());
    }
    if cell.scaled.service == Service::Http {
        spec.authority = Some(spec.target.clone());
    }
    spec
}
