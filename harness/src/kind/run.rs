//! The kind backend: a cell's steps of the plan, executed one after another through the one
//! [`CommandRunner`] boundary; the probe's log is read back as its observations.
//!
//! ```text
//!   prepare:  the run's CA, $RUN_ID, then the cluster steps (kind create, istioctl install, …)
//!   run_cell: cell_steps(cell) ──CommandRunner──▶ kubectl / istioctl ── probe's log ──▶ CellOutcome
//! ```
//!
//! Without docker / kind / kubectl / istioctl it stops before anything exists (exit 2).

use super::plan::{Capture, CaptureAction, CommandRunner, Step};
use super::{KubeTarget, cell_steps, cluster_steps};
use crate::backend::{Backend, CellFailure, CellOutcome, Phase, PhaseSink};
use crate::cells::Cell;
use crate::model::observation::Observations;
use crate::probe::ProbeLine;
use anyhow::anyhow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// The run's values that steps name as `$RUN_ID`, `$RUN_DIR`, `$RUN_CA_PEM`, … (made by
/// `prepare`).
struct RunValues {
    run_id: String,
    dir: PathBuf,
    ca: crate::certs::RunCa,
    /// What the cluster's steps captured (`$LAB_IMAGE`).
    vars: BTreeMap<String, String>,
}

impl RunValues {
    fn substitute(&self, s: &str) -> String {
        fill(s.to_string(), &self.vars)
            .replace("$RUN_ID", &self.run_id)
            .replace("$IDLELAB_EXE", &super::lab_binary())
            .replace("$RUN_DIR", &self.dir.display().to_string())
            .replace("$RUN_CA_PEM", &self.ca.ca_pem.replace('\n', "\\n"))
            .replace("$RUN_CERT_PEM", &self.ca.cert_pem.replace('\n', "\\n"))
            .replace("$RUN_KEY_PEM", &self.ca.key_pem.replace('\n', "\\n"))
    }
}

/// `s` with each `$NAME` of `vars` replaced by its value.
/// The longest names first: `$POD_UID_grpc_10` is not `$POD_UID_grpc_1` followed by a `0`.
fn fill(s: String, vars: &BTreeMap<String, String>) -> String {
    let mut names: Vec<(&String, &String)> = vars.iter().collect();
    names.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    names.into_iter().fold(s, |acc, (k, v)| acc.replace(&format!("${k}"), v))
}

/// The kind backend: cells one at a time (they share the cluster's ingress gateway).
pub struct KindBackend {
    target: KubeTarget,
    out_dir: PathBuf,
    /// `--capture`: each cell's pods captured (`kind::capture`), its failures attributed.
    capture: bool,
    runner: Arc<Mutex<Box<dyn CommandRunner>>>,
    values: OnceLock<Arc<RunValues>>,
}

impl KindBackend {
    /// `runner`: [`super::plan::ProcessRunner`] for real; tests give a fake one.
    pub fn new(target: KubeTarget, out_dir: PathBuf, runner: Box<dyn CommandRunner>) -> Self {
        KindBackend { target, out_dir, capture: false, runner: Arc::new(Mutex::new(runner)), values: OnceLock::new() }
    }

    /// With `--capture` (the lab's own kind cluster only: the session refuses `--context`).
    pub fn with_capture(mut self, capture: bool) -> Self {
        self.capture = capture;
        self
    }
}

impl Backend for KindBackend {
    fn name(&self) -> String {
        format!("kind ({})", self.target.context())
    }
    fn max_jobs(&self) -> usize {
        1
    }
    fn preflight(&self, cells: &[Cell]) -> Result<(), String> {
        if let Some(c) = cells.iter().find(|c| c.real.client.library == crate::model::library::Library::External) {
            return Err(format!(
                "{}: an external client (`client.command`) runs only in the local lab: the cluster's probe image has the lab's own clients\n  hint: run it without `--backend kind`",
                c.scenario
            ));
        }
        if self.capture {
            super::capture::preflight()?;
        }
        let mut runner = self.runner.lock().expect("command runner");
        runner.preflight(&self.target.required_programs(), self.target.context.is_none())
    }
    async fn prepare(&self) -> anyhow::Result<()> {
        let ca = crate::certs::generate()?;
        std::fs::create_dir_all(&self.out_dir)?;
        std::fs::write(self.out_dir.join("cert.pem"), &ca.cert_pem)?;
        std::fs::write(self.out_dir.join("key.pem"), &ca.key_pem)?;
        // Per run, for the cells' namespaces (DNS labels: lowercase hex).
        let run_id =
            format!("{:06x}", (std::process::id() as u64 ^ jiff::Timestamp::now().as_millisecond() as u64) & 0xff_ffff);
        let values = RunValues { run_id, dir: self.out_dir.clone(), ca, vars: BTreeMap::new() };
        let (runner, steps) = (self.runner.clone(), cluster_steps(&self.target));
        let noop: PhaseSink = Arc::new(|_| {});
        let (done, mut values) = tokio::task::spawn_blocking(move || {
            let done = execute(&steps, &mut **runner.lock().expect("command runner"), &|s| values.substitute(s), &noop);
            (done, values)
        })
        .await?;
        if let Some(e) = done.error {
            return Err(anyhow!("{e}"));
        }
        values.vars = done.vars;
        let _ = self.values.set(Arc::new(values));
        Ok(())
    }
    async fn run_cell(&self, cell: Arc<Cell>, index: usize, phase: PhaseSink) -> Result<CellOutcome, CellFailure> {
        let values =
            self.values.get().cloned().ok_or_else(|| CellFailure::new(anyhow!("the kind backend was not prepared")))?;
        let (runner, steps) = (self.runner.clone(), cell_steps(&cell, index, &self.target, self.capture));
        let mut done = tokio::task::spawn_blocking(move || {
            execute(&steps, &mut **runner.lock().expect("command runner"), &|s| values.substitute(s), &phase)
        })
        .await
        .map_err(|e| CellFailure::new(e.into()))?;
        if done.error.is_none() && cell.scaled.grpc.is_some() {
            // A balance run fails no connection: its capture is noted, nothing attributed (as
            // in the local lab).
            let capture = done.capture.as_ref().map(crate::local::capture::outcome_note);
            let mut outcome = balance_outcome(&cell, done).map_err(CellFailure::new)?;
            outcome.notes.extend(capture);
            return Ok(outcome);
        }
        let (lab, capture_notes) = captured(&cell, &mut done);
        // As the local lab's: the capture's notes are kept with the cell's logs, so that a cell
        // that failed still says where its capture is.
        let logs: Vec<(String, String)> = (!capture_notes.is_empty())
            .then(|| ("capture".to_string(), capture_notes.join("\n")))
            .into_iter()
            .collect();
        let notes = done.notes.into_iter().chain(capture_notes).collect();
        let failed = |error: anyhow::Error| CellFailure { error, logs: logs.clone() };
        match (done.error, done.observations) {
            (None, Some(observations)) => Ok(CellOutcome { observations, lab, notes, logs: logs.clone() }),
            (Some(e), _) => Err(failed(anyhow!("{e}"))),
            (None, None) => Err(failed(match done.unreadable {
                Some(why) => anyhow!("the probe's log has no observations; a line that is not a probe line: {why}"),
                None => anyhow!("the probe's log has no observations"),
            })),
        }
    }
}

/// `--capture`: the lab evidence of a cell whose capture was written (each proxy's access
/// log, the capture and its attributions, as the local lab keeps them) and the notes that say
/// so: the file, then per failed connection which hop acted first. `None` and no notes when
/// no capture was taken.
fn captured(cell: &Cell, done: &mut Executed) -> (Option<crate::backend::evidence::LabEvidence>, Vec<String>) {
    use crate::backend::evidence::{EnvoyEvidence, LabEvidence};
    let Some(capture) = done.capture.take() else { return (None, vec![]) };
    let file = match capture {
        Ok(file) => file,
        Err(e) => return (None, vec![e]),
    };
    let envoys = std::mem::take(&mut done.access_logs)
        .into_iter()
        .map(|(role, access_log)| EnvoyEvidence { role, access_log, ..Default::default() })
        .collect();
    let mut evidence = LabEvidence { envoys, ..Default::default() };
    let (capture, notes) = crate::local::capture::judge(&file, &cell.scaled, &evidence, cell.time_scale.factor);
    evidence.capture = capture;
    (Some(evidence), notes)
}

/// A gRPC balance cell's outcome from what its steps captured: the same numbers, notes and
/// observation the local lab makes of a run.
fn balance_outcome(cell: &Cell, done: Executed) -> anyhow::Result<CellOutcome> {
    let (run, mut notes) = super::grpc_cell::balance_run(cell, &done.vars)?;
    let target = format!("{}:{}", cell.scaled.service.name(), cell.scaled.service.port());
    let end_ms = run.end_ms;
    let (balance, balance_notes) = crate::backend::balance::observe(run);
    notes.extend(balance_notes);
    notes.extend(done.notes);
    let observations = Observations::of_balance(cell.scaled.service.name(), target, end_ms, balance);
    Ok(CellOutcome { observations, lab: None, notes, logs: vec![] })
}

/// What executing some steps gave.
#[derive(Default)]
pub struct Executed {
    /// The first required step that failed: its purpose and error.
    pub error: Option<String>,
    pub observations: Option<Observations>,
    /// Evidence captured on the way.
    pub notes: Vec<String>,
    /// The first line of the probe's log that is not a probe line, and why.
    pub unreadable: Option<String>,
    /// What `Capture::Var` steps captured.
    pub vars: BTreeMap<String, String>,
    /// `--capture`: the cell's capture file, or why it was not written.
    pub capture: Option<Result<crate::local::capture::CaptureFile, String>>,
    /// `--capture`: each proxy's access log lines (JSON), by role.
    pub access_logs: BTreeMap<String, Vec<serde_json::Value>>,
}

/// Execute steps in order: a failed required step stops the required steps after it (the
/// optional teardown steps still run). `$NAME`s are filled in by `substitute` and by what
/// earlier steps captured (`Capture::Var`).
pub fn execute(
    steps: &[Step],
    runner: &mut dyn CommandRunner,
    substitute: &dyn Fn(&str) -> String,
    phase: &PhaseSink,
) -> Executed {
    let mut done = Executed::default();
    for step in steps {
        match step {
            Step::Cell { .. } | Step::Note { .. } => {}
            Step::Phase { phase: p } => phase(p.clone()),
            // A capture's start (or a pod added to it) is skipped after a failure; its finish
            // runs regardless (the capture of a failed cell is the one that matters), and its
            // failure is a note.
            Step::Capture { action: CaptureAction::Start { .. } | CaptureAction::Add { .. }, .. }
                if done.error.is_some() => {}
            Step::Capture { action, purpose } => {
                let action = action.filled(|s| fill(substitute(s), &done.vars));
                match (runner.capture(&action), &action) {
                    (Ok(Some(file)), _) => done.capture = Some(Ok(file)),
                    (Ok(None), _) => {}
                    (Err(e), CaptureAction::Finish { .. }) => {
                        done.capture = Some(Err(format!("capture: not written: {e:#}")))
                    }
                    (Err(e), _) => done.error = Some(format!("{purpose}: {e:#}")),
                }
            }
            Step::Command { program, args, stdin, capture, required, cleanup, purpose, timeout_s } => {
                if done.error.is_some() && *required {
                    continue;
                }
                let with_vars = |s: &str| fill(substitute(s), &done.vars);
                let args: Vec<String> = args.iter().map(|a| with_vars(a)).collect();
                let stdin = stdin.as_deref().map(with_vars);
                let timeout = std::time::Duration::from_secs(*timeout_s);
                match runner.run(program, &args, stdin.as_deref(), timeout) {
                    Ok(output) => match capture {
                        Some(Capture::ProbeLog) => {
                            for line in output.lines() {
                                match serde_json::from_str::<ProbeLine>(line) {
                                    Ok(ProbeLine::Observations(o)) => done.observations = Some(o),
                                    Ok(ProbeLine::Error(e)) => done.error = Some(format!("probe: {e}")),
                                    // The probe's own phases, as it reported them (read once
                                    // the exec returns).
                                    Ok(ProbeLine::Phase { name, idle_ms, .. }) => match name.as_str() {
                                        "idle" => phase(Phase::Idle { ms: idle_ms.unwrap_or_default() }),
                                        "reuse" => phase(Phase::Reuse),
                                        _ => {}
                                    },
                                    Err(e) if done.unreadable.is_none() && !line.trim().is_empty() => {
                                        done.unreadable =
                                            Some(format!("{e}: {}", line.chars().take(200).collect::<String>()))
                                    }
                                    Err(_) => {}
                                }
                            }
                        }
                        Some(Capture::Evidence) => done.notes.push(format!("{purpose}: {}", evidence_summary(&output))),
                        Some(Capture::Var(name)) => {
                            done.vars.insert(name.clone(), output.trim().to_string());
                        }
                        Some(Capture::AccessLog(role)) => {
                            done.access_logs.insert(role.clone(), super::capture::access_log_lines(&output));
                        }
                        Some(Capture::Expect(want)) if !output.contains(want.as_str()) => {
                            done.error = Some(format!("{purpose}: expected `{want}`, found `{}`", output.trim()))
                        }
                        Some(Capture::Expect(_)) | None => {}
                    },
                    Err(e) if *required || (*cleanup && done.error.is_none()) => {
                        done.error = Some(format!("{purpose}: {e:#}"))
                    }
                    Err(e) if *cleanup => done.notes.push(format!("cleanup failed too: {purpose}: {e:#}")),
                    Err(_) => {}
                }
            }
        }
    }
    done
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
    // Counters that stayed at zero say nothing happened; say how many, not each.
    let (zero, counted): (Vec<&str>, Vec<&str>) = lines.iter().partition(|l| l.ends_with(": 0"));
    match (counted.is_empty(), zero.is_empty()) {
        (true, true) => format!("{} bytes", output.len()),
        (true, false) => format!("{} idle-timeout counters, all 0", zero.len()),
        (false, true) => counted.join("; "),
        (false, false) => format!("{}; {} other idle-timeout counters at 0", counted.join("; "), zero.len()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kind::plan;
    use crate::model::observation::{Attempt, ConnObservation, Observations, Outcome};

    /// What a [`FakeRunner`] was asked to run (and what went to its stdin).
    #[derive(Default)]
    pub struct Recorded {
        pub ran: Vec<String>,
        pub stdins: Vec<String>,
    }

    /// Records every command; answers the probe's log with canned observations, a pod IP to
    /// `get pod`, and fails the commands that contain `fail_on`.
    #[derive(Default)]
    pub struct FakeRunner {
        pub recorded: Arc<Mutex<Recorded>>,
        pub log: String,
        pub fail_on: Option<String>,
    }

    impl CommandRunner for FakeRunner {
        fn capture(&mut self, action: &CaptureAction) -> anyhow::Result<Option<crate::local::capture::CaptureFile>> {
            let line = format!("capture {}", action.describe());
            self.recorded.lock().unwrap().ran.push(line);
            Ok(None)
        }
        fn run(
            &mut self,
            program: &str,
            args: &[String],
            stdin: Option<&str>,
            _timeout: std::time::Duration,
        ) -> anyhow::Result<String> {
            let line = format!("{program} {}", args.join(" "));
            let mut r = self.recorded.lock().unwrap();
            r.ran.push(line.clone());
            r.stdins.extend(stdin.map(str::to_string));
            if self.fail_on.as_deref().is_some_and(|f| line.contains(f)) {
                anyhow::bail!("timed out waiting for the condition");
            }
            Ok(if line.contains("exec idlelab-probe -c probe") {
                self.log.clone()
            } else if args.iter().any(|a| a == "istiod") {
                "idlelab.local/istio/pilot:1.30.3-idlelab".into()
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

    /// The cluster's steps, then each cell's, as the runner drives them.
    fn execute_all(cells: &[Cell], runner: &mut FakeRunner) -> Vec<Executed> {
        let target = KubeTarget { context: None };
        let same = |s: &str| s.to_string();
        let noop: PhaseSink = Arc::new(|_| {});
        let cluster = execute(&cluster_steps(&target), runner, &same, &noop);
        assert!(cluster.error.is_none());
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| execute(&cell_steps(c, i, &target, false), runner, &same, &noop))
            .collect()
    }

    /// Each command step as `program args…`.
    fn command_lines(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Command { program, args, .. } => Some(format!("{program} {}", args.join(" "))),
                _ => None,
            })
            .collect()
    }

    /// Issue 19, defect 2: a cell that fails still removes what it made. The probe pod never
    /// becomes Ready: the probe does not run, the cell fails with the wait's purpose, and the
    /// gateway's objects in istio-system and the namespace are deleted all the same.
    #[test]
    fn a_failed_cell_still_removes_its_gateway_objects_and_namespace() {
        let cells = cells_of("https-keepalive", "none");
        let mut runner = FakeRunner {
            log: observations(true),
            fail_on: Some("--for=condition=Ready pod/idlelab-probe".into()),
            ..Default::default()
        };
        let done = execute_all(&cells, &mut runner);
        let ran = runner.recorded.lock().unwrap().ran.clone();
        assert!(!ran.iter().any(|r| r.contains("exec idlelab-probe -c probe")), "{ran:?}");
        assert!(done[0].error.as_deref().is_some_and(|e| e.contains("wait for the probe pod")), "{:?}", done[0].error);
        let wait = ran.iter().position(|r| r.contains("--for=condition=Ready pod/idlelab-probe")).unwrap();
        let gateway =
            ran.iter().position(|r| r.contains("-n istio-system delete envoyfilter,secret -l idlelab.dev/cell="));
        let namespace = ran.iter().position(|r| r.contains("delete namespace idlelab-"));
        assert!(gateway.is_some_and(|g| g > wait), "the gateway's objects go after a failure: {ran:?}");
        assert!(namespace.is_some_and(|n| n > wait), "the namespace goes after a failure: {ran:?}");
    }

    /// A cleanup step that fails fails a cell that had not failed: a leak is not a pass.
    #[test]
    fn a_failed_cleanup_fails_the_cell() {
        let cells = cells_of("https-keepalive", "none");
        let mut runner = FakeRunner {
            log: observations(true),
            fail_on: Some("delete namespace idlelab-".into()),
            ..Default::default()
        };
        let done = execute_all(&cells, &mut runner);
        assert!(done[0].error.as_deref().is_some_and(|e| e.contains("remove the cell")), "{:?}", done[0].error);
    }

    /// Issue 19, defect 9: a cell with about 1 s of idle keeps its evidence. The probe runs in
    /// a pod that outlives it (`kubectl exec`), and the sidecar's config and counters are read
    /// after the probe returns, before the namespace goes; no step waits on the idle's clock.
    #[test]
    fn a_one_second_idle_cell_reads_its_evidence_after_the_probe_while_the_pod_is_up() {
        let cells = cells_of("redis-idle", "istio-idle-timeout");
        assert_eq!(cells[0].scaled.idle.0.as_secs(), 1, "the shipped 1 s cell");
        let lines = command_lines(&cell_steps(&cells[0], 0, &KubeTarget { context: None }, false));
        let at =
            |what: &str| lines.iter().position(|l| l.contains(what)).unwrap_or_else(|| panic!("{what}: {lines:#?}"));
        let probe = at("exec idlelab-probe -c probe --");
        assert!(
            probe < at("proxy-config listener") && probe < at("proxy-config cluster") && probe < at("-c istio-proxy")
        );
        assert!(at("-c istio-proxy") < at("delete namespace"));
        assert!(!lines.iter().any(|l| l.starts_with("sleep ")), "no step sleeps against the idle period: {lines:#?}");
    }

    /// Issue 19, defect 2: every run starts with a sweep of what earlier runs left: cell
    /// namespaces by their label, and the gateway's per-cell objects in istio-system.
    #[test]
    fn every_run_sweeps_what_earlier_runs_left() {
        let steps = command_lines(&cluster_steps(&KubeTarget { context: None }));
        assert!(
            steps.iter().any(|s| s.contains("delete namespace -l app.kubernetes.io/managed-by=idlelab")),
            "{steps:?}"
        );
        assert!(
            steps.iter().any(|s| s.contains("-n istio-system delete envoyfilter,secret -l idlelab.dev/cell ")),
            "{steps:?}"
        );
    }

    /// The passthrough scenario's probe targets the next hop's pod IP, captured at run time.
    #[test]
    fn redis_idle_passthrough_targets_an_address_the_mesh_does_not_know() {
        let cells = cells_of("redis-idle-passthrough", "none");
        let mut runner = FakeRunner { log: observations(true), ..Default::default() };
        execute_all(&cells, &mut runner);
        let recorded = runner.recorded.lock().unwrap();
        let probe = recorded.stdins.iter().find(|m| m.contains("probe.json")).expect("the probe's ConfigMap");
        assert!(probe.contains("\"target\": \"10.244.0.7:6379\""), "{probe}");
    }

    #[test]
    fn cluster_evidence_is_kept_as_the_fields_that_decide() {
        let listeners =
            r#"[{"name":"10.96.0.5_6379","filterChains":[{"filters":[{"typedConfig":{"idleTimeout":"6s"}}]}]}]"#;
        assert_eq!(evidence_summary(listeners), "10.96.0.5_6379 idle_timeout 6s");
        let clusters =
            r#"[{"name":"outbound|6379||redis","upstreamConnectionOptions":{"tcpKeepalive":{"keepaliveTime":300}}}]"#;
        assert!(evidence_summary(clusters).contains("outbound|6379||redis tcp_keepalive"));
        let stats = "tcp.outbound|6379||redis.idle_timeout: 4\nlistener.x.downstream_cx_total: 8\ntcp.BlackHoleCluster.idle_timeout: 0\n";
        assert_eq!(
            evidence_summary(stats),
            "tcp.outbound|6379||redis.idle_timeout: 4; 1 other idle-timeout counters at 0"
        );
        assert_eq!(evidence_summary("tcp.x.idle_timeout: 0\n"), "1 idle-timeout counters, all 0");
        assert!(evidence_summary("counter forgotten {\n packets 3 bytes 156\n}").contains("packets 3"));
    }

    /// Every command has a timeout, and the real runner kills a command at it, naming it.
    #[test]
    fn every_step_has_a_timeout_and_the_runner_enforces_it() {
        let cells = cells_of("https-keepalive", "none");
        let p = plan(&cells, &KubeTarget { context: None }, false);
        // Issue 19, defect 5: a timeout fits the command. An API call gets a minute; a wait
        // gets its own `--timeout` plus a margin; the image build and the probe get theirs.
        let idle = cells[0].scaled.idle.0.as_secs();
        for s in &p.steps {
            if let Step::Command { program, args, timeout_s, .. } = s {
                let line = args.join(" ");
                let want = if line.contains("build.sh lab") {
                    1800
                } else if line.contains("kind-up.sh --load") {
                    600
                } else if line.contains("exec idlelab-probe -c probe --") {
                    idle + 300
                } else if let Some(t) = args.iter().find_map(|a| a.strip_prefix("--timeout=")) {
                    t.trim_end_matches('s').parse::<u64>().unwrap() + plan::WAIT_MARGIN_S
                } else {
                    plan::DEFAULT_TIMEOUT_S
                };
                assert_eq!(*timeout_s, want, "{program} {line}");
            }
        }
        let started = std::time::Instant::now();
        let e = plan::ProcessRunner::default()
            .run("sleep", &["5".into()], None, std::time::Duration::from_secs(1))
            .unwrap_err();
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

    /// Canned probe output: one connection, closed with a FIN during the idle (`fin`) or not.
    pub fn observations(fin: bool) -> String {
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
            balance: None,
            finished_ms: 7010,
            peak_rss_kib: 1,
        };
        format!(
            "{{\"phase\":{{\"name\":\"warm\",\"ms\":0}}}}\n{}\n",
            serde_json::to_string(&ProbeLine::Observations(obs)).unwrap()
        )
    }

    /// Issue 21 on a cluster: `--capture` starts on every pod of the path once they are all
    /// Ready (the probe's, the middlebox's, the server's, by the UIDs read just before), before
    /// the probe's first connection; it is written right after the probe, also when the probe
    /// failed; each proxy's access log is read before the namespace goes.
    #[test]
    fn a_captured_cell_is_captured_on_every_pod_around_the_probe_even_when_it_fails() {
        let cells = cells_of("redis-sidecar-upstream", "none");
        let target = KubeTarget { context: None };
        let same = |s: &str| s.to_string();
        let noop: PhaseSink = Arc::new(|_| {});
        for fail in [None, Some("exec idlelab-probe -c probe".to_string())] {
            let mut runner = FakeRunner { log: observations(false), fail_on: fail.clone(), ..Default::default() };
            let done = execute(&cell_steps(&cells[0], 0, &target, true), &mut runner, &same, &noop);
            assert_eq!(done.error.is_some(), fail.is_some());
            let ran = runner.recorded.lock().unwrap().ran.clone();
            let at =
                |what: &str| ran.iter().position(|l| l.contains(what)).unwrap_or_else(|| panic!("{what}: {ran:#?}"));
            let start = at("capture start app=10.244.0.7 mb1=10.244.0.7 srv=10.244.0.7 watching conntrack in mb1");
            assert!(
                at("--for=condition=Ready pod/idlelab-probe") < at("get pod idlelab-probe -o jsonpath={.metadata.uid}")
            );
            assert!(at("get pod mb1 -o jsonpath={.metadata.uid}") < start);
            assert!(at("get pod -l app=redis -o jsonpath={.items[0].metadata.uid}") < start);
            let probe = at("exec idlelab-probe -c probe --");
            let finish = at("capture finish $RUN_DIR/captures/redis-sidecar-upstream--none.pcapng");
            assert!(start < probe && probe < finish, "{ran:#?}");
            assert!(
                finish < at("logs idlelab-probe -c istio-proxy") && at("logs idlelab-probe") < at("delete namespace")
            );
            // The buffered lines of the warm-up are written out before the log is read.
            assert!(
                at("exec idlelab-probe -c istio-proxy -- pilot-agent request POST reopen_logs")
                    < at("logs idlelab-probe")
            );
        }
        // Without --capture, none of it.
        let lines = command_lines(&cell_steps(&cells[0], 0, &target, false));
        assert!(!lines.iter().any(|l| l.contains("metadata.uid") || l.contains(" logs ")), "{lines:#?}");
        // The plan shows what idlelab itself does.
        let text = plan(&cells, &target, true).to_string();
        assert!(
            text.contains("# (idlelab) capture start app=$POD_UID_app mb1=$POD_UID_mb1 srv=$POD_UID_srv"),
            "{text}"
        );
    }

    #[test]
    fn a_name_that_begins_another_does_not_fill_it() {
        let vars: BTreeMap<String, String> =
            [("POD_UID_grpc_1", "a"), ("POD_UID_grpc_10", "b")].map(|(k, v)| (k.to_string(), v.to_string())).into();
        assert_eq!(fill("$POD_UID_grpc_10 $POD_UID_grpc_1".into(), &vars), "b a");
    }

    #[test]
    fn execution_runs_exactly_the_plans_commands() {
        let cells = cells_of("redis-idle", "none");
        let p = plan(&cells, &KubeTarget { context: None }, false);
        let mut runner = FakeRunner { log: observations(true), ..Default::default() };
        let done = execute_all(&cells, &mut runner);
        // What the lab image's build printed (nothing, from the fake) replaces its name.
        let planned: Vec<String> = command_lines(&p.steps).iter().map(|c| c.replace("$LAB_IMAGE", "")).collect();
        assert_eq!(runner.recorded.lock().unwrap().ran, planned, "the run is the plan");
        assert!(done[0].observations.is_some());
        // A log without observations leaves none, and teardown still runs.
        let mut runner = FakeRunner { log: "nothing useful\n".into(), ..Default::default() };
        let done = execute_all(&cells, &mut runner);
        assert!(done[0].observations.is_none());
        assert!(runner.recorded.lock().unwrap().ran.last().unwrap().contains("delete namespace"));
    }
}
