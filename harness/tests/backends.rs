//! Both backends through the one runner: the same cell run in the local lab (for real) and
//! on the kind backend (its commands answered by a fake command runner, whose probe log is
//! the local run's own observations) emits the same events, judges the same verdict from the
//! same observations, fills the same report fields and writes the same report files.

mod common;

use common::*;
use idlelab::backend::{Backend, evidence::LabEvidence};
use idlelab::cells::Cell;
use idlelab::events::{Event, Reporter, RunSummary};
use idlelab::kind::KubeTarget;
use idlelab::kind::plan::CommandRunner;
use idlelab::kind::run::KindBackend;
use idlelab::local::LocalBackend;
use idlelab::runner::{Emitter, RunOptions};
use std::sync::{Arc, Mutex};

/// Keeps every event, in order.
struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Reporter for Recorder {
    fn on_event(&mut self, e: &Event) {
        self.0.lock().unwrap().push(e.clone());
    }
}

/// Answers the probe's run (`kubectl exec idlelab-probe -c probe`) in cell `i`'s namespace with
/// `logs[i]`, istiod's image with the pinned Istio's, every other command with nothing, but
/// fails the commands that start with `fail_on`; records the commands.
#[derive(Default)]
struct FakeCluster {
    logs: Vec<String>,
    ran: Arc<Mutex<Vec<String>>>,
    fail_on: Option<&'static str>,
}

impl CommandRunner for FakeCluster {
    fn run(
        &mut self,
        program: &str,
        args: &[String],
        _: Option<&str>,
        _: std::time::Duration,
    ) -> anyhow::Result<String> {
        let line = format!("{program} {}", args.join(" "));
        self.ran.lock().unwrap().push(line.clone());
        if let Some(prefix) = self.fail_on.filter(|p| line.starts_with(p)) {
            anyhow::bail!("no cluster for `{prefix}`");
        }
        if args.iter().any(|a| a == "istiod") {
            return Ok("idlelab.local/istio/pilot:1.30.3-idlelab".into());
        }
        if !line.contains("exec idlelab-probe -c probe") {
            return Ok(String::new());
        }
        let ns = args.iter().find(|a| a.starts_with("idlelab-redis-idle-")).expect("the cell's namespace");
        let i: usize = ns["idlelab-redis-idle-".len()..].split('-').next().unwrap().parse().unwrap();
        Ok(self.logs[i].clone())
    }
}

fn cells() -> (idlelab::scenario::Scenario, Vec<Cell>) {
    let s = idlelab::scenario::load(&repo().join("scenarios/redis-idle.yaml")).unwrap();
    let cells = idlelab::cells::expand(&s, &["none".into(), "istio-idle-timeout".into()], None).unwrap();
    (s, cells)
}

/// Run the cells on `backend` through the runner, with a recorder and the report files.
fn run_on<B: Backend>(backend: B, dir: &std::path::Path) -> (Vec<Event>, RunSummary) {
    let (s, cells) = cells();
    backend.preflight(&cells).expect("preflight");
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut reporters = idlelab::report::reporters(dir, None);
    reporters.push(Box::new(Recorder(events.clone())));
    let emitter = Emitter::new(reporters);
    let opts = RunOptions {
        title: s.name.clone(),
        jobs: 4,
        repeat: 1,
        out_dir: dir.to_path_buf(),
        time_scale_label: "auto".into(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let summary =
        rt.block_on(idlelab::runner::run(backend, &[s], cells, &opts, &emitter)).ok().expect("not interrupted");
    emitter.finish(&summary).unwrap();
    let events = events.lock().unwrap().clone();
    (events, summary)
}

/// Each cell's events (and the run's, under ""), in order, without what differs between two
/// runs of a cell (timings, the backend's name). Cells may run concurrently, so only the
/// order within each is compared.
fn shape(events: &[Event]) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut by: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for e in events {
        let (key, what) = match e {
            Event::RunStarted { cells, .. } => (String::new(), format!("run-started {cells:?}")),
            Event::CellScaled { cell, factor, .. } => (cell.clone(), format!("scaled ×{factor}")),
            Event::CellPhase { cell, phase } => (cell.clone(), phase.name().to_string()),
            Event::CellFinished(r) => (r.key.clone(), format!("finished {:?} pass={}", r.verdict, r.pass)),
            Event::RunFinished { .. } => (String::new(), "run-finished".into()),
        };
        by.entry(key).or_default().push(what);
    }
    by
}

fn report_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".pem"))
        .collect();
    names.sort();
    names
}

#[test]
fn both_backends_emit_the_same_events_and_write_the_same_reports() {
    require_lab();
    // The lab starts the probe as `idlelab probe`; this test binary is not idlelab.
    // SAFETY: set before any thread of this test binary reads the environment.
    unsafe { std::env::set_var("IDLELAB_EXE", bin()) };
    let local_dir = tempdir();
    let (local_events, local) = run_on(LocalBackend::default(), local_dir.path());
    let lab: &LabEvidence = local.cells[0].evidence.lab.as_ref().expect("the local lab's evidence");
    assert!(!lab.namespaces.is_empty());

    // The kind backend, its cluster faked: each probe's log is what the local probe observed.
    let logs = local
        .cells
        .iter()
        .map(|c| {
            // What a real probe prints: its phases as it goes, then its observations.
            let o = c.evidence.observations.clone().expect("observed");
            let phases = [
                serde_json::json!({"phase": {"name": "warm", "ms": 0}}),
                serde_json::json!({"phase": {"name": "idle", "ms": o.idle_started_ms, "idle_ms": o.idle_ms}}),
                serde_json::json!({"phase": {"name": "reuse", "ms": o.reuse_started_ms}}),
            ];
            let lines: Vec<String> = phases.iter().map(|p| p.to_string()).collect();
            format!("{}\n{}\n", lines.join("\n"), serde_json::json!({ "observations": o }))
        })
        .collect();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let kind_dir = tempdir();
    let kind = KindBackend::new(
        KubeTarget { context: None },
        kind_dir.path().to_path_buf(),
        Box::new(FakeCluster { logs, ran: ran.clone(), fail_on: None }),
    );
    let (kind_events, on_kind) = run_on(kind, kind_dir.path());

    let local_shape = shape(&local_events);
    assert_eq!(local_shape, shape(&kind_events), "the same events, in the same order per cell");
    assert_eq!(
        local_shape["redis-idle::none"],
        ["scaled ×600", "setup", "warm", "idle", "reuse", "teardown", "finished Some(IdleClosed) pass=true"]
    );
    assert!(matches!(kind_events.last(), Some(Event::RunFinished { .. })));
    assert!(matches!(&local_events[0], Event::RunStarted { backend, .. } if backend == "local"));
    assert!(matches!(&kind_events[0], Event::RunStarted { backend, .. } if backend == "kind (kind-idlelab)"));

    use idlelab::model::verdict::Verdict;
    let verdicts: Vec<Option<Verdict>> = local.cells.iter().map(|c| c.verdict).collect();
    assert_eq!(verdicts, [Some(Verdict::IdleClosed), Some(Verdict::Survived)], "{:?}", local.cells[0].error);
    for (l, k) in local.cells.iter().zip(&on_kind.cells) {
        assert_eq!((&l.key, l.verdict, &l.explanation, l.pass), (&k.key, k.verdict, &k.explanation, k.pass));
        assert_eq!(l.istio, k.istio, "the same Istio forms of the mitigation");
        assert_eq!(l.time_scale, k.time_scale);
        assert!(k.evidence.lab.is_none() && k.error.is_none(), "{:?}", k.error);
    }
    assert!(!on_kind.cells[1].istio.is_empty(), "istio-idle-timeout has its pod annotation");
    assert_eq!(on_kind.backend, "kind (kind-idlelab)");
    assert_eq!(report_files(local_dir.path()), report_files(kind_dir.path()));
    assert_eq!(report_files(kind_dir.path()), ["junit.xml", "report.html", "summary.json", "summary.md"]);
    // The kind run executed the plan's commands through the fake, the probe's log included.
    assert!(ran.lock().unwrap().iter().any(|c| c.contains("exec idlelab-probe -c probe -- idlelab probe")));
}

/// `idlelab run redis-idle --backend kind` is `session::execute` with the kind backend (the
/// command line only picks it): with a fake cluster it writes the same report files, names
/// the backend in summary.json, and a cluster step that fails fails every cell with its
/// purpose, teardown still run.
#[test]
fn the_run_command_drives_the_kind_backend_through_the_session() {
    const ISTIOD_CHECK: &str = "kubectl --context kind-idlelab -n istio-system get deploy istiod";
    use idlelab::session::{BackendChoice, Exec, OutputArgs, execute};
    let (s, cells) = cells();
    let dir = tempdir();
    let exec = |out: &std::path::Path| Exec {
        title: "redis-idle".into(),
        output: OutputArgs {
            out: Some(out.to_path_buf()),
            results_dir: out.to_path_buf(),
            repeat: 1,
            verbose: false,
            capture: false,
            envoy: None,
            istio: None,
        },
        jobs: None,
        quiet: true,
        time_scale_label: "auto".into(),
    };
    // Canned observations: every connection closed by a FIN while idle.
    let log = std::fs::read_to_string(fixture("probe-log-idle-closed.jsonl")).expect("the fixture");
    let ran = Arc::new(Mutex::new(Vec::new()));
    let fake = FakeCluster { logs: vec![log.clone(), log], ran: ran.clone(), fail_on: None };
    let target = KubeTarget { context: None };
    let summary = execute(
        vec![s.clone()],
        cells.clone(),
        exec(dir.path()),
        BackendChoice::Kind { target, runner: Box::new(fake) },
    )
    .unwrap_or_else(|code| panic!("exit {code}"));
    assert_eq!(report_files(dir.path()), ["junit.xml", "report.html", "summary.json", "summary.md"]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["backend"], "kind (kind-idlelab)");
    assert_eq!(summary.cells[0].verdict, Some(idlelab::model::verdict::Verdict::IdleClosed));
    assert!(!summary.cells[1].istio.is_empty(), "the same Istio forms as the local backend reports");
    assert!(ran.lock().unwrap().iter().any(|c| c.contains("kind-images/build.sh lab")));

    // Istio is not installed (`just kind-up` installs it once): nothing after the check runs,
    // and every cell fails with its purpose.
    let dir = tempdir();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let target = KubeTarget { context: None };
    let summary = execute(
        vec![s],
        cells,
        exec(dir.path()),
        BackendChoice::Kind {
            target,
            runner: Box::new(FakeCluster { ran: ran.clone(), fail_on: Some(ISTIOD_CHECK), ..Default::default() }),
        },
    )
    .unwrap_or_else(|code| panic!("exit {code}"));
    assert!(!summary.pass);
    for c in &summary.cells {
        assert!(
            c.error.as_deref().is_some_and(|e| e.contains("Istio 1.30.3 is installed") && e.contains("no cluster for")),
            "{:?}",
            c.error
        );
    }
    let ran = ran.lock().unwrap();
    assert!(ran.last().unwrap().starts_with(ISTIOD_CHECK), "nothing runs after the cluster step failed: {ran:?}");
}
