//! Mitigations: one small type per file, each with two renderings.
//!
//! ```text
//!   scenario cell ──▶ MitigationSpec ──┬─ apply(&mut CellConfig)      local lab: an Envoy field, a capture
//!                                      │                          rule left out, a socket option, a pool policy
//!                                      └─ istio_resources(&ctx)  cluster: the annotation / EnvoyFilter /
//!                                                                 DestinationRule that does the same
//! ```
//!
//! Adding a mitigation (`CONTRIBUTING.md`): one file with a type that implements
//! [`Mitigation`] and its unit tests. `build.rs` lists every file of this folder; the file's
//! name is the mitigation's name in scenario files (`app_keepalive.rs`: `app-keepalive`).

pub mod contract;
pub mod none;

pub use contract::{CELL_LABEL, CLIENT_APP, IstioContext, IstioForm, LOCAL_NAMESPACE, LoadError, Mitigation, to_yaml};
use serde::{Deserialize, Serialize};

/// Declares each mitigation's module, its variant of [`MitigationSpec`] and its arms in
/// `as_mitigation` / `as_mitigation_mut`, from one line per mitigation.
macro_rules! mitigations {
    ($($variant:ident($module:ident::$ty:ident),)*) => {
        /// The `mitigation:` of a cell, as written in scenario files.
        #[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
        #[serde(rename_all = "kebab-case", deny_unknown_fields)]
        pub enum MitigationSpec {
            #[serde(rename = "none")]
            NoMitigation,
            $($variant($module::$ty),)*
        }

        impl MitigationSpec {
            pub fn as_mitigation(&self) -> &dyn Mitigation {
                match self {
                    MitigationSpec::NoMitigation => &none::NoMitigation,
                    $(MitigationSpec::$variant(m) => m,)*
                }
            }
            pub fn as_mitigation_mut(&mut self) -> &mut dyn Mitigation {
                match self {
                    // A unit struct: leaking its box allocates nothing.
                    MitigationSpec::NoMitigation => Box::leak(Box::new(none::NoMitigation)),
                    $(MitigationSpec::$variant(m) => m,)*
                }
            }
        }
    };
}

// The list: one line per file of this folder, made by `build.rs` (a new file is a new
// mitigation; its variant is the file's name in CamelCase).
include!(concat!(env!("OUT_DIR"), "/mitigations.rs"));

impl MitigationSpec {
    pub fn label(&self) -> String {
        self.as_mitigation().label()
    }
}
