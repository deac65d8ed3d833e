//! HTTP(S) through hyper-util's pooled client: the library owns the pool.
//!
//! ```text
//!   hyper-util Client (pool_max_idle_per_host N, retry_canceled_requests(false))
//!     └─ ObservingConnector: TCP socket the probe opens (keepalive, TCP_USER_TIMEOUT),
//!        wrapped in ObservedStream, then TLS (rustls, trusting the run's CA) for https
//! ```
//!
//! `retry_canceled_requests` is off: its default retries a request whose pooled connection
//! turned out closed, which hides exactly the race the lab reproduces. hyper-util discards a
//! pooled connection it already saw closed (a FIN while idle) at checkout and opens another,
//! so an idle close shows up as `recovered`, while a flow a middlebox forgot looks healthy
//! until the request meets the RST.
//!
//! The connector numbers every connection it opens, and hyper-util hands the number back on
//! each response and error: the reuse sends `pool` requests at once behind a gate
//! ([`ReuseGate`]: no connection delivers an answer until each request has one of its own) and
//! knows which socket carried each.

use super::client::{ClientError, classify, emit_phase, observations, plain_attempt};
use super::spec::ProbeSpec;
use super::stream::ObservedStream;
use crate::model::observation::{Attempt, ConnObservation, Observations, Outcome};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection the connector opened.
type ConnRecord = super::client::OpenedConn;

enum Stream {
    Plain(ObservedStream),
    Tls(Box<tokio_rustls::client::TlsStream<ObservedStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, data),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What hyper-util's pool holds: the stream, as hyper's I/O traits, the number the connector
/// gave it (its index in the connector's registry), and the reuse gate.
pub struct PooledIo(TokioIo<Stream>, usize, Arc<ReuseGate>);

/// Every pooled connection out of the pool once, whatever the timing: while the reuse's
/// requests take their connections, no connection delivers an answer (or an error), so none
/// can go back to the pool and carry a second request. The gate opens when each request has
/// written to a connection of its own or ended without one. A request that got no connection
/// cannot hold the others: the gate also opens after the request timeout.
#[derive(Default)]
pub struct ReuseGate {
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    /// Requests still to take a connection; 0 = open.
    need: usize,
    written: std::collections::BTreeSet<usize>,
    ended_without: usize,
    wakers: Vec<std::task::Waker>,
}

impl GateState {
    fn check(&mut self) {
        if self.need > 0 && self.written.len() + self.ended_without >= self.need {
            self.open();
        }
    }
    fn open(&mut self) {
        self.need = 0;
        self.wakers.drain(..).for_each(|w| w.wake());
    }
}

impl ReuseGate {
    fn arm(&self, need: usize) {
        let mut st = self.state.lock().expect("gate");
        *st = GateState { need, ..Default::default() };
    }
    fn wrote(&self, conn: usize) {
        let mut st = self.state.lock().expect("gate");
        if st.need > 0 {
            st.written.insert(conn);
            st.check();
        }
    }
    /// A request ended; `carrier` is the connection it used, if any.
    fn ended(&self, carrier: Option<usize>) {
        let mut st = self.state.lock().expect("gate");
        if st.need > 0 && carrier.is_none_or(|c| !st.written.contains(&c)) {
            st.ended_without += 1;
            st.check();
        }
    }
    fn open(&self) {
        self.state.lock().expect("gate").open();
    }
    /// Ready when open; otherwise the task waits for it.
    fn poll_open(&self, cx: &Context<'_>) -> Poll<()> {
        let mut st = self.state.lock().expect("gate");
        if st.need == 0 {
            return Poll::Ready(());
        }
        st.wakers.push(cx.waker().clone());
        Poll::Pending
    }
}

/// A connection's index in the connector's registry. hyper-util hands it back on the
/// response (its extensions) and on an error (`connect_info`): each request is attributed to
/// the socket that carried it, even when requests run at once.
#[derive(Clone, Copy, Debug)]
struct ConnIndex(usize);

impl Read for PooledIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.2.poll_open(cx).is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.0).poll_read(cx, buf)
    }
}

impl Write for PooledIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.0).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.2.wrote(this.1);
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl Connection for PooledIo {
    fn connected(&self) -> Connected {
        Connected::new().extra(ConnIndex(self.1))
    }
}

#[derive(Clone)]
struct ObservingConnector {
    spec: Arc<ProbeSpec>,
    clock: Instant,
    tls: Option<tokio_rustls::TlsConnector>,
    opened: Arc<Mutex<Vec<ConnRecord>>>,
    gate: Arc<ReuseGate>,
}

impl tower_service::Service<hyper::Uri> for ObservingConnector {
    type Response = PooledIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PooledIo>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: hyper::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (observed, record) = super::client::open_observed(&this.spec, this.clock).await?;
            let stream = match &this.tls {
                None => Stream::Plain(observed),
                Some(tls) => {
                    let name = rustls::pki_types::ServerName::try_from(crate::certs::SERVER_NAME).expect("valid name");
                    Stream::Tls(Box::new(tls.connect(name, observed).await?))
                }
            };
            let index = {
                let mut opened = this.opened.lock().expect("registry");
                opened.push(record);
                opened.len() - 1
            };
            Ok(PooledIo(TokioIo::new(stream), index, this.gate.clone()))
        })
    }
}

fn tls_connector(ca_pem: &str) -> Result<tokio_rustls::TlsConnector, ClientError> {
    let bad = |text: String| ClientError { timeout: false, io_kind: None, text };
    let mut roots = rustls::RootCertStore::empty();
    let mut reader = io::BufReader::new(ca_pem.as_bytes());
    for cert in rustls_pemfile_certs(&mut reader).map_err(|e| bad(format!("reading the run's CA: {e}")))? {
        roots.add(cert).map_err(|e| bad(format!("adding the run's CA: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// PEM certificates, through rustls' own PEM parser.
fn rustls_pemfile_certs(reader: &mut dyn io::BufRead) -> io::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    let mut text = Vec::new();
    reader.read_to_end(&mut text)?;
    rustls::pki_types::CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))
}

fn client_error(e: &hyper_util::client::legacy::Error) -> ClientError {
    super::client::error_chain(e.to_string(), Some(e))
}

/// An HTTP error status as the app got it: status, who answered (`server` header), body.
fn http_error(head: &hyper::http::response::Parts, body: &[u8]) -> ClientError {
    let server = head.headers.get(hyper::header::SERVER).and_then(|v| v.to_str().ok()).unwrap_or("-");
    let body = String::from_utf8_lossy(body);
    let body: String = body.trim().chars().take(200).collect();
    ClientError {
        timeout: false,
        io_kind: None,
        text: format!("HTTP {} (server: {server}): {body}", head.status.as_u16()),
    }
}

/// Why hyper-util's pool did not hand out a warmed connection, from what its socket recorded
/// before the reuse; the pool's idle timeout is quoted as configuration, never as the cause
/// unless the pool was seen closing the connection itself.
fn why_replaced(log: &super::stream::StreamLog, pool_idle_timeout_ms: Option<u64>) -> String {
    let config = pool_idle_timeout_ms.map(|ms| format!("pool_idle_timeout {ms} ms"));
    super::client::why_replaced(log, "hyper-util's pool", ", dropped it and opened a new one", config)
}

pub async fn run(spec: ProbeSpec) -> Result<Observations, ClientError> {
    let clock = Instant::now();
    let now = || clock.elapsed().as_millis() as u64;
    let spec = Arc::new(spec);
    let tls = match &spec.tls_ca_pem {
        Some(pem) => Some(tls_connector(pem)?),
        None => None,
    };
    let opened = Arc::new(Mutex::new(Vec::<ConnRecord>::new()));
    let gate = Arc::new(ReuseGate::default());
    let connector =
        ObservingConnector { spec: spec.clone(), clock, tls: tls.clone(), opened: opened.clone(), gate: gate.clone() };
    let new_client = || -> Client<ObservingConnector, Empty<Bytes>> {
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(spec.pool)
            .pool_idle_timeout(spec.pool_max_idle_ms.map(Duration::from_millis))
            .pool_timer(TokioTimer::new())
            .retry_canceled_requests(false)
            .build(connector.clone())
    };
    let client = new_client();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let authority = spec.authority.clone().unwrap_or_else(|| crate::certs::SERVER_NAME.to_string());
    let uri = |path: &str| -> hyper::Uri { format!("{scheme}://{authority}{path}").parse().expect("valid URI") };
    let timeout = Duration::from_millis(spec.request_timeout_ms);
    // One GET and the connection that carried it (when hyper-util got as far as one).
    let request = |client: &Client<ObservingConnector, Empty<Bytes>>, path: &'static str| {
        let client = client.clone();
        let req = hyper::Request::get(uri(path)).body(Empty::<Bytes>::new()).expect("valid request");
        async move {
            let carrier = std::sync::Arc::new(Mutex::new(None::<usize>));
            let seen = carrier.clone();
            let r = tokio::time::timeout(timeout, async move {
                let resp = client.request(req).await.map_err(|e| {
                    if let Some(info) = e.connect_info() {
                        let mut ext = hyper::http::Extensions::new();
                        info.get_extras(&mut ext);
                        *seen.lock().expect("carrier") = ext.get::<ConnIndex>().map(|c| c.0);
                    }
                    client_error(&e)
                })?;
                *seen.lock().expect("carrier") = resp.extensions().get::<ConnIndex>().map(|c| c.0);
                let (head, body) = resp.into_parts();
                let body = body.collect().await.map_err(|e| ClientError {
                    timeout: false,
                    io_kind: None,
                    text: format!("reading the response body: {e}"),
                })?;
                // A 5xx is what an app sees when a proxy on the path failed upstream (Envoy's
                // local reply, e.g. 503 "upstream connect error or disconnect/reset before
                // headers"); the lab's server answers only 200.
                if head.status.is_server_error() {
                    return Err(http_error(&head, &body.to_bytes()));
                }
                Ok::<(), ClientError>(())
            })
            .await;
            let r = r.unwrap_or_else(|_| {
                Err(ClientError { timeout: true, io_kind: None, text: "no answer within the request timeout".into() })
            });
            let carrier = *carrier.lock().expect("carrier");
            (r, carrier)
        }
    };

    emit_phase("warm", now(), None);
    let mut warm = tokio::task::JoinSet::new();
    for _ in 0..spec.pool {
        warm.spawn(request(&client, "/warm"));
    }
    while let Some(r) = warm.join_next().await {
        r.expect("warm task").0?;
    }
    let warmed = opened.lock().expect("registry").clone();

    let idle_started_ms = now();
    emit_phase("idle", idle_started_ms, Some(spec.idle_ms));
    tokio::time::sleep(Duration::from_millis(spec.idle_ms)).await;

    let reuse_started_ms = now();
    emit_phase("reuse", reuse_started_ms, None);
    let before: Vec<_> = warmed.iter().map(|c| c.log.get()).collect();
    // Every pooled connection out of the pool once: `pool` requests at once, behind the gate
    // (no answer comes back until each has its connection).
    gate.arm(warmed.len());
    let deadline = {
        let gate = gate.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            gate.open();
        })
    };
    let mut reuses = tokio::task::JoinSet::new();
    for j in 0..warmed.len() {
        let r = request(&client, "/");
        let gate = gate.clone();
        reuses.spawn(async move {
            let at_ms = clock.elapsed().as_millis() as u64;
            let started = Instant::now();
            let (result, carrier) = r.await;
            gate.ended(carrier);
            (j, at_ms, started.elapsed().as_millis() as u64, result, carrier)
        });
    }
    let mut done = Vec::new();
    while let Some(r) = reuses.join_next().await {
        done.push(r.expect("reuse task"));
    }
    deadline.abort();
    gate.open();
    done.sort_by_key(|d| d.0);
    let all = opened.lock().expect("registry").clone();
    let mut unserved: Vec<usize> = (0..warmed.len()).filter(|i| !done.iter().any(|d| d.4 == Some(*i))).collect();
    let mut rows: Vec<ConnObservation> = Vec::new();
    for (j, at_ms, latency_ms, result, carrier) in done {
        let local_addr = carrier.map(|i| all[i].local_addr.clone());
        let reuse = match &result {
            Ok(()) => Attempt { at_ms, latency_ms, outcome: Outcome::Ok, error: None, local_addr },
            Err(e) => {
                let log = carrier.map(|i| all[i].log.get()).unwrap_or_default();
                Attempt { at_ms, latency_ms, outcome: classify(e, &log), error: Some(e.text.clone()), local_addr }
            }
        };
        // Which pooled connection this request stands for: the one that carried it, or (when the
        // pool opened a new one) a warmed connection no request used.
        let (row_conn, replaced) = match carrier {
            Some(i) if i < warmed.len() => (i, None),
            _ => {
                let i = if unserved.is_empty() { j.min(warmed.len() - 1) } else { unserved.remove(0) };
                (i, Some(why_replaced(&warmed[i].log.get(), spec.pool_max_idle_ms)))
            }
        };
        // After a failure, a fresh client (so a fresh connection), as an app retrying would get.
        let retry_after_reconnect = if result.is_err() {
            let at_ms = now();
            let started = Instant::now();
            let (r, _) = request(&new_client(), "/").await;
            let latency_ms = started.elapsed().as_millis() as u64;
            Some(plain_attempt(at_ms, latency_ms, r))
        } else {
            None
        };
        let c = &warmed[row_conn];
        let b = &before[row_conn];
        rows.push(ConnObservation {
            id: row_conn,
            local_addr: c.local_addr.clone(),
            opened_ms: c.opened_ms,
            last_activity_ms: b.last_activity_ms().unwrap_or(c.opened_ms),
            heartbeats: 0,
            heartbeat_failure: None,
            peer_closed_ms: b.eof_ms,
            peer_reset_ms: b.error.as_ref().filter(|e| e.1 == io::ErrorKind::ConnectionReset).map(|e| e.0),
            timed_out_ms: b.error.as_ref().filter(|e| e.1 == io::ErrorKind::TimedOut).map(|e| e.0),
            reconnects: u32::from(replaced.is_some()) + u32::from(retry_after_reconnect.is_some()),
            replaced_before_use: replaced,
            reuse,
            retry_after_reconnect,
            keepalive: c.keepalive,
        });
    }
    Ok(observations(&spec, idle_started_ms, reuse_started_ms, rows, vec![]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::stream::StreamLog;

    /// Issue 9: the reason comes from what the socket recorded; the pool's idle timeout is
    /// configuration, quoted as such, and never the cause unless the pool closed it itself.
    #[test]
    fn the_replacement_reason_is_what_the_socket_recorded() {
        let fin = StreamLog { last_read_ms: Some(10), eof_ms: Some(6010), ..Default::default() };
        let why = why_replaced(&fin, Some(3000));
        assert!(why.contains("FIN") && why.contains("6000 ms after") && !why.contains("configuration"), "{why}");
        let closed = StreamLog { last_read_ms: Some(10), closed_by_client_ms: Some(3020), ..Default::default() };
        let why = why_replaced(&closed, Some(3000));
        assert!(why.contains("closed it itself") && why.contains("configuration: pool_idle_timeout 3000 ms"), "{why}");
        let nothing = why_replaced(&StreamLog::default(), None);
        assert!(nothing.contains("saw no FIN, error or close"), "{nothing}");
    }
}
