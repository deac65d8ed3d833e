//! The real server behind each service, in the local lab: how it is started in the server's
//! namespace, and the program it needs (for `idlelab doctor`). One arm per service.
//!
//! ```text
//!   redis ─▶ redis-server (timeout, tcp-keepalive 0)      mysql ─▶ mariadbd (wait_timeout)
//!   memcached ─▶ memcached -o idle_timeout               http, https ─▶ `idlelab serve-http`
//! ```

use super::shared::RunShared;
use super::{http_server, memcached_server, mysql_server, process::LabProcess, redis_server};
use crate::model::service::Service;
use anyhow::Result;
use std::path::Path;

/// The HTTP server's request log, in the server's dir of the cell.
pub const HTTP_REQUEST_LOG: &str = "requests.txt";

/// Where and how a cell's server runs.
pub struct ServerPlace<'a> {
    /// The server's own dir in the cell's temp dir.
    pub dir: &'a Path,
    /// The server namespace.
    pub netns: &'a Path,
    /// Its name in logs and `ps`.
    pub name: &'a str,
    /// Its own idle timeout in whole seconds (0 = off).
    pub idle_timeout_s: u64,
}

/// Start `service`'s server; it accepts connections when this returns.
pub async fn start(service: Service, at: ServerPlace<'_>, shared: &RunShared) -> Result<LabProcess> {
    let port = service.port();
    let ServerPlace { dir, netns, name, idle_timeout_s: idle_s } = at;
    match service {
        Service::Redis => redis_server::start(dir, port, idle_s, netns, name).await,
        Service::Mysql => mysql_server::start(shared.mysql_template().await?, dir, port, idle_s, netns, name).await,
        Service::Memcached => memcached_server::start(port, idle_s, netns, name).await,
        Service::Http | Service::Https => http_server::start(port, netns, name, &dir.join(HTTP_REQUEST_LOG)).await,
    }
}

/// The program a service's server needs on this machine, its version flag and the fix when
/// it is missing; None for the lab's own HTTP server.
pub fn program(service: Service) -> Option<(&'static str, &'static [&'static str], &'static str)> {
    match service {
        Service::Redis => Some(("redis-server", &["--version"], "just setup   (apt-get install -y redis-server)")),
        Service::Mysql => Some(("mariadbd", &["--version"], "just setup   (apt-get install -y mariadb-server)")),
        Service::Memcached => Some(("memcached", &["-V"], "just setup   (apt-get install -y memcached)")),
        Service::Http | Service::Https => None,
    }
}
