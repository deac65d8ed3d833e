//! The gRPC server behind an idle cell's path: one tonic replica (`idlelab serve-grpc
//! --replica 0`), the same server a balance cell runs N of (`grpc_replica`).
//!
//! No keepalive enforcement, no max connection age or idle limit of its own: only the path
//! decides when an idle HTTP/2 connection dies. It counts its requests in the cell's dir.

use crate::local::process::{LabProcess, spawn};
use crate::local::shared::{RunShared, ServerPlace};
use crate::model::service::Service;
use anyhow::{Context, Result};

/// The services this server serves.
pub const SERVES: &[Service] = &[Service::Grpc];
/// Its program, the flag that prints its version, and the fix when it is missing (`idlelab doctor`).
pub const PROGRAM: Option<(&str, &[&str], &str)> = None;

/// Start it for a cell (`servers::start`) and wait until it accepts connections.
pub async fn start_for(at: ServerPlace<'_>, shared: &RunShared) -> Result<LabProcess> {
    let _ = shared; // what the run shares: nothing this server needs
    let port = at.service.port();
    let mut cmd = tokio::process::Command::new(crate::tools::idlelab_exe());
    cmd.args(["serve-grpc", "--listen", &format!("0.0.0.0:{port}"), "--replica", "0", "--counts"])
        .arg(at.dir.join("replica-0.counts"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(at.dir.join("serve-grpc.stderr"))?);
    let process = spawn(at.name, cmd, at.netns, None)?;
    crate::local::netns::wait_listening(at.netns, port, std::time::Duration::from_secs(10))
        .await
        .context("the gRPC server did not accept connections")?;
    Ok(process)
}
