//! One cell's steps on a cluster, in the order they run:
//!
//! ```text
//!   setup     namespace · the mitigation's annotations and notes
//!             server → hops from the server back to the app (each forwards to the next)
//!             the mitigation's resources · waits
//!   warm      the probe pod, Ready with its sidecar; with --capture, every pod's packets
//!             from here (`kind::capture`); then `kubectl exec` of the probe
//!   idle      (its target: the first hop with an address, or a pod IP)
//!   reuse     the probe's output (its observations), then evidence from the pods still up:
//!             the sidecar's proxy-config and stats · each middlebox's counter; with
//!             --capture, the capture written, then each proxy's access log
//!   teardown  what the cell put in istio-system, then its namespace (also after a failure)
//! ```

use super::capture::CapturedPod;
use super::cell_plan::CellPlan;
use super::device;
use super::plan::{Capture, Step};
use super::target::KubeTarget;
use crate::backend::Phase;
use crate::cells::Cell;
use crate::hop::{ProxyRole, Route};
use crate::mitigation::{IstioContext, IstioForm};
use crate::model::service::Service;
use crate::probe::ProbeSpec;
use crate::render::{istio, manifests};
use std::collections::BTreeMap;

/// Every step of one cell, in order (a gRPC balance cell's are `kind::grpc_cell`'s; `kind::cell_steps` picks).
pub fn cell_steps(cell: &Cell, index: usize, target: &KubeTarget, capture: bool) -> Vec<Step> {
    let mut plan = CellPlan::new(cell, index, target, capture);
    let ctx = crate::render::cluster_context(cell, &plan.ns);
    let mut annotations = plan.setup(&ctx);
    let (next_host, waits) = plan.server_and_hops(annotations.remove("server").unwrap_or_default());
    plan.mitigation_resources(&ctx);
    plan.steps.extend(waits);
    let (client, client_sidecar) = client_annotations(&mut annotations, &ctx);
    plan.probe(&next_host, client);
    if client_sidecar {
        plan.sidecar_evidence();
    }
    plan.middlebox_evidence();
    if plan.capture {
        plan.access_logs(client_sidecar);
    }
    plan.teardown();
    plan.steps
}

/// The client pod's annotations, and whether it has a sidecar. Istio's bootstrap keeps few of
/// Envoy's stats; the evidence reads its counters (idle timeouts, an outbound cluster's
/// connections), so a client sidecar keeps them all, as the local lab's Envoy does (added to
/// the pod's ProxyConfig, after what the cell already put there).
pub(super) fn client_annotations(
    annotations: &mut Annotations,
    ctx: &IstioContext,
) -> (BTreeMap<String, String>, bool) {
    let mut client = annotations.remove("client").unwrap_or_default();
    let client_sidecar = ctx.sidecar_pods.iter().any(|p| p == "client");
    if client_sidecar {
        let config = client.entry("proxy.istio.io/config".into()).or_default();
        config.push_str("proxyStatsMatcher:\n  inclusionRegexps:\n  - \".*\"\n");
    }
    (client, client_sidecar)
}

/// The pods' annotations, by pod (`client`, `server`).
pub(super) type Annotations = BTreeMap<&'static str, BTreeMap<String, String>>;

impl CellPlan<'_> {
    /// The time scale's note, the namespace, and the pods' annotations (the mitigation's and
    /// the explicit scaled idle timeouts); a mitigation with no cluster form is noted.
    pub(super) fn setup(&mut self, ctx: &IstioContext) -> Annotations {
        let factor = self.cell.time_scale.factor;
        let scaled_sidecars = istio::scaled_idle_timeouts(self.cell);
        if factor > 1 && scaled_sidecars.is_empty() {
            self.note(format!(
                "time scale ×{factor}: no sidecar on the path; the other scaled durations (a middlebox's conntrack timeout, the server's idle timeout, the app's settings) are set as in the local lab"
            ));
        } else if factor > 1 {
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
    pub(super) fn mitigation_resources(&mut self, ctx: &IstioContext) {
        for f in self.cell.mitigation.as_mitigation().istio_resources(ctx) {
            if let IstioForm::Manifest { yaml, kind } = f {
                self.apply(yaml, &format!("the mitigation: {kind}"));
            }
        }
        if let Some((yaml, purpose)) = istio::sidecar_http_pool_idle(self.cell, ctx) {
            self.apply(yaml, purpose);
        }
    }

    /// The probe pod, its spec in a ConfigMap; once it is Ready (its sidecar too), the probe
    /// runs in it by `kubectl exec`, its output read back as its observations. A passthrough
    /// route means an address the mesh does not know: the next hop's pod IP, not its Service
    /// name (which would take the service's own listener and cluster).
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
        self.apply(
            format!("{}---\n{}", manifests::yaml(&cm), manifests::yaml(&pod)),
            "the probe pod (it waits; the probe runs in it)",
        );
        let wait = self.k(
            &["-n", &self.ns, "wait", "--for=condition=Ready", "pod/idlelab-probe", "--timeout=180s"],
            "wait for the probe pod and its sidecar",
        );
        self.steps.push(wait);
        if self.capture {
            self.capture_path();
        }
        self.steps.push(Step::Phase { phase: Phase::Warm });
        let mut args = vec!["-n", self.ns.as_str(), "exec", "idlelab-probe", "-c", "probe", "--"];
        let command = manifests::probe_command(&self.cell.scaled);
        args.extend(command.iter().map(String::as_str));
        // Warm-up, the idle period, the reuse and its retries: the idle plus a generous margin.
        let timeout = self.cell.scaled.idle.0.as_secs() + 300;
        let run = self.k(&args, "the probe: warm, idle, reuse (its observations)");
        self.steps.push(run.with_capture(Capture::ProbeLog).with_timeout(timeout));
        if self.capture {
            self.capture_finish();
        }
    }

    /// `--capture`: every pod of the path (the probe's, each hop's own, the server's) from the
    /// moment all are Ready, before the probe's first connection; conntrack watched in each
    /// middlebox.
    fn capture_path(&mut self) {
        let cell = self.cell;
        let mut pods = vec![CapturedPod::named("app", &self.ns, "idlelab-probe")];
        let mut forwarders = Vec::new();
        for (i, hop) in cell.scaled.path.iter().enumerate() {
            pods.extend(device::on_cluster(hop).and_then(|d| d.pod(self, i)));
            forwarders.extend(crate::local::capture::forwarding_node(i, hop));
        }
        pods.push(CapturedPod::labelled("srv", &self.ns, &format!("app={}", cell.real.service.name())));
        self.capture_start(&pods, forwarders);
    }

    /// `--capture`: each proxy's access log, for the attribution (Envoy's close reasons, and
    /// which upstream connection carried which downstream one).
    fn access_logs(&mut self, client_sidecar: bool) {
        let cell = self.cell;
        let server = format!("deploy/{}", cell.real.service.name());
        // Each proxy's namespace and pod.
        let mut proxies: Vec<(&str, &str, &str)> = Vec::new();
        if client_sidecar {
            proxies.push((ProxyRole::Sidecar.name(), &self.ns, "idlelab-probe"));
        }
        for hop in &cell.scaled.path {
            match hop.on_path().proxy_role() {
                Some(ProxyRole::Gateway) => {
                    proxies.push((ProxyRole::Gateway.name(), "istio-system", "deploy/istio-ingressgateway"))
                }
                Some(ProxyRole::ServerSidecar) => proxies.push((ProxyRole::ServerSidecar.name(), &self.ns, &server)),
                _ => {}
            }
        }
        let mut steps = Vec::new();
        for (role, ns, pod) in proxies {
            // Envoy writes its access log out on a timer (seconds): the lines of the warm-up
            // may still be in its buffer. Reopening the logs writes them out first.
            let purpose = format!("capture: the {role}'s Envoy writes out its buffered access log");
            steps.push(self.envoy_admin(ns, pod, "POST", "reopen_logs", &purpose).optional());
            let purpose =
                format!("capture: the {role}'s access log (Envoy's close reasons, the connections it paired)");
            let logs = self.k(&["-n", ns, "logs", pod, "-c", "istio-proxy"], &purpose);
            steps.push(logs.with_capture(Capture::AccessLog(role.into())).optional());
        }
        self.steps.extend(steps);
    }

    /// Evidence after the reuse, the probe's pod and sidecar still up: the sidecar's config as
    /// Istio set it, and its counters (idle timeouts, resets) including what the idle period did.
    fn sidecar_evidence(&mut self) {
        let pod_ref = format!("idlelab-probe.{}", self.ns);
        let ctx_name = self.target.context();
        let port = self.cell.real.service.port().to_string();
        for what in ["listener", "cluster"] {
            self.steps.push(
                Step::command(
                    "istioctl",
                    &["--context", &ctx_name, "proxy-config", what, &pod_ref, "--port", &port, "-o", "json"],
                    &format!("evidence: the probe sidecar's effective {what}s (tcp_proxy idle_timeout, tcp_keepalive)"),
                )
                .with_capture(Capture::Evidence)
                .optional(),
            );
        }
        let stats = self.sidecar_stats(
            "idlelab-probe",
            &format!("^(tcp\\.|cluster\\.outbound\\|{port}\\|)"),
            "evidence: the sidecar's counters (idle_timeout …) after the reuse",
        );
        self.steps.push(stats.with_capture(Capture::Evidence).optional());
    }

    /// The counters of `pod`'s sidecar whose names match `filter` (Envoy's admin, through
    /// pilot-agent in the sidecar).
    pub(super) fn sidecar_stats(&self, pod: &str, filter: &str, purpose: &str) -> Step {
        self.envoy_admin(&self.ns, pod, "GET", &format!("stats?filter={filter}"), purpose)
    }

    /// A request to the Envoy admin of `pod`'s proxy in namespace `ns`, through pilot-agent in
    /// its `istio-proxy` container.
    fn envoy_admin(&self, ns: &str, pod: &str, method: &str, path: &str, purpose: &str) -> Step {
        self.k(&["-n", ns, "exec", pod, "-c", "istio-proxy", "--", "pilot-agent", "request", method, path], purpose)
    }

    /// Each middlebox's count of forgotten-flow segments (FORWARD and INPUT paths).
    fn middlebox_evidence(&mut self) {
        let cell = self.cell;
        for (i, hop) in cell.scaled.path.iter().enumerate() {
            if let Some(step) = device::on_cluster(hop).and_then(|d| d.evidence(self, i)) {
                self.steps.push(step);
            }
        }
    }

    /// Teardown, also after a failure: what the cell put in istio-system (the gateway's
    /// EnvoyFilters and certificate) must be gone before the next cell uses the one shared
    /// gateway, and its namespace with it.
    pub(super) fn teardown(&mut self) {
        self.steps.push(Step::Phase { phase: Phase::Teardown });
        let cell = self.cell;
        for hop in &cell.scaled.path {
            if let Some(step) = device::on_cluster(hop).and_then(|d| d.teardown(self)) {
                self.steps.push(step.cleanup());
            }
        }
        let step = self.k(
            &["delete", "namespace", &self.ns, "--ignore-not-found", "--wait=true", "--timeout=120s"],
            "remove the cell, and wait",
        );
        self.steps.push(step.cleanup());
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
