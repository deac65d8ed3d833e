//! The gRPC probe: a client that calls `Who` on the lab's replicas and records which replica
//! answered each call, to show how gRPC's long-lived HTTP/2 connections spread (or do not
//! spread) over replicas.
//!
//! ```text
//!   idlelab probe-grpc (stdin: GrpcProbeSpec JSON)
//!     pick_first:   channel 0 ─HTTP/2─▶ targets[0] (a ClusterIP) ─▶ kube-proxy picks one replica per connection
//!                   channel 1 ─HTTP/2─▶ targets[0] ──────────────▶ …
//!     balance_list: channel i ─HTTP/2─▶ each of targets (the replicas' own addresses); a call goes to one
//!   each channel: Who{client, seq} every interval_ms until duration_ms ─▶ GrpcRequest{replica | code}
//!   stdout: one GrpcProbeReport JSON line
//! ```
//!
//! The replicas (`idlelab serve-grpc`, [`crate::local::grpc_replica`]) count what they serve;
//! the lab lines their counts up with these requests by `unix_ms`.

/// The messages, client and server generated from `proto/replica.proto` by the build script.
pub mod pb {
    tonic::include_proto!("idlelab.replica.v1");
}

use anyhow::{Context, Result};
use pb::WhoRequest;
use pb::replica_client::ReplicaClient;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::time::MissedTickBehavior;
use tonic::transport::{Channel, Endpoint};

/// What the gRPC probe does.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct GrpcProbeSpec {
    /// Sent in each call and echoed in the report: which client this is.
    pub client: String,
    /// Where to connect, as `host:port`: one address for [`GrpcLb::PickFirst`] (a ClusterIP, or
    /// its Service's name: a name is resolved when the channel connects), the replicas for
    /// [`GrpcLb::BalanceList`] (each target's every address, resolved once at start: a
    /// headless Service's name stands for the replicas Ready then).
    pub targets: Vec<String>,
    pub lb: GrpcLb,
    /// How many channels, each calling on its own.
    pub channels: usize,
    /// How long the channels call, from when they are all open.
    pub duration_ms: u64,
    /// The time between a channel's calls.
    pub interval_ms: u64,
    /// A call's deadline (sent as grpc-timeout and enforced here); also the connect timeout.
    pub request_timeout_ms: u64,
}

impl GrpcProbeSpec {
    /// Client `client`'s spec in a balance cell: the cell's channels, policy and timing, and
    /// the targets its backend gives it.
    pub fn for_client(knobs: &crate::config::CellConfig, client: String, targets: Vec<String>) -> Self {
        let grpc = knobs.grpc.as_ref().expect("a gRPC balance cell");
        GrpcProbeSpec {
            client,
            targets,
            lb: grpc.lb,
            channels: grpc.channels,
            duration_ms: grpc.duration.0.as_millis() as u64,
            interval_ms: grpc.request_interval.0.as_millis() as u64,
            request_timeout_ms: knobs.client.request_timeout.0.as_millis() as u64,
        }
    }
}

/// How a channel spreads its calls (the scenario's `client.lb`).
pub use crate::model::balance::GrpcLb;

/// One call of the probe.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct GrpcRequest {
    /// Wall clock (ms since the Unix epoch) when the call was sent, to line up with the
    /// replicas' counts.
    pub unix_ms: u64,
    /// The channel that made the call (0-based).
    pub channel: usize,
    /// The replica that answered; None when the call failed.
    pub replica: Option<u32>,
    pub latency_ms: u64,
    /// The gRPC status code of a failed call, by name (`Unavailable`, `DeadlineExceeded`, …).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<String>,
    /// The status message of a failed call.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message: Option<String>,
}

/// What the gRPC probe prints.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct GrpcProbeReport {
    pub client: String,
    /// Every call of every channel, sorted by `unix_ms`.
    pub requests: Vec<GrpcRequest>,
    /// The probe's peak resident memory (VmHWM, KiB), read at its end.
    #[serde(default)]
    pub peak_rss_kib: u64,
}

/// Open the channels, let each call every `interval_ms` for `duration_ms`, and collect the
/// calls. A channel that cannot connect (pick_first) fails the run, naming its target.
pub async fn run(spec: &GrpcProbeSpec) -> Result<GrpcProbeReport> {
    anyhow::ensure!(!spec.targets.is_empty(), "a gRPC probe needs at least one target");
    anyhow::ensure!(spec.interval_ms > 0, "a gRPC probe's interval_ms must be above 0");
    let timeout = Duration::from_millis(spec.request_timeout_ms);
    let mut channels = Vec::with_capacity(spec.channels);
    for index in 0..spec.channels {
        channels.push(open_channel(spec, index, timeout).await?);
    }
    let until = Instant::now() + Duration::from_millis(spec.duration_ms);
    let calls = channels.into_iter().enumerate().map(|(index, channel)| call_loop(spec, index, channel, until));
    let mut requests: Vec<GrpcRequest> = futures_util::future::join_all(calls).await.into_iter().flatten().collect();
    requests.sort_by_key(|r| r.unix_ms);
    Ok(GrpcProbeReport { client: spec.client.clone(), requests, peak_rss_kib: super::status_kib("VmHWM") })
}

/// The `probe-grpc` subcommand: a [`GrpcProbeSpec`] as JSON on stdin, the report back.
pub async fn run_stdin() -> Result<GrpcProbeReport> {
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input).context("read the gRPC probe spec from stdin")?;
    let spec: GrpcProbeSpec = serde_json::from_str(&input).context("bad gRPC probe spec")?;
    run(&spec).await
}

fn endpoint(target: &str, timeout: Duration) -> Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("http://{target}"))?.connect_timeout(timeout))
}

async fn open_channel(spec: &GrpcProbeSpec, index: usize, timeout: Duration) -> Result<Channel> {
    match spec.lb {
        GrpcLb::PickFirst => {
            let target = &spec.targets[0];
            let channel = endpoint(target, timeout)?
                .connect()
                .await
                .with_context(|| format!("gRPC channel {index}: connect to {target}"))?;
            tracing::debug!(index, %target, "gRPC channel connected");
            Ok(channel)
        }
        GrpcLb::BalanceList => {
            let addrs = resolve_all(&spec.targets).await?;
            let endpoints = addrs.iter().map(|a| endpoint(&a.to_string(), timeout)).collect::<Result<Vec<_>>>()?;
            tracing::debug!(index, ?addrs, "gRPC channel balances over");
            Ok(Channel::balance_list(endpoints.into_iter()))
        }
        GrpcLb::RoundRobin => {
            anyhow::bail!("`round_robin` is grpc-go's (the Go probe); tonic balances with `balance_list`")
        }
    }
}

/// Every address of every target (an address stands for itself, a name for its records), in
/// order, each once.
async fn resolve_all(targets: &[String]) -> Result<Vec<SocketAddr>> {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for t in targets {
        let found = tokio::net::lookup_host(t.as_str()).await.with_context(|| format!("resolve {t}"))?;
        for a in found {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
    }
    anyhow::ensure!(!addrs.is_empty(), "{} resolved to no address", targets.join(", "));
    Ok(addrs)
}

/// One channel's calls until `until`, each bounded by `request_timeout_ms`.
async fn call_loop(spec: &GrpcProbeSpec, index: usize, channel: Channel, until: Instant) -> Vec<GrpcRequest> {
    let timeout = Duration::from_millis(spec.request_timeout_ms);
    let mut client = ReplicaClient::new(channel);
    let mut ticks = tokio::time::interval(Duration::from_millis(spec.interval_ms));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut requests = Vec::new();
    for seq in 0.. {
        ticks.tick().await;
        if Instant::now() >= until {
            break;
        }
        let mut request = tonic::Request::new(WhoRequest { client: spec.client.clone(), seq });
        // The header tells the replica; the timer below also covers a connection that hangs.
        request.set_timeout(timeout);
        let unix_ms = unix_ms();
        let sent = Instant::now();
        let answer = tokio::time::timeout(timeout, client.who(request)).await;
        let latency_ms = sent.elapsed().as_millis() as u64;
        let (replica, code, message) = match answer {
            Ok(Ok(reply)) => (Some(reply.into_inner().replica), None, None),
            Ok(Err(status)) => (None, Some(format!("{:?}", status.code())), Some(status.message().to_string())),
            Err(_) => (
                None,
                Some(format!("{:?}", tonic::Code::DeadlineExceeded)),
                Some(format!("no answer within {} ms", spec.request_timeout_ms)),
            ),
        };
        if let Some(code) = &code {
            tracing::debug!(index, seq, code, message = message.as_deref().unwrap_or(""), "gRPC call failed");
        }
        requests.push(GrpcRequest { unix_ms, channel: index, replica, latency_ms, code, message });
    }
    requests
}

/// Milliseconds since the Unix epoch, by the wall clock: the probe's and the replicas' common time.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::grpc_replica::read_counts;
    use crate::local::grpc_replica::tests::start_replica;
    use std::collections::BTreeSet;

    fn spec(client: &str, targets: Vec<SocketAddr>, lb: GrpcLb) -> GrpcProbeSpec {
        GrpcProbeSpec {
            client: client.into(),
            targets: targets.iter().map(SocketAddr::to_string).collect(),
            lb,
            channels: 2,
            duration_ms: 1000,
            interval_ms: 50,
            request_timeout_ms: 1000,
        }
    }

    /// The replicas each request of `channel` reached.
    fn replicas_of(report: &GrpcProbeReport, channel: usize) -> BTreeSet<Option<u32>> {
        report.requests.iter().filter(|r| r.channel == channel).map(|r| r.replica).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pick_first_stays_on_one_replica_and_balance_list_reaches_both() {
        let dir = tempfile::tempdir().unwrap();
        let counts = [dir.path().join("r0.jsonl"), dir.path().join("r1.jsonl")];
        let r0 = start_replica(0, counts[0].clone()).await;
        let r1 = start_replica(1, counts[1].clone()).await;
        let targets = vec![r0.addr, r1.addr];

        // Both probes at once, so the test takes one duration.
        let pick_first = spec("pick", targets.clone(), GrpcLb::PickFirst);
        let balance = spec("balance", targets, GrpcLb::BalanceList);
        let (pick_first, balance) = tokio::join!(run(&pick_first), run(&balance));
        let (pick_first, balance) = (pick_first.unwrap(), balance.unwrap());

        for report in [&pick_first, &balance] {
            let failed: Vec<_> = report.requests.iter().filter(|r| r.replica.is_none()).collect();
            assert!(failed.is_empty(), "{}: failed calls {failed:?}", report.client);
            assert!(report.requests.windows(2).all(|w| w[0].unix_ms <= w[1].unix_ms), "sorted by unix_ms");
            for channel in 0..2 {
                // 1 s at 50 ms is 20 calls; a loaded machine may delay a few ticks.
                let calls = report.requests.iter().filter(|r| r.channel == channel).count();
                assert!((10..=21).contains(&calls), "{}: channel {channel} made {calls} calls", report.client);
            }
        }
        // pick_first uses targets[0] only: replica 0, for every call of both channels.
        for channel in 0..2 {
            assert_eq!(replicas_of(&pick_first, channel), BTreeSet::from([Some(0)]), "channel {channel}");
        }
        let balanced: BTreeSet<_> = balance.requests.iter().map(|r| r.replica).collect();
        assert_eq!(balanced, BTreeSet::from([Some(0), Some(1)]));

        // Each replica's last count is every call the probes saw it answer.
        for (id, replica) in [r0, r1].into_iter().enumerate() {
            replica.stop.send(()).unwrap();
            replica.task.await.unwrap().unwrap();
            let answered = [&pick_first, &balance]
                .iter()
                .flat_map(|r| &r.requests)
                .filter(|r| r.replica == Some(id as u32))
                .count() as u64;
            let last = read_counts(&counts[id]).unwrap().pop().expect("a count line");
            assert_eq!((last.replica, last.served), (id as u32, answered));
            assert!(last.served > 0);
        }
    }

    #[tokio::test]
    async fn a_channel_that_cannot_connect_names_its_target() {
        // A port nobody listens on: bound, then closed.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let err = run(&spec("refused", vec![closed], GrpcLb::PickFirst)).await.unwrap_err();
        assert!(format!("{err:#}").contains(&closed.to_string()), "{err:#}");
    }

    /// balance_list's list: a name stands for every address it resolves to (a headless
    /// Service's replicas), an address for itself, each once, in order.
    #[tokio::test]
    async fn a_balance_list_resolves_names_to_every_address_once() {
        let targets = ["127.0.0.1:50051", "localhost:50051", "127.0.0.1:50051"].map(String::from);
        let addrs = resolve_all(&targets).await.unwrap();
        let local: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        assert_eq!(addrs[0], local);
        assert_eq!(addrs.iter().filter(|a| **a == local).count(), 1, "{addrs:?}");
        let err = resolve_all(&["no-port".to_string()]).await.unwrap_err();
        assert!(format!("{err:#}").contains("resolve no-port"), "{err:#}");
    }

    #[test]
    fn a_spec_reads_from_json_and_a_success_omits_code_and_message() {
        let spec: GrpcProbeSpec = serde_json::from_str(
            r#"{"client":"c","targets":["10.0.0.1:50051"],"lb":"balance_list","channels":1,
                "duration_ms":1,"interval_ms":1,"request_timeout_ms":1}"#,
        )
        .unwrap();
        assert_eq!(spec.lb, GrpcLb::BalanceList);
        let ok = GrpcRequest { unix_ms: 1, channel: 0, replica: Some(2), latency_ms: 3, code: None, message: None };
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#"{"unix_ms":1,"channel":0,"replica":2,"latency_ms":3}"#);
    }
}
