//! One client library behind the probe: the [`Client`] trait each module (`redis`, …)
//! implements, its errors, the socket options the spec asks for, and how an attempt's outcome
//! is classified from what the socket saw.

use super::spec::{ProbeLine, ProbeSpec};
use super::stream::{ObservedStream, StreamLog};
use crate::model::observation::{Attempt, ConnObservation, Observations, Outcome};
use std::future::Future;
use std::io::{self, Write};
use std::time::Duration;
use tokio::net::TcpStream;

/// A failed client call, as the library reported it.
#[derive(Debug, Clone)]
pub struct ClientError {
    pub timeout: bool,
    pub io_kind: Option<io::ErrorKind>,
    pub text: String,
}

/// One client library. Its connections are cheap handles (cloned into heartbeat tasks).
pub trait Client: Send + Sync + 'static {
    type Conn: Clone + Send + Sync + 'static;
    fn handshake(&self, stream: ObservedStream) -> impl Future<Output = Result<Self::Conn, ClientError>> + Send;
    /// The first command on a fresh connection.
    fn warm(&self, conn: &mut Self::Conn, id: usize) -> impl Future<Output = Result<(), ClientError>> + Send;
    /// A protocol-level PING (mitigation `app-heartbeat`).
    fn heartbeat(&self, conn: &mut Self::Conn) -> impl Future<Output = Result<(), ClientError>> + Send;
    /// The command sent on reuse.
    fn request(&self, conn: &mut Self::Conn, id: usize) -> impl Future<Output = Result<(), ClientError>> + Send;
    /// Whether the library reads its socket all the time (so the stream log sees a FIN or an
    /// RST as it arrives). When it does not, [`idle_watch`] watches the idle sockets.
    fn reads_eagerly(&self) -> bool;
}

/// A library's error as the app got it: `text`, then each cause beneath it that adds words,
/// with the kind of the I/O error among them (what [`classify`] reads).
pub(crate) fn error_chain(mut text: String, first: Option<&(dyn std::error::Error + 'static)>) -> ClientError {
    let mut io_kind = None;
    let mut src = first;
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            io_kind = Some(io.kind());
        }
        if !text.contains(&s.to_string()) {
            text = format!("{text}: {s}");
        }
        src = s.source();
    }
    ClientError { timeout: false, io_kind, text }
}

/// Why a library that owns its connections did not hand out the warmed one, from what its
/// socket recorded before the reuse, in the library's words: `who` ("tonic"), what it did
/// then (`then`: " and reconnected"), and the setting that closes connections (`config`),
/// quoted as configuration, never as the cause unless the library was seen closing it.
pub(crate) fn why_replaced(log: &StreamLog, who: &str, then: &str, config: Option<String>) -> String {
    let last = log.last_activity_ms().unwrap_or(0);
    if let Some(t) = log.eof_ms {
        return format!(
            "{who} saw the peer's FIN on it at {t} ms ({} ms after its last activity){then}",
            t.saturating_sub(last)
        );
    }
    if let Some((t, kind, text)) = &log.error {
        return format!("{who} saw an error on it at {t} ms ({kind:?}: {text}){then}");
    }
    if let Some(t) = log.closed_by_client_ms {
        let config = config.map(|c| format!("; configuration: {c}")).unwrap_or_default();
        return format!(
            "{who} closed it itself at {t} ms, {} ms after its last activity, with no FIN or error seen on it{config}",
            t.saturating_sub(last)
        );
    }
    format!("{who} opened a new connection instead; this one saw no FIN, error or close")
}

/// A connection the probe opened for a library that owns its pool (hyper-util, tonic): what
/// its socket recorded, and how it was opened.
#[derive(Clone)]
pub(crate) struct OpenedConn {
    pub log: super::stream::LogHandle,
    pub local_addr: String,
    pub opened_ms: u64,
    pub keepalive: bool,
}

/// Open a socket to the spec's target with its options, observed from `clock`'s start.
pub(crate) async fn open_observed(
    spec: &ProbeSpec,
    clock: std::time::Instant,
) -> io::Result<(ObservedStream, OpenedConn)> {
    let opened_ms = clock.elapsed().as_millis() as u64;
    let tcp = TcpStream::connect(&spec.target).await?;
    let (keepalive, local_addr) = configure_socket(&tcp, spec)?;
    let (observed, log) = ObservedStream::new(tcp, clock);
    Ok((observed, OpenedConn { log, local_addr, opened_ms, keepalive }))
}

/// Apply the spec's socket options to a fresh socket; returns (keepalive read back, local address).
pub(crate) fn configure_socket(tcp: &TcpStream, spec: &ProbeSpec) -> io::Result<(bool, String)> {
    let sock = socket2::SockRef::from(tcp);
    if let Some(ka) = spec.keepalive {
        let params = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(ka.time_s))
            .with_interval(Duration::from_secs(ka.interval_s))
            .with_retries(ka.probes);
        sock.set_tcp_keepalive(&params)?;
    }
    if let Some(ms) = spec.tcp_user_timeout_ms {
        sock.set_tcp_user_timeout(Some(Duration::from_millis(ms)))?;
    }
    let _ = tcp.set_nodelay(true);
    Ok((sock.keepalive().unwrap_or(false), tcp.local_addr().map(|a| a.to_string()).unwrap_or_default()))
}

pub(crate) fn emit_phase(name: &str, ms: u64, idle_ms: Option<u64>) {
    emit(&ProbeLine::Phase { name: name.into(), ms, idle_ms });
}

pub(crate) fn emit(line: &ProbeLine) {
    let mut out = io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, line);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// The observations of a finished probe, connections in id order.
pub(crate) fn observations(
    spec: &ProbeSpec,
    idle_started_ms: u64,
    reuse_started_ms: u64,
    mut connections: Vec<ConnObservation>,
    notes: Vec<String>,
) -> Observations {
    connections.sort_by_key(|c| c.id);
    Observations {
        service: spec.service.name().into(),
        target: spec.target.clone(),
        pool: spec.pool,
        idle_started_ms,
        idle_ms: spec.idle_ms,
        reuse_started_ms,
        connections,
        notes,
        balance: None,
        finished_ms: 0,
        peak_rss_kib: 0,
    }
}

/// A request that ran outside the library's own error classification (a retry on a fresh
/// connection): ok, timed out, or failed with its text.
pub(crate) fn plain_attempt(at_ms: u64, latency_ms: u64, result: Result<(), ClientError>) -> Attempt {
    match result {
        Ok(()) => Attempt { at_ms, latency_ms, outcome: Outcome::Ok, error: None, local_addr: None },
        Err(e) => Attempt {
            at_ms,
            latency_ms,
            outcome: if e.timeout { Outcome::NoAnswer } else { Outcome::Error },
            error: Some(e.text),
            local_addr: None,
        },
    }
}

/// How a failed request ended, from the library's error and what the socket saw.
///
/// The socket's own error comes first: a library that reports "timed out" or "connection
/// closed" after its socket got `ETIMEDOUT` or `ECONNRESET` failed because of that error.
pub fn classify(err: &ClientError, log: &StreamLog) -> Outcome {
    fn by_kind(k: io::ErrorKind) -> Option<Outcome> {
        match k {
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => Some(Outcome::Reset),
            io::ErrorKind::BrokenPipe => Some(Outcome::BrokenPipe),
            io::ErrorKind::TimedOut => Some(Outcome::TimedOut),
            io::ErrorKind::UnexpectedEof => Some(Outcome::Eof),
            _ => None,
        }
    }
    if let Some(o) = log.error.as_ref().and_then(|(_, k, _)| by_kind(*k)) {
        return o;
    }
    if err.timeout {
        return Outcome::NoAnswer;
    }
    if log.eof_ms.is_some() {
        return Outcome::Eof;
    }
    err.io_kind.and_then(by_kind).unwrap_or(Outcome::Error)
}
