//! The real server behind each service in the local lab. Each is a file `src/local/<name>_server.rs`
//! that says which services it serves (`SERVES`), the program it needs (`PROGRAM`, for
//! `idlelab doctor`) and how it starts for a cell (`start_for`); `build.rs` lists them here.
//!
//! ```text
//!   redis ─▶ redis-server (timeout, tcp-keepalive 0)      mysql ─▶ mariadbd (wait_timeout)
//!   memcached ─▶ memcached -o idle_timeout               http, https ─▶ `idlelab serve-http`
//! ```

use super::process::LabProcess;
use super::shared::{RunShared, ServerPlace};
use crate::model::service::Service;

include!(concat!(env!("OUT_DIR"), "/servers.rs"));
