//! What the probe is asked to do (`ProbeSpec`) and what it prints (`ProbeLine`): the probe
//! contract every client speaks (`scenarios/PROBE.md`), whichever backend starts it.

use crate::model::observation::Observations;
use crate::model::service::Service;
use serde::{Deserialize, Serialize};

/// TCP keepalive for the probe's sockets, in the kernel's whole seconds.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
pub struct KeepaliveSecs {
    pub time_s: u64,
    pub interval_s: u64,
    pub probes: u32,
}

/// What the probe is asked to do, with durations already scaled.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct ProbeSpec {
    pub service: Service,
    /// The client library to drive (`model::library` names: `redis-rs`, `go-sql-driver`, …).
    #[serde(default)]
    pub library: String,
    /// `ip:port` the app connects to (the server's address; a sidecar captures it).
    pub target: String,
    pub pool: usize,
    pub keepalive: Option<KeepaliveSecs>,
    pub idle_ms: u64,
    pub heartbeat_ms: Option<u64>,
    pub pool_max_idle_ms: Option<u64>,
    #[serde(default)]
    pub tcp_user_timeout_ms: Option<u64>,
    pub request_timeout_ms: u64,
    /// For https: the PEM of the CA the gateway's certificate was issued by.
    #[serde(default)]
    pub tls_ca_pem: Option<String>,
    /// Ping each connection at checkout and replace it when the ping fails.
    #[serde(default)]
    pub test_on_borrow: bool,
    /// Replace a connection older than this at checkout.
    #[serde(default)]
    pub pool_max_lifetime_ms: Option<u64>,
    /// HTTP: the request's authority (Host), as an app names the service
    /// (`http.idlelab.svc.cluster.local:8080`); Istio routes an `http-*` port by it. Default:
    /// the TLS server name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// gRPC: the client's HTTP/2 keepalive (scaled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_keepalive: Option<Http2KeepaliveMs>,
}

/// gRPC's HTTP/2 keepalive as the probe takes it (`model::service::Http2Keepalive`, scaled).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
pub struct Http2KeepaliveMs {
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub while_idle: bool,
}

impl ProbeSpec {
    /// The probe's spec for these (scaled) knobs, connecting to `target`.
    pub fn for_cell(knobs: &crate::config::CellConfig, target: String) -> ProbeSpec {
        let ms = |d: crate::model::duration::Dur| d.0.as_millis() as u64;
        ProbeSpec {
            service: knobs.service,
            library: knobs.client.library.name().to_string(),
            target,
            pool: knobs.client.pool,
            keepalive: knobs.client.keepalive.map(|k| {
                let (time_s, interval_s) = k.whole_seconds();
                KeepaliveSecs { time_s, interval_s, probes: k.probes }
            }),
            idle_ms: ms(knobs.idle),
            heartbeat_ms: knobs.client.heartbeat.map(ms),
            pool_max_idle_ms: knobs.client.pool_max_idle.map(ms),
            tcp_user_timeout_ms: knobs.client.tcp_user_timeout.map(ms),
            request_timeout_ms: ms(knobs.client.request_timeout),
            tls_ca_pem: None,
            test_on_borrow: knobs.client.test_on_borrow,
            pool_max_lifetime_ms: knobs.client.pool_max_lifetime.map(ms),
            authority: None,
            http2_keepalive: knobs.client.http2_keepalive.map(|k| Http2KeepaliveMs {
                interval_ms: ms(k.interval),
                timeout_ms: ms(k.timeout),
                while_idle: k.while_idle,
            }),
        }
    }
}

/// One line of the probe's stdout.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeLine {
    Phase {
        name: String,
        ms: u64,
        #[serde(default)]
        idle_ms: Option<u64>,
    },
    Observations(Observations),
    Error(String),
}
