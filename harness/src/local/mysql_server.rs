//! MariaDB (`mariadbd`) in the server namespace.
//!
//! The data directory is initialised once per run (`mariadb-install-db`, ≈ 2 s) into a
//! template; each cell copies it (≈ 40 ms) so a cell never pays a full initialisation.
//! Settings that could end an idle connection are explicit: `wait_timeout` and
//! `interactive_timeout` come from the scenario's `server.idle_timeout` (MariaDB's 8 h
//! default otherwise). Grant tables are skipped (a lab, no credentials), InnoDB is small.

use crate::local::process::{LabProcess, spawn};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;
use crate::local::shared::{RunShared, ServerPlace};
use crate::model::service::Service;

/// The services this server serves.
pub const SERVES: &[Service] = &[Service::Mysql];
/// Its program, the flag that prints its version, and the fix when it is missing (`idlelab doctor`).
pub const PROGRAM: Option<(&str, &[&str], &str)> = Some(("mariadbd", &["--version"], "just setup   (apt-get install -y mariadb-server)"));

/// What every cell's MariaDB starts from, made once per run (before the cell's clock for
/// its server's start runs: `servers::prepare`).
pub async fn prepare_run(shared: &RunShared) -> Result<()> {
    shared.template("mariadb", |dir| async move { init_template(&dir).await }).await.map(|_| ())
}

/// Start it for a cell (`servers::start`).
pub async fn start_for(at: ServerPlace<'_>, shared: &RunShared) -> Result<LabProcess> {
    let template = shared.template("mariadb", |dir| async move { init_template(&dir).await }).await?;
    start(&template, at.dir, at.service.port(), at.idle_timeout_s, at.netns, at.name).await
}

/// Where this cell's MariaDB keeps its files: its own copy of the template, in the cell's dir.
fn server_files(datadir: &Path, dir: &Path) -> Vec<String> {
    vec![
        format!("--datadir={}", datadir.display()),
        format!("--socket={}", dir.join("mysql.sock").display()),
        format!("--pid-file={}", dir.join("mariadbd.pid").display()),
        format!("--log-error={}", dir.join("mariadbd.err").display()),
        format!("--tmpdir={}", dir.display()),
    ]
}

/// Initialise a template data directory under `dir` (once per run).
pub async fn init_template(dir: &Path) -> Result<PathBuf> {
    let datadir = dir.join("mysql-template");
    // Its own tmpdir: mariadbd names its temporary tables after its pid, which is the same
    // small number in every PID namespace, so two runs initialising at once in the shared /tmp
    // collided ("Can't create/write to file '/tmp/#sql-temptable-1f-1-3.MAI'").
    let tmpdir = dir.join("mysql-install-tmp");
    std::fs::create_dir_all(&tmpdir)?;
    // mariadb-install-db is a shell script whose subshells do not inherit the parent-death
    // signal: it runs as PID 1 of its own PID namespace (`unshare --kill-child`), so that when
    // it dies with the harness the kernel kills everything it started.
    let out = crate::local::process::dies_with_runner(&mut tokio::process::Command::new("unshare"))
        .args(["--pid", "--fork", "--kill-child", "mariadb-install-db"])
        .args(Service::mariadb_install_args(&[
            format!("--datadir={}", datadir.display()),
            format!("--tmpdir={}", tmpdir.display()),
        ]))
        .output()
        .await
        .context("running mariadb-install-db (run `just setup`)")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("mariadb-install-db failed: {}", crate::local::envoy::last_lines(&stderr, 4));
    }
    Ok(datadir)
}

pub async fn start(
    template: &Path,
    dir: &Path,
    port: u16,
    idle_timeout_s: u64,
    netns: &Path,
    name: &str,
) -> Result<LabProcess> {
    let datadir = dir.join("data");
    let status = crate::local::process::dies_with_runner(&mut tokio::process::Command::new("cp"))
        .arg("-a")
        .arg(template)
        .arg(&datadir)
        .status()
        .await?;
    if !status.success() {
        bail!("copying the MariaDB template data directory failed");
    }
    let args = Service::Mysql.server_args(idle_timeout_s, &server_files(&datadir, dir)).expect("MariaDB's arguments");
    let mut cmd = tokio::process::Command::new("mariadbd");
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut process = spawn(name, cmd, netns, None)?;
    if let Err(e) = crate::local::netns::wait_listening(netns, port, Duration::from_secs(20)).await {
        let log = std::fs::read_to_string(dir.join("mariadbd.err")).unwrap_or_default();
        let exited = process.exited().map(|s| format!(" (exited: {s})")).unwrap_or_default();
        bail!("mariadbd did not start{exited}: {e}: {}", log.lines().last().unwrap_or(""));
    }
    Ok(process)
}
