//! Mitigations: one small type per file, each with two renderings.
//!
//! ```text
//!   scenario cell ──▶ MitigationSpec ──┬─ apply(&mut CellConfig)      local lab: an Envoy field, a capture
//!                                      │                          rule left out, a socket option, a pool policy
//!                                      └─ istio_resources(&ctx)  cluster: the annotation / EnvoyFilter /
//!                                                                 DestinationRule that does the same
//! ```
//!
//! Adding a mitigation: write one file with a type that implements [`Mitigation`], add one
//! line to [`MitigationSpec`] (its name in scenario files) and one to `as_mitigation`.

pub mod app_heartbeat;
pub mod app_keepalive;
pub mod contract;
pub mod dr_http_idle_timeout;
pub mod dr_idle_timeout;
pub mod dr_tcp_keepalive;
pub mod envoyfilter_idle_timeout;
pub mod exclude_outbound_ip_ranges;
pub mod exclude_outbound_ports;
pub mod gateway_keepalive;
pub mod istio_idle_timeout;
pub mod istio_yaml;
pub mod none;
pub mod pool_max_idle;
pub mod pool_max_lifetime;
pub mod pool_test_on_borrow;
pub mod tcp_user_timeout;

pub use contract::{CELL_LABEL, CLIENT_APP, IstioContext, IstioForm, LOCAL_NAMESPACE, LoadError, Mitigation, to_yaml};
use serde::{Deserialize, Serialize};

/// The `mitigation:` of a cell, as written in scenario files.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum MitigationSpec {
    #[serde(rename = "none")]
    NoMitigation,
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
}

impl MitigationSpec {
    pub fn as_mitigation(&self) -> &dyn Mitigation {
        match self {
            MitigationSpec::NoMitigation => &none::NoMitigation,
            MitigationSpec::AppKeepalive(m) => m,
            MitigationSpec::IstioIdleTimeout(m) => m,
            MitigationSpec::EnvoyfilterIdleTimeout(m) => m,
            MitigationSpec::ExcludeOutboundPorts(m) => m,
            MitigationSpec::PoolMaxIdle(m) => m,
            MitigationSpec::AppHeartbeat(m) => m,
            MitigationSpec::DrTcpKeepalive(m) => m,
            MitigationSpec::DrIdleTimeout(m) => m,
            MitigationSpec::DrHttpIdleTimeout(m) => m,
            MitigationSpec::IstioYaml(m) => m,
            MitigationSpec::ExcludeOutboundIpRanges(m) => m,
            MitigationSpec::TcpUserTimeout(m) => m,
            MitigationSpec::GatewayKeepalive(m) => m,
            MitigationSpec::PoolTestOnBorrow(m) => m,
            MitigationSpec::PoolMaxLifetime(m) => m,
        }
    }
    pub fn as_mitigation_mut(&mut self) -> &mut dyn Mitigation {
        match self {
            // A unit struct: leaking its box allocates nothing.
            MitigationSpec::NoMitigation => Box::leak(Box::new(none::NoMitigation)),
            MitigationSpec::AppKeepalive(m) => m,
            MitigationSpec::IstioIdleTimeout(m) => m,
            MitigationSpec::EnvoyfilterIdleTimeout(m) => m,
            MitigationSpec::ExcludeOutboundPorts(m) => m,
            MitigationSpec::PoolMaxIdle(m) => m,
            MitigationSpec::AppHeartbeat(m) => m,
            MitigationSpec::DrTcpKeepalive(m) => m,
            MitigationSpec::DrIdleTimeout(m) => m,
            MitigationSpec::DrHttpIdleTimeout(m) => m,
            MitigationSpec::IstioYaml(m) => m,
            MitigationSpec::ExcludeOutboundIpRanges(m) => m,
            MitigationSpec::TcpUserTimeout(m) => m,
            MitigationSpec::GatewayKeepalive(m) => m,
            MitigationSpec::PoolTestOnBorrow(m) => m,
            MitigationSpec::PoolMaxLifetime(m) => m,
        }
    }
    pub fn label(&self) -> String {
        self.as_mitigation().label()
    }
}
