//! The HTTP server behind the path: hyper's HTTP/1.1 server, run by this same binary
//! (`idlelab serve-http`) inside the server namespace.
//!
//! Keep-alive on, no idle or header-read timeout of its own, so that only the path decides
//! when an idle connection dies. `GET /warm` answers after 50 ms, so that N concurrent warm
//! requests need N connections; anything else answers at once.

use crate::local::process::{LabProcess, spawn};
use anyhow::{Context, Result, bail};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use crate::local::shared::{RunShared, ServerPlace};
use crate::model::service::Service;

/// The server's request log, in its dir of the cell (the server-side request count).
pub const HTTP_REQUEST_LOG: &str = "requests.txt";

/// The services this server serves.
pub const SERVES: &[Service] = &[Service::Http, Service::Https];
/// Its program, the flag that prints its version, and the fix when it is missing (`idlelab doctor`).
pub const PROGRAM: Option<(&str, &[&str], &str)> = None;

/// Start it for a cell (`servers::start`).
pub async fn start_for(at: ServerPlace<'_>, shared: &RunShared) -> Result<LabProcess> {
    let _ = shared; // what the run shares: nothing this server needs
    start(at.service.port(), at.netns, at.name, &at.dir.join(HTTP_REQUEST_LOG)).await
}

/// Each request's path, one line per request, appended to the request log (when there is
/// one): how many times the server received a request is evidence (a proxy's hidden retry
/// duplicates it).
static REQUEST_LOG: std::sync::OnceLock<std::sync::Mutex<std::fs::File>> = std::sync::OnceLock::new();

async fn handle(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(log) = REQUEST_LOG.get() {
        use std::io::Write;
        let _ = writeln!(log.lock().expect("request log"), "{}", req.uri().path());
    }
    if req.uri().path() == "/warm" {
        tokio::time::sleep(Duration::from_millis(50)).await;
        return Ok(Response::new(Full::new(Bytes::from_static(b"warm\n"))));
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
}

/// `idlelab serve-http --listen ADDR [--request-log FILE]`: serve until killed; prints
/// `ready` once listening.
pub async fn serve(listen: SocketAddr, request_log: Option<&Path>) -> Result<()> {
    if let Some(path) = request_log {
        let file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let _ = REQUEST_LOG.set(std::sync::Mutex::new(file));
    }
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    println!("ready");
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .header_read_timeout(None)
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}

/// Start the server in a namespace and wait until it listens.
pub async fn start(port: u16, netns: &Path, name: &str, request_log: &Path) -> Result<LabProcess> {
    let mut cmd = tokio::process::Command::new(crate::tools::idlelab_exe());
    cmd.args(["serve-http", "--listen", &format!("0.0.0.0:{port}")])
        .arg("--request-log")
        .arg(request_log)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut process = spawn(name, cmd, netns, None)?;
    let mut lines = BufReader::new(process.child.stdout.take().expect("piped")).lines();
    match tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await {
        Ok(Ok(Some(line))) if line == "ready" => Ok(process),
        other => bail!("the HTTP server did not start: {other:?}"),
    }
}

/// How many requests the server received, per path, from its request log.
pub fn requests_received(request_log: &Path) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(request_log).unwrap_or_default().lines() {
        *out.entry(line.to_string()).or_insert(0) += 1;
    }
    out
}
