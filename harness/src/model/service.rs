//! The service behind the path, the keepalive a socket may carry, and how a scenario asks
//! for its durations to be compressed: the words scenario files and every layer share.

use crate::model::duration::Dur;
use crate::model::scale::{KnobDuration, Precision, Role};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// The server behind the path.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Service {
    Redis,
    /// MariaDB (`mariadbd`) through `mysql_async`'s pool.
    Mysql,
    /// memcached through `memcache-async` on the probe's own sockets and pool.
    Memcached,
    /// HTTP/1.1 keep-alive to a hyper server, through hyper-util's pooled client.
    Http,
    /// The same with TLS, terminated at a `gateway` hop (`tls: true`).
    Https,
    /// The lab's gRPC service (`Replica.Who`, `harness/proto/replica.proto`) on `replicas`
    /// servers behind a ClusterIP made as kube-proxy makes it: a balance scenario.
    Grpc,
}

impl Service {
    /// Every service, in the order reports list them.
    pub const ALL: [Service; 6] =
        [Service::Redis, Service::Mysql, Service::Memcached, Service::Http, Service::Https, Service::Grpc];

    pub fn port(self) -> u16 {
        match self {
            Service::Redis => 6379,
            Service::Mysql => 3306,
            Service::Memcached => 11211,
            Service::Http => 8080,
            Service::Https => 8443,
            Service::Grpc => 50051,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Service::Redis => "redis",
            Service::Mysql => "mysql",
            Service::Memcached => "memcached",
            Service::Http => "http",
            Service::Https => "https",
            Service::Grpc => "grpc",
        }
    }
    /// The server's own idle timeout when the scenario does not set one: redis `timeout 0`
    /// (off), MariaDB's `wait_timeout` default of 8 h, memcached's `idle_timeout` 0 (off).
    pub fn default_server_idle_timeout(self) -> Dur {
        match self {
            Service::Mysql => Dur::secs(28800),
            _ => Dur::secs(0),
        }
    }
    /// The server's arguments, the same in the local lab and in a pod, with its own idle timeout
    /// explicit (`idle_s`, the scenario's `server.idle_timeout`; 0: off). `files` is where the
    /// backend keeps the server's files (data, socket, logs), put where the server wants them.
    /// `None` for HTTP(S), whose server is `idlelab serve-http` itself.
    /// - redis: `tcp-keepalive 0`, since redis's own 300 s default would send probes from the
    ///   server side, keep a middlebox's flow alive and hide the failures the lab exists to show;
    /// - MariaDB: `wait_timeout` (0 means a year: MariaDB has no "off"); `--no-defaults` first;
    /// - memcached: `-o idle_timeout`.
    pub fn server_args(self, idle_s: u64, files: &[String]) -> Option<Vec<String>> {
        let port = self.port().to_string();
        let strings = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match self {
            Service::Redis => {
                let idle = idle_s.to_string();
                let mut a = strings(&["--bind", "0.0.0.0", "--port", &port, "--protected-mode", "no"]);
                a.extend(strings(&["--tcp-keepalive", "0", "--timeout", &idle, "--save", "", "--appendonly", "no"]));
                a.extend_from_slice(files);
                Some(a)
            }
            Service::Mysql => {
                let wait = if idle_s == 0 { 31_536_000 } else { idle_s };
                let mut a = strings(&["--no-defaults"]);
                a.extend_from_slice(files);
                a.extend(strings(&[
                    &format!("--port={port}"),
                    "--bind-address=0.0.0.0",
                    "--user=root",
                    "--skip-grant-tables",
                    "--skip-name-resolve",
                    "--skip-log-bin",
                    "--performance-schema=OFF",
                    "--innodb-buffer-pool-size=8M",
                    "--innodb-log-file-size=4M",
                    "--innodb-flush-log-at-trx-commit=0",
                    &format!("--wait-timeout={wait}"),
                    &format!("--interactive-timeout={wait}"),
                ]));
                Some(a)
            }
            Service::Memcached => {
                let mut a = strings(&["-u", "root", "-l", "0.0.0.0", "-p", &port, "-U", "0", "-t", "1", "-m", "16"]);
                a.extend(["-o".to_string(), format!("idle_timeout={idle_s}")]);
                a.extend_from_slice(files);
                Some(a)
            }
            Service::Http | Service::Https | Service::Grpc => None,
        }
    }
    /// `mariadb-install-db`'s arguments for the data directory every MariaDB cell starts from,
    /// the same in the local lab and in a pod; `files` as for [`Service::server_args`].
    pub fn mariadb_install_args(files: &[String]) -> Vec<String> {
        let mut a: Vec<String> =
            ["--no-defaults", "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        a.extend_from_slice(files);
        a.extend(["--innodb-log-file-size=4M".to_string(), "--innodb-buffer-pool-size=8M".to_string()]);
        a
    }
    /// How the server's own idle timer keeps time, measured against its source:
    /// - redis compares whole-second clocks (`now - lastinteraction > timeout`, in
    ///   `clientsCron`, 10 times a second): it closes 0–1.1 s after its value;
    /// - memcached's `conn_timeout_thread` compares whole-second `current_time`, sleeps until
    ///   the oldest connection could expire plus one second, and scans its connections over
    ///   about a second: up to 3 s late;
    /// - MariaDB's `wait_timeout` is a read timeout on the socket: whole seconds, on time.
    /// Istio gives its port the HTTP connection manager (`http-*`, `grpc-*`): one wildcard
    /// outbound listener per port, routes by authority.
    pub fn is_http(self) -> bool {
        matches!(self, Service::Http | Service::Grpc)
    }

    pub fn server_idle_precision(self) -> Precision {
        match self {
            Service::Redis => Precision::ServerClock { late_ms: 1100 },
            Service::Memcached => Precision::ServerClock { late_ms: 3000 },
            Service::Mysql | Service::Http | Service::Https | Service::Grpc => Precision::WholeSeconds,
        }
    }
}

/// gRPC's HTTP/2 keepalive, by tonic's names (grpc-go: `keepalive.ClientParameters` Time,
/// Timeout, PermitWithoutStream): a PING every `interval` (`http2_keep_alive_interval`), the
/// connection declared dead when no PING ACK comes within `timeout` (`keep_alive_timeout`),
/// also while no call is open (`keep_alive_while_idle`). A PING is an HTTP/2 frame: it ends at
/// the first hop that speaks HTTP/2, a sidecar's Envoy included.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
pub struct Http2Keepalive {
    pub interval: Dur,
    pub timeout: Dur,
    pub while_idle: bool,
}

impl fmt::Display for Http2Keepalive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "http2_keep_alive_interval {}, keep_alive_timeout {}, keep_alive_while_idle {}",
            self.interval, self.timeout, self.while_idle
        )
    }
}

/// TCP keepalive on a socket: `SO_KEEPALIVE` with `TCP_KEEPIDLE` / `TCP_KEEPINTVL` / `TCP_KEEPCNT`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Keepalive {
    pub time: Dur,
    pub interval: Dur,
    pub probes: u32,
}

impl fmt::Display for Keepalive {
    /// `10m/75s/9`: time / interval / probes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.time, self.interval, self.probes)
    }
}

impl Keepalive {
    /// Refused when no probe would ever be sent.
    pub fn check(&self) -> Result<(), String> {
        if self.probes == 0 { Err("probes must be at least 1".into()) } else { Ok(()) }
    }

    /// Idle time and interval as the kernel's TCP_KEEPIDLE / TCP_KEEPINTVL (and Envoy's
    /// keepalive settings) take them: whole seconds, at least 1, since 0 is refused.
    pub fn whole_seconds(&self) -> (u64, u64) {
        (self.time.0.as_secs().max(1), self.interval.0.as_secs().max(1))
    }

    /// Its two durations for the time scale, labelled under `prefix`.
    pub fn durations_mut(&mut self, prefix: &str) -> Vec<KnobDuration<'_>> {
        vec![
            KnobDuration {
                label: format!("{prefix}.time"),
                value: &mut self.time,
                precision: Precision::WholeSeconds,
                role: Role::KeepaliveTime,
            },
            KnobDuration {
                label: format!("{prefix}.interval"),
                value: &mut self.interval,
                precision: Precision::WholeSeconds,
                role: Role::KeepaliveInterval,
            },
        ]
    }
}

/// `keepalive: off` or `keepalive: {time: 600s, interval: 75s, probes: 9}`.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Default)]
pub struct KeepaliveSetting(pub Option<Keepalive>);

impl<'de> Deserialize<'de> for KeepaliveSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = KeepaliveSetting;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`off` or {time: 600s, interval: 75s, probes: 9}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "off" => Ok(KeepaliveSetting(None)),
                    other => Err(E::custom(format!(
                        "expected `off` or {{time: 600s, interval: 75s, probes: 9}}, found `{other}`"
                    ))),
                }
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                if v {
                    Err(E::custom("keepalive needs its timers: write {time: 600s, interval: 75s, probes: 9}"))
                } else {
                    Ok(KeepaliveSetting(None))
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Keepalive::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|k| KeepaliveSetting(Some(k)))
            }
        }
        d.deserialize_any(V)
    }
}

/// `time_scale: auto` or a factor (`720` runs 1 h as 5 s).
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Default)]
pub enum TimeScaleSpec {
    #[default]
    Auto,
    Factor(u32),
}

impl<'de> Deserialize<'de> for TimeScaleSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = TimeScaleSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`auto` or a whole factor ≥ 1, e.g. 720")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                TimeScaleSpec::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                TimeScaleSpec::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                TimeScaleSpec::parse(&v.to_string()).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl TimeScaleSpec {
    pub fn parse(v: &str) -> Result<Self, String> {
        if v == "auto" {
            return Ok(TimeScaleSpec::Auto);
        }
        match v.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(TimeScaleSpec::Factor(n)),
            _ => Err(format!("expected `auto` or a whole factor ≥ 1 (e.g. 720: 1h runs as 5s), found `{v}`")),
        }
    }
}

impl fmt::Display for TimeScaleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeScaleSpec::Auto => f.write_str("auto"),
            TimeScaleSpec::Factor(n) => write!(f, "{n}"),
        }
    }
}
