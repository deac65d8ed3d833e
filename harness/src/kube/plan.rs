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
    /// Something the reader must know (e.g. the baseline is an explicit value, not Istio's default).
    Note { text: String },
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
        /// Whether a failure stops the cell (teardown steps do not).
        required: bool,
    },
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Capture {
    ProbeLog,
    Evidence,
}

impl Step {
    pub fn command(program: &str, args: &[&str], purpose: &str) -> Step {
        Step::Command {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: None,
            purpose: purpose.into(),
            capture: None,
            required: true,
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
        }
    }

    pub fn with_capture(mut self, c: Capture) -> Step {
        if let Step::Command { capture, .. } = &mut self {
            *capture = Some(c);
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
                Step::Command { program, args, stdin, purpose, capture, required } => {
                    let mut tags = Vec::new();
                    if let Some(c) = capture {
                        tags.push(format!("{c:?}").to_lowercase());
                    }
                    if !required {
                        tags.push("may fail".into());
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

/// The one boundary through which the kube backend touches the world.
pub trait CommandRunner {
    /// Run one command; returns its stdout, or an error with its stderr.
    fn run(&mut self, program: &str, args: &[String], stdin: Option<&str>) -> anyhow::Result<String>;
}

/// Runs commands for real.
pub struct ProcessRunner;

impl CommandRunner for ProcessRunner {
    fn run(&mut self, program: &str, args: &[String], stdin: Option<&str>) -> anyhow::Result<String> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::lab::netns::run(program, &args, stdin)
    }
}
