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
//! [`Mitigation`] and its unit tests, and one line in the list below: its name in scenario
//! files (the kebab-case of the variant), its module and its type.

pub mod contract;
pub mod none;

pub use contract::{CELL_LABEL, CLIENT_APP, IstioContext, IstioForm, LOCAL_NAMESPACE, LoadError, Mitigation, to_yaml};
use serde::{Deserialize, Serialize};

/// Declares each mitigation's module, its variant of [`MitigationSpec`] and its arms in
/// `as_mitigation` / `as_mitigation_mut`, from one line per mitigation.
macro_rules! mitigations {
    ($($variant:ident($module:ident::$ty:ident),)*) => {
        $(pub mod $module;)*

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

mitigations! {
    AppKeepalive(app_keepalive::AppKeepalive),
    IstioIdleTimeout(istio_idle_timeout::IstioIdleTimeout),
    EnvoyfilterIdleTimeout(envoyfilter_idle_timeout::EnvoyFilterIdleTimeout),
    ExcludeOutboundPorts(exclude_outbound_ports::ExcludeOutboundPorts),
    PoolMaxIdle(pool_max_idle::PoolMaxIdle),
    AppHeartbeat(app_heartbeat::AppHeartbeat),
    DrTcpKeepalive(dr_tcp_keepalive::DrTcpKeepalive),
    DrIdleTimeout(dr_idle_timeout::DrIdleTimeout),
    DrHttpIdleTimeout(dr_http_idle_timeout::DrHttpIdleTimeout),
    IstioYaml(istio_yaml::IstioYaml),
    ExcludeOutboundIpRanges(exclude_outbound_ip_ranges::ExcludeOutboundIpRanges),
    TcpUserTimeout(tcp_user_timeout::TcpUserTimeout),
    GatewayKeepalive(gateway_keepalive::GatewayKeepalive),
    PoolTestOnBorrow(pool_test_on_borrow::PoolTestOnBorrow),
    PoolMaxLifetime(pool_max_lifetime::PoolMaxLifetime),
    EnvoyfilterTcpKeepalive(envoyfilter_tcp_keepalive::EnvoyFilterTcpKeepalive),
}

impl MitigationSpec {
    pub fn label(&self) -> String {
        self.as_mitigation().label()
    }
}
