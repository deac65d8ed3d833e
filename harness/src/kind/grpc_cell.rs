//! A gRPC balance cell's steps on a cluster: the replicas of one StatefulSet behind a real
//! ClusterIP (the cluster's kube-proxy picks a replica per connection), client pods, scale
//! events by `kubectl scale`, and the replicas' own counts read back.
//!
//! ```text
//!   setup     namespace · StatefulSet grpc + Service grpc (ClusterIP) + grpc-headless
//!             the mitigation's resources · replicas Ready · client pods Ready (sidecars per the path)
//!   warm      $T0_MS · each client's probe started in the background (`kubectl exec … &`)
//!             each scale event, on time: kubectl scale, rollout status, $CUT_<j>_MS
//!             each client's report ($REPORT_<k>, once its probe exits) · $END_MS
//!             each replica's counts ($COUNTS_<i>) · the sidecars' config and counters
//!   teardown  the namespace
//! ```
//!
//! The clients address the Service by name (`grpc.<ns>.svc.cluster.local`: the ClusterIP), or
//! with a balancing policy over every replica the headless name, resolved when they start.
//! A scale event's cut is when `rollout status` saw every new replica Ready: from then on the
//! cluster's endpoint controller, kube-proxy and (with client sidecars) istiod's EDS push are
//! what the numbers measure. [`balance_run`] reads the captured values into the same
//! [`BalanceRun`] the local lab makes.

use super::capture::CapturedPod;
use super::cell_plan::CellPlan;
use super::plan::{Capture, Step};
use super::target::KubeTarget;
use crate::backend::Phase;
use crate::backend::balance::BalanceRun;
use crate::cells::Cell;
use crate::config::GrpcConfig;
use crate::model::balance::parse_counts;
use crate::probe::grpc::{GrpcProbeReport, GrpcProbeSpec};
use crate::render::manifests;
use anyhow::{Context, Result, anyhow};
use std::collections::BTreeMap;

/// The client pods' names.
fn client_pod(k: usize) -> String {
    format!("client-{k}")
}

/// Every step of one gRPC balance cell, in order.
pub fn grpc_cell_steps(cell: &Cell, index: usize, target: &KubeTarget, capture: bool) -> Vec<Step> {
    let grpc = cell.scaled.grpc.clone().expect("a gRPC balance cell");
    let mut plan = CellPlan::new(cell, index, target, capture);
    let ctx = crate::render::cluster_context(cell, &plan.ns);
    let mut annotations = plan.setup(&ctx);
    let ns = plan.ns.clone();
    let service = cell.scaled.service;
    let (set, svc, headless) =
        manifests::grpc_replicas(&cell.scaled, &grpc, &ns, annotations.remove("server").unwrap_or_default());
    plan.apply(
        [manifests::yaml(&set), manifests::yaml(&svc), manifests::yaml(&headless)].join("---\n"),
        &format!(
            "{} replicas (StatefulSet {}), its ClusterIP Service and its headless Service",
            grpc.replicas,
            service.name()
        ),
    );
    plan.mitigation_resources(&ctx);
    let wait_replicas = |plan: &CellPlan, purpose: &str| {
        plan.k(&["-n", &ns, "rollout", "status", &format!("statefulset/{}", service.name()), "--timeout=180s"], purpose)
    };
    let wait = wait_replicas(&plan, "wait for the replicas");
    plan.steps.push(wait);

    let (client, client_sidecar) = super::cell::client_annotations(&mut annotations, &ctx);
    let host = if grpc.headless || grpc.lb.over_every_replica() {
        manifests::grpc_headless_name(service)
    } else {
        service.name().to_string()
    };
    let targets = vec![format!("{host}.{ns}.svc.cluster.local:{}", service.port())];
    let specs: Vec<(String, String)> = (0..grpc.clients)
        .map(|k| {
            let spec = GrpcProbeSpec::for_client(&cell.scaled, client_pod(k), targets.clone());
            (client_pod(k), serde_json::to_string(&spec).expect("a gRPC probe spec serializes"))
        })
        .collect();
    let (cm, pods) = manifests::grpc_clients(&ns, &specs, client);
    let docs: Vec<String> = std::iter::once(manifests::yaml(&cm)).chain(pods.iter().map(manifests::yaml)).collect();
    plan.apply(docs.join("---\n"), "the client pods (they wait; each client's probe runs in its pod)");
    let mut wait: Vec<String> = vec!["-n".into(), ns.clone(), "wait".into(), "--for=condition=Ready".into()];
    wait.extend((0..grpc.clients).map(|k| format!("pod/{}", client_pod(k))));
    wait.push("--timeout=180s".into());
    let wait =
        plan.k(&wait.iter().map(String::as_str).collect::<Vec<_>>(), "wait for the client pods and their sidecars");
    plan.steps.push(wait);

    // With --capture: each client pod and each replica, from before the clients start.
    let replica = |i: u32| format!("{}-{i}", service.name());
    if capture {
        let mut pods: Vec<CapturedPod> =
            (0..grpc.clients).map(|k| CapturedPod::named(&client_pod(k), &ns, &client_pod(k))).collect();
        pods.extend((0..grpc.replicas).map(|i| CapturedPod::named(&replica(i), &ns, &replica(i))));
        plan.capture_start(&pods, Vec::new());
    }
    plan.steps.push(Step::Phase { phase: Phase::Warm });
    plan.steps.push(now("T0_MS", "the run's start (ms since the epoch; the pods share this clock)"));
    let program = manifests::lab_program(cell.scaled.client.library);
    for k in 0..grpc.clients {
        let pod = client_pod(k);
        // In the background, its output in the pod: the clients run at once, and the exec returns.
        let start = format!(
            "({program} probe-grpc < /spec/{pod}.json > /tmp/report.json 2> /tmp/stderr; echo $? > /tmp/exit.tmp; mv /tmp/exit.tmp /tmp/exit) < /dev/null > /dev/null 2>&1 &"
        );
        let step = plan
            .k(&["-n", &ns, "exec", &pod, "-c", "probe", "--", "sh", "-c", &start], &format!("start {pod}'s probe"));
        plan.steps.push(step);
    }
    for (j, (at, to)) in grpc.scale.iter().enumerate() {
        let at_ms = at.0.as_millis();
        let sleep = format!(
            "d=$(( $T0_MS + {at_ms} - $(date +%s%3N) )); if [ $d -gt 0 ]; then sleep $(( d / 1000 )).$(printf %03d $(( d % 1000 ))); fi"
        );
        // It sleeps until the event: its timeout is the event's time and a margin.
        let step = Step::command("bash", &["-c", &sleep], &format!("until the scale event at {at}"));
        plan.steps.push(step.with_timeout(at.0.as_secs() + 60));
        let scale = plan.k(
            &["-n", &ns, "scale", &format!("statefulset/{}", service.name()), &format!("--replicas={to}")],
            &format!("scale to {to} replicas"),
        );
        plan.steps.push(scale);
        let wait = wait_replicas(&plan, &format!("wait until the {to} replicas are Ready"));
        plan.steps.push(wait);
        plan.steps.push(now(&format!("CUT_{j}_MS"), &format!("when the {to} replicas were Ready")));
        // The replicas this event added, captured from now on.
        let before = grpc.scale[..j].iter().map(|(_, n)| *n).fold(grpc.replicas, |_, n| n);
        if capture && *to > before {
            let added: Vec<CapturedPod> =
                (before..*to).map(|i| CapturedPod::named(&replica(i), &ns, &replica(i))).collect();
            plan.capture_add(&added);
        }
    }
    let timeout = grpc.duration.0.as_secs() + 120;
    for k in 0..grpc.clients {
        let pod = client_pod(k);
        let collect = "until [ -e /tmp/exit ]; do sleep 0.2; done; cat /tmp/stderr >&2; [ \"$(cat /tmp/exit)\" = 0 ] && cat /tmp/report.json";
        let step =
            plan.k(&["-n", &ns, "exec", &pod, "-c", "probe", "--", "sh", "-c", collect], &format!("{pod}'s report"));
        plan.steps.push(step.with_capture(Capture::Var(format!("REPORT_{k}"))).with_timeout(timeout));
    }
    if capture {
        plan.capture_finish();
    }
    // Two of the replicas' sampling periods: every replica's last count is written.
    plan.steps.push(Step::command("sleep", &["0.45"], "the replicas write their last counts"));
    plan.steps.push(now("END_MS", "the run's end"));
    for i in 0..grpc.max_replicas() {
        let pod = format!("{}-{i}", service.name());
        let step = plan.k(
            &["-n", &ns, "exec", &pod, "-c", "server", "--", "cat", manifests::GRPC_COUNTS],
            &format!("{pod}'s counts"),
        );
        plan.steps.push(step.with_capture(Capture::Var(format!("COUNTS_{i}"))));
    }
    if client_sidecar {
        sidecar_evidence(&mut plan, &client_pod(0), cell);
    }
    plan.teardown();
    plan.steps
}

/// `date +%s%3N` into `$NAME`.
fn now(name: &str, purpose: &str) -> Step {
    Step::command("date", &["+%s%3N"], purpose).with_capture(Capture::Var(name.into()))
}

/// What Istio gave the first client's sidecar (its outbound cluster's `lb_policy`, the
/// endpoints EDS gave it) and its counters after the run.
fn sidecar_evidence(plan: &mut CellPlan, pod: &str, cell: &Cell) {
    let ns = plan.ns.clone();
    let service = cell.scaled.service;
    let fqdn = crate::render::cluster_target_host(cell, &ns);
    let cluster = format!("outbound|{}||{fqdn}", service.port());
    let ctx_name = plan.target.context();
    let pod_ref = format!("{pod}.{ns}");
    let steps = [
        Step::command(
            "istioctl",
            &["--context", &ctx_name, "proxy-config", "cluster", &pod_ref, "--fqdn", &fqdn, "-o", "json"],
            &format!("{pod}'s sidecar: its cluster for the Service"),
        )
        .with_capture(Capture::Var("SIDECAR_CLUSTER".into())),
        Step::command(
            "istioctl",
            &["--context", &ctx_name, "proxy-config", "endpoint", &pod_ref, "--cluster", &cluster, "-o", "json"],
            &format!("{pod}'s sidecar: the endpoints EDS gave it"),
        )
        .with_capture(Capture::Var("SIDECAR_ENDPOINTS".into())),
        plan.sidecar_stats(
            pod,
            &format!("^cluster\\.outbound\\|{}\\|\\|", service.port()),
            &format!("{pod}'s sidecar: its counters"),
        )
        .with_capture(Capture::Var("SIDECAR_STATS".into())),
    ];
    plan.steps.extend(steps.into_iter().map(Step::optional));
}

/// The captured values of a gRPC balance cell as the run the local lab would have made, and
/// the notes only the cluster gives (what Istio configured, the sidecar's counters).
pub fn balance_run(cell: &Cell, vars: &BTreeMap<String, String>) -> Result<(BalanceRun, Vec<String>)> {
    let grpc: &GrpcConfig = cell.scaled.grpc.as_ref().ok_or_else(|| anyhow!("not a gRPC balance cell"))?;
    let var = |name: &str| vars.get(name).ok_or_else(|| anyhow!("the cell captured no ${name}"));
    let ms = |name: &str| -> Result<u64> { var(name)?.parse().with_context(|| format!("${name} is no time")) };
    let t0 = ms("T0_MS")?;
    let cuts = (0..grpc.scale.len())
        .zip(&grpc.scale)
        .map(|(j, (_, to))| Ok((ms(&format!("CUT_{j}_MS"))?.saturating_sub(t0), *to as usize)))
        .collect::<Result<Vec<_>>>()?;
    let reports = (0..grpc.clients)
        .map(|k| {
            let text = var(&format!("REPORT_{k}"))?;
            serde_json::from_str::<GrpcProbeReport>(text).with_context(|| format!("client-{k}'s report is not JSON"))
        })
        .collect::<Result<Vec<_>>>()?;
    let counts = (0..grpc.max_replicas())
        .map(|i| parse_counts(var(&format!("COUNTS_{i}"))?, &format!("grpc-{i}:{}", manifests::GRPC_COUNTS)))
        .collect::<Result<Vec<_>>>()?;
    let mut notes = vec![format!(
        "configuration: Service {} (ClusterIP; the cluster's kube-proxy picks a replica per connection), headless Service {}, StatefulSet of {} replicas ({})",
        cell.scaled.service.name(),
        manifests::grpc_headless_name(cell.scaled.service),
        grpc.replicas,
        manifests::lab_program(grpc.server_library)
    )];
    for (j, (at, to)) in grpc.scale.iter().enumerate() {
        notes.push(format!(
            "scaled to {to} replicas (asked for at {at}): every new replica Ready at {:.1} s (`rollout status`)",
            cuts[j].0 as f64 / 1000.0
        ));
    }
    notes.extend(sidecar_notes(vars));
    let run = BalanceRun {
        t0,
        end_ms: ms("END_MS")?.saturating_sub(t0),
        initial: grpc.replicas as usize,
        cuts,
        counts,
        reports,
        threshold: grpc.threshold,
        sidecar_rss_kib: vec![],
    };
    Ok((run, notes))
}

/// The client sidecar's evidence, read from istioctl's JSON and Envoy's counters.
fn sidecar_notes(vars: &BTreeMap<String, String>) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(cluster) = vars.get("SIDECAR_CLUSTER") {
        let v: serde_json::Value = serde_json::from_str(cluster).unwrap_or_default();
        let first = v.as_array().and_then(|a| a.first()).cloned().unwrap_or_default();
        notes.push(format!(
            "configuration: client-0's sidecar (Istio's config, read from its Envoy): cluster {}, lb_policy {}",
            first["name"].as_str().unwrap_or("?"),
            // Envoy omits the default (ROUND_ROBIN) from the dump; Istio sets LEAST_REQUEST.
            first["lbPolicy"].as_str().unwrap_or("ROUND_ROBIN")
        ));
    }
    if let Some(endpoints) = vars.get("SIDECAR_ENDPOINTS") {
        let v: serde_json::Value = serde_json::from_str(endpoints).unwrap_or_default();
        let hosts: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["hostStatuses"].as_array().cloned().unwrap_or_default())
            .filter(|h| h["healthStatus"]["edsHealthStatus"].as_str() == Some("HEALTHY"))
            .filter_map(|h| h["address"]["socketAddress"]["address"].as_str().map(String::from))
            .collect();
        notes.push(format!("client-0's sidecar holds {} endpoints (EDS) at the end: {}", hosts.len(), hosts.join(" ")));
    }
    if let Some(stats) = vars.get("SIDECAR_STATS") {
        let get = |name: &str| {
            stats
                .lines()
                .find_map(|l| l.split_once(": ").filter(|(k, _)| k.ends_with(&format!(".{name}"))))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_else(|| "?".into())
        };
        notes.push(format!(
            "client-0's sidecar (Envoy's counters): opened {} connections to replicas, {} requests, {} of the connections ended by a replica's GOAWAY (upstream_cx_close_notify)",
            get("upstream_cx_total"),
            get("upstream_rq_total"),
            get("upstream_cx_close_notify")
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::plan::CommandRunner;
    use crate::kind::run::execute;
    use crate::model::balance::ReplicaCount;
    use crate::probe::grpc::GrpcRequest;

    /// A cluster as the steps see it: a clock that moves 100 ms per command, 3 clients each
    /// pinned to its own replica (per-connection balancing), replicas 4 and 5 (added by the
    /// scale) serving nothing.
    struct PinnedCluster {
        clock: u64,
        ran: Vec<String>,
    }

    const T0: u64 = 1_700_000_000_000;

    impl CommandRunner for PinnedCluster {
        fn run(&mut self, program: &str, args: &[String], _: Option<&str>, _: std::time::Duration) -> Result<String> {
            self.clock += 100;
            let line = format!("{program} {}", args.join(" "));
            self.ran.push(line.clone());
            let pod =
                |prefix: &str| args.iter().find_map(|a| a.strip_prefix(prefix)).and_then(|n| n.parse::<u32>().ok());
            if program == "date" {
                return Ok(format!("{}\n", T0 + self.clock));
            }
            if line.contains("cat /tmp/report.json") {
                let k = pod("client-").unwrap();
                let requests = (0..160)
                    .map(|s| GrpcRequest {
                        unix_ms: T0 + s * 100,
                        channel: 0,
                        replica: Some(k),
                        latency_ms: 1,
                        code: None,
                        message: None,
                    })
                    .collect();
                let report = GrpcProbeReport { client: format!("client-{k}"), requests, peak_rss_kib: 9 };
                return Ok(serde_json::to_string(&report)?);
            }
            if line.contains(&format!("cat {}", manifests::GRPC_COUNTS)) {
                let i = pod("grpc-").unwrap();
                let served = |step: u64| if i < 3 { step * 2 } else { 0 };
                let lines: Vec<String> = (0..=90)
                    .map(|step| ReplicaCount { unix_ms: T0 + step * 200, replica: i, served: served(step), rss_kib: 5 })
                    .map(|c| serde_json::to_string(&c).unwrap())
                    .collect();
                return Ok(lines.join("\n"));
            }
            Ok(String::new())
        }
    }

    fn pinned_cell(label: &str) -> Cell {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/grpc-pinned.yaml");
        let s = crate::scenario::load(&path).unwrap();
        crate::cells::expand(&s, &[label.into()], None).unwrap().remove(0)
    }

    /// The steps run in the order the physics needs (clients started before the scale event,
    /// their reports read after it, then every replica's counts), and what they capture
    /// becomes the local lab's numbers: here, per-connection balancing judged `pinned`.
    #[test]
    fn a_balance_cell_scales_while_its_clients_run_and_reads_every_replicas_counts() {
        let cell = pinned_cell("none");
        let steps = grpc_cell_steps(&cell, 0, &KubeTarget { context: None }, false);
        let mut cluster = PinnedCluster { clock: 0, ran: vec![] };
        let noop: crate::backend::PhaseSink = std::sync::Arc::new(|_| {});
        let done = execute(&steps, &mut cluster, &|s: &str| s.to_string(), &noop);
        assert!(done.error.is_none(), "{:?}", done.error);
        let at = |what: &str| {
            cluster.ran.iter().position(|l| l.contains(what)).unwrap_or_else(|| panic!("{what}: {:#?}", cluster.ran))
        };
        assert!(at("exec client-2 -c probe -- sh -c (idlelab probe-grpc") < at("scale statefulset/grpc --replicas=6"));
        assert!(at("scale statefulset/grpc") < at("exec client-0 -c probe -- sh -c until"));
        assert!(at("exec grpc-5 -c server -- cat /tmp/counts") < at("delete namespace"));

        let (run, notes) = balance_run(&cell, &done.vars).unwrap();
        assert_eq!((run.counts.len(), run.reports.len(), run.cuts.len()), (6, 3, 1));
        let (balance, _) = crate::backend::balance::observe(run);
        let (balanced, why) = crate::model::balance::judge_balance(&balance);
        assert!(!balanced, "{why}");
        assert!(why.contains("replica 3, replica 4, replica 5 served nothing"), "{why}");
        assert!(notes[0].contains("StatefulSet of 4 replicas"), "{notes:?}");
    }

    /// `--capture` on a balance cell: every client and replica pod from before the clients
    /// start; the replicas a scale event adds, from when they are Ready; written once every
    /// client reported.
    #[test]
    fn a_captured_balance_cell_adds_the_replicas_a_scale_event_brings() {
        let steps = grpc_cell_steps(&pinned_cell("none"), 0, &KubeTarget { context: None }, true);
        let text = crate::kind::plan::Plan { steps }.to_string();
        let at = |what: &str| text.find(what).unwrap_or_else(|| panic!("{what}:\n{text}"));
        let start = at(
            "# (idlelab) capture start client-0=$POD_UID_client_0 client-1=$POD_UID_client_1 client-2=$POD_UID_client_2 grpc-0=$POD_UID_grpc_0 grpc-1=$POD_UID_grpc_1 grpc-2=$POD_UID_grpc_2 grpc-3=$POD_UID_grpc_3\n",
        );
        let add = at("# (idlelab) capture add grpc-4=$POD_UID_grpc_4 grpc-5=$POD_UID_grpc_5\n");
        let finish = at("# (idlelab) capture finish $RUN_DIR/captures/grpc-pinned--none.pcapng");
        assert!(at("get pod grpc-5 -o 'jsonpath={.metadata.uid}'") < add, "read once the new replicas are Ready");
        assert!(start < at("start client-0's probe") && at("--replicas=6") < add);
        assert!(at("client-2's report") < finish && finish < at("delete namespace"), "{text}");
    }

    /// The clients address the ClusterIP's name, or with a policy over every replica, the
    /// headless name (resolved at their start).
    #[test]
    fn clients_target_the_cluster_ip_or_the_headless_name() {
        for (label, host) in [("none", "grpc."), ("headless-client-balancing", "grpc-headless.")] {
            let steps = grpc_cell_steps(&pinned_cell(label), 0, &KubeTarget { context: None }, false);
            let specs = steps
                .iter()
                .find_map(|s| match s {
                    Step::Command { stdin: Some(m), .. } if m.contains("grpc-client-specs") => Some(m.clone()),
                    _ => None,
                })
                .unwrap();
            assert!(
                specs.contains(&format!("[\\\"{host}idlelab-grpc-pinned-0-$RUN_ID.svc.cluster.local:50051")),
                "{label}: {specs}"
            );
        }
    }
}
