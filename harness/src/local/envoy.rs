//! Envoy in the lab: the Envoy binary, the access-log format every proxy writes, and what
//! the harness asks a running Envoy (its admin API: counters, config dump).
//!
//! Every Envoy is started by Istio's pilot-agent (`crate::local::proxy::Proxy`); its admin API
//! answers on TCP 15000 of the pod's namespace, reached from a thread inside that namespace.

use super::process::LabProcess;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The uid Istio's proxy runs as; the capture exempts it.
pub const ENVOY_UID: u32 = 1337;

/// The fields of one access log line (JSON), the same for every proxy of the lab (MeshConfig `accessLogFormat`): `chain` is
/// the stat prefix, or a command operator such as `%UPSTREAM_CLUSTER%`. Envoy before 1.38
/// rejects the close-reason operators (a format it rejects fails the listener): they are
/// asked of `envoy` 1.38 and later only.
pub fn access_log_fields(chain: &str, envoy: crate::tools::EnvoyVersion) -> Value {
    let mut fields = json!({
        "start": "%START_TIME%",
        "duration_ms": "%DURATION%",
        "flags": "%RESPONSE_FLAGS%",
        "termination": "%CONNECTION_TERMINATION_DETAILS%",
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
    });
    if envoy >= (1, 38, 0) {
        // Who closed each side and why, as Envoy saw it: the attribution quotes them.
        for (k, op) in [
            ("close_reason", "%DOWNSTREAM_LOCAL_CLOSE_REASON%"),
            ("upstream_close_reason", "%UPSTREAM_LOCAL_CLOSE_REASON%"),
            ("downstream_close", "%DOWNSTREAM_DETECTED_CLOSE_TYPE%"),
            ("upstream_close", "%UPSTREAM_DETECTED_CLOSE_TYPE%"),
        ] {
            fields[k] = op.into();
        }
    }
    fields
}

/// Envoy's admin API: TCP on the loopback of the pod's namespace (Istio's bootstrap).
pub struct Admin {
    pub netns: PathBuf,
    pub port: u16,
}

impl Admin {
    pub async fn get(&self, path: &str) -> Result<String> {
        let (path, port) = (path.to_string(), self.port);
        super::netns::in_netns(&self.netns, move || -> Result<String> {
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

/// A running Envoy and what it needs to be asked about its state. `process` is pilot-agent's
/// (Envoy is its child).
pub struct Envoy {
    pub process: LabProcess,
    pub admin: Admin,
    pub access_log: PathBuf,
    pub log: PathBuf,
    /// The deciding fields of what it received from Istio (`config_dump::deciding_fields`).
    pub istio_config: Option<Value>,
}

/// The directory of one proxy inside a cell's temp dir (writable by uid 1337).
pub struct EnvoyFiles {
    pub dir: PathBuf,
}

impl EnvoyFiles {
    /// Make `dir` for one proxy, writable by its uid (1337).
    pub fn create(dir: PathBuf) -> Result<EnvoyFiles> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
        Ok(EnvoyFiles { dir })
    }
}

impl Envoy {
    /// Its release as the running Envoy reports it (admin `/server_info`: `<sha>/1.40.0/…`),
    /// and the Istio release of the pilot-agent that wrote its bootstrap (the node metadata's
    /// `ISTIO_VERSION`).
    pub async fn versions(&self) -> (Option<String>, Option<String>) {
        let Some(v) = self.admin.get("/server_info").await.ok().and_then(|b| serde_json::from_str::<Value>(&b).ok())
        else {
            return (None, None);
        };
        let envoy =
            v["version"].as_str().and_then(crate::tools::parse_envoy_version).map(|(a, b, c)| format!("{a}.{b}.{c}"));
        let agent = v["node"]["metadata"]["ISTIO_VERSION"].as_str().map(String::from);
        (envoy, agent)
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

    /// Envoy before 1.38 rejects the close-reason operators: they are asked of 1.38 on only.
    #[test]
    fn the_close_reasons_are_asked_of_envoy_1_38_and_later_only() {
        let old = super::access_log_fields("c", (1, 36, 4));
        let new = super::access_log_fields("c", (1, 40, 0));
        for k in ["close_reason", "upstream_close_reason", "downstream_close", "upstream_close"] {
            assert!(old.get(k).is_none(), "{k} on 1.36: {old}");
            assert!(new[k].as_str().is_some_and(|v| v.starts_with('%')), "{k} on 1.40: {new}");
        }
        assert_eq!(old["flags"], "%RESPONSE_FLAGS%");
    }
}
