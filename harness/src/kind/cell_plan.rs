//! A cell's steps as they are written: its namespace, the kubectl it uses, and the helpers
//! every stage and every hop kind's `OnCluster` writes its steps with.

use super::plan::Step;
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
}

impl<'a> CellPlan<'a> {
    pub(super) fn new(cell: &'a Cell, index: usize, target: &'a KubeTarget) -> Self {
        let steps =
            vec![Step::Cell { key: format!("{}::{}", cell.scenario, cell.label) }, Step::Phase { phase: Phase::Setup }];
        CellPlan { cell, target, ns: namespace_of(index, &cell.scenario), steps }
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
}
