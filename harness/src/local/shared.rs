//! What the cells of one local run share.

use super::{mysql_server, netns};
use anyhow::{Context, Result};

/// What the cells of one run share, removed when the run ends: the MariaDB template data
/// directory, initialised once by the first cell that needs it.
pub struct RunShared {
    dir: tempfile::TempDir,
    mysql_template: tokio::sync::OnceCell<std::path::PathBuf>,
}

impl RunShared {
    pub fn new() -> Result<RunShared> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}{}-run-", netns::PREFIX, std::process::id()))
            .tempdir()
            .context("creating the run's temp dir")?;
        Ok(RunShared { dir, mysql_template: tokio::sync::OnceCell::new() })
    }

    pub(super) async fn mysql_template(&self) -> Result<&std::path::Path> {
        let dir = self.dir.path();
        self.mysql_template.get_or_try_init(|| mysql_server::init_template(dir)).await.map(|p| p.as_path())
    }
}
