//! The timing facts of an Envoy binary that the time scale rests on, measured from the binary
//! once and cached (`$IDLELAB_HOME/envoy-timing/`), so that a cell is scaled for the Envoy
//! release that runs it (`--envoy`), not for the one its author had.
//!
//! ```text
//!   this process (loopback)              throwaway Envoy (127.0.0.1, no admin)
//!   ───────────────────────              ─────────────────────────────────────────────────
//!   2 × GET /          ────────────────▶ connection manager, idle_timeout 300 ms, a direct
//!       ◀── 200, idle … FIN at 0.3 + d   response; closes an idle connection d later
//!   GET /stalled       ────────────────▶ router ──▶ cluster `stalled_http`, upstream
//!       ◀── 503 at 0.3 s or 2 s            idle_timeout 300 ms, connect_timeout 2 s ──┐
//!   connect            ────────────────▶ tcp_proxy, idle_timeout 300 ms ──▶ `stalled` │
//!       ◀── closed at 0.3 s or 2 s         connect_timeout 2 s ──────────────────────┤
//!                                          a listener whose accept queue is full ◀───┘
//!                                          (the kernel drops its SYNs: connects hang)
//! ```
//!
//! - `d`, the close delay: the connection manager's `drain_timeout` and then its
//!   `delayed_close_timeout`. The smaller of two connections, to the nearest 0.5 s.
//! - The idle timers while connecting: an end at about 0.3 s means the idle timer ran while
//!   the upstream connect hung; at about 2 s, only the connect timeout did.
//!
//! The three run side by side: about 7 s for a binary never measured, a file read after.
//! Traffic stays on the host's loopback; the Envoy dies with this process.

use crate::model::scale::{EnvoyTiming, TimingSource};
use anyhow::{Context, Result, anyhow, bail};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The idle timeout both listeners are given.
const IDLE_MS: u64 = 300;
/// The stalled upstream's connect timeout.
const CONNECT_TIMEOUT_MS: u64 = 2000;
/// How long a measurement waits for a close before it gives up.
const WAIT_FOR_CLOSE: Duration = Duration::from_secs(20);

/// The facts of the Envoy binary `bin`: from the cache when this binary (release, size,
/// modification time) was measured before, else measured now and cached.
pub fn of(bin: &Path) -> Result<EnvoyTiming> {
    let (a, b, c) = crate::tools::envoy_version(bin)?;
    let release = format!("{a}.{b}.{c}");
    let meta = std::fs::metadata(bin).with_context(|| format!("reading {}", bin.display()))?;
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
    let cache = crate::tools::tools_dir().join("envoy-timing");
    let file = cache.join(format!("{release}-{}-{}.json", meta.len(), mtime.as_secs()));
    if let Some(t) = std::fs::read_to_string(&file).ok().and_then(|text| parse_cached(&text, &release)) {
        return Ok(t);
    }
    let timing = measure(bin, &release).or_else(|first| {
        // A port taken between choosing it and Envoy's bind: once more with new ones.
        tracing::warn!(error = %first, "measuring Envoy's timing facts: once more");
        measure(bin, &release)
    })?;
    write_cache(&cache, &file, &timing);
    Ok(timing)
}

/// A cached record, if it is one of this release's measurements in today's shape.
fn parse_cached(text: &str, release: &str) -> Option<EnvoyTiming> {
    serde_json::from_str::<EnvoyTiming>(text)
        .ok()
        .filter(|t| t.release == release && t.source == TimingSource::Measured)
}

/// Written whole or not at all (a temporary file renamed into place); a cache that cannot be
/// written only costs the next run the measurement again.
fn write_cache(dir: &Path, file: &Path, t: &EnvoyTiming) {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".tmp-{}-{n}", std::process::id()));
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, serde_json::to_string_pretty(t).expect("json")))
        .and_then(|()| std::fs::rename(&tmp, file));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(file = %file.display(), error = %e, "could not cache Envoy's timing facts");
    }
}

/// Measure the facts of `bin` (which reported `release`).
pub fn measure(bin: &Path, release: &str) -> Result<EnvoyTiming> {
    let _span = tracing::info_span!("envoy_timing", release).entered();
    let started = Instant::now();
    // The upstream whose connects hang: a listener with a backlog of 0 whose one queued
    // connection is never accepted, so the kernel drops every further SYN.
    let stalled = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    stalled.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    stalled.listen(0)?;
    let stalled_addr = stalled.local_addr()?.as_socket().ok_or_else(|| anyhow!("no address"))?;
    let _queued = TcpStream::connect(stalled_addr).context("filling the stalled listener's queue")?;
    if TcpStream::connect_timeout(&stalled_addr, Duration::from_millis(300)).is_ok() {
        bail!("a listener with a full accept queue still accepted a connection: its connects would not hang");
    }
    let http_port = free_port()?;
    let tcp_port = free_port()?;
    let mut envoy = ThrowawayEnvoy::start(bin, &config(http_port, tcp_port, stalled_addr.port()))?;
    envoy.wait_listening(http_port)?;
    envoy.wait_listening(tcp_port)?;

    let drains: Vec<_> = (0..2).map(|_| std::thread::spawn(move || http_close_after_idle(http_port))).collect();
    let http_connecting = std::thread::spawn(move || http_answer_while_connecting(http_port));
    let tcp_connecting = std::thread::spawn(move || tcp_close_while_connecting(tcp_port));
    let joined = |r: std::thread::Result<Result<Duration>>| r.map_err(|_| anyhow!("a measurement panicked"))?;
    let mut close_after_idle = Duration::MAX;
    for d in drains {
        close_after_idle = close_after_idle.min(joined(d.join())?);
    }
    let http_connecting = joined(http_connecting.join())?;
    let tcp_connecting = joined(tcp_connecting.join())?;
    // Halfway between the idle timeout and the connect timeout.
    let ran_while_connecting = |ended: Duration| ended < Duration::from_millis((IDLE_MS + CONNECT_TIMEOUT_MS) / 2);
    let timing = EnvoyTiming {
        release: release.to_string(),
        http_close_delay_ms: close_delay_ms(close_after_idle),
        tcp_idle_timer_while_connecting: ran_while_connecting(tcp_connecting),
        http_upstream_idle_timer_while_connecting: ran_while_connecting(http_connecting),
        source: TimingSource::Measured,
    };
    tracing::info!(
        http_closed_after_idle_ms = close_after_idle.as_millis() as u64,
        http_answered_while_connecting_ms = http_connecting.as_millis() as u64,
        tcp_closed_while_connecting_ms = tcp_connecting.as_millis() as u64,
        took_ms = started.elapsed().as_millis() as u64,
        "{}",
        timing.describe()
    );
    Ok(timing)
}

/// The close delay from the time an idle connection took to close: less the idle timeout, to
/// the nearest 0.5 s (Envoy's defaults are whole settings; the rest is scheduling).
pub fn close_delay_ms(closed_after: Duration) -> u64 {
    let ms = closed_after.as_millis() as u64;
    (ms.saturating_sub(IDLE_MS) + 250) / 500 * 500
}

/// One request, then how long the idle connection stays open after its response.
fn http_close_after_idle(port: u16) -> Result<Duration> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(WAIT_FOR_CLOSE))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: envoy-timing\r\n\r\n")?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    // The response is complete with its 2-byte body ("ok").
    while got.windows(4).position(|w| w == b"\r\n\r\n").is_none_or(|at| got.len() < at + 4 + 2) {
        let n = s.read(&mut buf).context("reading the response")?;
        if n == 0 {
            bail!("the connection manager closed before its response: {:?}", String::from_utf8_lossy(&got));
        }
        got.extend_from_slice(&buf[..n]);
    }
    let idle_from = Instant::now();
    wait_closed(&mut s).context("an idle HTTP/1.1 connection")?;
    Ok(idle_from.elapsed())
}

/// How long the router takes to answer a request whose upstream connect hangs.
fn http_answer_while_connecting(port: u16) -> Result<Duration> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(WAIT_FOR_CLOSE))?;
    let from = Instant::now();
    s.write_all(b"GET /stalled HTTP/1.1\r\nHost: envoy-timing\r\n\r\n")?;
    let mut buf = [0u8; 1024];
    match s.read(&mut buf) {
        Ok(n) if n > 0 => Ok(from.elapsed()),
        Ok(_) => bail!("the connection manager closed a request to a stalled upstream without an answer"),
        Err(e) => Err(anyhow!("no answer to a request to a stalled upstream: {e}")),
    }
}

/// How long tcp_proxy keeps a connection whose upstream connect hangs.
fn tcp_close_while_connecting(port: u16) -> Result<Duration> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(WAIT_FOR_CLOSE))?;
    let from = Instant::now();
    wait_closed(&mut s).context("a connection whose upstream connect hangs")?;
    Ok(from.elapsed())
}

/// Until the peer's FIN or RST; anything else after `WAIT_FOR_CLOSE` is an error.
fn wait_closed(s: &mut TcpStream) -> Result<()> {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                bail!("Envoy did not close it within {WAIT_FOR_CLOSE:?}")
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The throwaway Envoy's bootstrap: no admin, the two listeners, the stalled cluster.
fn config(http_port: u16, tcp_port: u16, stalled_port: u16) -> serde_json::Value {
    let idle = format!("{}s", IDLE_MS as f64 / 1000.0);
    let address = |port: u16| serde_json::json!({"socket_address": {"address": "127.0.0.1", "port_value": port}});
    let stalled = |name: &str, options: serde_json::Value| {
        serde_json::json!({
            "name": name,
            "type": "STATIC",
            "connect_timeout": format!("{}s", CONNECT_TIMEOUT_MS as f64 / 1000.0),
            "typed_extension_protocol_options": options,
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(stalled_port)}}]}]}
        })
    };
    serde_json::json!({
        "static_resources": {
            "listeners": [
                {
                    "name": "http",
                    "address": address(http_port),
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "timing",
                            "common_http_protocol_options": {"idle_timeout": idle},
                            "route_config": {"virtual_hosts": [{
                                "name": "all",
                                "domains": ["*"],
                                "routes": [
                                    {"match": {"prefix": "/stalled"}, "route": {"cluster": "stalled_http", "timeout": "0s"}},
                                    {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}
                                ]
                            }]},
                            "http_filters": [{
                                "name": "envoy.filters.http.router",
                                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                            }]
                        }
                    }]}]
                },
                {
                    "name": "tcp",
                    "address": address(tcp_port),
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                            "stat_prefix": "timing",
                            "cluster": "stalled",
                            "idle_timeout": idle
                        }
                    }]}]
                }
            ],
            "clusters": [
                stalled("stalled", serde_json::json!({})),
                stalled("stalled_http", serde_json::json!({
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "common_http_protocol_options": {"idle_timeout": idle},
                        "explicit_http_config": {"http_protocol_options": {}}
                    }
                }))
            ]
        }
    })
}

/// An Envoy on loopback, killed and reaped when dropped; it dies with this process too.
struct ThrowawayEnvoy {
    child: std::process::Child,
    bin: PathBuf,
}

impl ThrowawayEnvoy {
    fn start(bin: &Path, config: &serde_json::Value) -> Result<ThrowawayEnvoy> {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("--config-yaml")
            .arg(config.to_string())
            .args(["--disable-hot-restart", "--concurrency", "1", "--log-level", "error"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let parent = std::process::id() as i32;
        // SAFETY: only async-signal-safe libc calls between fork and exec.
        unsafe { cmd.pre_exec(move || crate::local::process::die_with_parent(parent)) };
        let child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        Ok(ThrowawayEnvoy { child, bin: bin.to_path_buf() })
    }

    /// Until `port` accepts a connection; Envoy's own words if it exits first.
    fn wait_listening(&mut self, port: u16) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                let mut said = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut said);
                }
                let last: Vec<&str> = said.lines().rev().take(3).collect();
                bail!("{} exited ({status}) before it listened: {}", self.bin.display(), last.join(" | "));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("{} did not listen on 127.0.0.1:{port} within 15 s", self.bin.display())
    }
}

impl Drop for ThrowawayEnvoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_close_delay_is_what_follows_the_idle_timeout_to_the_nearest_half_second() {
        assert_eq!(close_delay_ms(Duration::from_millis(6299)), 6000);
        assert_eq!(close_delay_ms(Duration::from_millis(6520)), 6000);
        assert_eq!(close_delay_ms(Duration::from_millis(6560)), 6500);
        assert_eq!(close_delay_ms(Duration::from_millis(5301)), 5000);
        assert_eq!(close_delay_ms(Duration::from_millis(100)), 0);
    }

    #[test]
    fn a_cached_record_of_another_release_or_an_older_shape_is_not_used() {
        let t = EnvoyTiming { release: "1.36.4".into(), source: TimingSource::Measured, ..Default::default() };
        let text = serde_json::to_string(&t).unwrap();
        assert_eq!(parse_cached(&text, "1.36.4"), Some(t));
        assert_eq!(parse_cached(&text, "1.40.0"), None);
        assert_eq!(parse_cached(r#"{"release": "1.36.4", "http_drain_ms": 5000}"#, "1.36.4"), None);
        assert_eq!(parse_cached("not json", "1.36.4"), None);
    }
}
