//! A hop's objects and steps on a cluster: each kind that needs some implements [`OnCluster`]
//! in a file of its own in `src/kind/` (`gateway.rs`, `middlebox.rs`), which `build.rs` finds
//! and lists here. The sidecars need none: injection makes them, as the pods' annotations say.

use super::cell_plan::CellPlan;
use super::plan::Step;

/// A hop, as the kind backend sets it up in a cell.
pub trait OnCluster {
    /// Its objects, applied while the cell is set up (from the server back to the app, each
    /// forwarding to `next_host`); returns the wait for it to be ready, if it has one.
    fn set_up(&self, plan: &mut CellPlan, index: usize, next_host: &str) -> Option<Step>;
    /// Its pod, for a cell's capture (`--capture`): its node's name and how kubectl finds it.
    fn pod(&self, _plan: &CellPlan, _index: usize) -> Option<super::capture::CapturedPod> {
        None
    }
    /// A step that reads its evidence after the reuse.
    fn evidence(&self, _plan: &CellPlan, _index: usize) -> Option<Step> {
        None
    }
    /// What it put outside the cell's namespace, removed (and waited for) before the namespace.
    fn teardown(&self, _plan: &CellPlan) -> Option<Step> {
        None
    }
}

include!(concat!(env!("OUT_DIR"), "/on_cluster.rs"));
