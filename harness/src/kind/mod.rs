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

pub mod plan;
pub mod run;

use crate::backend::Phase;
use crate::cells::Cell;
use crate::hop::Hop;
use crate::mitigation::IstioForm;
use crate::model::service::Service as Svc;
use crate::probe::ProbeSpec;
use plan::{Capture, Plan, Step};

/// Where the cells run.
#[derive(Clone, Debug)]
pub struct KubeTarget {
    /// An existing cluster's kubeconfig context; `None` = the kind cluster `idlelab`.
    pub context: Option<String>,
}

impl KubeTarget {
    pub fn context(&self) -> String {
        self.context.clone().unwrap_or_else(|| "kind-idlelab".into())
    }
    fn kubectl(&self) -> Vec<String> {
        vec!["kubectl".into(), "--context".into(), self.context()]
    }
    /// The programs a run needs on PATH.
    pub fn required_programs(&self) -> Vec<&'static str> {
        if self.context.is_some() { vec!["kubectl", "istioctl"] } else { vec!["docker", "kind", "kubectl", "istioctl"] }
    }
}

/// A cell's namespace: unique per run (`$RUN_ID`, six hex digits filled in at execution), so
/// that a re-run never meets a namespace of an earlier run that is still terminating.
pub fn namespace_of(cell_index: usize, scenario: &str) -> String {
    format!("idlelab-{scenario}-{cell_index}-$RUN_ID")
}

/// The probe's spec on the cluster: the same scaled knobs, the first hop's address as target.
fn probe_spec(cell: &Cell, target: String) -> ProbeSpec {
    let mut spec = ProbeSpec::for_cell(&cell.scaled, target);
    if cell.scaled.service == Svc::Https {
        spec.tls_ca_pem = Some("$RUN_CA_PEM".into());
    }
    if cell.scaled.service == Svc::Http {
        spec.authority = Some(spec.target.clone());
    }
    spec
}

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

/// Every step of one cell, in order.
pub fn cell_steps(cell: &Cell, index: usize, target: &KubeTarget) -> Vec<Step> {
    let ns = namespace_of(index, &cell.scenario);
    let kubectl = target.kubectl();
    let k = |args: &[&str], purpose: &str| {
        let mut a: Vec<&str> = kubectl[1..].iter().map(String::as_str).collect();
        a.extend_from_slice(args);
        Step::command("kubectl", &a, purpose)
    };
    let ctx = crate::render::cluster_context(cell, &ns);
    let service = cell.real.service;
    let port = service.port();
    let mut steps =
        vec![Step::Cell { key: format!("{}::{}", cell.scenario, cell.label) }, Step::Phase { phase: Phase::Setup }];
    let factor = cell.time_scale.factor;
    let scaled_sidecars = crate::render::istio::scaled_idle_timeouts(cell);
    if factor > 1 {
        steps.push(Step::Note {
            text: format!(
                "time scale ×{factor}: each sidecar's idle timeout is set explicitly to its scaled value ({}); the baseline is then an explicit value, not Istio's default. Run with --time-scale 1 for Istio's own defaults.",
                scaled_sidecars.iter().map(|(pod, d)| format!("{pod} {d}")).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    steps.push(Step::apply(
        &kubectl,
        crate::render::manifests::yaml(&crate::render::manifests::namespace(&ns)),
        "the cell's namespace (sidecar injection enabled; each pod opts in or out)",
    ));

    // Pod annotations: the mitigation's, and the explicit scaled idle timeouts.
    let forms = cell.mitigation.as_mitigation().istio_resources(&ctx);
    let mut annotations = crate::render::pod_annotations(cell, &ctx, &forms);
    let sidecar_on = |pod: &str| ctx.sidecar_pods.iter().any(|p| p == pod);
    let mut manifests_of_mitigation = Vec::new();
    let mut app_settings = Vec::new();
    for f in &forms {
        match f {
            IstioForm::PodAnnotation { .. } => {}
            IstioForm::Manifest { yaml, kind } => manifests_of_mitigation.push((kind.clone(), yaml.clone())),
            IstioForm::AppSetting { what } => app_settings.push(what.clone()),
        }
    }
    for what in app_settings {
        steps.push(Step::Note { text: format!("no cluster form: {what} (the probe does it, as in the local lab)") });
    }

    // Server, then the hops from the server back to the app (each forwards to the next).
    let (deployment, svc) =
        crate::render::manifests::server(&cell.scaled, &ns, annotations.remove("server").unwrap_or_default());
    steps.push(Step::apply(
        &kubectl,
        format!("{}---\n{}", crate::render::manifests::yaml(&deployment), crate::render::manifests::yaml(&svc)),
        &format!("the {} server", service.name()),
    ));
    let mut next_host = format!("{}.{ns}.svc.cluster.local", service.name());
    let mut waits = vec![k(
        &["-n", &ns, "rollout", "status", &format!("deployment/{}", service.name()), "--timeout=180s"],
        "wait for the server",
    )];
    for (i, hop) in cell.scaled.path.iter().enumerate().rev() {
        match hop {
            Hop::Gateway(g) => {
                if g.tls {
                    steps.push(Step::Note { text: "the gateway's certificate comes from a CA generated for the run ($RUN_DIR/cert.pem, key.pem); the probe trusts only that CA".into() });
                    steps.push(Step::apply(
                        &kubectl,
                        crate::render::istio::gateway_secret_manifest(&ns),
                        "the gateway's TLS certificate (apply: a re-run replaces it), labelled with its cell",
                    ));
                }
                steps.push(Step::apply(
                    &kubectl,
                    crate::render::istio::gateway_manifests(g, &ns, &next_host, port),
                    "ingress gateway: Gateway + VirtualService to the next hop",
                ));
                for (yaml, purpose) in crate::render::istio::gateway_extras(cell, &ns, port) {
                    steps.push(Step::apply(&kubectl, yaml, purpose));
                }
                next_host = "istio-ingressgateway.istio-system.svc.cluster.local".into();
            }
            Hop::Middlebox(m) => {
                let name = format!("mb{i}");
                let (pod, svc) = crate::render::manifests::middlebox(&name, &ns, m, &next_host, service);
                steps.push(Step::apply(
                    &kubectl,
                    format!("{}---\n{}", crate::render::manifests::yaml(&pod), crate::render::manifests::yaml(&svc)),
                    &format!(
                        "middlebox {name}: conntrack forgets after {}, then {}",
                        m.idle_timeout,
                        if m.on_unknown == crate::hop::OnUnknown::Reset { "reset" } else { "drop" }
                    ),
                ));
                waits.push(k(
                    &["-n", &ns, "wait", "--for=condition=Ready", &format!("pod/{name}"), "--timeout=180s"],
                    &format!("wait for {name}"),
                ));
                next_host = format!("{name}.{ns}.svc.cluster.local");
            }
            Hop::Sidecar(_) | Hop::ServerSidecar(_) => {}
        }
    }
    for (kind, yaml) in manifests_of_mitigation {
        steps.push(Step::apply(&kubectl, yaml, &format!("the mitigation: {kind}")));
    }
    if let Some((yaml, purpose)) = crate::render::istio::sidecar_http_pool_idle(cell, &ctx) {
        steps.push(Step::apply(&kubectl, yaml, purpose));
    }
    steps.extend(waits);

    // A passthrough route means an address the mesh does not know: the next hop's pod IP, not
    // its Service name (which would take the service's own listener and cluster).
    let passthrough = cell.real.sidecar().is_some_and(|s| s.route == crate::hop::Route::Passthrough);
    let target_addr = if passthrough {
        let app = next_host.split('.').next().unwrap_or_default().to_string();
        steps.push(
            k(
                &["-n", &ns, "get", "pod", "-l", &format!("app={app}"), "-o", "jsonpath={.items[0].status.podIP}"],
                "the next hop's pod IP (an address the mesh does not know)",
            )
            .with_capture(Capture::Var("NEXT_POD_IP".into())),
        );
        format!("$NEXT_POD_IP:{port}")
    } else {
        format!("{next_host}:{port}")
    };
    let spec = serde_json::to_string_pretty(&probe_spec(cell, target_addr)).expect("a probe spec serializes");
    let (cm, pod) =
        crate::render::manifests::probe(&ns, &spec, &cell.scaled, annotations.remove("client").unwrap_or_default());
    steps.push(Step::Phase { phase: Phase::Warm });
    steps.push(Step::apply(
        &kubectl,
        format!("{}---\n{}", crate::render::manifests::yaml(&cm), crate::render::manifests::yaml(&pod)),
        "the probe pod",
    ));
    // A probe that fails at once goes straight to Completed and never becomes Ready: the wait
    // may fail, and its log is still fetched below.
    steps.push(
        k(&["-n", &ns, "wait", "--for=condition=Ready", "pod/idlelab-probe", "--timeout=60s"], "wait for the probe")
            .optional(),
    );
    steps.push(Step::Phase { phase: Phase::Idle { ms: cell.scaled.idle.0.as_millis() as u64 } });
    // Evidence while the probe holds its connections: just before the reuse (warm-up ≈ 1 s,
    // then the idle period), Envoy's config as Istio set it and its counters.
    let idle_s = cell.scaled.idle.0.as_secs_f64();
    if sidecar_on("client") {
        let wait = format!("{:.1}", (idle_s * 0.8).max(0.5));
        steps.push(
            Step::command("sleep", &[&wait], "wait until just before the reuse (80 % of the scaled idle period)")
                .with_timeout(idle_s as u64 + 30),
        );
        let pod_ref = format!("idlelab-probe.{ns}");
        let ctx_name = target.context();
        for what in ["listener", "cluster"] {
            steps.push(
                Step::command(
                    "istioctl",
                    &["--context", &ctx_name, "proxy-config", what, &pod_ref, "-o", "json"],
                    &format!("evidence: the probe sidecar's effective {what}s (tcp_proxy idle_timeout, tcp_keepalive)"),
                )
                .with_capture(Capture::Evidence)
                .optional(),
            );
        }
        steps.push(
            k(
                &[
                    "-n",
                    &ns,
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
            )
            .with_capture(Capture::Evidence)
            .optional(),
        );
    }
    steps.push(Step::Phase { phase: Phase::Reuse });
    // Always fetched, also from a probe that already completed or failed.
    let log_timeout = idle_s as u64 + 600;
    steps.push(
        k(
            &["-n", &ns, "logs", "-f", "idlelab-probe", "-c", "probe", "--pod-running-timeout=180s"],
            "the probe's observations",
        )
        .with_capture(Capture::ProbeLog)
        .with_timeout(log_timeout),
    );
    // Each middlebox's count of forgotten-flow segments (FORWARD and INPUT paths), as evidence.
    for (i, hop) in cell.scaled.path.iter().enumerate() {
        if matches!(hop, Hop::Middlebox(_)) {
            steps.push(
                k(
                    &[
                        "-n",
                        &ns,
                        "exec",
                        &format!("mb{i}"),
                        "--",
                        "nft",
                        "list",
                        "counter",
                        "ip",
                        "idlelab_middlebox",
                        crate::render::manifests::MIDDLEBOX_COUNTER,
                    ],
                    &format!(
                        "evidence: middlebox mb{i}'s forgotten-flow segments (counter {})",
                        crate::render::manifests::MIDDLEBOX_COUNTER
                    ),
                )
                .with_capture(Capture::Evidence)
                .optional(),
            );
        }
    }
    steps.push(Step::Phase { phase: Phase::Teardown });
    // Teardown, waited for: what the cell put in istio-system (the gateway's EnvoyFilters and
    // certificate) must be gone before the next cell uses the one shared gateway.
    if cell.scaled.path.iter().any(|h| matches!(h, Hop::Gateway(_))) {
        let selector = format!("{}={ns}", crate::render::istio::CELL_LABEL);
        steps.push(k(
            &[
                "-n",
                "istio-system",
                "delete",
                "envoyfilter,secret",
                "-l",
                &selector,
                "--ignore-not-found",
                "--wait=true",
                "--timeout=120s",
            ],
            "remove the cell's gateway EnvoyFilters and certificate (by label), and wait",
        ));
    }
    steps.push(
        k(
            &["delete", "namespace", &ns, "--ignore-not-found", "--wait=true", "--timeout=180s"],
            "remove the cell, and wait",
        )
        .optional(),
    );
    steps
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
