//! Envoy in the lab: bootstrap rendering (pure), process start, admin queries.
//!
//! Admin listens on a unix socket in the cell's temp dir, so the harness reads stats from the
//! host namespace without entering the cell's namespaces or opening a port anywhere.

use super::process::{LabProcess, spawn};
use crate::duration::Dur;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const ENVOY_UID: u32 = 1337;
pub const TCP_PROXY: &str = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

/// Where the Envoy binary is: `$ENVOY_BIN`, then what `just setup` installed, then `$PATH`.
pub fn envoy_bin() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("ENVOY_BIN") {
        return Some(PathBuf::from(p));
    }
    let cached = crate::doctor::tools_dir().join("bin/envoy");
    if cached.exists() {
        return Some(cached);
    }
    find_in_path("envoy")
}

pub fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
}

/// Envoy's duration format: `"6.000s"`.
pub fn envoy_duration(d: Dur) -> String {
    format!("{}.{:03}s", d.0.as_secs(), d.0.subsec_millis())
}

/// The fields of one access log line (JSON), the same for every Envoy of the lab: `chain` is
/// the stat prefix, or a command operator such as `%UPSTREAM_CLUSTER%`.
pub fn access_log_fields(chain: &str) -> Value {
    json!({
        "start": "%START_TIME%",
        "duration_ms": "%DURATION%",
        "flags": "%RESPONSE_FLAGS%",
        "close_reason": "%DOWNSTREAM_LOCAL_CLOSE_REASON%",
        "downstream": "%DOWNSTREAM_REMOTE_ADDRESS%",
        "upstream_local": "%UPSTREAM_LOCAL_ADDRESS%",
        "upstream": "%UPSTREAM_HOST%",
        "chain": chain,
        "bytes_rx": "%BYTES_RECEIVED%",
        "bytes_tx": "%BYTES_SENT%",
        // HTTP (the connection manager): what the app got, and how often Envoy tried upstream.
        "code": "%RESPONSE_CODE%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
        "upstream_failure": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
        "path": "%REQ(:PATH)%",
        // Istio mTLS between sidecars shows here as TLSv1.3 on the inbound side.
        "downstream_tls": "%DOWNSTREAM_TLS_VERSION%"
    })
}

/// A `tcp_proxy` network filter with a JSON access log line per connection.
pub fn tcp_proxy(stat_prefix: &str, cluster: &str, idle_timeout: Dur, access_log: &Path) -> Value {
    json!({
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": TCP_PROXY,
            "stat_prefix": stat_prefix,
            "cluster": cluster,
            "idle_timeout": envoy_duration(idle_timeout),
            "access_log": [{
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": access_log,
                    "log_format": {"json_format": access_log_fields(stat_prefix)}
                }
            }]
        }
    })
}

/// `upstream_connection_options` with TCP keepalive (Envoy takes whole seconds here).
pub fn upstream_keepalive(ka: crate::scenario::Keepalive) -> Value {
    let (time_s, interval_s) = ka.whole_seconds();
    json!({"tcp_keepalive": {
        "keepalive_time": time_s,
        "keepalive_interval": interval_s,
        "keepalive_probes": ka.probes
    }})
}

pub fn static_cluster(name: &str, addr: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "10s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": addr, "port_value": port}}}}]}]}
    })
}

pub fn bootstrap(node_id: &str, admin_socket: &Path, listeners: Vec<Value>, clusters: Vec<Value>) -> Value {
    json!({
        "node": {"id": node_id, "cluster": "idlelab"},
        "admin": {"address": {"pipe": {"path": admin_socket}}},
        "static_resources": {"listeners": listeners, "clusters": clusters}
    })
}

/// Where an Envoy's admin API answers.
pub enum Admin {
    /// A unix socket in the cell's temp dir (the lab's own bootstraps).
    Unix(PathBuf),
    /// Istio's bootstrap: TCP on the loopback of the pod's namespace.
    Tcp { netns: PathBuf, port: u16 },
}

impl Admin {
    pub async fn get(&self, path: &str) -> Result<String> {
        match self {
            Admin::Unix(socket) => admin_get(socket, path).await,
            Admin::Tcp { netns, port } => {
                let (path, port) = (path.to_string(), *port);
                super::netns::in_netns(netns, move || -> Result<String> {
                    use std::io::{Read, Write};
                    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
                    s.set_read_timeout(Some(Duration::from_secs(5)))?;
                    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: envoy\r\nConnection: close\r\n\r\n").as_bytes())?;
                    let mut buf = Vec::new();
                    s.read_to_end(&mut buf)?;
                    http_body(&String::from_utf8_lossy(&buf), &path)
                })
                .await?
            }
        }
    }
}

/// A running Envoy and what it needs to be asked about its state. For a sidecar configured
/// by Istio, `process` is pilot-agent's (Envoy is its child).
pub struct Envoy {
    pub process: LabProcess,
    pub admin: Admin,
    pub access_log: PathBuf,
    pub log: PathBuf,
    /// For a proxy configured by Istio: the deciding fields of what it received.
    pub istio_config: Option<Value>,
}

/// Files of one Envoy inside a cell's temp dir (the dir is writable by uid 1337).
pub struct EnvoyFiles {
    pub dir: PathBuf,
}

impl EnvoyFiles {
    pub fn admin(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }
    pub fn access_log(&self) -> PathBuf {
        self.dir.join("access.log")
    }
    pub fn bootstrap(&self) -> PathBuf {
        self.dir.join("bootstrap.json")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("envoy.log")
    }
}

impl Envoy {
    pub async fn start(name: &str, files: EnvoyFiles, config: &Value, netns: &Path) -> Result<Envoy> {
        let bin = envoy_bin().context("Envoy not found: run `just setup` or set ENVOY_BIN")?;
        std::fs::write(files.bootstrap(), serde_json::to_vec_pretty(config)?)?;
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.arg("-c")
            .arg(files.bootstrap())
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--log-level",
                "warn",
                "--file-flush-interval-msec",
                "100",
            ])
            .arg("--log-path")
            .arg(files.log())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let process = spawn(name, cmd, netns, Some(ENVOY_UID))?;
        let mut envoy = Envoy {
            process,
            admin: Admin::Unix(files.admin()),
            access_log: files.access_log(),
            log: files.log(),
            istio_config: None,
        };
        envoy.wait_ready().await?;
        Ok(envoy)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.process.exited() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                bail!("{} exited during start-up ({status}): {}", self.process.name, last_lines(&log, 5));
            }
            if let Ok(body) = self.admin.get("/ready").await
                && body.trim() == "LIVE"
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{} did not become ready within 10 s", self.process.name);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Counters whose names match one of these substrings, with non-zero values.
    pub async fn counters(&self, contains: &[&str]) -> Result<BTreeMap<String, u64>> {
        let body = self.admin.get("/stats?format=json").await?;
        let v: Value = serde_json::from_str(&body).context("parsing Envoy /stats")?;
        let mut out = BTreeMap::new();
        for s in v["stats"].as_array().into_iter().flatten() {
            if let (Some(name), Some(value)) = (s["name"].as_str(), s["value"].as_u64())
                && value > 0
                && contains.iter().any(|c| name.contains(c))
            {
                out.insert(name.to_string(), value);
            }
        }
        Ok(out)
    }

    /// The access log's JSON lines (one per closed connection).
    pub fn access_log_entries(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// The last `n` lines of a log, joined with ` | ` (for error messages).
pub(crate) fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// A GET on Envoy's admin unix socket (HTTP/1.1 with `Connection: close`, read to end;
/// Envoy answers HTTP/1.0 with 426).
pub async fn admin_get(socket: &Path, path: &str) -> Result<String> {
    let mut s = tokio::net::UnixStream::connect(socket).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: envoy\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    http_body(&String::from_utf8_lossy(&buf), path)
}

/// The body of an admin answer, which must be a 200.
fn http_body(text: &str, path: &str) -> Result<String> {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    if !head.starts_with("HTTP/1.1 200") {
        bail!("admin {path}: {}", head.lines().next().unwrap_or(""));
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

/// Decode an HTTP/1.1 chunked body (admin answers are small and complete).
pub fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn dechunks_admin_answers() {
        assert_eq!(super::dechunk("5\r\nLIVE\n\r\n0\r\n\r\n"), "LIVE\n");
        assert_eq!(super::dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
