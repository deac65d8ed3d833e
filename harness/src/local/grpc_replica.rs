//! The lab's gRPC replica: a tonic server whose one RPC, `Who`, answers with the replica's id
//! and how many calls it has served, so a client can tell which replica each call reached.
//!
//! ```text
//!   idlelab probe-grpc ──HTTP/2──▶ idlelab serve-grpc --replica N --counts FILE
//!                                    Who ─▶ {replica: N, served: k}
//!                                    every 200 ms and on SIGTERM/SIGINT ─▶ a ReplicaCount line in FILE
//! ```
//!
//! The count lines are the server's side of the story: gRPC keeps one HTTP/2 connection per
//! channel, so behind a ClusterIP (connection-level balancing) a replica that came up late can
//! stay idle while another serves every call; the lab lines `served` up with the probe's calls
//! by `unix_ms`. (This file is not named `*_server.rs`: the build script lists those as the
//! local lab's service servers.)

use crate::model::balance::ReplicaCount;
use crate::probe::grpc::pb::replica_server::{Replica, ReplicaServer};
use crate::probe::grpc::pb::{WhoReply, WhoRequest};
use crate::probe::grpc::unix_ms;
use anyhow::{Context, Result};
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::MissedTickBehavior;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// How often the replica appends its count to the counts file.
const COUNT_EVERY: Duration = Duration::from_millis(200);

/// How long a stopping replica waits for its connections to finish their calls (after the
/// GOAWAY of a graceful shutdown) before it exits anyway: well inside a pod's 30 s grace.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// What one replica serves and where it reports.
#[derive(Debug, Clone)]
pub struct ReplicaServe {
    pub listen: SocketAddr,
    /// The id `Who` answers with.
    pub replica: u32,
    /// The JSON-lines file the [`ReplicaCount`]s are appended to.
    pub counts_file: PathBuf,
    /// Close each client connection this long after it opened (tonic sends GOAWAY and lets
    /// the calls in flight finish), so that clients reconnect and can reach new replicas: the
    /// usual gRPC fix for connection-level balancing.
    pub max_connection_age: Option<Duration>,
    /// gRPC's `MAX_CONNECTION_AGE_GRACE` (how long a GOAWAY'd connection's calls may run before
    /// it is closed outright). Tonic 0.14.2 has none: its `max_connection_age` waits for the
    /// calls without limit. [`serve`] refuses a value rather than ignore it, so no scenario
    /// believes it is in effect.
    pub max_connection_age_grace: Option<Duration>,
}

/// The `Who` service of one replica.
struct ReplicaService {
    replica: u32,
    served: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl Replica for ReplicaService {
    async fn who(&self, request: Request<WhoRequest>) -> Result<Response<WhoReply>, Status> {
        let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        let who = request.into_inner();
        tracing::trace!(client = %who.client, seq = who.seq, served, "who");
        Ok(Response::new(WhoReply { replica: self.replica, served }))
    }
}

/// Serve `spec.listen` until SIGTERM or SIGINT, then stop gracefully and write the last count.
pub async fn serve(spec: ReplicaServe) -> Result<()> {
    // The handlers are installed before the port is open, so no early signal kills the process.
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let listener = TcpListener::bind(spec.listen).await.with_context(|| format!("listen on {}", spec.listen))?;
    let stopped = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
    };
    serve_on(listener, spec, stopped).await
}

/// Serve on a listener already bound (tests bind port 0) until `stop` completes; then the
/// server stops gracefully (GOAWAY, the calls in flight finish, at most [`DRAIN_LIMIT`]) and
/// the last count line is written, so it holds every call the replica answered.
pub async fn serve_on(listener: TcpListener, spec: ReplicaServe, stop: impl Future<Output = ()>) -> Result<()> {
    anyhow::ensure!(
        spec.max_connection_age_grace.is_none(),
        "tonic 0.14.2 has no max_connection_age_grace: a replica cannot honour --max-connection-age-grace-ms"
    );
    let served = Arc::new(AtomicU64::new(0));
    let mut counts = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&spec.counts_file)
        .with_context(|| format!("open {}", spec.counts_file.display()))?;
    let mut server = Server::builder();
    if let Some(age) = spec.max_connection_age {
        server = server.max_connection_age(age);
    }
    let local = listener.local_addr().context("the listener's address")?;
    let (shutdown, shut) = tokio::sync::oneshot::channel::<()>();
    let service = ReplicaServer::new(ReplicaService { replica: spec.replica, served: served.clone() });
    let mut serving = tokio::spawn(server.add_service(service).serve_with_incoming_shutdown(
        TcpIncoming::from(listener),
        async move {
            let _ = shut.await;
        },
    ));
    tracing::info!(replica = spec.replica, %local, "gRPC replica serving");

    let write_count = |counts: &mut std::fs::File| -> Result<()> {
        let line = ReplicaCount {
            unix_ms: unix_ms(),
            replica: spec.replica,
            served: served.load(Ordering::Relaxed),
            rss_kib: rss_kib(),
        };
        // One write per line, so a reader never sees half of one.
        let text = serde_json::to_string(&line)? + "\n";
        counts.write_all(text.as_bytes()).with_context(|| format!("append to {}", spec.counts_file.display()))
    };
    let mut ticks = tokio::time::interval(COUNT_EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The line at the start, before anything can win the select below: a replica stopped at
    // once still has its start and its end.
    ticks.tick().await;
    write_count(&mut counts)?;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = ticks.tick() => write_count(&mut counts)?,
            _ = &mut stop => break,
            ended = &mut serving => {
                // The server ends only on shutdown, which has not been asked for: an error.
                ended.context("the gRPC server task")?.context("the gRPC server")?;
                anyhow::bail!("the gRPC server stopped by itself");
            }
        }
    }
    let _ = shutdown.send(());
    match tokio::time::timeout(DRAIN_LIMIT, &mut serving).await {
        Ok(ended) => ended.context("the gRPC server task")?.context("the gRPC server")?,
        Err(_) => {
            tracing::warn!(limit_ms = DRAIN_LIMIT.as_millis() as u64, "connections still open: exiting anyway");
            serving.abort();
        }
    }
    write_count(&mut counts)
}

/// The lines of a counts file, in the order written.
pub fn read_counts(path: &Path) -> Result<Vec<ReplicaCount>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    crate::model::balance::parse_counts(&text, &path.display().to_string())
}

/// VmRSS of this process in KiB; 0 where /proc/self/status has none.
fn rss_kib() -> u64 {
    crate::probe::status_kib("VmRSS")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::probe::grpc::pb::replica_client::ReplicaClient;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    /// A running test replica: its address, the switch that stops it, and its task.
    pub(crate) struct TestReplica {
        pub addr: SocketAddr,
        pub stop: oneshot::Sender<()>,
        pub task: JoinHandle<Result<()>>,
    }

    /// Replica `replica` on an ephemeral port of 127.0.0.1, counting into `counts_file`.
    pub(crate) async fn start_replica(replica: u32, counts_file: PathBuf) -> TestReplica {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind an ephemeral port");
        let addr = listener.local_addr().unwrap();
        let spec = ReplicaServe {
            listen: addr,
            replica,
            counts_file,
            max_connection_age: None,
            max_connection_age_grace: None,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_on(listener, spec, async move {
            let _ = stopped.await;
        }));
        TestReplica { addr, stop, task }
    }

    #[tokio::test]
    async fn the_last_count_holds_every_call_answered() {
        let dir = tempfile::tempdir().unwrap();
        let counts_file = dir.path().join("counts.jsonl");
        let replica = start_replica(7, counts_file.clone()).await;
        let mut client = ReplicaClient::connect(format!("http://{}", replica.addr)).await.unwrap();
        for (seq, expected) in [(0, 1), (1, 2), (2, 3)] {
            let reply = client.who(WhoRequest { client: "test".into(), seq }).await.unwrap().into_inner();
            assert_eq!((reply.replica, reply.served), (7, expected));
        }
        drop(client);
        replica.stop.send(()).unwrap();
        replica.task.await.unwrap().unwrap();

        let counts = read_counts(&counts_file).unwrap();
        // The interval's first tick (at start) and the line written on stop, at least.
        assert!(counts.len() >= 2, "{counts:?}");
        assert!(counts.iter().all(|c| c.replica == 7 && c.rss_kib > 0), "{counts:?}");
        assert!(counts.windows(2).all(|w| w[0].unix_ms <= w[1].unix_ms && w[0].served <= w[1].served));
        assert_eq!(counts.last().unwrap().served, 3);
    }

    #[tokio::test]
    async fn a_grace_is_refused_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let spec = ReplicaServe {
            listen: listener.local_addr().unwrap(),
            replica: 0,
            counts_file: dir.path().join("counts.jsonl"),
            max_connection_age: Some(Duration::from_secs(1)),
            max_connection_age_grace: Some(Duration::from_secs(1)),
        };
        let err = serve_on(listener, spec, std::future::pending()).await.unwrap_err();
        assert!(err.to_string().contains("max_connection_age_grace"), "{err:#}");
    }
}
