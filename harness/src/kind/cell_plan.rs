//! A cell's steps as they are written: its namespace, the kubectl it uses, and the helpers
//! every stage and every hop kind's `OnCluster` writes its steps with.

use super::capture::{CaptureAction, CapturedPod, uid_var};
use super::plan::{Capture, Step};
use super::target::{KubeTarget, namespace_of};
use crate::backend::Phase;
use crate::cells::Cell;

/// A cell's steps as they are written.
pub struct CellPlan<'a> {
    pub cell: &'a Cell,
    pub(super) target: &'a KubeTarget,
    /// The cell's namespace on the cluster.
    pub ns: String,
    pub(super) steps: Vec<Step>,
    /// `--capture`: the cell's pods are captured around the probe.
    pub(super) capture: bool,
}

impl<'a> CellPlan<'a> {
    pub(super) fn new(cell: &'a Cell, index: usize, target: &'a KubeTarget, capture: bool) -> Self {
        let steps =
            vec![Step::Cell { key: format!("{}::{}", cell.scenario, cell.label) }, Step::Phase { phase: Phase::Setup }];
        CellPlan { cell, target, ns: namespace_of(index, &cell.scenario), steps, capture }
    }

    /// `kubectl --context … ARGS`.
    pub fn k(&self, args: &[&str], purpose: &str) -> Step {
        self.target.kubectl_step(args, purpose)
    }

    pub fn apply(&mut self, manifest: String, purpose: &str) {
        let step = Step::apply(&self.target.kubectl(), manifest, purpose);
        self.steps.push(step);
    }

    pub fn note(&mut self, text: String) {
        self.steps.push(Step::Note { text });
    }

    /// `--capture`: each pod's UID (its network namespace on this machine), then the start;
    /// `forwarders`: the nodes whose conntrack is watched.
    pub(super) fn capture_start(&mut self, pods: &[CapturedPod], forwarders: Vec<String>) {
        let pods = self.pod_uids(pods);
        let purpose = "capture: every packet of these pods, from here to the run's end".into();
        self.steps.push(Step::Capture { action: CaptureAction::Start { pods, forwarders }, purpose });
    }

    /// `--capture`: these pods too, from now on.
    pub(super) fn capture_add(&mut self, pods: &[CapturedPod]) {
        let pods = self.pod_uids(pods);
        let purpose = "capture: the new pods too, from here on".into();
        self.steps.push(Step::Capture { action: CaptureAction::Add { pods }, purpose });
    }

    /// `--capture`: stop, and write `<run dir>/captures/<scenario>--<cell>.pcapng`, as the
    /// local lab names it.
    pub(super) fn capture_finish(&mut self) {
        let file = crate::local::capture::file_name(&self.cell.scenario, &self.cell.label);
        let action = CaptureAction::Finish { file: format!("$RUN_DIR/captures/{file}") };
        self.steps.push(Step::Capture { action, purpose: "capture: stop, and write the cell's pcapng".into() });
    }

    /// A step per pod that reads its UID into `$POD_UID_<node>`; the `(node, $POD_UID_<node>)`s.
    fn pod_uids(&mut self, pods: &[CapturedPod]) -> Vec<(String, String)> {
        for p in pods {
            let mut args: Vec<&str> = p.get.iter().map(String::as_str).collect();
            args.extend(["-o", p.uid_path()]);
            let purpose = format!("capture: the UID of {}'s pod (its network namespace on this machine)", p.node);
            let step = self.k(&args, &purpose).with_capture(Capture::Var(uid_var(&p.node)));
            self.steps.push(step);
        }
        pods.iter().map(|p| (p.node.clone(), format!("${}", uid_var(&p.node)))).collect()
    }
}
