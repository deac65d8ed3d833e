//! The HTTP server behind the path: hyper's HTTP/1.1 server, run by this same binary
//! (`idlelab serve-http`) inside the server namespace.
//!
//! Keep-alive on, no idle or header-read timeout of its own, so that only the path decides
//! when an idle connection dies. `GET /warm` answers after 50 ms, so that N concurrent warm
//! requests need N connections; anything else answers at once.

use super::process::{LabProcess, spawn};
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

async fn handle(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/warm" {
        tokio::time::sleep(Duration::from_millis(50)).await;
        return Ok(Response::new(Full::new(Bytes::from_static(b"warm\n"))));
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
}

/// `idlelab serve-http --listen ADDR`: serve until killed; prints `ready` once listening.
pub async fn serve(listen: SocketAddr) -> Result<()> {
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
pub async fn start(port: u16, netns: &Path, name: &str) -> Result<LabProcess> {
    // /proc/self/exe: this very binary, even if the file was rebuilt since the run started.
    let mut cmd = tokio::process::Command::new("/proc/self/exe");
    cmd.args(["serve-http", "--listen", &format!("0.0.0.0:{port}")])
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
