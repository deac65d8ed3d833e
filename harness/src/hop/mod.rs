//! Hops: what stands between the app and the server, in path order.
//!
//! ```text
//!   app ──▶ hop[0] ──▶ hop[1] ──▶ … ──▶ server
//! ```
//!
//! Each hop kind is one small type in its own file: the parameters a scenario sets, and what
//! it is on the path ([`PathHop`], `contract.rs`). Adding one: its file (`build.rs` lists
//! every file of this folder); then what each backend builds for it (`CONTRIBUTING.md`).

pub mod contract;

pub use contract::{PathHop, ProxyRole, Toward};
pub use gateway::{GATEWAY_NAMESPACE, GATEWAY_SERVICE, GatewayHop};
pub use middlebox::{MiddleboxHop, OnUnknown};
pub use server_sidecar::ServerSidecarHop;
pub use sidecar::{Route, SidecarHop};

use crate::model::service::Service;
use serde::{Deserialize, Serialize};

/// Declares each hop kind's module, its variant of [`Hop`] and its arms in `on_path` /
/// `on_path_mut`, from one line per kind.
macro_rules! hops {
    ($($variant:ident($module:ident::$ty:ident),)*) => {
        /// One hop of a scenario's `path:` list, written as `- sidecar: {...}`.
        #[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
        #[serde(rename_all = "kebab-case", deny_unknown_fields)]
        pub enum Hop {
            $($variant($module::$ty),)*
        }

        impl Hop {
            /// What the hop is on the path.
            pub fn on_path(&self) -> &dyn PathHop {
                match self {
                    $(Hop::$variant(h) => h,)*
                }
            }
            pub fn on_path_mut(&mut self) -> &mut dyn PathHop {
                match self {
                    $(Hop::$variant(h) => h,)*
                }
            }
        }
    };
}

// The list: one line per file of this folder, made by `build.rs` (a new file is a new hop
// kind; its variant is the file's name in CamelCase).
include!(concat!(env!("OUT_DIR"), "/hops.rs"));

impl Hop {
    pub fn kind(&self) -> &'static str {
        self.on_path().kind()
    }

    /// The hop's durations, for the time scale (label, value, how they are applied).
    pub fn durations_mut(&mut self, index: usize) -> Vec<crate::model::scale::KnobDuration<'_>> {
        self.on_path_mut().durations_mut(index)
    }
}

/// The host the client sidecar's upstream is, in the local lab: the gateway's Service when
/// the path has one, else the server's.
pub fn target_host(path: &[Hop], service: Service, namespace: &str) -> String {
    path.iter()
        .find_map(|h| h.on_path().local_host())
        .unwrap_or_else(|| format!("{}.{namespace}.svc.cluster.local", service.name()))
}
