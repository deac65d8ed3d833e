//! A plan: every command (kind, istioctl, kubectl, docker) and every manifest, in order.
//!
//! `idlelab plan` prints it; `idlelab run --backend kind` executes exactly it through one
//! [`CommandRunner`], so what tests check is what runs.

use serde::Serialize;
use std::fmt;

/// One step of a plan.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", tag = "step")]
pub enum Step {
    /// A heading: which cell the following steps belong to.
    Cell { key: String },
    /// Where the cell is from here on (the runner's `CellPhase` event).
    Phase { phase: crate::backend::Phase },
    /// Something the reader must know (e.g. the baseline is an explicit value, not Istio's default).
    Note { text: String },
    /// What idlelab itself does between two commands: start or finish a cell's capture
    /// (`--capture`) in its pods' network namespaces, through [`CommandRunner::capture`].
    Capture { action: CaptureAction, purpose: String },
    /// A command; `stdin` holds a manifest for `kubectl apply -f -`.
    Command {
        program: String,
        args: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        stdin: Option<String>,
        /// What the step is for, in a few words.
        purpose: String,
        /// `probe-log`: the probe's output (its observations); `evidence`: kept in the report.
        #[serde(skip_serializing_if = "Option::is_none")]
        capture: Option<Capture>,
        /// Whether a failure stops the cell's later required steps.
        required: bool,
        /// A cleanup step: it runs even after a failure (what the cell made must go), and its
        /// own failure is reported.
        #[serde(skip_serializing_if = "std::ops::Not::not", default)]
        cleanup: bool,
        /// Seconds before the runner kills it and fails the step, naming it.
        timeout_s: u64,
    },
}

/// A step's timeout unless it says otherwise: a call to the API server. A command that waits
/// (`--timeout=Ns`) gets its own wait plus [`WAIT_MARGIN_S`]; builds and installs set theirs.
pub const DEFAULT_TIMEOUT_S: u64 = 60;
/// What a waiting command gets beyond its own `--timeout`, to report its own error first.
pub const WAIT_MARGIN_S: u64 = 30;

/// The timeout a command's own `--timeout=Ns` (or `Nm`) implies, else [`DEFAULT_TIMEOUT_S`].
fn implied_timeout(args: &[String]) -> u64 {
    args.iter()
        .filter_map(|a| a.strip_prefix("--timeout="))
        .filter_map(|t| {
            let (n, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit())?);
            let n: u64 = n.parse().ok()?;
            match unit {
                "s" => Some(n),
                "m" => Some(n * 60),
                _ => None,
            }
        })
        .map(|n| n + WAIT_MARGIN_S)
        .next()
        .unwrap_or(DEFAULT_TIMEOUT_S)
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Capture {
    ProbeLog,
    Evidence,
    /// The trimmed output becomes `$NAME` in the cell's later steps.
    Var(String),
    /// The output must contain this, else the step fails (a version check).
    Expect(String),
    /// A proxy's access log (`kubectl logs -c istio-proxy`): its JSON lines, for the
    /// attribution of a capture, as this proxy role's (`sidecar`, `server-sidecar`, `gateway`).
    AccessLog(String),
}

pub use super::capture::CaptureAction;

impl Step {
    pub fn command(program: &str, args: &[&str], purpose: &str) -> Step {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Step::Command {
            program: program.into(),
            timeout_s: implied_timeout(&args),
            args,
            stdin: None,
            purpose: purpose.into(),
            capture: None,
            required: true,
            cleanup: false,
        }
    }

    pub fn apply(kubectl: &[String], manifest: String, purpose: &str) -> Step {
        let mut args: Vec<String> = kubectl[1..].to_vec();
        args.extend(["apply".into(), "-f".into(), "-".into()]);
        Step::Command {
            program: kubectl[0].clone(),
            args,
            stdin: Some(manifest),
            purpose: purpose.into(),
            capture: None,
            required: true,
            cleanup: false,
            timeout_s: DEFAULT_TIMEOUT_S,
        }
    }

    pub fn with_timeout(mut self, seconds: u64) -> Step {
        if let Step::Command { timeout_s, .. } = &mut self {
            *timeout_s = seconds;
        }
        self
    }

    pub fn with_capture(mut self, c: Capture) -> Step {
        if let Step::Command { capture, .. } = &mut self {
            *capture = Some(c);
        }
        self
    }

    /// Runs even after a failure, and its own failure is reported.
    pub fn cleanup(mut self) -> Step {
        if let Step::Command { required, cleanup, .. } = &mut self {
            *required = false;
            *cleanup = true;
        }
        self
    }

    pub fn optional(mut self) -> Step {
        if let Step::Command { required, .. } = &mut self {
            *required = false;
        }
        self
    }
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn push(&mut self, s: Step) {
        self.steps.push(s);
    }

    /// The programs the plan runs, for the prerequisite check.
    pub fn programs(&self) -> Vec<String> {
        let mut p: Vec<String> = self
            .steps
            .iter()
            .filter_map(|s| if let Step::Command { program, .. } = s { Some(program.clone()) } else { None })
            .collect();
        p.sort();
        p.dedup();
        p
    }
}

fn shell_word(w: &str) -> String {
    if !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c)) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.steps {
            match s {
                Step::Cell { key } => writeln!(f, "\n### cell {key}")?,
                Step::Note { text } => writeln!(f, "# note: {text}")?,
                Step::Phase { phase } => writeln!(f, "# phase: {}", phase.name())?,
                Step::Capture { action, purpose } => {
                    writeln!(f, "# {purpose}\n# (idlelab) capture {}", action.describe())?
                }
                Step::Command { program, args, stdin, purpose, capture, required, cleanup, timeout_s } => {
                    let mut tags = Vec::new();
                    if let Some(c) = capture {
                        tags.push(format!("{c:?}").to_lowercase());
                    }
                    if *cleanup {
                        tags.push("cleanup: runs after a failure too".into());
                    } else if !required {
                        tags.push("may fail".into());
                    }
                    if *timeout_s != DEFAULT_TIMEOUT_S {
                        tags.push(format!("timeout {timeout_s}s"));
                    }
                    let tags = if tags.is_empty() { String::new() } else { format!(" [{}]", tags.join(", ")) };
                    writeln!(f, "# {purpose}{tags}")?;
                    let line: Vec<String> =
                        std::iter::once(program.clone()).chain(args.iter().map(|a| shell_word(a))).collect();
                    match stdin {
                        Some(m) => writeln!(
                            f,
                            "{} <<'MANIFEST'\n{}MANIFEST",
                            line.join(" "),
                            if m.ends_with('\n') { m.clone() } else { format!("{m}\n") }
                        )?,
                        None => writeln!(f, "{}", line.join(" "))?,
                    }
                }
            }
        }
        Ok(())
    }
}

/// The one boundary through which the kind backend touches the world.
pub trait CommandRunner: Send {
    /// Whether this runner can run `programs` (and, with `engine`, reach a Docker engine),
    /// checked before anything is created: `Err` says what is missing and what to do.
    fn preflight(&mut self, _programs: &[&str], _engine: bool) -> Result<(), String> {
        Ok(())
    }
    /// Start a cell's capture, or finish it into its file (`Ok(Some)`: what was written).
    /// `$NAME`s are already filled in.
    fn capture(&mut self, action: &CaptureAction) -> anyhow::Result<Option<crate::local::capture::CaptureFile>> {
        anyhow::bail!("this command runner takes no capture ({action:?})")
    }
    /// Run one command; returns its stdout, or an error with its stderr (or that it timed out).
    fn run(
        &mut self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
        timeout: std::time::Duration,
    ) -> anyhow::Result<String>;
}

/// Runs commands for real: in the lab engine's namespace when kind-up started one
/// ([`super::engine::LabEngine`]), else as they are.
#[derive(Default)]
pub struct ProcessRunner {
    pub engine: Option<super::engine::LabEngine>,
    /// A cell's capture between its start and finish steps.
    capture: Option<crate::local::capture::CellCapture>,
}

impl ProcessRunner {
    /// Against the lab's own engine when it runs, else the user's.
    pub fn detect() -> ProcessRunner {
        ProcessRunner { engine: super::engine::LabEngine::detect(), capture: None }
    }

    /// Against this engine.
    pub fn on(engine: Option<super::engine::LabEngine>) -> ProcessRunner {
        ProcessRunner { engine, capture: None }
    }
}

impl CommandRunner for ProcessRunner {
    fn capture(&mut self, action: &CaptureAction) -> anyhow::Result<Option<crate::local::capture::CaptureFile>> {
        super::capture::carry_out(&mut self.capture, action)
    }
    fn preflight(&mut self, programs: &[&str], engine: bool) -> Result<(), String> {
        // As `run` finds them: kind-up's tools first, then PATH.
        let tools = super::engine::kind_home().join("bin");
        let missing: Vec<&str> = programs
            .iter()
            .copied()
            .filter(|p| crate::tools::find_in_path(p).is_none() && !tools.join(p).exists())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the kind backend needs {} on PATH; missing: {}\n  hint: `just kind-up` builds kind, kubectl and istioctl (into $IDLELAB_HOME/kind/bin), starts a Docker engine of the lab's own where none answers, and brings up the cluster; `idlelab plan SCENARIO --backend kind` prints every command and manifest a run would use; `--context NAME` runs on an existing cluster (needs kubectl and istioctl)",
                programs.join(", "),
                missing.join(", ")
            ));
        }
        if engine && self.run("docker", &["info".into()], None, std::time::Duration::from_secs(30)).is_err() {
            return Err("docker is installed but no Docker engine answers (`docker info` failed); kind needs one\n  hint: `just kind-up` starts the lab's own engine (as root) and the cluster; `idlelab plan SCENARIO --backend kind` prints what the run would do; `--context NAME` uses an existing cluster".into());
        }
        Ok(())
    }
    fn run(
        &mut self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
        timeout: std::time::Duration,
    ) -> anyhow::Result<String> {
        use std::io::{Read, Write};
        let mut command = match &self.engine {
            Some(engine) => engine.command(program, args),
            None => {
                // kind-up puts kind, kubectl and istioctl there for a laptop's engine too.
                let mut c = std::process::Command::new(program);
                c.args(args).env("PATH", super::engine::path_with(&super::engine::kind_home().join("bin")));
                c
            }
        };
        let mut child = command
            .stdin(if stdin.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot run `{program}`: {e}; `idlelab doctor` lists what is missing"))?;
        if let Some(text) = stdin {
            child.stdin.take().expect("piped").write_all(text.as_bytes())?;
        }
        // Read both pipes while waiting, so that a large output cannot block the command.
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("`{program} {}` timed out after {} s", args.join(" "), timeout.as_secs());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let stdout = reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        if !status.success() {
            anyhow::bail!("`{program} {}` failed: {}", args.join(" "), stderr.trim());
        }
        Ok(stdout)
    }
}
