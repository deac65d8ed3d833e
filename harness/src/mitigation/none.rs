//! `none`: the baseline. The path as the platform ships it.
//!
//! ```text
//!   app ──▶ (path unchanged) ──▶ server
//! ```

use super::contract::{IstioContext, IstioForm, Mitigation};
use crate::config::CellConfig;

pub struct NoMitigation;

impl Mitigation for NoMitigation {
    fn label(&self) -> String {
        "none".into()
    }
    fn describe(&self) -> String {
        "baseline: nothing changed".into()
    }
    fn apply(&self, _knobs: &mut CellConfig) -> Result<(), String> {
        Ok(())
    }
    fn istio_resources(&self, _ctx: &IstioContext) -> Vec<IstioForm> {
        vec![]
    }
}
