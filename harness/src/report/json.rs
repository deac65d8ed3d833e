//! `summary.json`: the machine-readable record of a run (schema: results/README.md).

use crate::events::{Reporter, RunSummary};
use std::path::PathBuf;

pub struct JsonReporter {
    pub path: PathBuf,
}

impl Reporter for JsonReporter {
    fn finish(&mut self, summary: &RunSummary) -> anyhow::Result<()> {
        std::fs::write(&self.path, [serde_json::to_vec_pretty(summary)?, b"\n".to_vec()].concat())?;
        Ok(())
    }
}
