//! The lab's knobs for one cell: the scenario's settings after its mitigation was applied.
//!
//! Scenario files and mitigations speak in real-world durations; `timescale` turns the
//! same struct into the compressed values the local lab runs with.

use crate::hop::{Hop, Toward};
use crate::model::duration::Dur;
use crate::model::scale::{KnobDuration, Precision, Role};
use crate::model::service::{Keepalive, Service};
use serde::Serialize;

/// Client-side settings: the app's pool and socket.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClientConfig {
    /// The client library the probe drives (its own pool, its own settings).
    pub library: crate::model::library::Library,
    /// For `library: external`: the program that speaks the probe contract, run in the
    /// scenario file's directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip)]
    pub command_dir: Option<std::path::PathBuf>,
    pub pool: usize,
    pub keepalive: Option<Keepalive>,
    /// The pool drops a connection idle longer than this at checkout, before use.
    pub pool_max_idle: Option<Dur>,
    /// The app sends a protocol-level PING on each idle pooled connection at this interval.
    pub heartbeat: Option<Dur>,
    /// `TCP_USER_TIMEOUT` on the app's socket: unacknowledged data fails the socket after this.
    pub tcp_user_timeout: Option<Dur>,
    /// The pool checks a connection with a protocol ping before handing it out.
    pub test_on_borrow: bool,
    /// The pool discards a connection older than this at checkout.
    pub pool_max_lifetime: Option<Dur>,
    /// How long the probe waits for one answer; the lab's patience, not a modelled duration,
    /// so it is not scaled.
    pub request_timeout: Dur,
    /// gRPC: the client's HTTP/2 keepalive (tonic's settings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2_keepalive: Option<crate::model::service::Http2Keepalive>,
}

/// A gRPC balance cell: replicas behind a ClusterIP (or a headless name), clients with
/// channels, scale events. Real time: nothing in it is a timer the time scale would compress.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GrpcConfig {
    pub replicas: u32,
    pub clients: usize,
    pub channels: usize,
    pub lb: crate::model::balance::GrpcLb,
    /// The clients address every replica (a headless Service's records), not the ClusterIP.
    pub headless: bool,
    pub duration: Dur,
    pub request_interval: Dur,
    /// `(at, replicas)`, in order.
    pub scale: Vec<(Dur, u32)>,
    /// The replicas' `max_connection_age` (tonic's `Server::max_connection_age`): each sends
    /// GOAWAY to a connection this old.
    pub max_connection_age: Option<Dur>,
    /// How long calls in flight get after that GOAWAY (grpc-go `MaxConnectionAgeGrace`;
    /// `None`: grpc-go's default, infinite; tonic has none).
    pub max_connection_age_grace: Option<Dur>,
    /// The replicas' gRPC library: tonic or grpc-go.
    pub server_library: crate::model::library::Library,
    pub threshold: crate::model::balance::BalanceThreshold,
}

impl GrpcConfig {
    /// Replicas at the end of the run (the most any moment has: the lab scales up only).
    pub fn max_replicas(&self) -> u32 {
        self.scale.iter().map(|(_, r)| *r).chain([self.replicas]).max().unwrap_or(self.replicas)
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CellConfig {
    pub service: Service,
    pub client: ClientConfig,
    /// The server's own idle timeout (`0s` = off).
    pub server_idle_timeout: Dur,
    pub path: Vec<Hop>,
    pub idle: Dur,
    /// `service: grpc`: the balance run (`None` for every other service).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcConfig>,
    /// The timing facts of the Envoy that runs the cell (the time scale's record names them).
    #[serde(skip)]
    pub envoy_timing: crate::model::scale::EnvoyTiming,
}

/// The hop the lab configured to act first on an idle connection, and after how long.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConfiguredAct {
    pub actor: String,
    pub after: Dur,
    /// A middlebox: it forgets the flow and then resets or drops its next segment; else the
    /// hop closes the connection with a FIN.
    pub forgets: Option<crate::model::keepalive::OnUnknown>,
}

impl CellConfig {
    /// Every duration the time scale applies to, with what it decides.
    pub fn durations_mut(&mut self) -> Vec<KnobDuration<'_>> {
        let mut out = vec![KnobDuration {
            label: "idle".into(),
            value: &mut self.idle,
            precision: Precision::Millis,
            role: Role::Idle,
        }];
        if let Some(ka) = self.client.keepalive.as_mut() {
            out.extend(ka.durations_mut("client.keepalive"));
        }
        if let Some(d) = self.client.pool_max_idle.as_mut() {
            out.push(KnobDuration {
                label: "client.pool_max_idle".into(),
                value: d,
                precision: Precision::Millis,
                role: Role::PoolMaxIdle,
            });
        }
        if let Some(d) = self.client.heartbeat.as_mut() {
            out.push(KnobDuration {
                label: "client.heartbeat".into(),
                value: d,
                precision: Precision::Millis,
                role: Role::Heartbeat,
            });
        }
        if let Some(d) = self.client.pool_max_lifetime.as_mut() {
            out.push(KnobDuration {
                label: "client.pool_max_lifetime".into(),
                value: d,
                precision: Precision::Millis,
                role: Role::PoolMaxIdle,
            });
        }
        if !self.server_idle_timeout.is_zero() {
            out.push(KnobDuration {
                label: "server.idle_timeout".into(),
                value: &mut self.server_idle_timeout,
                precision: self.service.server_idle_precision(),
                role: Role::Timeout { refreshed_by_probes: false },
            });
        }
        if let Some(ka) = self.client.http2_keepalive.as_mut() {
            // A PING is a frame: bytes every hop up to the first HTTP/2 one sees, like a heartbeat.
            // grpc-go raises a keepalive Time below 10 s to 10 s (keepalive.ClientParameters):
            // the scaled interval cannot go below it either.
            let floor_ms = if self.client.library == crate::model::library::Library::GrpcGo { 10_000 } else { 0 };
            out.push(KnobDuration {
                label: "client.http2_keepalive.interval".into(),
                value: &mut ka.interval,
                precision: if floor_ms > 0 { Precision::MillisFloor { floor_ms } } else { Precision::Millis },
                role: Role::Heartbeat,
            });
            // The ACK deadline: at least the lab's gap, so a busy scheduler cannot fake a loss.
            out.push(KnobDuration {
                label: "client.http2_keepalive.timeout".into(),
                value: &mut ka.timeout,
                // The time scale's `MIN_GAP` (1 s); `timescale` checks the two agree.
                precision: Precision::MillisFloor { floor_ms: 1000 },
                role: Role::UserTimeout,
            });
        }
        if let Some(d) = self.client.tcp_user_timeout.as_mut() {
            out.push(KnobDuration {
                label: "client.tcp_user_timeout".into(),
                value: d,
                precision: Precision::Millis,
                role: Role::UserTimeout,
            });
        }
        // An `http-*` or `grpc-*` port: Istio gives it the HTTP connection manager.
        let http = self.service.is_http();
        let drain = self.envoy_timing.http_drain();
        for (i, hop) in self.path.iter_mut().enumerate() {
            let client_sidecar = matches!(hop, crate::hop::Hop::Sidecar(_));
            for mut d in hop.durations_mut(i) {
                // `http.idleTimeout` reaches an HTTP pool only: on a TCP port it decides nothing.
                if !http
                    && (d.label.ends_with(".service_http_idle_timeout")
                        || d.label.contains(".upstream_http_idle_timeout"))
                {
                    continue;
                }
                // On an `http-*` port the client sidecar's idle timeout is the connection
                // manager's (downstream): it closes after the drain.
                if http && client_sidecar && d.label.ends_with(".sidecar.idle_timeout") {
                    d.precision = drain;
                }
                out.push(d);
            }
        }
        out
    }

    /// The keepalives of the path, each with the middleboxes its probes cross (label prefix as
    /// in `durations_mut`): the app's socket up to the first proxy that terminates it (a
    /// sidecar the capture skips does not), an Envoy's upstream socket up to the next proxy,
    /// the gateway's accepted socket back to the proxy before it.
    pub fn keepalives(&self) -> Vec<(String, Keepalive, Vec<crate::model::keepalive::Forgetter>)> {
        let port = self.service.port();
        let terminates = |h: &Hop| h.on_path().terminates_tcp(port);
        let forgetters = |hops: &[Hop]| -> Vec<crate::model::keepalive::Forgetter> {
            hops.iter().filter_map(|h| h.on_path().forgets_flows()).collect()
        };
        let next_terminator = |from: usize| {
            self.path.iter().enumerate().skip(from).find(|(_, h)| terminates(h)).map_or(self.path.len(), |(i, _)| i)
        };
        let mut out = Vec::new();
        if let Some(ka) = self.client.keepalive {
            out.push(("client.keepalive".to_string(), ka, forgetters(&self.path[..next_terminator(0)])));
        }
        // gRPC's HTTP/2 keepalive as the same timer: a PING `interval` after the last frame
        // received, one unanswered PING (no ACK within `timeout`) ends the connection. It
        // crosses the hops up to the first that speaks HTTP/2 (a sidecar's Envoy).
        if let Some(h2) = self.client.http2_keepalive {
            let ka = Keepalive { time: h2.interval, interval: h2.timeout, probes: 1 };
            out.push(("client.http2_keepalive".to_string(), ka, forgetters(&self.path[..next_terminator(0)])));
        }
        for (i, hop) in self.path.iter().enumerate().filter(|(_, h)| terminates(h)) {
            let Some((label, ka, toward)) = hop.on_path().own_keepalive(i) else { continue };
            let crossed = match toward {
                Toward::Server => forgetters(&self.path[i + 1..next_terminator(i + 1)]),
                Toward::App => {
                    let before = self.path[..i].iter().rposition(terminates).map_or(0, |p| p + 1);
                    forgetters(&self.path[before..i])
                }
            };
            out.push((label, ka, crossed));
        }
        out
    }

    /// Per keepalive of the path that ends the connection while probes run (a middlebox it
    /// crosses forgets the flow between them): when and how (`keepalive::end`). Measured
    /// from the last activity, so it is compared with the idle period.
    pub fn keepalive_ends(&self) -> Vec<(String, crate::model::keepalive::KeepaliveEnd)> {
        self.keepalives()
            .into_iter()
            .filter_map(|(label, ka, devices)| {
                crate::model::keepalive::end(ka.time.0, ka.interval.0, ka.probes, &devices).map(|e| (label, e))
            })
            .collect()
    }

    /// Which hops the lab configured to act first on the idle connection, and how: of every
    /// hop's idle limit (and the server's), the shortest below the idle period that nothing
    /// refreshes (several when they are equal: which fires first is then a race). The app's
    /// heartbeat (data) refreshes every limit; keepalive probes and gRPC's PINGs refresh only
    /// a middlebox they cross (the PINGs end at the first proxy) and that forgets no flow
    /// between them. The truth the capture's attribution is scored against; empty when no
    /// hop should act while the connection idles. A pool that closes its own idle connections
    /// first is not counted: it leaves no failed connection to attribute.
    pub fn configured_first_acts(&self) -> Vec<ConfiguredAct> {
        let mut copy = self.clone();
        let idle = self.idle.0;
        let keepalives = self.keepalives();
        let heartbeat = copy.durations_mut().iter().filter(|d| d.label == "client.heartbeat").map(|d| d.value.0).min();
        let mut copy = self.clone();
        let durations = copy.durations_mut();
        let mut candidates: Vec<(ConfiguredAct, std::time::Duration)> = Vec::new();
        for d in &durations {
            let Role::Timeout { .. } = d.role else { continue };
            let limit = d.value.0;
            if limit.is_zero() || limit >= idle || heartbeat.is_some_and(|h| h < limit) {
                continue;
            }
            let (actor, forgets) = if d.label == "server.idle_timeout" {
                ("server".to_string(), None)
            } else {
                let Some(i) = d
                    .label
                    .strip_prefix("path[")
                    .and_then(|r| r.split(']').next())
                    .and_then(|i| i.parse::<usize>().ok())
                else {
                    continue;
                };
                let hop = self.path[i].on_path();
                let http = self.service.is_http();
                // On a TCP port the service's own idle timeout (a DestinationRule's) replaces
                // the chain's; on an HTTP port it goes to the upstream pool (below).
                if !http
                    && d.label.ends_with(".sidecar.idle_timeout")
                    && durations.iter().any(|o| o.label == format!("path[{i}].sidecar.service_idle_timeout"))
                {
                    continue;
                }
                // An upstream pool's idle close ends Envoy's upstream connection, not the app's:
                // Envoy's default and the PassthroughCluster's, a DestinationRule's
                // `http.idleTimeout`, and on an HTTP port its `tcp.idleTimeout`.
                if d.label.contains("upstream_http_idle_timeout")
                    || d.label.ends_with(".service_http_idle_timeout")
                    || (http && d.label.ends_with(".service_idle_timeout"))
                {
                    continue;
                }
                let actor = hop.own_node(i).or_else(|| hop.proxy_role().map(|r| r.name().to_string()));
                let Some(actor) = actor else { continue };
                let forgets = hop.forgets_flows();
                // A keepalive that crosses it and never ends keeps its flow.
                if let Some(f) = forgets
                    && keepalives.iter().any(|(_, ka, devices)| {
                        devices.contains(&f)
                            && crate::model::keepalive::end(ka.time.0, ka.interval.0, ka.probes, devices).is_none()
                            && ka.time.0 < f.timeout
                    })
                {
                    continue;
                }
                (actor, forgets.map(|f| f.on_unknown))
            };
            // A timer that acts late (a server's whole-second clock, the connection manager's
            // drain) acts anywhere in [limit, limit + late].
            candidates.push((ConfiguredAct { actor, after: Dur(limit), forgets }, limit + d.precision.late_by()));
        }
        // The first to act is the earliest to be sure to have acted; any that may act before
        // it is a race with it.
        let Some(first_sure) = candidates.iter().map(|(_, sure)| *sure).min() else { return vec![] };
        candidates.into_iter().filter(|(c, _)| c.after.0 <= first_sure).map(|(c, _)| c).collect()
    }

    /// The pods of the path that have a sidecar: `client`, `server`.
    pub fn sidecar_pods(&self) -> Vec<String> {
        self.path.iter().filter_map(|h| h.on_path().sidecar_pod()).map(str::to_string).collect()
    }

    /// The client library and the settings of it this cell uses, by their names in the
    /// library (real-world values), e.g. "database/sql DB.SetConnMaxIdleTime = 30m".
    pub fn client_settings(&self) -> Vec<String> {
        use crate::model::library::PoolSetting;
        let c = &self.client;
        let l = c.library;
        let mut out = vec![format!("client library: {} ({})", l.name(), l.describe())];
        let mut set = |s: PoolSetting, v: String| {
            if let Ok(name) = l.setting(s) {
                out.push(format!("{name} = {v}"));
            }
        };
        match c.keepalive {
            Some(ka) => set(PoolSetting::Keepalive, format!("{} / {} / {}", ka.time, ka.interval, ka.probes)),
            None => set(PoolSetting::Keepalive, "off".into()),
        }
        if let Some(d) = c.pool_max_idle {
            set(PoolSetting::MaxIdle, d.to_string());
        }
        if let Some(d) = c.pool_max_lifetime {
            set(PoolSetting::MaxLifetime, d.to_string());
        }
        if c.test_on_borrow {
            set(PoolSetting::TestOnBorrow, "on".into());
        }
        if let Some(d) = c.tcp_user_timeout {
            set(PoolSetting::TcpUserTimeout, d.to_string());
        }
        out
    }

    pub fn client_library_pool(&self) -> bool {
        self.client.library.owns_pool()
    }

    pub fn sidecar(&self) -> Option<&crate::hop::SidecarHop> {
        self.path.iter().find_map(|h| match h {
            Hop::Sidecar(s) => Some(s),
            _ => None,
        })
    }

    pub fn server_sidecars_mut(&mut self) -> impl Iterator<Item = &mut crate::hop::ServerSidecarHop> {
        self.path.iter_mut().filter_map(|h| match h {
            Hop::ServerSidecar(s) => Some(s),
            _ => None,
        })
    }

    pub fn sidecar_mut(&mut self) -> Option<&mut crate::hop::SidecarHop> {
        self.path.iter_mut().find_map(|h| match h {
            Hop::Sidecar(s) => Some(s),
            _ => None,
        })
    }
}
