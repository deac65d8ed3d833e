//! gRPC in an idle cell: tonic channels, one HTTP/2 connection each, warmed, left idle with
//! the client's own HTTP/2 keepalive, then reused.
//!
//! ```text
//!   tonic Channel j (Endpoint: http2_keep_alive_interval, keep_alive_timeout,
//!                    keep_alive_while_idle) ── ObservingConnector: the probe's own TCP
//!                    socket (keepalive, TCP_USER_TIMEOUT) in an ObservedStream
//!     warm: Replica.Who ─▶ idle (PINGs, when set) ─▶ reuse: Replica.Who ─▶ on failure, a
//!     fresh channel retries once
//! ```
//!
//! tonic owns its connection: when its HTTP/2 keepalive (or a FIN, or an RST) ends the
//! connection while idle, the channel reconnects by itself on the next call. The connector
//! records every connection each channel opened, so the reuse knows whether it was carried by
//! the warmed connection or by a new one, and why the warmed one ended (what its socket saw).
//! A PING is an HTTP/2 frame: through a sidecar it is answered by the sidecar's Envoy, and
//! what lies behind Envoy never sees it.

use super::client::{ClientError, classify, emit_phase, observations, plain_attempt};
use super::grpc::pb::WhoRequest;
use super::grpc::pb::replica_client::ReplicaClient;
use super::spec::ProbeSpec;
use super::stream::ObservedStream;
use crate::model::observation::{Attempt, ConnObservation, Observations, Outcome};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// A connection a channel's connector opened.
type ConnRecord = super::client::OpenedConn;

/// Opens the probe's own sockets for one channel and records each.
#[derive(Clone)]
struct ObservingConnector {
    spec: Arc<ProbeSpec>,
    clock: Instant,
    opened: Arc<Mutex<Vec<ConnRecord>>>,
}

impl tower_service::Service<hyper::Uri> for ObservingConnector {
    type Response = TokioIo<ObservedStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<ObservedStream>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: hyper::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (observed, record) = super::client::open_observed(&this.spec, this.clock).await?;
            this.opened.lock().expect("registry").push(record);
            Ok(TokioIo::new(observed))
        })
    }
}

/// A gRPC error as the app got it: the status code and message (a proxy's local reply says
/// who failed: Envoy's "upstream connect error or disconnect/reset before headers"), and the
/// I/O error beneath, when there is one.
fn client_error(status: &tonic::Status) -> ClientError {
    let text = format!("gRPC {:?}: {}", status.code(), status.message());
    super::client::error_chain(text, std::error::Error::source(status))
}

/// Why the channel's warmed connection did not carry the reuse, from what its socket saw.
fn why_replaced(log: &super::stream::StreamLog, keepalive: Option<super::spec::Http2KeepaliveMs>) -> String {
    let config = keepalive.map(|k| format!("keep_alive_timeout {} ms after a PING", k.timeout_ms));
    super::client::why_replaced(log, "tonic", " and reconnected", config)
}

async fn open_channel(
    spec: &Arc<ProbeSpec>,
    clock: Instant,
    opened: Arc<Mutex<Vec<ConnRecord>>>,
) -> Result<Channel, ClientError> {
    let bad = |text: String| ClientError { timeout: false, io_kind: None, text };
    let authority = spec.authority.clone().unwrap_or_else(|| spec.target.clone());
    let mut endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| bad(format!("endpoint: {e}")))?
        .connect_timeout(Duration::from_millis(spec.request_timeout_ms));
    if let Some(k) = spec.http2_keepalive {
        endpoint = endpoint
            .http2_keep_alive_interval(Duration::from_millis(k.interval_ms))
            .keep_alive_timeout(Duration::from_millis(k.timeout_ms))
            .keep_alive_while_idle(k.while_idle);
    }
    let connector = ObservingConnector { spec: spec.clone(), clock, opened };
    endpoint.connect_with_connector(connector).await.map_err(|e| {
        super::client::error_chain(format!("connect to {}: {e}", spec.target), std::error::Error::source(&e))
    })
}

/// One call, bounded by the request timeout.
async fn call(channel: Channel, seq: u64, timeout: Duration) -> Result<(), ClientError> {
    let mut client = ReplicaClient::new(channel);
    let request = tonic::Request::new(WhoRequest { client: "probe".into(), seq });
    match tokio::time::timeout(timeout, client.who(request)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(client_error(&status)),
        Err(_) => {
            Err(ClientError { timeout: true, io_kind: None, text: "no answer within the request timeout".into() })
        }
    }
}

pub async fn run(spec: ProbeSpec) -> Result<Observations, ClientError> {
    let clock = Instant::now();
    let now = || clock.elapsed().as_millis() as u64;
    let spec = Arc::new(spec);
    let timeout = Duration::from_millis(spec.request_timeout_ms);

    emit_phase("warm", now(), None);
    let mut channels = Vec::with_capacity(spec.pool);
    for id in 0..spec.pool {
        let opened = Arc::new(Mutex::new(Vec::new()));
        let channel = open_channel(&spec, clock, opened.clone()).await?;
        call(channel.clone(), id as u64, timeout).await?;
        channels.push((channel, opened));
    }

    let idle_started_ms = now();
    emit_phase("idle", idle_started_ms, Some(spec.idle_ms));
    tokio::time::sleep(Duration::from_millis(spec.idle_ms)).await;

    let reuse_started_ms = now();
    emit_phase("reuse", reuse_started_ms, None);
    let before: Vec<_> = channels.iter().map(|(_, o)| o.lock().expect("registry")[0].log.get()).collect();
    let mut reuses = tokio::task::JoinSet::new();
    for (id, (channel, _)) in channels.iter().enumerate() {
        let channel = channel.clone();
        reuses.spawn(async move {
            let at_ms = clock.elapsed().as_millis() as u64;
            let started = Instant::now();
            let r = call(channel, 1000 + id as u64, timeout).await;
            (id, at_ms, started.elapsed().as_millis() as u64, r)
        });
    }
    let mut done = Vec::new();
    while let Some(r) = reuses.join_next().await {
        done.push(r.expect("reuse task"));
    }
    done.sort_by_key(|d| d.0);
    let mut rows = Vec::with_capacity(done.len());
    for (id, at_ms, latency_ms, result) in done {
        let records = channels[id].1.lock().expect("registry").clone();
        let (warmed, carrier) = (&records[0], records.last().expect("a warmed connection"));
        let replaced = (records.len() > 1).then(|| why_replaced(&warmed.log.get(), spec.http2_keepalive));
        let local_addr = Some(carrier.local_addr.clone());
        let reuse = match &result {
            Ok(()) => Attempt { at_ms, latency_ms, outcome: Outcome::Ok, error: None, local_addr },
            Err(e) => Attempt {
                at_ms,
                latency_ms,
                outcome: classify(e, &carrier.log.get()),
                error: Some(e.text.clone()),
                local_addr,
            },
        };
        // After a failure, a fresh channel (so a fresh connection), as an app retrying would get.
        let retry_after_reconnect = if result.is_err() {
            let at_ms = now();
            let started = Instant::now();
            let r = match open_channel(&spec, clock, Arc::new(Mutex::new(Vec::new()))).await {
                Ok(channel) => call(channel, 2000 + id as u64, timeout).await,
                Err(e) => Err(e),
            };
            Some(plain_attempt(at_ms, started.elapsed().as_millis() as u64, r))
        } else {
            None
        };
        let b = &before[id];
        rows.push(ConnObservation {
            id,
            local_addr: warmed.local_addr.clone(),
            opened_ms: warmed.opened_ms,
            last_activity_ms: b.last_activity_ms().unwrap_or(warmed.opened_ms),
            heartbeats: 0,
            heartbeat_failure: None,
            peer_closed_ms: b.eof_ms,
            peer_reset_ms: b.error.as_ref().filter(|e| e.1 == io::ErrorKind::ConnectionReset).map(|e| e.0),
            timed_out_ms: b.error.as_ref().filter(|e| e.1 == io::ErrorKind::TimedOut).map(|e| e.0),
            reconnects: (records.len() as u32 - 1) + u32::from(retry_after_reconnect.is_some()),
            replaced_before_use: replaced,
            reuse,
            retry_after_reconnect,
            keepalive: warmed.keepalive,
        });
    }
    let notes = spec.http2_keepalive.map(|k| {
        vec![format!(
            "configuration: tonic http2_keep_alive_interval {} ms, keep_alive_timeout {} ms, keep_alive_while_idle {}",
            k.interval_ms, k.timeout_ms, k.while_idle
        )]
    });
    Ok(observations(&spec, idle_started_ms, reuse_started_ms, rows, notes.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::stream::StreamLog;

    #[test]
    fn the_replacement_reason_is_what_the_socket_recorded() {
        let rst = StreamLog {
            last_read_ms: Some(10),
            error: Some((4010, io::ErrorKind::ConnectionReset, "reset".into())),
            ..Default::default()
        };
        assert!(why_replaced(&rst, None).contains("ConnectionReset"));
        let closed = StreamLog { last_read_ms: Some(3000), closed_by_client_ms: Some(3500), ..Default::default() };
        let ka = super::super::spec::Http2KeepaliveMs { interval_ms: 1000, timeout_ms: 500, while_idle: true };
        let why = why_replaced(&closed, Some(ka));
        assert!(why.contains("closed it itself") && why.contains("500 ms after its last activity"), "{why}");
        assert!(why.contains("configuration: keep_alive_timeout 500 ms"), "{why}");
    }
}
