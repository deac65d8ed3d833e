//! Which client library a cell's probe drives, and what each library calls its pool settings.
//!
//! ```text
//!   scenario `client: {library: go-sql-driver}` ──▶ Library::GoSqlDriver
//!     runtime: the Go probe (clients/go, `idlelab-probe-go`), speaking the probe contract
//!     pool-max-idle ──▶ db.SetConnMaxIdleTime   pool-max-lifetime ──▶ db.SetConnMaxLifetime
//!     app-keepalive ──▶ net.Dialer.KeepAliveConfig   pool-test-on-borrow ──▶ refused (none)
//! ```
//!
//! Every library runs behind the same probe contract (`scenarios/PROBE.md`): the Rust ones in
//! this binary, the Go ones in the Go probe, and `external` in any program a scenario names
//! with `client.command`. A mitigation a library cannot express is refused at load, with the
//! reason.

use crate::model::duration::Dur;
use crate::model::service::{Keepalive, Service};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Library {
    /// The `redis` crate, in the probe's own pool.
    RedisRs,
    /// `mysql_async`'s pool.
    #[serde(rename = "mysql_async")]
    MysqlAsync,
    /// `memcache-async`, in the probe's own pool.
    MemcacheAsync,
    /// hyper-util's pooled client (http, https).
    HyperUtil,
    /// `github.com/redis/go-redis/v9` (its own pool).
    GoRedis,
    /// `database/sql` with `github.com/go-sql-driver/mysql`.
    GoSqlDriver,
    /// `github.com/bradfitz/gomemcache` (its own pool).
    Gomemcache,
    /// Go's `net/http` client and its `Transport` pool (http, https).
    GoNetHttp,
    /// tonic's gRPC client (`tonic::transport::Channel`): one HTTP/2 connection per channel
    /// (`pick_first`-like), or `Channel::balance_list` over each replica (tower's power of
    /// two choices; tonic has no `round_robin`).
    Tonic,
    /// grpc-go (`google.golang.org/grpc`), in the Go probe (`idlelab-probe-go probe-grpc`):
    /// one `grpc.ClientConn` per channel with grpc-go's `pick_first` or `round_robin`.
    GrpcGo,
    /// A program of the scenario's own (`client.command`) that speaks the probe contract.
    External,
}

/// Where a library's probe runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// `idlelab probe`, this binary.
    Rust,
    /// `idlelab-probe-go`, built by `just setup` from `clients/go`.
    Go,
    /// The scenario's `client.command`.
    External,
}

/// A pool setting a mitigation asks of the library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolSetting {
    MaxIdle,
    MaxLifetime,
    TestOnBorrow,
    Keepalive,
    TcpUserTimeout,
}

/// Go's `net.Dialer` keepalive when a program leaves it alone: 15 s idle since Go 1.13, and
/// since Go 1.23 on Linux also 15 s between probes and 9 probes (`net.KeepAliveConfig`).
pub const GO_DEFAULT_KEEPALIVE: Keepalive = Keepalive { time: Dur::secs(15), interval: Dur::secs(15), probes: 9 };

pub const ALL: [Library; 11] = [
    Library::RedisRs,
    Library::MysqlAsync,
    Library::MemcacheAsync,
    Library::HyperUtil,
    Library::GoRedis,
    Library::GoSqlDriver,
    Library::Gomemcache,
    Library::GoNetHttp,
    Library::Tonic,
    Library::GrpcGo,
    Library::External,
];

impl Library {
    pub fn name(self) -> &'static str {
        match self {
            Library::RedisRs => "redis-rs",
            Library::MysqlAsync => "mysql_async",
            Library::MemcacheAsync => "memcache-async",
            Library::HyperUtil => "hyper-util",
            Library::GoRedis => "go-redis",
            Library::GoSqlDriver => "go-sql-driver",
            Library::Gomemcache => "gomemcache",
            Library::GoNetHttp => "go-net-http",
            Library::Tonic => "tonic",
            Library::GrpcGo => "grpc-go",
            Library::External => "external",
        }
    }

    pub fn parse(name: &str) -> Option<Library> {
        ALL.into_iter().find(|l| l.name() == name)
    }

    /// The library a service uses when the scenario names none.
    pub fn default_for(service: Service) -> Library {
        match service {
            Service::Redis => Library::RedisRs,
            Service::Mysql => Library::MysqlAsync,
            Service::Memcached => Library::MemcacheAsync,
            Service::Http | Service::Https => Library::HyperUtil,
            Service::Grpc => Library::Tonic,
        }
    }

    /// Whether it speaks `service` (an external client speaks whatever it says).
    pub fn speaks(self, service: Service) -> bool {
        match self {
            Library::RedisRs | Library::GoRedis => service == Service::Redis,
            Library::MysqlAsync | Library::GoSqlDriver => service == Service::Mysql,
            Library::MemcacheAsync | Library::Gomemcache => service == Service::Memcached,
            Library::HyperUtil | Library::GoNetHttp => matches!(service, Service::Http | Service::Https),
            Library::Tonic | Library::GrpcGo => service == Service::Grpc,
            Library::External => true,
        }
    }

    pub fn runtime(self) -> Runtime {
        match self {
            Library::RedisRs | Library::MysqlAsync | Library::MemcacheAsync | Library::HyperUtil | Library::Tonic => {
                Runtime::Rust
            }
            Library::GoRedis | Library::GoSqlDriver | Library::Gomemcache | Library::GoNetHttp | Library::GrpcGo => {
                Runtime::Go
            }
            Library::External => Runtime::External,
        }
    }

    /// Whether the library owns its pool: the probe cannot address each pooled connection
    /// (no per-connection heartbeat).
    pub fn owns_pool(self) -> bool {
        !matches!(self, Library::RedisRs | Library::MemcacheAsync)
    }

    /// The app's socket keepalive when the scenario does not set `client.keepalive`.
    pub fn default_keepalive(self) -> Option<Keepalive> {
        (self.runtime() == Runtime::Go).then_some(GO_DEFAULT_KEEPALIVE)
    }

    /// The pool's idle limit when the app leaves it alone: go-redis v9 closes a connection idle
    /// for 30 min (`ConnMaxIdleTime`), Go's `http.DefaultTransport` after 90 s
    /// (`IdleConnTimeout`). A real duration like any other: the time scale scales it.
    pub fn default_pool_max_idle(self) -> Option<Dur> {
        match self {
            Library::GoRedis => Some(Dur::secs(30 * 60)),
            Library::GoNetHttp => Some(Dur::secs(90)),
            _ => None,
        }
    }

    /// What the library calls `setting`, or why it has none.
    pub fn setting(self, setting: PoolSetting) -> Result<&'static str, String> {
        use Library::*;
        use PoolSetting::*;
        let none = |what: &str| Err(format!("{} has no {what}", self.describe()));
        match (self, setting) {
            (External, _) => Ok("the external client's own setting (probe contract field)"),
            (RedisRs | MemcacheAsync, MaxIdle) => Ok("the probe's pool: max idle time at checkout"),
            (MysqlAsync, MaxIdle) => Ok("mysql_async PoolConstraints / inactive_connection_ttl"),
            (HyperUtil, MaxIdle) => Ok("hyper-util Client::pool_idle_timeout"),
            (GoSqlDriver, MaxIdle) => Ok("database/sql DB.SetConnMaxIdleTime"),
            (GoRedis, MaxIdle) => Ok("go-redis Options.ConnMaxIdleTime"),
            (GoNetHttp, MaxIdle) => Ok("net/http Transport.IdleConnTimeout"),
            (Gomemcache, MaxIdle) => none("idle-time limit for its pool (only MaxIdleConns)"),
            (RedisRs | MemcacheAsync, MaxLifetime) => Ok("the probe's pool: max lifetime at checkout"),
            (MysqlAsync, MaxLifetime) => Ok("mysql_async PoolOpts abs_conn_ttl"),
            (GoSqlDriver, MaxLifetime) => Ok("database/sql DB.SetConnMaxLifetime"),
            (GoRedis, MaxLifetime) => Ok("go-redis Options.ConnMaxLifetime"),
            (HyperUtil | GoNetHttp | Gomemcache, MaxLifetime) => none("connection lifetime limit"),
            (RedisRs | MemcacheAsync, TestOnBorrow) => Ok("the probe's pool: a PING at checkout"),
            (MysqlAsync, TestOnBorrow) => Ok("mysql_async: COM_PING at checkout"),
            (GoSqlDriver, TestOnBorrow) => none(
                "test-on-borrow (go-sql-driver/mysql checks a pooled connection for a FIN before use by itself: CheckConnLiveness, on by default)",
            ),
            (GoRedis, TestOnBorrow) => {
                none("test-on-borrow (its pool checks an idle connection's socket for a FIN at checkout by itself)")
            }
            (HyperUtil | GoNetHttp | Gomemcache, TestOnBorrow) => none("test-on-borrow"),
            (RedisRs | MemcacheAsync | MysqlAsync | HyperUtil, Keepalive) => {
                Ok("SO_KEEPALIVE + TCP_KEEPIDLE/INTVL/CNT on the app's socket")
            }
            (GoRedis | GoSqlDriver | Gomemcache | GoNetHttp, Keepalive) => Ok("net.Dialer.KeepAliveConfig"),
            (RedisRs | MemcacheAsync | HyperUtil, TcpUserTimeout) => Ok("TCP_USER_TIMEOUT on the app's socket"),
            (MysqlAsync, TcpUserTimeout) => none("TCP_USER_TIMEOUT setting (it opens its own sockets)"),
            (GoRedis | GoSqlDriver | Gomemcache | GoNetHttp, TcpUserTimeout) => {
                Ok("net.Dialer.Control: setsockopt TCP_USER_TIMEOUT")
            }
            // A balance cell's client holds its channels for the whole run: no pool to set.
            (Tonic, _) => none("connection pool (its channels are held for the whole run)"),
            (GrpcGo, _) => none("connection pool (its channels are held for the whole run)"),
        }
    }

    /// The library in words, with the module it is.
    pub fn describe(self) -> &'static str {
        match self {
            Library::RedisRs => "the `redis` crate",
            Library::MysqlAsync => "mysql_async",
            Library::MemcacheAsync => "memcache-async",
            Library::HyperUtil => "hyper-util",
            Library::GoRedis => "go-redis (github.com/redis/go-redis/v9)",
            Library::GoSqlDriver => "database/sql with go-sql-driver/mysql",
            Library::Gomemcache => "gomemcache (github.com/bradfitz/gomemcache)",
            Library::GoNetHttp => "Go's net/http Transport",
            Library::Tonic => "tonic (its transport::Channel)",
            Library::GrpcGo => "grpc-go (google.golang.org/grpc ClientConn)",
            Library::External => "the external client",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_defaults_speak_their_service() {
        for l in ALL {
            assert_eq!(Library::parse(l.name()), Some(l));
        }
        for s in Service::ALL {
            assert!(Library::default_for(s).speaks(s));
            assert_eq!(Library::default_for(s).runtime(), Runtime::Rust);
        }
        assert!(!Library::GoRedis.speaks(Service::Mysql));
    }

    #[test]
    fn go_libraries_name_their_real_settings_and_refuse_what_they_lack() {
        assert_eq!(Library::GoSqlDriver.setting(PoolSetting::MaxIdle).unwrap(), "database/sql DB.SetConnMaxIdleTime");
        assert!(Library::GoSqlDriver.setting(PoolSetting::TestOnBorrow).unwrap_err().contains("CheckConnLiveness"));
        assert!(Library::Gomemcache.setting(PoolSetting::MaxIdle).is_err());
        assert!(Library::GoNetHttp.setting(PoolSetting::MaxLifetime).is_err());
        assert_eq!(Library::GoRedis.default_keepalive(), Some(GO_DEFAULT_KEEPALIVE));
        assert_eq!(Library::RedisRs.default_keepalive(), None);
    }
}
