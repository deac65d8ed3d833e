//! Which cluster the kind backend runs on, and how a cell's namespace there is named.

use super::plan::Step;

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
    pub(super) fn kubectl(&self) -> Vec<String> {
        vec!["kubectl".into(), "--context".into(), self.context()]
    }
    /// The step `kubectl --context <its context> ARGS`.
    pub fn kubectl_step(&self, args: &[&str], purpose: &str) -> Step {
        let ctx = self.context();
        let mut a = vec!["--context", ctx.as_str()];
        a.extend_from_slice(args);
        Step::command("kubectl", &a, purpose)
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
