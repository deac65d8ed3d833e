//! redis-server in the server namespace.
//!
//! Its arguments are `Service::server_args`, the same in a pod (`tcp-keepalive 0`, `timeout`
//! as the scenario says); here it keeps its socket, data and log in the cell's directory.

use crate::local::process::{LabProcess, spawn};
use crate::tools::redis_bin;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use crate::local::shared::{RunShared, ServerPlace};
use crate::model::service::Service;

/// The services this server serves.
pub const SERVES: &[Service] = &[Service::Redis];
/// Its program, the flag that prints its version, and the fix when it is missing (`idlelab doctor`).
pub const PROGRAM: Option<(&str, &[&str], &str)> = Some(("redis-server", &["--version"], "just setup   (apt-get install -y redis-server)"));

/// Start it for a cell (`servers::start`).
pub async fn start_for(at: ServerPlace<'_>, shared: &RunShared) -> Result<LabProcess> {
    let _ = shared; // what the run shares: nothing this server needs
    start(at.dir, at.idle_timeout_s, at.netns, at.name).await
}

/// `idle_timeout_s`: redis' own `timeout` (0 = off), from the scenario's `server.idle_timeout`.
pub async fn start(dir: &Path, idle_timeout_s: u64, netns: &Path, name: &str) -> Result<LabProcess> {
    let bin = redis_bin().context("redis-server not found: run `just setup`")?;
    let socket = dir.join("redis.sock");
    let mut cmd = tokio::process::Command::new(bin);
    let files = [
        "--daemonize".to_string(),
        "no".into(),
        "--unixsocket".into(),
        socket.display().to_string(),
        "--dir".into(),
        dir.display().to_string(),
        "--logfile".into(),
        dir.join("redis.log").display().to_string(),
    ];
    cmd.args(Service::Redis.server_args(idle_timeout_s, &files).expect("redis's arguments"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut process = spawn(name, cmd, netns, None)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = process.exited() {
            let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
            bail!("redis-server exited during start-up ({status}): {}", log.lines().last().unwrap_or(""));
        }
        if ping(&socket).await.is_ok() {
            return Ok(process);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("redis-server did not answer PING within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

async fn ping(socket: &Path) -> Result<()> {
    let mut s = tokio::net::UnixStream::connect(socket).await?;
    s.write_all(b"PING\r\n").await?;
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).await?;
    if &buf != b"+PONG\r\n" {
        bail!("unexpected answer to PING");
    }
    Ok(())
}
