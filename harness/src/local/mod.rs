//! The local backend: one cell = its own network namespaces, processes and temp dir.
//!
//! ```text
//!   netns …-app                    netns …-mb<i> / …-gw<i> (per hop)   netns …-srv
//!   ┌──────────────────────────┐   ┌──────────────────────────────┐   ┌──────────────────────────┐
//!   │ idlelab probe            │──▶│ middlebox: forward+conntrack │──▶│ server (redis, MariaDB,  │
//!   │ [sidecar: pilot-agent +  │   │ gateway: pilot-agent router  │   │  memcached, hyper)       │
//!   │  Envoy, istio-iptables]  │   │  + Envoy (TLS from a Secret) │   │ [server sidecar: pilot-  │
//!   │ [idlelab-xds: Istio]     │   └──────────────────────────────┘   │  agent + Envoy, capture] │
//!   └──────────────────────────┘                                      └──────────────────────────┘
//! ```
//!
//! Addresses come from 198.18.0.0/15 (RFC 2544, for benchmarking labs) and exist only inside
//! the cell's namespaces (`topology`): the host namespace gets no lab address, route or rule.
//! Everything a cell creates is owned by a guard whose `Drop` removes it, so success,
//! failure, Ctrl-C and panics all clean up the same way.

pub mod capture;
mod cell;
pub mod cluster_ip;
pub mod config_dump;
pub mod control_plane;
pub mod device;
pub mod doctor;
pub mod envoy;
pub mod envoy_timing;
mod evidence;
mod grpc_cell;
pub mod grpc_replica;
pub mod mesh;
pub mod netns;
pub mod process;
pub mod proxy;
pub mod servers;
mod shared;
pub mod sockets;
pub mod topology;
pub mod xds_only;

use crate::backend::{Backend, CellFailure, CellOutcome, PhaseSink};
use anyhow::{Result, anyhow};
pub use cell::run_cell;
pub use shared::RunShared;

/// The local lab as a backend: every cell in namespaces of its own on this host.
#[derive(Default)]
pub struct LocalBackend {
    /// Made by `prepare`; its temp dir goes when the backend is dropped.
    shared: std::sync::OnceLock<RunShared>,
    /// With `--capture`: where each cell's pcapng goes.
    captures: Option<std::path::PathBuf>,
}

impl LocalBackend {
    /// A local backend that captures each cell's packets into `captures` (when given).
    pub fn with_captures(captures: Option<std::path::PathBuf>) -> Self {
        LocalBackend { shared: Default::default(), captures }
    }
}

impl Backend for LocalBackend {
    fn name(&self) -> String {
        "local".into()
    }
    fn preflight(&self, _cells: &[crate::cells::Cell]) -> Result<(), String> {
        if let Some(msg) = doctor::missing(&doctor::checks()) {
            return Err(msg);
        }
        for r in netns::reap_stale() {
            tracing::warn!("removed {r} left by a killed run");
        }
        Ok(())
    }
    async fn prepare(&self) -> Result<()> {
        let shared = RunShared::new()?;
        self.shared.set(shared).map_err(|_| anyhow!("the local backend was prepared twice"))
    }
    async fn run_cell(
        &self,
        cell: std::sync::Arc<crate::cells::Cell>,
        _index: usize,
        phase: PhaseSink,
    ) -> Result<CellOutcome, CellFailure> {
        let shared =
            self.shared.get().ok_or_else(|| CellFailure::new(anyhow!("the local backend was not prepared")))?;
        if cell.scaled.grpc.is_some() {
            return grpc_cell::run_cell(&cell, &*phase, self.captures.as_deref()).await;
        }
        run_cell(&cell, shared, &*phase, self.captures.as_deref()).await
    }
}
