//! `idlelab run --backend kind`: check the tools, then execute the plan step by step through
//! the one [`CommandRunner`] boundary, read the probe's log, judge and report.
//!
//! Without docker / kind / kubectl / istioctl it stops before anything exists (exit 2).

use super::plan::{Capture, CommandRunner, Plan, ProcessRunner, Step};
use super::{KubeTarget, missing_programs, plan};
use crate::cells::Cell;
use crate::probe::ProbeLine;
use crate::report::{CellReport, Evidence, Reporter, RunSummary, SCHEMA_VERSION};
use std::path::Path;
use std::time::Instant;

pub fn main(scenario: &crate::scenario::Scenario, cells: &[Cell], target: &KubeTarget, out: Option<&Path>) -> i32 {
    if let Some(c) = cells.iter().find(|c| c.real.client.library == crate::model::library::Library::External) {
        eprintln!(
            "error: {}: an external client (`client.command`) runs only in the local lab: the cluster's probe image has the lab's own clients\n  hint: run it without `--backend kind`",
            c.scenario
        );
        return 2;
    }
    let missing = missing_programs(&target.required_programs());
    if !missing.is_empty() {
        eprintln!(
            "error: the kind backend needs {} on PATH; missing: {}\n  hint: on a machine without a Docker engine, `idlelab plan SCENARIO --backend kind` prints every command and manifest the run would use; `--context NAME` runs on an existing cluster (needs kubectl and istioctl)",
            target.required_programs().join(", "),
            missing.join(", ")
        );
        return 2;
    }
    if target.context.is_none()
        && ProcessRunner.run("docker", &["info".into()], None, std::time::Duration::from_secs(30)).is_err()
    {
        eprintln!(
            "error: docker is installed but no Docker engine answers (`docker info` failed); kind needs one\n  hint: `idlelab plan SCENARIO --backend kind` prints what the run would do; `--context NAME` uses an existing cluster"
        );
        return 2;
    }
    let out = out.map(Path::to_path_buf).unwrap_or_else(|| Path::new("results").join("kind-run"));
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("error: cannot create {}: {e}", out.display());
        return 2;
    }
    let ca = match crate::certs::generate() {
        Ok(ca) => ca,
        Err(e) => {
            eprintln!("error: generating the run's CA: {e:#}");
            return 1;
        }
    };
    let _ = std::fs::write(out.join("cert.pem"), &ca.cert_pem);
    // Per run, for the cells' namespaces (DNS labels: lowercase hex).
    let run_id =
        format!("{:06x}", (std::process::id() as u64 ^ jiff::Timestamp::now().as_millisecond() as u64) & 0xff_ffff);
    let _ = std::fs::write(out.join("key.pem"), &ca.key_pem);
    let substitute = |s: &str| {
        s.replace("$RUN_ID", &run_id)
            .replace("$RUN_DIR", &out.display().to_string())
            .replace("$RUN_CA_PEM", &ca.ca_pem.replace('\n', "\\n"))
            .replace("$RUN_CERT_PEM", &ca.cert_pem.replace('\n', "\\n"))
            .replace("$RUN_KEY_PEM", &ca.key_pem.replace('\n', "\\n"))
    };
    let started = Instant::now();
    let reports = execute(&plan(cells, target), cells, &mut ProcessRunner, &substitute);
    let summary = RunSummary {
        schema_version: SCHEMA_VERSION,
        scenario: scenario.name.clone(),
        summary: scenario.summary.clone(),
        scenarios: vec![crate::report::ScenarioSummary {
            name: scenario.name.clone(),
            summary: scenario.summary.clone(),
            source: scenario.source.clone(),
            pass: reports.iter().all(|r| r.pass),
            cells: reports.len(),
        }],
        backend: format!("kind ({})", target.context()),
        time_scale: cells.first().map(|c| c.time_scale.factor.to_string()).unwrap_or_default(),
        repeat: 1,
        pass: reports.iter().all(|r| r.pass),
        started_at: jiff::Timestamp::now().to_string(),
        wall_ms: started.elapsed().as_millis() as u64,
        out_dir: out.clone(),
        cells: reports,
    };
    let mut reporters: Vec<Box<dyn Reporter>> = vec![
        Box::new(crate::report::json::JsonReporter { path: out.join("summary.json") }),
        Box::new(crate::report::markdown::MarkdownReporter { path: out.join("summary.md") }),
        Box::new(crate::report::junit::JunitReporter { path: out.join("junit.xml") }),
        Box::new(crate::report::html::HtmlReporter { path: out.join("report.html") }),
        Box::new(crate::report::terminal::TerminalReporter::new(false)),
    ];
    for r in reporters.iter_mut() {
        if let Err(e) = r.finish(&summary) {
            eprintln!("error: writing reports: {e:#}");
        }
    }
    if summary.pass { 0 } else { 1 }
}

/// Execute a plan: cluster steps first, then each cell's steps; a failed required step ends
/// its cell (its optional teardown steps still run).
pub fn execute(
    plan: &Plan,
    cells: &[Cell],
    runner: &mut dyn CommandRunner,
    substitute: &dyn Fn(&str) -> String,
) -> Vec<CellReport> {
    let mut reports = Vec::new();
    let mut current: Option<(usize, Instant, Option<String>, Evidence)> = None;
    // `$NAME`s a cell's steps captured (`Capture::Var`), for its later steps.
    let mut vars: std::collections::BTreeMap<String, String> = Default::default();
    let mut index = 0;
    let finish = |cur: Option<(usize, Instant, Option<String>, Evidence)>, reports: &mut Vec<CellReport>| {
        if let Some((i, t, error, evidence)) = cur {
            reports.push(report(&cells[i], t, error, evidence));
        }
    };
    for step in &plan.steps {
        match step {
            Step::Cell { .. } => {
                finish(current.take(), &mut reports);
                vars.clear();
                current = Some((index, Instant::now(), None, Evidence::default()));
                index += 1;
            }
            Step::Note { .. } => {}
            Step::Command { program, args, stdin, capture, required, purpose, timeout_s } => {
                let failed = current.as_ref().is_some_and(|c| c.2.is_some());
                if failed && *required {
                    continue;
                }
                let with_vars =
                    |s: &str| vars.iter().fold(substitute(s), |acc, (k, v)| acc.replace(&format!("${k}"), v));
                let args: Vec<String> = args.iter().map(|a| with_vars(a)).collect();
                let stdin = stdin.as_deref().map(with_vars);
                let timeout = std::time::Duration::from_secs(*timeout_s);
                match runner.run(program, &args, stdin.as_deref(), timeout) {
                    Ok(output) => {
                        if let Some(cur) = current.as_mut() {
                            match capture {
                                Some(Capture::ProbeLog) => {
                                    for line in output.lines() {
                                        match serde_json::from_str::<ProbeLine>(line) {
                                            Ok(ProbeLine::Observations(o)) => cur.3.observations = Some(o),
                                            Ok(ProbeLine::Error(e)) => cur.2 = Some(format!("probe: {e}")),
                                            _ => {}
                                        }
                                    }
                                    if cur.3.observations.is_none() && cur.2.is_none() {
                                        cur.2 = Some("the probe's log has no observations".into());
                                    }
                                }
                                Some(Capture::Evidence) => {
                                    cur.3.notes.push(format!("{purpose}: {}", evidence_summary(&output)))
                                }
                                Some(Capture::Var(name)) => {
                                    vars.insert(name.clone(), output.trim().to_string());
                                }
                                None => {}
                            }
                        }
                    }
                    Err(e) if *required => match current.as_mut() {
                        Some(cur) => cur.2 = Some(format!("{purpose}: {e:#}")),
                        None => {
                            // A cluster step failed: every cell fails with it.
                            return cells
                                .iter()
                                .map(|c| {
                                    report(c, Instant::now(), Some(format!("{purpose}: {e:#}")), Evidence::default())
                                })
                                .collect();
                        }
                    },
                    Err(_) => {}
                }
            }
        }
    }
    finish(current.take(), &mut reports);
    reports
}

/// What decides the outcome in a piece of cluster evidence: from `istioctl proxy-config`
/// listeners the `tcp_proxy` idle timeouts, from clusters the upstream keepalives, from stats
/// the idle-timeout counters, from nft the counted packets; else its size.
pub fn evidence_summary(output: &str) -> String {
    /// Every string value of a key named `key`, anywhere under `v`.
    fn strings_of(v: &serde_json::Value, key: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    match x {
                        serde_json::Value::String(s) if k == key => out.push(s.clone()),
                        _ => strings_of(x, key, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| strings_of(x, key, out)),
            _ => {}
        }
    }
    if let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(output) {
        let listeners: Vec<String> = items
            .iter()
            .filter(|l| l["filterChains"].is_array())
            .flat_map(|l| {
                let name = l["name"].as_str().unwrap_or("?").to_string();
                let mut idle = Vec::new();
                strings_of(&l["filterChains"], "idleTimeout", &mut idle);
                idle.into_iter().map(move |t| format!("{name} idle_timeout {t}"))
            })
            .collect();
        if !listeners.is_empty() {
            return listeners.join("; ");
        }
        let keepalives: Vec<String> = items
            .iter()
            .filter_map(|c| {
                let ka = &c["upstreamConnectionOptions"]["tcpKeepalive"];
                (!ka.is_null()).then(|| format!("{} tcp_keepalive {ka}", c["name"].as_str().unwrap_or("?")))
            })
            .collect();
        return if keepalives.is_empty() {
            format!("{} entries, no upstream tcp_keepalive", items.len())
        } else {
            keepalives.join("; ")
        };
    }
    let lines: Vec<&str> =
        output.lines().filter(|l| l.contains("idle_timeout") || l.contains("packets")).map(str::trim).collect();
    if lines.is_empty() { format!("{} bytes", output.len()) } else { lines.join("; ") }
}

fn report(cell: &Cell, started: Instant, error: Option<String>, mut evidence: Evidence) -> CellReport {
    let judged = evidence.observations.as_ref().filter(|_| error.is_none()).map(crate::model::verdict::judge);
    evidence.notes.extend(cell.time_scale.notes());
    CellReport {
        scenario: cell.scenario.clone(),
        cell: cell.label.clone(),
        key: format!("{}::{}", cell.scenario, cell.label),
        mitigation: cell.mitigation.clone(),
        describe: cell.describe.clone(),
        expected: cell.expected,
        verdict: judged.as_ref().map(|j| j.0),
        pass: judged.as_ref().is_some_and(|j| j.0 == cell.expected),
        stable: true,
        explanation: judged.map(|j| j.1).unwrap_or_default(),
        why_expected: cell.why.clone(),
        error,
        wall_ms: started.elapsed().as_millis() as u64,
        time_scale: cell.time_scale.clone(),
        istio: vec![],
        evidence,
        repeats: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::observation::{Attempt, ConnObservation, Observations, Outcome};

    /// Records every command (and what went to its stdin); answers the probe's log with canned
    /// observations, a pod IP to `get pod`, and fails the commands that contain `fail_on`.
    #[derive(Default)]
    struct FakeRunner {
        ran: Vec<String>,
        stdins: Vec<String>,
        log: String,
        fail_on: Option<String>,
    }

    impl CommandRunner for FakeRunner {
        fn run(
            &mut self,
            program: &str,
            args: &[String],
            stdin: Option<&str>,
            _timeout: std::time::Duration,
        ) -> anyhow::Result<String> {
            let line = format!("{program} {}", args.join(" "));
            self.ran.push(line.clone());
            self.stdins.extend(stdin.map(str::to_string));
            if self.fail_on.as_deref().is_some_and(|f| line.contains(f)) {
                anyhow::bail!("timed out waiting for the condition");
            }
            Ok(if args.iter().any(|a| a == "logs") {
                self.log.clone()
            } else if args.iter().any(|a| a.starts_with("jsonpath=")) {
                "10.244.0.7".into()
            } else {
                String::new()
            })
        }
    }

    fn cells_of(name: &str, only: &str) -> Vec<Cell> {
        let s = crate::scenario::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../scenarios/{name}.yaml")),
        )
        .unwrap();
        crate::cells::expand(&s, &[only.into()], None).unwrap()
    }

    /// A probe that went straight to Completed never becomes Ready: the wait fails, and its log
    /// is fetched and judged all the same.
    #[test]
    fn the_probes_log_is_fetched_even_when_the_wait_for_ready_fails() {
        let cells = cells_of("redis-idle", "none");
        let p = plan(&cells, &KubeTarget { context: None });
        let mut runner = FakeRunner {
            log: observations(true),
            fail_on: Some("--for=condition=Ready pod/idlelab-probe".into()),
            ..Default::default()
        };
        let reports = execute(&p, &cells, &mut runner, &|s: &str| s.to_string());
        assert!(runner.ran.iter().any(|r| r.contains("logs -f idlelab-probe")), "{:?}", runner.ran);
        assert_eq!(reports[0].verdict, Some(crate::model::verdict::Verdict::IdleClosed), "{:?}", reports[0].error);
    }

    /// The passthrough scenario's probe targets the next hop's pod IP, captured at run time.
    #[test]
    fn redis_idle_passthrough_targets_an_address_the_mesh_does_not_know() {
        let cells = cells_of("redis-idle-passthrough", "none");
        let p = plan(&cells, &KubeTarget { context: None });
        let mut runner = FakeRunner { log: observations(true), ..Default::default() };
        execute(&p, &cells, &mut runner, &|s: &str| s.to_string());
        let probe = runner.stdins.iter().find(|m| m.contains("probe.json")).expect("the probe's ConfigMap");
        assert!(probe.contains("\"target\": \"10.244.0.7:6379\""), "{probe}");
    }

    /// Every command has a timeout, and the real runner kills a command at it, naming it.
    #[test]
    fn cluster_evidence_is_kept_as_the_fields_that_decide() {
        let listeners =
            r#"[{"name":"10.96.0.5_6379","filterChains":[{"filters":[{"typedConfig":{"idleTimeout":"6s"}}]}]}]"#;
        assert_eq!(evidence_summary(listeners), "10.96.0.5_6379 idle_timeout 6s");
        let clusters =
            r#"[{"name":"outbound|6379||redis","upstreamConnectionOptions":{"tcpKeepalive":{"keepaliveTime":300}}}]"#;
        assert!(evidence_summary(clusters).contains("outbound|6379||redis tcp_keepalive"));
        let stats = "tcp.outbound|6379||redis.idle_timeout: 4\nlistener.x.downstream_cx_total: 8\n";
        assert_eq!(evidence_summary(stats), "tcp.outbound|6379||redis.idle_timeout: 4");
        assert!(evidence_summary("counter forgotten {\n packets 3 bytes 156\n}").contains("packets 3"));
    }

    #[test]
    fn every_step_has_a_timeout_and_the_runner_enforces_it() {
        let cells = cells_of("https-keepalive", "none");
        let p = plan(&cells, &KubeTarget { context: None });
        for s in &p.steps {
            if let Step::Command { timeout_s, .. } = s {
                assert!(*timeout_s > 0);
            }
        }
        let started = Instant::now();
        let e = ProcessRunner.run("sleep", &["5".into()], None, std::time::Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("`sleep 5` timed out after 1 s"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(3));
        // The gateway's certificate is applied (a re-run replaces it), not created.
        let text = p.to_string();
        assert!(!text.contains("create secret"), "{text}");
        let secret = crate::render::istio::gateway_secret_manifest("ns1")
            .replace("$RUN_CERT_PEM", "-----BEGIN CERTIFICATE-----\\nAA\\n-----END CERTIFICATE-----\\n")
            .replace("$RUN_KEY_PEM", "k");
        let v: serde_json::Value = serde_saphyr::from_str(&secret).unwrap();
        assert_eq!(v["stringData"]["tls.crt"], "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n");
        assert_eq!(v["metadata"]["labels"]["idlelab.dev/cell"], "ns1");
    }

    fn observations(fin: bool) -> String {
        let conn = ConnObservation {
            id: 0,
            local_addr: String::new(),
            opened_ms: 0,
            last_activity_ms: 5,
            heartbeats: 0,
            heartbeat_failure: None,
            peer_closed_ms: fin.then_some(6005),
            peer_reset_ms: None,
            timed_out_ms: None,
            replaced_before_use: None,
            reuse: Attempt {
                at_ms: 7005,
                latency_ms: 0,
                outcome: if fin { Outcome::Eof } else { Outcome::Ok },
                error: None,
                local_addr: None,
            },
            retry_after_reconnect: None,
            reconnects: 0,
            keepalive: false,
        };
        let obs = Observations {
            service: "redis".into(),
            target: "x".into(),
            pool: 1,
            idle_started_ms: 5,
            idle_ms: 7000,
            reuse_started_ms: 7005,
            connections: vec![conn],
            notes: vec![],
            finished_ms: 7010,
            peak_rss_kib: 1,
        };
        format!(
            "{{\"phase\":{{\"name\":\"warm\",\"ms\":0}}}}\n{}\n",
            serde_json::to_string(&ProbeLine::Observations(obs)).unwrap()
        )
    }

    #[test]
    fn execution_runs_exactly_the_plans_commands_and_judges_the_probes_log() {
        let s = crate::scenario::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/redis-idle.yaml"),
        )
        .unwrap();
        let cells = crate::cells::expand(&s, &["none".into()], None).unwrap();
        let target = KubeTarget { context: None };
        let p = plan(&cells, &target);
        let mut runner = FakeRunner { log: observations(true), ..Default::default() };
        let reports = execute(&p, &cells, &mut runner, &|s: &str| s.to_string());
        let planned: Vec<String> = p
            .steps
            .iter()
            .filter_map(|s| {
                if let Step::Command { program, args, .. } = s {
                    Some(format!("{program} {}", args.join(" ")))
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(runner.ran, planned, "the run is the plan");
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].verdict, Some(crate::model::verdict::Verdict::IdleClosed));
        assert!(reports[0].pass);
        // A log without observations fails the cell, and teardown still runs.
        let mut runner = FakeRunner { log: "nothing useful\n".into(), ..Default::default() };
        let reports = execute(&p, &cells, &mut runner, &|s: &str| s.to_string());
        assert!(reports[0].error.as_deref().unwrap().contains("no observations"));
        assert!(runner.ran.last().unwrap().contains("delete namespace"));
    }
}
