//! The probe: a real client pool, warmed, left idle, then reused.
//!
//! ```text
//!   idlelab probe  (stdin: ProbeSpec JSON)
//!     open N connections ─▶ one command each (warm) ─▶ idle (heartbeats if asked)
//!       ─▶ checkout (pool policy) ─▶ one command each (reuse) ─▶ reconnect + retry on failure
//!   stdout: {"phase": …} lines while it runs, then {"observations": {…}}
//! ```
//!
//! The same binary runs inside the local lab's app namespace and as a pod on a cluster.
//! The pool is the probe's own: it never PINGs on checkout unless a mitigation asks for it,
//! because pools that validate on checkout hide exactly the failure the lab reproduces.
//! One module per client library (`redis`, …) implements [`Client`].

pub mod client;
pub mod grpc;
pub mod grpc_idle;
pub mod http;
pub mod idle_watch;
pub mod memcached;
pub mod mysql;
pub mod redis;
pub mod spec;
pub mod stream;

use crate::model::observation::{Attempt, ConnObservation, Observations, Outcome};
use crate::model::service::Service;
use std::future::Future;
use std::io::{self};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stream::{LogHandle, ObservedStream};
use tokio::net::TcpStream;

pub use client::{Client, ClientError, classify};
use client::{configure_socket, emit, emit_phase, observations, plain_attempt};
pub use spec::{KeepaliveSecs, ProbeLine, ProbeSpec};

struct Slot<C: Client> {
    conn: C::Conn,
    /// The socket, for the idle watch (valid while `conn` lives).
    fd: std::os::fd::RawFd,
    log: LogHandle,
    local_addr: String,
    opened_ms: u64,
    keepalive: bool,
}

struct Probe<C: Client> {
    client: C,
    spec: ProbeSpec,
    clock: Instant,
}

impl<C: Client> Probe<C> {
    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.spec.request_timeout_ms)
    }

    fn phase(&self, name: &str, idle_ms: Option<u64>) {
        emit_phase(name, self.now_ms(), idle_ms);
    }

    async fn connect(&self) -> Result<Slot<C>, ClientError> {
        let target = self.spec.target.clone();
        let opened_ms = self.now_ms();
        let tcp = tokio::time::timeout(self.timeout(), TcpStream::connect(&target))
            .await
            .map_err(|_| ClientError { timeout: true, io_kind: None, text: format!("connect to {target} timed out") })?
            .map_err(|e| ClientError {
                timeout: false,
                io_kind: Some(e.kind()),
                text: format!("connect to {target}: {e}"),
            })?;
        let (keepalive, local_addr) = configure_socket(&tcp, &self.spec).map_err(|e| ClientError {
            timeout: false,
            io_kind: Some(e.kind()),
            text: format!("socket options: {e}"),
        })?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
        let (stream, log) = ObservedStream::new(tcp, self.clock);
        let conn = tokio::time::timeout(self.timeout(), self.client.handshake(stream))
            .await
            .map_err(|_| ClientError { timeout: true, io_kind: None, text: "handshake timed out".into() })??;
        Ok(Slot { conn, fd, log, local_addr, opened_ms, keepalive })
    }

    /// Run one request with the request timeout, and say how it ended.
    async fn attempt<F, Fut>(&self, log: &LogHandle, local_addr: &str, f: F) -> Attempt
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), ClientError>>,
    {
        let at_ms = self.now_ms();
        let started = Instant::now();
        // A little grace over the library's own response timeout, so its error wins.
        let r = tokio::time::timeout(self.timeout() + Duration::from_millis(250), f()).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let r = r.unwrap_or_else(|_| {
            Err(ClientError { timeout: true, io_kind: None, text: "no answer within the request timeout".into() })
        });
        let local_addr = Some(local_addr.to_string());
        match r {
            Ok(()) => Attempt { at_ms, latency_ms, outcome: Outcome::Ok, error: None, local_addr },
            Err(e) => Attempt { at_ms, latency_ms, outcome: classify(&e, &log.get()), error: Some(e.text), local_addr },
        }
    }
}

/// How much before the end of the idle period the last heartbeat must be due: one due later
/// would coincide with the reuse (it is not an idle-time heartbeat, and whether it goes out
/// before the reuse would be a race). Well under the time scale's `MIN_GAP` (1 s), which
/// keeps every heartbeat that long before any timeout: leaving out a heartbeat due in this
/// last moment leaves no timer time to fire before the reuse.
pub const HEARTBEAT_END_MARGIN_MS: u64 = 250;

/// How many heartbeats each idle connection gets: the k-th is due `k × every_ms` after the
/// idle period began, and is sent when it is due at least [`HEARTBEAT_END_MARGIN_MS`] before
/// the idle period ends (`k × every_ms + margin ≤ idle_ms`). An idle period that is an exact
/// multiple of the interval (70 min of idle, a heartbeat every 35 min) gets no heartbeat at
/// its very end.
pub fn heartbeat_schedule(idle_ms: u64, every_ms: u64) -> u32 {
    if every_ms == 0 {
        return 0;
    }
    let last_due = idle_ms.saturating_sub(HEARTBEAT_END_MARGIN_MS);
    u32::try_from(last_due / every_ms).unwrap_or(u32::MAX)
}

async fn run_with<C: Client>(client: C, spec: ProbeSpec) -> Result<Observations, ClientError> {
    let probe = Arc::new(Probe { client, spec, clock: Instant::now() });
    let slots = probe.warm().await?;
    let idle_started_ms = probe.now_ms();
    let (heartbeats, idle_events) = probe.idle(&slots).await;
    let reuse_started_ms = probe.now_ms();
    probe.phase("reuse", None);
    let mut reuses = tokio::task::JoinSet::new();
    for (id, ((slot, heartbeat), idle_event)) in slots.into_iter().zip(heartbeats).zip(idle_events).enumerate() {
        let probe = probe.clone();
        reuses.spawn(async move { probe.reuse(id, slot, heartbeat, idle_event).await });
    }
    let mut connections = Vec::with_capacity(probe.spec.pool);
    let mut notes = Vec::new();
    while let Some(r) = reuses.join_next().await {
        let (c, n) = r.expect("reuse task")?;
        connections.push(c);
        notes.extend(n);
    }
    notes.sort();
    Ok(observations(&probe.spec, idle_started_ms, reuse_started_ms, connections, notes))
}

/// A connection's heartbeats while idle: how many were sent, and the first that failed.
type Heartbeats = (u32, Option<Attempt>);

impl<C: Client> Probe<C> {
    /// Open the pool, one warm-up command per connection.
    async fn warm(&self) -> Result<Vec<Slot<C>>, ClientError> {
        self.phase("warm", None);
        let mut slots = Vec::with_capacity(self.spec.pool);
        for id in 0..self.spec.pool {
            let mut slot = self.connect().await?;
            self.client.warm(&mut slot.conn, id).await?;
            slots.push(slot);
        }
        Ok(slots)
    }

    /// Leave the pool idle for the spec's idle period, with heartbeats when asked; returns each
    /// connection's heartbeats and what the idle watch saw on its socket (for a library that
    /// does not read its sockets all the time).
    async fn idle(self: &Arc<Self>, slots: &[Slot<C>]) -> (Vec<Heartbeats>, Vec<Option<(u64, idle_watch::IdleEvent)>>) {
        let watch = (!self.client.reads_eagerly())
            .then(|| idle_watch::IdleWatch::start(slots.iter().map(|s| s.fd).collect(), self.clock));
        let idle_start = tokio::time::Instant::now();
        let idle_end = idle_start + Duration::from_millis(self.spec.idle_ms);
        self.phase("idle", Some(self.spec.idle_ms));
        // Heartbeats: one task per connection, PING k at `idle_start + k × interval`, for the k
        // that `heartbeat_schedule` gives: decided from the two numbers, never from a clock, so
        // every run sends the same heartbeats.
        let mut beats = tokio::task::JoinSet::new();
        if let Some(every_ms) = self.spec.heartbeat_ms {
            let count = heartbeat_schedule(self.spec.idle_ms, every_ms);
            let every = Duration::from_millis(every_ms);
            for (id, slot) in slots.iter().enumerate() {
                let (probe, mut conn, log, addr) =
                    (self.clone(), slot.conn.clone(), slot.log.clone(), slot.local_addr.clone());
                beats.spawn(async move {
                    let (mut sent, mut failure) = (0u32, None);
                    for k in 1..=count {
                        tokio::time::sleep_until(idle_start + every * k).await;
                        let a = probe.attempt(&log, &addr, || probe.client.heartbeat(&mut conn)).await;
                        sent += 1;
                        if !a.outcome.is_ok() {
                            failure = Some(a);
                            break;
                        }
                    }
                    (id, sent, failure)
                });
            }
        }
        tokio::time::sleep_until(idle_end).await;
        let mut heartbeats = vec![(0u32, None); slots.len()];
        while let Some(r) = beats.join_next().await {
            let (id, sent, failure) = r.expect("heartbeat task");
            heartbeats[id] = (sent, failure);
        }
        let idle_events = watch.map(|w| w.stop()).unwrap_or_else(|| vec![None; slots.len()]);
        (heartbeats, idle_events)
    }

    /// Checkout: the pool's policy decides whether this connection is used at all (max idle,
    /// max lifetime, test-on-borrow). Returns the connection to use, why the first was
    /// replaced, and the outcome of a test-on-borrow ping.
    async fn checkout(
        &self,
        slot: Slot<C>,
        last_activity_ms: u64,
    ) -> Result<(Slot<C>, Option<String>, Option<Outcome>), ClientError> {
        let mut replaced_before_use = None;
        if let Some(max) = self.spec.pool_max_idle_ms {
            let idle_for = self.now_ms().saturating_sub(last_activity_ms);
            if idle_for > max {
                replaced_before_use = Some(format!("idle {} ms > max idle {} ms", idle_for, max));
            }
        }
        if let Some(max) = self.spec.pool_max_lifetime_ms {
            let age = self.now_ms().saturating_sub(slot.opened_ms);
            if replaced_before_use.is_none() && age > max {
                replaced_before_use = Some(format!("age {} ms > max lifetime {} ms", age, max));
            }
        }
        let mut borrow_ping = None;
        if replaced_before_use.is_none() && self.spec.test_on_borrow {
            let mut conn = slot.conn.clone();
            let ping = self.attempt(&slot.log, &slot.local_addr, || self.client.heartbeat(&mut conn)).await;
            borrow_ping = Some(ping.outcome);
            if !ping.outcome.is_ok() {
                replaced_before_use = Some(format!(
                    "test-on-borrow: the ping failed ({:?}: {})",
                    ping.outcome,
                    ping.error.unwrap_or_default()
                ));
            }
        }
        if replaced_before_use.is_some() {
            drop(slot);
            return Ok((self.connect().await?, replaced_before_use, borrow_ping));
        }
        Ok((slot, None, borrow_ping))
    }

    /// Reuse one pooled connection once: what its socket saw while idle, the checkout, the
    /// request, and a retry on a fresh connection when it failed (the server itself was fine).
    async fn reuse(
        self: Arc<Self>,
        id: usize,
        slot: Slot<C>,
        (heartbeats, heartbeat_failure): Heartbeats,
        idle_event: Option<(u64, idle_watch::IdleEvent)>,
    ) -> Result<(ConnObservation, Vec<String>), ClientError> {
        let before = slot.log.get();
        let last_activity_ms = before.last_activity_ms().unwrap_or(slot.opened_ms);
        // What ended the quiet while idle, and when it arrived: from the stream log for a
        // library that reads eagerly, from the idle watch otherwise.
        let error_at = |kind: io::ErrorKind| before.error.as_ref().filter(|(_, k, _)| *k == kind).map(|(t, _, _)| *t);
        let mut peer_closed_ms = before.eof_ms;
        let mut peer_reset_ms = error_at(io::ErrorKind::ConnectionReset);
        let mut timed_out_ms = error_at(io::ErrorKind::TimedOut);
        let mut socket_closed_ms = None;
        match idle_event {
            Some((t, idle_watch::IdleEvent::PeerFin)) => peer_closed_ms = peer_closed_ms.or(Some(t)),
            Some((t, idle_watch::IdleEvent::SocketClosed)) => socket_closed_ms = Some(t),
            None => {}
        }
        let (local_addr, opened_ms, keepalive) = (slot.local_addr.clone(), slot.opened_ms, slot.keepalive);
        let (slot, replaced_before_use, borrow_ping) = self.checkout(slot, last_activity_ms).await?;
        let log = slot.log.clone();
        let mut conn = slot.conn.clone();
        let reuse = self.attempt(&log, &slot.local_addr, || self.client.request(&mut conn, id)).await;
        // A socket the kernel closed while idle kept its error for the library's next call
        // (the first failure on it): that error says whether an RST or a timeout closed it.
        let mut notes = Vec::new();
        if let Some(t) = socket_closed_ms {
            let first = heartbeat_failure
                .as_ref()
                .map(|a| a.outcome)
                .or(borrow_ping)
                .or(replaced_before_use.is_none().then_some(reuse.outcome));
            match first {
                Some(Outcome::Reset) => peer_reset_ms = peer_reset_ms.or(Some(t)),
                Some(Outcome::TimedOut) => timed_out_ms = timed_out_ms.or(Some(t)),
                _ => notes.push(format!(
                    "connection {id}: its socket was closed without a FIN at {t} ms, while idle (an RST or the kernel's timeout; the next call did not say which)"
                )),
            }
        }
        let retry_after_reconnect = if reuse.outcome.is_ok() {
            None
        } else {
            match self.connect().await {
                Ok(mut fresh) => {
                    let log = fresh.log.clone();
                    let addr = fresh.local_addr.clone();
                    Some(self.attempt(&log, &addr, || self.client.request(&mut fresh.conn, id)).await)
                }
                Err(e) => Some(plain_attempt(self.now_ms(), 0, Err(e))),
            }
        };
        let reconnects = u32::from(replaced_before_use.is_some()) + u32::from(retry_after_reconnect.is_some());
        let observed = ConnObservation {
            id,
            reconnects,
            local_addr,
            opened_ms,
            last_activity_ms,
            heartbeats,
            heartbeat_failure,
            peer_closed_ms,
            peer_reset_ms,
            timed_out_ms,
            replaced_before_use,
            reuse,
            retry_after_reconnect,
            keepalive,
        };
        Ok((observed, notes))
    }
}

/// A field of this process's `/proc/self/status` in KiB (`VmHWM`, `VmRSS`); 0 where it has none.
pub(crate) fn status_kib(field: &str) -> u64 {
    status_kib_of(std::path::Path::new("/proc/self/status"), field)
}

/// A field of a process's `/proc/<pid>/status` file in KiB; 0 where it has none.
pub(crate) fn status_kib_of(status: &std::path::Path, field: &str) -> u64 {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// VmHWM of this process, in KiB.
fn peak_rss_kib() -> u64 {
    status_kib("VmHWM")
}

/// `idlelab probe`: read the spec (a file, or stdin), run, print observations. Returns the
/// process exit code.
pub async fn main(spec_file: Option<std::path::PathBuf>) -> i32 {
    let started = Instant::now();
    let input = match &spec_file {
        Some(f) => std::fs::read_to_string(f).map_err(|e| format!("cannot read the probe spec {}: {e}", f.display())),
        None => {
            let mut s = String::new();
            io::Read::read_to_string(&mut io::stdin(), &mut s)
                .map(|_| s)
                .map_err(|e| format!("cannot read the probe spec from stdin: {e}"))
        }
    };
    let input = match input {
        Ok(i) => i,
        Err(e) => {
            emit(&ProbeLine::Error(e));
            return 2;
        }
    };
    let spec: ProbeSpec = match serde_json::from_str(&input) {
        Ok(s) => s,
        Err(e) => {
            emit(&ProbeLine::Error(format!("bad probe spec: {e}")));
            return 2;
        }
    };
    let result = match spec.service {
        Service::Redis => run_with(redis::RedisClient::new(Duration::from_millis(spec.request_timeout_ms)), spec).await,
        Service::Memcached => run_with(memcached::MemcachedClient, spec).await,
        Service::Mysql => mysql::run(spec).await,
        Service::Http | Service::Https => http::run(spec).await,
        // An idle cell's channels (a balance cell runs `idlelab probe-grpc`).
        Service::Grpc => grpc_idle::run(spec).await,
    };
    match result {
        Ok(mut obs) => {
            obs.finished_ms = started.elapsed().as_millis() as u64;
            obs.peak_rss_kib = peak_rss_kib();
            emit(&ProbeLine::Observations(obs));
            0
        }
        Err(e) => {
            emit(&ProbeLine::Error(format!("probe failed before the reuse phase: {}", e.text)));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_due_at_the_end_of_the_idle_is_not_sent() {
        // Exactly 3 intervals: the third would land on the reuse.
        assert_eq!(heartbeat_schedule(4500, 1500), 2);
        // Rounding put the third 1 ms before the end: still the reuse's moment, not sent.
        assert_eq!(heartbeat_schedule(6007, 2002), 2);
        // Due 250 ms before the end: sent.
        assert_eq!(heartbeat_schedule(6256, 2002), 3);
        assert_eq!(heartbeat_schedule(6255, 2002), 2);
        assert_eq!(heartbeat_schedule(1000, 2000), 0);
        assert_eq!(heartbeat_schedule(200, 0), 0);
    }
}
