//! What every hop kind tells the rest of the lab about itself: the [`PathHop`] trait. The
//! time scale, the keepalive model, the renderer and both backends ask a hop through it, so a
//! hop kind's behaviour on the path is written once, in its own file.

use crate::model::keepalive::Forgetter;
use crate::model::scale::KnobDuration;
use crate::model::service::Keepalive;

/// Which proxy of the path a pod's Envoy is (Istio makes each one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyRole {
    /// The client pod's sidecar (outbound).
    Sidecar,
    /// The server pod's sidecar (inbound).
    ServerSidecar,
    /// The ingress gateway (`pilot-agent proxy router`).
    Gateway,
}

impl ProxyRole {
    pub fn name(self) -> &'static str {
        match self {
            ProxyRole::Sidecar => "sidecar",
            ProxyRole::ServerSidecar => "server-sidecar",
            ProxyRole::Gateway => "gateway",
        }
    }
}

/// Which way the probes of a keepalive a hop sets go: toward the server (an Envoy's upstream
/// socket, up to the next hop that terminates TCP) or back toward the app (a listener's
/// accepted socket, back to the previous one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toward {
    Server,
    App,
}

/// A hop kind on the path. `index` is the hop's place in `path:` (labels, node names).
pub trait PathHop {
    /// Its name in scenario files (`sidecar`, `middlebox`, …).
    fn kind(&self) -> &'static str;
    /// Its durations, for the time scale (label, value, precision, what each decides).
    fn durations_mut(&mut self, index: usize) -> Vec<KnobDuration<'_>>;
    /// Whether it ends the app's TCP connection to `port` (a proxy that captures it): the
    /// app's keepalive probes stop there.
    fn terminates_tcp(&self, _port: u16) -> bool {
        false
    }
    /// When it forgets an idle flow and what it then does with the flow's next segment
    /// (conntrack): what a keepalive crossing it meets.
    fn forgets_flows(&self) -> Option<Forgetter> {
        None
    }
    /// A keepalive on a socket it owns (label as in `durations_mut`), and which way its
    /// probes go. Asked only when it terminates TCP.
    fn own_keepalive(&self, _index: usize) -> Option<(String, Keepalive, Toward)> {
        None
    }
    /// The proxy Istio makes of it, if it is one.
    fn proxy_role(&self) -> Option<ProxyRole> {
        None
    }
    /// The pod whose sidecar it is (`client`, `server`).
    fn sidecar_pod(&self) -> Option<&'static str> {
        None
    }
    /// A node of its own on the path (its network namespace locally, its pod on a cluster),
    /// named for its place: `mb1`, `gw1`. None: it lives in the app's or the server's.
    fn own_node(&self, _index: usize) -> Option<String> {
        None
    }
    /// The host the app addresses when this is the first hop after the client sidecar that has
    /// one, on a cluster in namespace `ns` (its Service).
    fn cluster_host(&self, _index: usize, _ns: &str) -> Option<String> {
        None
    }
    /// The same in the local lab, where a middlebox is a router and has no Service.
    fn local_host(&self) -> Option<String> {
        None
    }
}
