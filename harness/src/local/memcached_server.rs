//! memcached in the server namespace, with its own idle timeout explicit
//! (`-o idle_timeout`, from the scenario's `server.idle_timeout`; memcached's default, 0, is off).

use crate::local::process::{LabProcess, spawn};
use anyhow::{Result, bail};
use std::path::Path;
use std::time::Duration;
use crate::local::shared::{RunShared, ServerPlace};
use crate::model::service::Service;

/// The services this server serves.
pub const SERVES: &[Service] = &[Service::Memcached];
/// Its program, the flag that prints its version, and the fix when it is missing (`idlelab doctor`).
pub const PROGRAM: Option<(&str, &[&str], &str)> = Some(("memcached", &["-V"], "just setup   (apt-get install -y memcached)"));

/// Start it for a cell (`servers::start`).
pub async fn start_for(at: ServerPlace<'_>, shared: &RunShared) -> Result<LabProcess> {
    let _ = shared; // what the run shares: nothing this server needs
    start(at.service.port(), at.idle_timeout_s, at.netns, at.name).await
}

pub async fn start(port: u16, idle_timeout_s: u64, netns: &Path, name: &str) -> Result<LabProcess> {
    let mut cmd = tokio::process::Command::new("memcached");
    cmd.args(Service::Memcached.server_args(idle_timeout_s, &[]).expect("memcached's arguments"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut process = spawn(name, cmd, netns, None)?;
    if let Err(e) = crate::local::netns::wait_listening(netns, port, Duration::from_secs(10)).await {
        let exited = process.exited().map(|s| format!(" (exited: {s})")).unwrap_or_default();
        bail!("memcached did not start{exited}: {e}");
    }
    Ok(process)
}
