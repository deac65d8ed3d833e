//! What the cells of one local run share, and where a cell's server runs.

use super::netns;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// What the cells of one run share, removed when the run ends: data a server initialises
/// once for every cell (MariaDB's template data directory), each under its name.
pub struct RunShared {
    dir: tempfile::TempDir,
    templates: Mutex<BTreeMap<&'static str, Arc<OnceCell<PathBuf>>>>,
}

impl RunShared {
    pub fn new() -> Result<RunShared> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}{}-run-", netns::PREFIX, std::process::id()))
            .tempdir()
            .context("creating the run's temp dir")?;
        Ok(RunShared { dir, templates: Mutex::new(BTreeMap::new()) })
    }

    /// The template `name`, made by `init` in the run's dir by the first cell that asks; the
    /// others wait for it.
    pub async fn template<F, Fut>(&self, name: &'static str, init: F) -> Result<PathBuf>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: Future<Output = Result<PathBuf>>,
    {
        let cell = self.templates.lock().expect("templates").entry(name).or_default().clone();
        cell.get_or_try_init(|| init(self.dir.path().to_path_buf())).await.cloned()
    }
}

/// Where and how a cell's server runs.
pub struct ServerPlace<'a> {
    pub service: crate::model::service::Service,
    /// The server's own dir in the cell's temp dir.
    pub dir: &'a Path,
    /// The server namespace.
    pub netns: &'a Path,
    /// Its name in logs and `ps`.
    pub name: &'a str,
    /// Its own idle timeout in whole seconds (0 = off).
    pub idle_timeout_s: u64,
}
