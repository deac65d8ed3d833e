//! MySQL / MariaDB through `mysql_async`'s pool: the library owns the pool and its sockets.
//!
//! ```text
//!   Pool (constraints 0..N, inactive_connection_ttl, abs_conn_ttl, tcp_keepalive)
//!     warm: N connections at once, `SELECT 1` each, back to the pool
//!     idle
//!     reuse: N checkouts held together, [COM_PING on borrow], `SELECT 1` each
//! ```
//!
//! `mysql_async` checks a pooled connection's socket at checkout and silently drops one that
//! already saw a FIN or RST, taking another: an idle close becomes `recovered`, while a flow a
//! middlebox forgot looks healthy until the query meets the RST. The probe cannot wrap the
//! library's sockets, so it reads their states from `/proc` (its own sockets, in its own
//! network namespace) just before the reuse, and tells which connection served each checkout
//! by `CONNECTION_ID()`. Keepalive: the library sets only the idle time; the interval and count
//! come from the namespace's sysctls, which the lab sets.

use super::client::{ClientError, classify, emit_phase, observations, plain_attempt};
use super::spec::ProbeSpec;
use super::stream::StreamLog;
use crate::model::observation::{Attempt, ConnObservation, Observations, Outcome};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Pool, PoolConstraints, PoolOpts};
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn err(e: &mysql_async::Error) -> ClientError {
    let io_kind = match e {
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => Some(io.kind()),
        mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed) => {
            Some(std::io::ErrorKind::UnexpectedEof)
        }
        _ => None,
    };
    ClientError { timeout: false, io_kind, text: e.to_string() }
}

async fn timed<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, mysql_async::Error>>,
) -> Result<T, ClientError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(|e| err(&e)),
        Err(_) => {
            Err(ClientError { timeout: true, io_kind: None, text: "no answer within the request timeout".into() })
        }
    }
}

/// This process's TCP sockets toward one port, as the kernel reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OwnSockets {
    pub established: usize,
    /// Received the peer's FIN, not yet closed by the library.
    pub close_wait: usize,
    /// Of all of them, those with `SO_KEEPALIVE` on (`getsockopt` on the process's own fds).
    pub keepalive_on: usize,
}

impl OwnSockets {
    pub fn total(&self) -> usize {
        self.established + self.close_wait
    }
}

/// The pool's sockets: their states from `/proc/self/net/tcp`, their keepalive from the
/// sockets themselves (they are this process's own descriptors).
pub fn own_sockets(port: u16) -> OwnSockets {
    let mut inodes = HashMap::new();
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy();
                if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']'))
                    && let Some(n) = fd.file_name().to_str().and_then(|n| n.parse::<i32>().ok())
                {
                    inodes.insert(inode.to_string(), n);
                }
            }
        }
    }
    let table = std::fs::read_to_string("/proc/self/net/tcp").unwrap_or_default();
    let mut out = OwnSockets::default();
    for line in table.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let Some(&fd) = cols.get(9).and_then(|inode| inodes.get(*inode)) else { continue };
        let rem_port = cols[2].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
        if rem_port != Some(port) {
            continue;
        }
        match cols[3] {
            "01" => out.established += 1,
            "08" => out.close_wait += 1,
            _ => continue,
        }
        // SAFETY: `fd` is one of this process's open descriptors (listed above); it is
        // borrowed only for this one getsockopt.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        if socket2::SockRef::from(&fd).keepalive().unwrap_or(false) {
            out.keepalive_on += 1;
        }
    }
    out
}

/// Why the pool handed out another connection than a warmed one, from what was measured:
/// the socket states just before the reuse. Configured TTLs are quoted as configuration.
fn why_replaced(before: OwnSockets, warmed: usize, spec: &ProbeSpec) -> String {
    let gone = warmed.saturating_sub(before.total());
    if before.close_wait > 0 {
        format!(
            "mysql_async's checkout dropped it and opened a new connection; just before the checkout {} of the pool's sockets had received the peer's FIN (CLOSE-WAIT)",
            before.close_wait
        )
    } else if gone > 0 {
        let mut config = Vec::new();
        if let Some(ms) = spec.pool_max_idle_ms {
            config.push(format!("inactive_connection_ttl {ms} ms"));
        }
        if let Some(ms) = spec.pool_max_lifetime_ms {
            config.push(format!("abs_conn_ttl {ms} ms"));
        }
        let config = if config.is_empty() { String::new() } else { format!("; configuration: {}", config.join(", ")) };
        format!(
            "mysql_async's pool had closed {gone} of its {warmed} connections itself before the checkout (their sockets were gone, none had seen a FIN) and opened a new one{config}"
        )
    } else {
        "mysql_async opened a new connection instead of this one; no socket state seen before the checkout explains why"
            .into()
    }
}

pub async fn run(spec: ProbeSpec) -> Result<Observations, ClientError> {
    let clock = Instant::now();
    let now = || clock.elapsed().as_millis() as u64;
    let limit = Duration::from_millis(spec.request_timeout_ms);
    let (host, port) = spec.target.rsplit_once(':').expect("ip:port");
    let port: u16 = port.parse().expect("a port");
    // With no inactive_connection_ttl, mysql_async keeps only `min` idle connections and closes
    // the rest when they return; with one, it keeps up to `max` and retires the idle ones above
    // `min` after the TTL. So: min = max = pool, or min = 0 when the pool has a max idle time.
    let min = if spec.pool_max_idle_ms.is_some() { 0 } else { spec.pool.max(1) };
    let mut pool_opts = PoolOpts::default()
        .with_constraints(PoolConstraints::new(min, spec.pool.max(1)).expect("min <= max"))
        .with_reset_connection(false)
        .with_abs_conn_ttl(spec.pool_max_lifetime_ms.map(Duration::from_millis));
    if let Some(ms) = spec.pool_max_idle_ms {
        pool_opts = pool_opts
            .with_inactive_connection_ttl(Duration::from_millis(ms))
            .with_ttl_check_interval(Duration::from_secs(1));
    }
    let opts = OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some("root"))
        .prefer_socket(false)
        .tcp_keepalive(spec.keepalive.map(|k| Duration::from_secs(k.time_s)))
        .pool_opts(pool_opts);
    let pool = Pool::new(opts);

    emit_phase("warm", now(), None);
    let mut warm = tokio::task::JoinSet::new();
    for _ in 0..spec.pool {
        let pool = pool.clone();
        let opened_ms = now();
        warm.spawn(async move {
            let mut conn = timed(limit, pool.get_conn()).await?;
            timed(limit, conn.query_drop("SELECT 1")).await?;
            Ok::<_, ClientError>((conn, opened_ms))
        });
    }
    let mut held: Vec<(Conn, u64)> = Vec::new();
    while let Some(r) = warm.join_next().await {
        held.push(r.expect("warm task")?);
    }
    let warmed: Vec<(u32, u64, u64)> = held.iter().map(|(c, opened)| (c.id(), *opened, now())).collect();
    let after_warm = own_sockets(port);
    drop(held); // back to the pool

    let idle_started_ms = now();
    emit_phase("idle", idle_started_ms, Some(spec.idle_ms));
    tokio::time::sleep(Duration::from_millis(spec.idle_ms)).await;

    let before = own_sockets(port);
    let (established, close_wait) = (before.established, before.close_wait);
    let checked_ms = now();
    let reuse_started_ms = now();
    emit_phase("reuse", reuse_started_ms, None);
    let mut notes = vec![
        format!(
            "after the warm-up, SO_KEEPALIVE was on for {} of the pool's {} sockets (read with getsockopt)",
            after_warm.keepalive_on,
            after_warm.total()
        ),
        format!(
            "before the reuse, {close_wait} of the pool's sockets had received the peer's FIN (CLOSE-WAIT) and {established} were established"
        ),
    ];
    let index: HashMap<u32, usize> = warmed.iter().enumerate().map(|(i, (id, _, _))| (*id, i)).collect();
    let mut unserved: Vec<usize> = (0..warmed.len()).collect();
    let mut rows = Vec::new();
    let mut in_use: Vec<Conn> = Vec::new();
    let mut discarded_at_checkout = 0;
    let mut served_ids = Vec::new();
    let mut failed_pings_total = 0;
    for j in 0..warmed.len() {
        let at_ms = now();
        let started = Instant::now();
        let mut replaced_by_probe = None;
        let outcome: Result<u32, ClientError> = async {
            let mut conn = timed(limit, pool.get_conn()).await?;
            // Test on borrow, as pools do it: ping each candidate, discard the ones that fail,
            // until one answers (a new connection at the latest).
            let mut failed_pings = Vec::new();
            while spec.test_on_borrow && failed_pings.len() <= spec.pool {
                match timed(limit, conn.ping()).await {
                    Ok(()) => break,
                    Err(e) => {
                        failed_pings.push(e.text);
                        let _ = tokio::time::timeout(limit, conn.disconnect()).await;
                        conn = timed(limit, pool.get_conn()).await?;
                    }
                }
            }
            failed_pings_total += failed_pings.len();
            if let Some(first) = failed_pings.first() {
                replaced_by_probe = Some(format!(
                    "test-on-borrow: COM_PING failed on {} pooled connection(s) ({first})",
                    failed_pings.len()
                ));
            }
            let id = conn.id();
            let r = timed(limit, conn.query_drop("SELECT 1")).await;
            in_use.push(conn);
            r.map(|_| id)
        }
        .await;
        let latency_ms = started.elapsed().as_millis() as u64;
        if let Ok(id) = &outcome {
            served_ids.push(*id);
        }
        let served_by = outcome.as_ref().ok().and_then(|id| index.get(id).copied());
        let reuse = match &outcome {
            Ok(_) => Attempt { at_ms, latency_ms, outcome: Outcome::Ok, error: None, local_addr: None },
            Err(e) => Attempt {
                at_ms,
                latency_ms,
                outcome: classify(e, &StreamLog::default()),
                error: Some(e.text.clone()),
                local_addr: None,
            },
        };
        let (row, replaced) = match (served_by, &replaced_by_probe) {
            (Some(i), None) => {
                unserved.retain(|u| *u != i);
                (i, None)
            }
            _ if outcome.is_err() && replaced_by_probe.is_none() => {
                // The failed query ran on a pooled connection; which one is unknown, take the next.
                (if unserved.is_empty() { j.min(warmed.len() - 1) } else { unserved.remove(0) }, None)
            }
            _ => {
                let i = if unserved.is_empty() { j.min(warmed.len() - 1) } else { unserved.remove(0) };
                let why = replaced_by_probe.clone().unwrap_or_else(|| {
                    discarded_at_checkout += 1;
                    if failed_pings_total > 0 {
                        "test-on-borrow discarded it during an earlier checkout (COM_PING failed)".into()
                    } else {
                        why_replaced(before, warmed.len(), &spec)
                    }
                });
                (i, Some(why))
            }
        };
        let retry_after_reconnect = if outcome.is_err() {
            let at_ms = now();
            let started = Instant::now();
            let r: Result<(), ClientError> = async {
                let mut conn = timed(limit, Conn::new(pool_free_opts(host, port))).await?;
                timed(limit, conn.query_drop("SELECT 1")).await?;
                let _ = conn.disconnect().await;
                Ok(())
            }
            .await;
            let latency_ms = started.elapsed().as_millis() as u64;
            Some(plain_attempt(at_ms, latency_ms, r))
        } else {
            None
        };
        let (_, opened_ms, last_activity_ms) = warmed[row];
        // The probe cannot tell which socket belonged to which discarded connection; when as
        // many sockets were in CLOSE-WAIT as connections were discarded, each had seen a FIN.
        let peer_closed_ms =
            (replaced.is_some() && replaced_by_probe.is_none() && close_wait > 0).then_some(checked_ms);
        rows.push(ConnObservation {
            id: row,
            local_addr: String::new(),
            opened_ms,
            last_activity_ms,
            heartbeats: 0,
            heartbeat_failure: None,
            peer_closed_ms,
            peer_reset_ms: None,
            timed_out_ms: None,
            reconnects: u32::from(replaced.is_some()) + u32::from(retry_after_reconnect.is_some()),
            replaced_before_use: replaced,
            reuse,
            retry_after_reconnect,
            // Read from the sockets: every socket of the pool had SO_KEEPALIVE on.
            keepalive: after_warm.total() > 0 && after_warm.keepalive_on == after_warm.total(),
        });
    }
    notes.push(format!(
        "connection ids: warmed {:?}, reused {:?}",
        warmed.iter().map(|w| w.0).collect::<Vec<_>>(),
        served_ids
    ));
    if discarded_at_checkout > 0 {
        notes.push(format!("checkout discarded {discarded_at_checkout} pooled connections and opened new ones"));
    }
    drop(in_use);
    let _ = tokio::time::timeout(Duration::from_secs(1), pool.disconnect()).await;
    Ok(observations(&spec, idle_started_ms, reuse_started_ms, rows, notes))
}

/// Options for one connection outside the pool (the retry after a failure).
fn pool_free_opts(host: &str, port: u16) -> OptsBuilder {
    OptsBuilder::default().ip_or_hostname(host).tcp_port(port).user(Some("root")).prefer_socket(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(max_idle: Option<u64>) -> ProbeSpec {
        serde_json::from_value(serde_json::json!({
            "service": "mysql", "target": "198.18.0.2:3306", "pool": 4, "keepalive": null, "idle_ms": 7000,
            "heartbeat_ms": null, "pool_max_idle_ms": max_idle, "request_timeout_ms": 2000
        }))
        .unwrap()
    }

    /// Issue 9: the reason follows the measured socket states, not the spec.
    #[test]
    fn the_replacement_reason_follows_the_socket_states() {
        let fin = OwnSockets { established: 0, close_wait: 4, keepalive_on: 0 };
        let why = why_replaced(fin, 4, &spec(Some(3000)));
        assert!(why.contains("4 of the pool's sockets had received the peer's FIN"), "a FIN beats the TTL: {why}");
        let gone = OwnSockets { established: 0, close_wait: 0, keepalive_on: 0 };
        let why = why_replaced(gone, 4, &spec(Some(3000)));
        assert!(
            why.contains("closed 4 of its 4 connections itself")
                && why.contains("configuration: inactive_connection_ttl 3000 ms"),
            "{why}"
        );
        let open = OwnSockets { established: 4, close_wait: 0, keepalive_on: 4 };
        assert!(why_replaced(open, 4, &spec(None)).contains("no socket state"));
    }
}
