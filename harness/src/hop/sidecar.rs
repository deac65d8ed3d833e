//! The client pod's sidecar: Envoy with Istio's outbound capture.
//!
//! ```text
//!   ┌──────────── app pod (netns) ─────────────────────────┐
//!   │ probe ──nft redirect──▶ Envoy :15001 (virtualOutbound)│
//!   │                          ├─ route: service     → listener <ip>_<port> → cluster outbound|<port>||<svc>
//!   │                          └─ route: passthrough → PassthroughCluster (ORIGINAL_DST)
//!   └───────────────────────────────── tcp_proxy idle_timeout ─┘──▶ next hop / server
//! ```
//!
//! Envoy's `tcp_proxy` closes a connection that carried no bytes in either direction for
//! `idle_timeout` (Istio's default: 1 h), with a FIN to both sides. Kernel keepalive probes
//! carry no bytes and end at Envoy's own socket, so they never reset that timer. On an
//! `http-*` port the same knob is the HTTP connection manager's idle timeout toward the app
//! (it closes 6 s later: Envoy's drain, then its delayed close), and Envoy keeps its own
//! upstream pool behind it. This type is the time-scale model of the hop; the config itself
//! is Istio's (`local::mesh`).

use super::contract::{PathHop, ProxyRole, Toward};
use crate::model::duration::Dur;
use crate::model::scale::KnobDuration;
use crate::model::service::Keepalive;
use serde::{Deserialize, Serialize};

fn istio_default_idle_timeout() -> Dur {
    Dur::secs(3600)
}

/// How the sidecar routes the app's connection.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    /// A Kubernetes Service Istio knows: a per-service listener and cluster.
    #[default]
    Service,
    /// An address Istio does not know: the virtualOutbound catch-all to `PassthroughCluster`.
    Passthrough,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SidecarHop {
    /// `tcp_proxy` `idle_timeout` of the outbound chain; `0s` turns it off.
    #[serde(default = "istio_default_idle_timeout")]
    pub idle_timeout: Dur,
    #[serde(default)]
    pub route: Route,
    /// Keepalive on Envoy's upstream sockets (`upstream_connection_options.tcp_keepalive`)
    /// of every cluster, PassthroughCluster included, as a mesh-wide `meshConfig.tcpKeepalive`
    /// sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_keepalive: Option<Keepalive>,
    /// Ports whose outbound traffic is not captured: only the `exclude-outbound-ports`
    /// mitigation sets them, so a scenario cannot hide a mitigation in its path.
    #[serde(default, skip_deserializing, skip_serializing_if = "Vec::is_empty")]
    pub exclude_outbound_ports: Vec<u16>,
    /// Destination ranges whose outbound traffic is not captured (`exclude-outbound-ip-ranges`).
    #[serde(default, skip_deserializing, skip_serializing_if = "Vec::is_empty")]
    pub exclude_outbound_ip_ranges: Vec<String>,
    /// The service chain's own idle timeout, from a DestinationRule `connectionPool.tcp.idleTimeout`
    /// (`dr-idle-timeout`); the passthrough chain and other pods keep `idle_timeout`.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub service_idle_timeout: Option<Dur>,
    /// Keepalive on the service's cluster only, from a DestinationRule
    /// `connectionPool.tcp.tcpKeepalive` (`dr-tcp-keepalive`). A DestinationRule selects its
    /// host's clusters: PassthroughCluster, which a `passthrough` route takes, is not one of them.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub service_upstream_keepalive: Option<Keepalive>,
    /// HTTP only: how long Envoy keeps an idle upstream connection of the service's pool,
    /// from a DestinationRule `connectionPool.http.idleTimeout` (`dr-http-idle-timeout`).
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub service_http_idle_timeout: Option<Dur>,
    /// HTTP only: how long Envoy keeps an idle upstream connection of the service's pool when
    /// no DestinationRule sets it: Istio sets nothing, so Envoy's own default (1 h) applies.
    /// Not a scenario setting: it is here so that the time scale scales it, and the lab sets
    /// the scaled value on the cluster (`render::istio::sidecar_http_pool_idle`).
    #[serde(skip, default = "envoy_default_http_pool_idle")]
    pub envoy_http_pool_idle: Dur,
    /// HTTP only: the idle timeout Istio gives PassthroughCluster's HTTP pool (5 min).
    #[serde(skip, default = "istio_passthrough_http_pool_idle")]
    pub passthrough_http_pool_idle: Dur,
}

/// Envoy's `common_http_protocol_options.idle_timeout` when a cluster sets none.
pub const ENVOY_DEFAULT_HTTP_POOL_IDLE: Dur = Dur::secs(3600);
/// What Istio sets on PassthroughCluster's HTTP pool (`passthroughHttpProtocolOptions`).
pub const ISTIO_PASSTHROUGH_HTTP_POOL_IDLE: Dur = Dur::secs(300);

fn envoy_default_http_pool_idle() -> Dur {
    ENVOY_DEFAULT_HTTP_POOL_IDLE
}

fn istio_passthrough_http_pool_idle() -> Dur {
    ISTIO_PASSTHROUGH_HTTP_POOL_IDLE
}

impl Default for SidecarHop {
    fn default() -> Self {
        SidecarHop {
            idle_timeout: istio_default_idle_timeout(),
            route: Route::Service,
            upstream_keepalive: None,
            exclude_outbound_ports: vec![],
            exclude_outbound_ip_ranges: vec![],
            service_idle_timeout: None,
            service_upstream_keepalive: None,
            service_http_idle_timeout: None,
            envoy_http_pool_idle: ENVOY_DEFAULT_HTTP_POOL_IDLE,
            passthrough_http_pool_idle: ISTIO_PASSTHROUGH_HTTP_POOL_IDLE,
        }
    }
}

impl SidecarHop {

    /// On an `http-*` port: the idle timeout of Envoy's upstream HTTP pool that no
    /// DestinationRule sets, and whether it is PassthroughCluster's (Istio's 5 min) rather
    /// than the service cluster's (Envoy's 1 h). `None` when a DestinationRule sets it
    /// (`http.idleTimeout`, or `tcp.idleTimeout`, which Istio gives the HTTP pool too).
    pub fn http_pool_idle_default(&self) -> Option<(Dur, bool)> {
        match self.route {
            Route::Passthrough => Some((self.passthrough_http_pool_idle, true)),
            Route::Service if self.service_http_idle_timeout.is_none() && self.service_idle_timeout.is_none() => {
                Some((self.envoy_http_pool_idle, false))
            }
            Route::Service => None,
        }
    }

    /// The keepalive on the upstream socket of the chain the app's connection takes.
    pub fn effective_upstream_keepalive(&self) -> Option<Keepalive> {
        match self.route {
            Route::Service => self.service_upstream_keepalive.or(self.upstream_keepalive),
            Route::Passthrough => self.upstream_keepalive,
        }
    }

    /// The idle timeout of the chain the app's connection takes.
    pub fn effective_idle_timeout(&self) -> Dur {
        match (self.route, self.service_idle_timeout) {
            (Route::Service, Some(t)) => t,
            _ => self.idle_timeout,
        }
    }
}

impl PathHop for SidecarHop {
    fn kind(&self) -> &'static str {
        "sidecar"
    }
    fn durations_mut(&mut self, index: usize) -> Vec<KnobDuration<'_>> {
        let http_pool_default = self.http_pool_idle_default().is_some();
        let mut out = Vec::new();
        out.extend(KnobDuration::envoy_idle_timeout(
            format!("path[{index}].sidecar.idle_timeout"),
            &mut self.idle_timeout,
        ));
        // Like the service's keepalive: on a passthrough route the service's chain carries nothing.
        if self.route == Route::Service
            && let Some(t) = self.service_idle_timeout.as_mut()
        {
            out.extend(KnobDuration::envoy_idle_timeout(format!("path[{index}].sidecar.service_idle_timeout"), t));
        }
        if self.route == Route::Service
            && let Some(t) = self.service_http_idle_timeout.as_mut()
        {
            out.extend(KnobDuration::envoy_idle_timeout(format!("path[{index}].sidecar.service_http_idle_timeout"), t));
        }
        // The upstream HTTP pool's idle timeout when no DestinationRule sets one (CellConfig keeps it
        // for `http-*` ports only): a default Envoy or Istio applies is a duration like any other.
        match self.route {
            Route::Service if http_pool_default => out.extend(KnobDuration::envoy_idle_timeout(
                format!("path[{index}].sidecar.upstream_http_idle_timeout (Envoy's default)"),
                &mut self.envoy_http_pool_idle,
            )),
            Route::Passthrough => out.extend(KnobDuration::envoy_idle_timeout(
                format!("path[{index}].sidecar.upstream_http_idle_timeout (Istio's PassthroughCluster)"),
                &mut self.passthrough_http_pool_idle,
            )),
            Route::Service => {}
        }
        if let Some(ka) = self.upstream_keepalive.as_mut() {
            out.extend(ka.durations_mut(&format!("path[{index}].sidecar.upstream_keepalive")));
        }
        // On a passthrough route the service's cluster carries nothing: its keepalive decides
        // nothing, so it does not constrain the time scale either.
        if self.route == Route::Service
            && let Some(ka) = self.service_upstream_keepalive.as_mut()
        {
            out.extend(ka.durations_mut(&format!("path[{index}].sidecar.service_upstream_keepalive")));
        }
        out
    }
    /// The capture skips excluded ports and ranges: the app's own socket then goes on.
    fn terminates_tcp(&self, port: u16) -> bool {
        !self.exclude_outbound_ports.contains(&port) && self.exclude_outbound_ip_ranges.is_empty()
    }
    /// Envoy's upstream socket: the service's cluster's keepalive (a DestinationRule's) on a
    /// service route, else the one every upstream cluster has.
    fn own_keepalive(&self, index: usize) -> Option<(String, Keepalive, Toward)> {
        let (label, ka) = match (self.route, self.service_upstream_keepalive) {
            (Route::Service, Some(ka)) => ("service_upstream_keepalive", Some(ka)),
            _ => ("upstream_keepalive", self.upstream_keepalive),
        };
        ka.map(|ka| (format!("path[{index}].sidecar.{label}"), ka, Toward::Server))
    }
    fn proxy_role(&self) -> Option<ProxyRole> {
        Some(ProxyRole::Sidecar)
    }
    fn sidecar_pod(&self) -> Option<&'static str> {
        Some("client")
    }
}
