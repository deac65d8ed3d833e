//! The scenario format: what a scenario file holds once decoded, and where each value is
//! written in it (for errors found after decoding). `scenarios/README.md` documents it.

use crate::hop::Hop;
use crate::mitigation::MitigationSpec;
use crate::model::duration::Dur;
use crate::model::library::Library;
use crate::model::service::{KeepaliveSetting, Service, TimeScaleSpec};
use crate::model::verdict::Verdict;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use std::fmt;
use std::path::PathBuf;

fn default_pool() -> usize {
    4
}
fn default_request_timeout() -> Dur {
    Dur::secs(2)
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    /// The client library (`probe::library`); default: the Rust one for the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
    /// `library: external`: the program that speaks the probe contract (`scenarios/PROBE.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Pooled connections, each warmed, idled and reused once.
    #[serde(default = "default_pool")]
    pub pool: usize,
    /// `off`, `{time, interval, probes}`, or absent: the library's default (off for the Rust
    /// clients, Go's 15 s / 15 s / 9 for the Go ones).
    #[serde(default)]
    pub keepalive: Option<KeepaliveSetting>,
    /// How long the probe waits for an answer before calling the connection hung. Not scaled.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Dur,
    /// gRPC: client pods, each with its own channels (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<usize>,
    /// gRPC: channels per client (default 1); each is one HTTP/2 connection to its target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    /// gRPC: the client's load-balancing policy, by the library's own name (tonic:
    /// `pick_first`, one connection per channel; `balance_list`, one per replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb: Option<String>,
    /// gRPC: the time between two requests of one channel (default 50ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_interval: Option<Dur>,
    /// gRPC (tonic): an HTTP/2 PING on each connection this often (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_keep_alive_interval: Option<Dur>,
    /// gRPC (tonic): how long to wait for a PING's ACK before the connection is dead (default 20s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive_timeout: Option<Dur>,
    /// gRPC (tonic): PING also while no call is open (default true: a pooled channel is idle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive_while_idle: Option<bool>,
}

impl Default for ClientSpec {
    fn default() -> Self {
        ClientSpec {
            library: None,
            command: None,
            pool: default_pool(),
            keepalive: None,
            request_timeout: default_request_timeout(),
            clients: None,
            channels: None,
            lb: None,
            request_interval: None,
            http2_keep_alive_interval: None,
            keep_alive_timeout: None,
            keep_alive_while_idle: None,
        }
    }
}

/// `server: {idle_timeout: 8h}`: the server's own idle timeout (redis `timeout`, MariaDB
/// `wait_timeout`, memcached `-o idle_timeout`); `0s` = off. Default: the server's own
/// default (redis off, MariaDB 8 h, memcached off), so it never hides or causes a failure
/// by accident.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    #[serde(default)]
    pub idle_timeout: Option<Dur>,
    /// A gRPC balance run's replicas: `tonic` (default, `idlelab serve-grpc`) or `grpc-go`
    /// (the Go probe's `serve-grpc`, which has MaxConnectionAgeGrace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
}

/// Something that happens during a gRPC balance run.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum EventSpec {
    /// `scale: {at: 10s, replicas: 6}`: the Deployment scales to `replicas` at `at`.
    Scale { at: Dur, replicas: u32 },
}

/// One cell: a mitigation and the verdict it is expected to give.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellSpec {
    pub mitigation: Spanned<MitigationSpec>,
    pub expect: Verdict,
    /// One line on why this verdict is expected; reports show it.
    #[serde(default)]
    pub why: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub summary: String,
    pub service: Service,
    #[serde(default)]
    pub client: ClientSpec,
    /// The server's own settings that could end an idle connection, made explicit.
    #[serde(default)]
    pub server: ServerSpec,
    /// Hops from the app to the server, in order; empty means a direct connection.
    #[serde(default)]
    pub path: Vec<Hop>,
    /// How long the pool sits idle, in real-world time (not for `service: grpc`).
    #[serde(default)]
    pub idle: Dur,
    /// gRPC: the server's replicas when the run starts.
    #[serde(default)]
    pub replicas: Option<u32>,
    /// gRPC: how long the clients send requests, in real time (a balance run is not scaled).
    #[serde(default)]
    pub duration: Option<Dur>,
    /// gRPC: scale events during the run.
    #[serde(default)]
    pub events: Vec<EventSpec>,
    /// gRPC: the balance verdict's threshold (default `{max_cv: 0.3}`).
    #[serde(default)]
    pub balance: Option<crate::model::balance::BalanceThreshold>,
    #[serde(default)]
    pub time_scale: TimeScaleSpec,
    /// The releases `idlelab run` and `try` use in the local lab unless `--envoy`/`--istio`
    /// name others: the ones the team's cluster runs.
    #[serde(default)]
    pub versions: VersionsSpec,
    pub cells: Vec<CellSpec>,
    /// Where the scenario came from (set by `load`).
    #[serde(skip)]
    pub source: PathBuf,
    /// Where the values `validate` checks are written (set by `parse`).
    #[serde(skip)]
    pub positions: Positions,
}

/// `versions:` of a scenario: releases as `--envoy` and `--istio` take them (one, or several
/// separated by commas), e.g. `{envoy: 1.38.3, istio: "1.30"}`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionsSpec {
    #[serde(default)]
    pub envoy: Option<String>,
    #[serde(default)]
    pub istio: Option<String>,
}

/// Where a scenario's values are written in its file, for errors found after decoding
/// (an unknown library, a hop out of place): `file:line:column` like a syntax error.
#[derive(Clone, Debug, Default)]
pub struct Positions {
    pub name: Option<serde_saphyr::Location>,
    pub service: Option<serde_saphyr::Location>,
    pub client: Option<serde_saphyr::Location>,
    pub library: Option<serde_saphyr::Location>,
    pub command: Option<serde_saphyr::Location>,
    pub pool: Option<serde_saphyr::Location>,
    pub server_idle_timeout: Option<serde_saphyr::Location>,
    pub server_library: Option<serde_saphyr::Location>,
    pub path: Option<serde_saphyr::Location>,
    /// Each hop of `path`.
    pub hops: Vec<serde_saphyr::Location>,
    pub cells: Option<serde_saphyr::Location>,
    pub idle: Option<serde_saphyr::Location>,
    pub replicas: Option<serde_saphyr::Location>,
    pub duration: Option<serde_saphyr::Location>,
    /// Each event of `events`.
    pub events: Vec<serde_saphyr::Location>,
    pub lb: Option<serde_saphyr::Location>,
    pub versions_envoy: Option<serde_saphyr::Location>,
    pub versions_istio: Option<serde_saphyr::Location>,
}

impl Positions {
    /// A second, lenient decode of the same text that keeps only where each value is.
    pub(super) fn of(text: &str) -> Positions {
        use serde::de::IgnoredAny;
        type At = Option<Spanned<IgnoredAny>>;
        #[derive(Deserialize)]
        struct Client {
            #[serde(default)]
            library: At,
            #[serde(default)]
            command: At,
            #[serde(default)]
            pool: At,
            #[serde(default)]
            lb: At,
        }
        #[derive(Deserialize)]
        struct Server {
            #[serde(default)]
            idle_timeout: At,
            #[serde(default)]
            library: At,
        }
        #[derive(Deserialize)]
        struct Versions {
            #[serde(default)]
            envoy: At,
            #[serde(default)]
            istio: At,
        }
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            name: At,
            #[serde(default)]
            service: At,
            #[serde(default)]
            client: Option<Spanned<Client>>,
            #[serde(default)]
            server: Option<Server>,
            #[serde(default)]
            path: Option<Spanned<Vec<Spanned<IgnoredAny>>>>,
            #[serde(default)]
            cells: At,
            #[serde(default)]
            idle: At,
            #[serde(default)]
            replicas: At,
            #[serde(default)]
            duration: At,
            #[serde(default)]
            events: Option<Vec<Spanned<IgnoredAny>>>,
            #[serde(default)]
            versions: Option<Versions>,
        }
        let at = |a: &At| a.as_ref().map(|s| s.referenced);
        let Ok(doc) = serde_saphyr::from_str::<Doc>(text) else { return Positions::default() };
        let client = doc.client.as_ref();
        Positions {
            name: at(&doc.name),
            service: at(&doc.service),
            client: client.map(|c| c.referenced),
            library: client.and_then(|c| at(&c.value.library)),
            command: client.and_then(|c| at(&c.value.command)),
            pool: client.and_then(|c| at(&c.value.pool)),
            server_idle_timeout: doc.server.as_ref().and_then(|s| at(&s.idle_timeout)),
            server_library: doc.server.as_ref().and_then(|s| at(&s.library)),
            path: doc.path.as_ref().map(|p| p.referenced),
            hops: doc.path.map(|p| p.value.iter().map(|h| h.referenced).collect()).unwrap_or_default(),
            cells: at(&doc.cells),
            idle: at(&doc.idle),
            replicas: at(&doc.replicas),
            duration: at(&doc.duration),
            events: doc.events.map(|e| e.iter().map(|x| x.referenced).collect()).unwrap_or_default(),
            lb: client.and_then(|c| at(&c.value.lb)),
            versions_envoy: doc.versions.as_ref().and_then(|v| at(&v.envoy)),
            versions_istio: doc.versions.as_ref().and_then(|v| at(&v.istio)),
        }
    }

    pub(super) fn hop(&self, i: usize) -> Option<serde_saphyr::Location> {
        self.hops.get(i).copied().or(self.path)
    }
}

/// A scenario file that cannot be used, with where and why.
#[derive(Debug)]
pub struct ScenarioError {
    pub file: PathBuf,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ScenarioError {}
impl Scenario {
    /// The client library: the named one (which must speak the service), else the service's
    /// default; `client.command` alone means `external`. Err: (message, hint).
    pub fn library(&self) -> Result<Library, (String, Option<String>)> {
        let names = || crate::model::library::ALL.iter().map(|l| l.name()).collect::<Vec<_>>().join(", ");
        let library = match (&self.client.library, &self.client.command) {
            (None, Some(_)) => Library::External,
            (None, None) => Library::default_for(self.service),
            (Some(name), _) => Library::parse(name).ok_or_else(|| {
                (format!("client.library `{name}` is not one the lab knows"), Some(format!("one of: {}", names())))
            })?,
        };
        if !library.speaks(self.service) {
            let fitting: Vec<&str> =
                crate::model::library::ALL.iter().filter(|l| l.speaks(self.service)).map(|l| l.name()).collect();
            return Err((
                format!("client.library `{}` does not speak {}", library.name(), self.service.name()),
                Some(format!("for {}: {}", self.service.name(), fitting.join(", "))),
            ));
        }
        Ok(library)
    }

    /// The knobs every cell starts from, before its mitigation.
    pub fn base_knobs(&self) -> crate::config::CellConfig {
        let library = self.library().unwrap_or(Library::default_for(self.service));
        crate::config::CellConfig {
            service: self.service,
            client: crate::config::ClientConfig {
                library,
                command: self.client.command.clone(),
                command_dir: self.source.parent().map(std::path::Path::to_path_buf),
                pool: self.client.pool,
                keepalive: match &self.client.keepalive {
                    Some(k) => k.0,
                    None => library.default_keepalive(),
                },
                pool_max_idle: library.default_pool_max_idle(),
                heartbeat: None,
                tcp_user_timeout: None,
                test_on_borrow: false,
                pool_max_lifetime: None,
                request_timeout: self.client.request_timeout,
                http2_keepalive: self.client.http2_keep_alive_interval.map(|interval| {
                    crate::model::service::Http2Keepalive {
                        interval,
                        timeout: self.client.keep_alive_timeout.unwrap_or(Dur::secs(20)),
                        while_idle: self.client.keep_alive_while_idle.unwrap_or(true),
                    }
                }),
            },
            server_idle_timeout: self.server.idle_timeout.unwrap_or(self.service.default_server_idle_timeout()),
            path: self.path.clone(),
            idle: self.idle,
            // A gRPC scenario with `replicas` is a balance run; without, an idle cell like any other.
            grpc: (self.service == Service::Grpc && self.replicas.is_some()).then(|| crate::config::GrpcConfig {
                replicas: self.replicas.unwrap_or(1),
                clients: self.client.clients.unwrap_or(3),
                channels: self.client.channels.unwrap_or(1),
                lb: self
                    .client
                    .lb
                    .as_deref()
                    .and_then(|l| crate::model::balance::GrpcLb::parse(l, library).ok())
                    .unwrap_or(crate::model::balance::GrpcLb::PickFirst),
                headless: false,
                duration: self.duration.unwrap_or_default(),
                request_interval: self.client.request_interval.unwrap_or(Dur(std::time::Duration::from_millis(50))),
                scale: self.events.iter().map(|EventSpec::Scale { at, replicas }| (*at, *replicas)).collect(),
                max_connection_age: None,
                max_connection_age_grace: None,
                server_library: self
                    .server
                    .library
                    .as_deref()
                    .and_then(Library::parse)
                    .filter(|l| matches!(l, Library::Tonic | Library::GrpcGo))
                    .unwrap_or(Library::Tonic),
                threshold: self.balance.unwrap_or_default(),
            }),
            envoy_timing: Default::default(),
        }
    }
}
