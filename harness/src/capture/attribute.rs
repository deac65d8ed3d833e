//! Which hop closed it: a cell's capture (every hop's interfaces, one clock, each packet's
//! direction) read against what the lab knows about its path, so that each connection of the
//! app that ended badly gets the hop that acted first, how, and what followed.
//!
//! ```text
//!   segments ─▶ a NAT's sides joined (one SYN number: one connection, the client's ends)
//!       ─▶ sightings of one packet grouped (same ends, numbers, flags; within 20 ms; a pod
//!          that forwards on one interface sees it twice there: in, then out)
//!       ─▶ who sent it: the node that sent it out and never received it (a loopback packet:
//!          its node), named by the socket's owner (PathMap.sockets) or the node's actor
//!       ─▶ acts: FIN, RST, a segment a forwarding node received and never sent on (dropped)
//!   app's connections ─explain::judge─▶ ended badly ─▶ first act after its idle began
//!       ─▶ Attribution { first, then, sentence, arrows for the sequence diagram }
//! ```
//!
//! Every act is a packet seen on a hop's interface; the owner of a socket comes from the
//! lab's socket listings, or, for a socket they do not show, from its namespace (the sentence
//! says so).

use super::explain::{Diagnosis, Explainer, Finding};
use super::read::Segment;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// Sightings of the same packet further apart than this are two packets (a retransmission
/// comes 200 ms later at the earliest).
const SAME_PACKET_S: f64 = 0.02;
/// The most arrows a diagram draws; SYN, FIN, RST, drops and keepalives are always kept.
const MAX_ARROWS: usize = 48;

/// A node of the path (a namespace, a pod) and who in it owns the sockets.
#[derive(Clone, Debug, Default)]
pub struct NodeActors {
    /// The actor of its sockets that no proxy owns: `app`, `server`; for a middlebox, itself.
    pub main: String,
    /// The proxy in it (`sidecar`, `server-sidecar`, `gw1`), if any.
    pub proxy: Option<String>,
    /// It forwards packets (a middlebox): what it receives and does not send on, it dropped.
    pub forwards: bool,
}

/// What the lab knows about a cell's path, to name who sent each packet.
#[derive(Clone, Debug, Default)]
pub struct PathMap {
    /// The lifelines, from the app to the server: `app`, `sidecar`, `mb1`, `server`.
    pub actors: Vec<String>,
    /// By node name (the first word of an interface's name in the capture).
    pub nodes: BTreeMap<String, NodeActors>,
    /// `(node, local address, peer address)` → actor: the lab's socket listings.
    pub sockets: BTreeMap<(String, SocketAddr, SocketAddr), String>,
    /// Per proxy actor: its access log lines (JSON), for Envoy's own close reasons.
    pub access_logs: BTreeMap<String, Vec<serde_json::Value>>,
    /// Ports of the lab's own control connections (Envoy's admin, xDS): not the data path.
    pub control_ports: BTreeSet<u16>,
    /// A forwarding node's configured flow timeout in seconds (scaled): configuration.
    pub forget_after: BTreeMap<String, f64>,
    /// Conntrack's DESTROY events: (node, time, the flow's source, destination), measured.
    pub destroys: Vec<(String, f64, SocketAddr, SocketAddr)>,
    /// Per forwarding node: whether its `conntrack -E` ran to the capture's end.
    pub conntrack_watched: BTreeMap<String, bool>,
    /// Per node: packets its capture socket lost (the kernel's count). A drop seen where the
    /// capture lost packets may be the capture's, and its sentence says so.
    pub capture_lost: BTreeMap<String, u32>,
}

/// What a hop did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// It closed a connection: FIN.
    Fin,
    /// It reset one: RST (a proxy's reset, a middlebox's answer to a flow it forgot).
    Reset,
    /// It received a segment and never sent it on (a middlebox that forgot the flow).
    Drop,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Fin => "FIN",
            Action::Reset => "RST",
            Action::Drop => "drop",
        }
    }
}

/// Whether an act the capture attributed is the one the lab configured: the same hop, and a
/// FIN from a hop that closes, the RST or the drop of a middlebox that forgets.
pub fn agrees(configured: &crate::config::ConfiguredAct, act: &Act) -> bool {
    use crate::model::keepalive::OnUnknown;
    let expected = match configured.forgets {
        None => Action::Fin,
        Some(OnUnknown::Reset) => Action::Reset,
        Some(OnUnknown::Drop) => Action::Drop,
    };
    configured.actor == act.actor && expected == act.action
}

/// One act of a hop, as the capture saw it.
#[derive(Clone, Debug, Serialize)]
pub struct Act {
    pub actor: String,
    pub action: Action,
    /// Seconds since the app's connection began to idle (scaled: as the lab ran it).
    pub at_idle_s: f64,
    /// The same in the scenario's own time (× the cell's factor).
    pub at_idle_real_s: f64,
    /// The packet's ends, and who was on the other end.
    pub from: String,
    pub to: String,
    pub peer: String,
    /// `socket`: the owner in the lab's socket listings; `namespace`: a socket the listings do
    /// not show, named by its namespace; `node`: a forwarding node's own act.
    pub named_by: &'static str,
    /// Envoy's own account of that connection's end (access log), for a proxy's act.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy: Option<String>,
    /// A forwarding node's conntrack: when the flow's entry expired (its last segment there +
    /// the configured timeout) and when conntrack reported it removed (DESTROY, measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conntrack: Option<ConntrackView>,
}

/// What a middlebox's conntrack says about the flow it acted on.
#[derive(Clone, Debug, Serialize)]
pub struct ConntrackView {
    /// Seconds of idle at the flow's last segment through the node (measured).
    pub last_segment_at_idle_s: f64,
    /// Plus the node's configured timeout: when the entry expired.
    pub expired_at_idle_s: Option<f64>,
    /// Conntrack's DESTROY event for the flow, as `conntrack -E` received it (measured; the
    /// kernel removes an expired entry when the next segment looks it up, or when its garbage
    /// collector passes).
    pub destroyed_at_idle_s: Option<f64>,
    /// `conntrack -E` ran from the capture's start to its end: no event means none came.
    pub watched: bool,
}

/// One arrow of a sequence diagram: a packet from one lifeline to another.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Arrow {
    /// Seconds since the app's connection's first packet.
    pub t: f64,
    /// Indexes into the lifelines.
    pub from: usize,
    pub to: usize,
    /// `SYN`, `FIN`, `RST`, `data`, `keepalive`.
    pub kind: String,
    /// It ended at `to` without going on (a forwarding node dropped it).
    pub dropped: bool,
}

/// Which hop acted first on one connection of the app that ended badly, and what followed.
#[derive(Clone, Debug, Serialize)]
pub struct Attribution {
    /// The connection that ended badly: `client → server` as its client's socket sees it.
    pub connection: String,
    /// Whose connection it is: `app`, or a proxy's upstream one (`sidecar`) when the app's
    /// own stayed up (an HTTP or HTTP/2 pool).
    pub client: String,
    /// What the app's own side of it showed (`idlelab explain`'s diagnosis).
    pub app_saw: String,
    /// The hop that acted first after the idle began.
    pub first: Act,
    /// What followed, up to the end of the app's connection (at most a few).
    pub then: Vec<Act>,
    pub sentence: String,
    /// The cell's lifelines, and the packets of the diagram.
    pub lifelines: Vec<String>,
    pub arrows: Vec<Arrow>,
    /// Where the idle gap is on the diagram's time axis (seconds since the first packet).
    pub idle_from_t: f64,
    pub idle_to_t: f64,
}

/// One packet, however many interfaces saw it.
struct Packet {
    seg: Segment,
    /// (node, interface name, outbound) of each sighting.
    seen: Vec<(String, String, Option<bool>)>,
    first_ts: f64,
}

impl Packet {
    /// The node that sent it: a loopback packet's node; else the node that sent it out and
    /// never received it.
    fn origin(&self) -> Option<&str> {
        if let Some((n, _, _)) = self.seen.iter().find(|(_, i, _)| i == "lo") {
            return Some(n);
        }
        let received: BTreeSet<&str> =
            self.seen.iter().filter(|(_, _, o)| *o == Some(false)).map(|(n, _, _)| n.as_str()).collect();
        self.seen
            .iter()
            .find(|(n, _, o)| *o == Some(true) && !received.contains(n.as_str()))
            .map(|(n, _, _)| n.as_str())
    }

    /// The node it reached last: a loopback packet's node, a node that received it and did
    /// not send it on, or a forwarding node that dropped it (`true`).
    fn end(&self, map: &PathMap) -> Option<(&str, bool)> {
        if let Some((n, _, _)) = self.seen.iter().find(|(_, i, _)| i == "lo") {
            return Some((n, false));
        }
        let sent: BTreeSet<&str> =
            self.seen.iter().filter(|(_, _, o)| *o == Some(true)).map(|(n, _, _)| n.as_str()).collect();
        let mut ends = self.seen.iter().filter(|(n, _, o)| *o == Some(false) && !sent.contains(n.as_str()));
        ends.next().map(|(n, _, _)| (n.as_str(), map.nodes.get(n).is_some_and(|a| a.forwards)))
    }
}

/// Who owns `addr` (talking to `peer`) in `node`: the socket listings (the exact socket, else
/// the one socket talking to `peer` from that address's host — a redirect listener's socket
/// shows its own port, its packets the service's —, else any socket on `addr`); else the
/// node's actors (a proxy's listener ports on loopback; a socket of the app's namespace on its
/// veth is its proxy's).
fn owner(map: &PathMap, node: &str, addr: SocketAddr, peer: SocketAddr, on_lo: bool) -> (String, &'static str) {
    let n = node.to_string();
    if let Some(a) = map.sockets.get(&(n.clone(), addr, peer)) {
        return (a.clone(), "socket");
    }
    let by_peer: Vec<&String> = map
        .sockets
        .iter()
        .filter(|((nn, local, p), _)| *nn == n && *p == peer && local.ip() == addr.ip())
        .map(|(_, a)| a)
        .collect();
    if let [only] = by_peer[..] {
        return (only.clone(), "socket");
    }
    if let Some((_, a)) = map.sockets.iter().find(|((nn, local, _), _)| *nn == n && *local == addr) {
        return (a.clone(), "socket");
    }
    let Some(n) = map.nodes.get(node) else { return (node.to_string(), "namespace") };
    if n.forwards {
        return (n.main.clone(), "node");
    }
    let actor = match &n.proxy {
        Some(p) if on_lo && super::read::REDIRECT_PORTS.contains(&addr.port()) => p.clone(),
        Some(p) if !on_lo && n.main == "app" => p.clone(),
        _ => n.main.clone(),
    };
    (actor, "namespace")
}

/// The node of an interface named `<node> <ifname>`.
fn split_iface(name: &str) -> (String, String) {
    match name.split_once(' ') {
        Some((n, i)) => (n.to_string(), i.to_string()),
        None => (name.to_string(), String::new()),
    }
}

/// Every connection of the app that ended badly in a cell's capture, each with the hop that
/// acted first. `iface_names` are the capture's interface names; `factor` the cell's.
pub fn attribute(segments: &[Segment], iface_names: &[String], map: &PathMap, factor: f64) -> Vec<Attribution> {
    let ifaces: Vec<(String, String)> = iface_names.iter().map(|n| split_iface(n)).collect();
    let data_path =
        |s: &Segment| !map.control_ports.contains(&s.src.port()) && !map.control_ports.contains(&s.dst.port());
    // One address pair per connection on a pod's loopback, as `explain` reads it.
    let mut redirects = super::read::LoopbackRedirects::default();
    let segments: Vec<Segment> = segments
        .iter()
        .filter(|s| data_path(s))
        .map(|s| {
            let mut s = s.clone();
            redirects.fix(&mut s);
            s
        })
        .collect();
    // A cluster's NATs (kube-proxy's, a middlebox pod's) give one connection other addresses
    // on each side of them: joined by their SYN's sequence number.
    let nat = super::read::NatJoin::of(&segments);
    let segments: Vec<Segment> = segments
        .into_iter()
        .map(|mut s| {
            nat.fix(&mut s);
            s
        })
        .collect();
    // …and what the hops themselves recorded of those connections (conntrack's tuples, the
    // proxies' logged addresses) as the client's pairs too.
    let joined;
    let map = if nat.joined() == 0 {
        map
    } else {
        joined = through_nat(map, &nat);
        &joined
    };
    let packets = group(segments.iter(), &ifaces);

    // Every connection as each node saw it; judged from its client's own node: the app's,
    // and a proxy's upstream ones (an HTTP/2 or HTTP pool's connection fails while the app's
    // own stays up). The app's come first; a proxy's is attributed only when no connection it
    // carries already was.
    let mut explainer = Explainer::default();
    for s in &segments {
        explainer.add(s);
    }
    let proxies: BTreeSet<&str> = map.nodes.values().filter_map(|n| n.proxy.as_deref()).collect();
    let mut judged: Vec<(u8, Finding, String)> = Vec::new();
    for f in explainer.findings() {
        // Its own reset is the client's end of the run, not a hop's act.
        if f.diagnosis == Diagnosis::ClientReset {
            continue;
        }
        let Some((node, ifname)) = ifaces.get(f.iface as usize) else { continue };
        let (mut client, mut named_by) = owner(map, node, f.client, f.dialled.unwrap_or(f.server), ifname == "lo");
        // No listing names the socket: a proxy's access log may (its upstream connection).
        if named_by == "namespace"
            && let Some(proxy) = logged_upstream(map, f.client)
        {
            (client, named_by) = (proxy, "access log");
        }
        let rank = match client.as_str() {
            "app" => 0,
            c if proxies.contains(c) && matches!(named_by, "socket" | "access log") => 1,
            _ => continue,
        };
        judged.push((rank, f, client));
    }
    judged.sort_by_key(|(rank, _, _)| *rank);
    let mut out: Vec<Attribution> = Vec::new();
    let mut carried: BTreeSet<SocketAddr> = BTreeSet::new();
    for (rank, mut f, client) in judged {
        // A proxy's failed upstream connection is attributed only when no app connection it
        // carried already was; every app connection is.
        if rank > 0 && carried.contains(&f.client) {
            continue;
        }
        if f.dialled.is_none() {
            f.dialled = redirects.original(f.iface, f.client);
        }
        let chain = chain(map, (f.client, f.server), (f.first, f.last), rank > 0);
        if let Some(a) = attribute_one(&f, &client, &chain, &packets, map, factor) {
            carried.extend(chain.1.iter().copied());
            out.push(a);
        }
    }
    out
}

/// `map` with the addresses a NAT rewrote given as the client's: a middlebox's conntrack
/// tuple (its own side of the NAT) and a proxy's logged downstream and upstream-local
/// addresses (behind a masquerade).
fn through_nat(map: &PathMap, nat: &super::read::NatJoin) -> PathMap {
    let mut map = map.clone();
    for (_, t, s, d) in &mut map.destroys {
        if let Some((cs, cd)) = nat.canonical((*s, *d), *t) {
            (*s, *d) = (cs, cd);
        }
    }
    for line in map.access_logs.values_mut().flatten() {
        for k in ["downstream", "upstream_local"] {
            if let Some(c) = logged_addr(line, k).and_then(|a| nat.client_of(a)) {
                line[k] = c.to_string().into();
            }
        }
    }
    map
}

/// The proxy whose access log names `addr` as its upstream connection's own end: the owner
/// of that socket when no listing names it (a cluster's pods are not listed).
fn logged_upstream(map: &PathMap, addr: SocketAddr) -> Option<String> {
    map.access_logs
        .iter()
        .find(|(_, lines)| lines.iter().any(|l| logged_addr(l, "upstream_local") == Some(addr)))
        .map(|(actor, _)| actor.clone())
}

/// Sightings of one packet, grouped, in time order.
fn group<'a>(segments: impl Iterator<Item = &'a Segment>, ifaces: &[(String, String)]) -> Vec<Packet> {
    type Key = (SocketAddr, SocketAddr, u32, u32, u8, u32);
    let key = |s: &Segment| -> Key {
        let flags = u8::from(s.syn) | u8::from(s.ack) << 1 | u8::from(s.fin) << 2 | u8::from(s.rst) << 3;
        (s.src, s.dst, s.seq, s.ack_no, flags, s.len)
    };
    let mut packets: Vec<Packet> = Vec::new();
    let mut open: BTreeMap<Key, usize> = BTreeMap::new();
    for s in segments {
        let (node, ifname) =
            ifaces.get(s.iface as usize).cloned().unwrap_or_else(|| (format!("if{}", s.iface), String::new()));
        let k = key(s);
        match open.get(&k) {
            Some(&i)
                if s.ts - packets[i].first_ts <= SAME_PACKET_S
                    && !packets[i].seen.iter().any(|(n, f, o)| *n == node && *f == ifname && *o == s.outbound) =>
            {
                packets[i].seen.push((node, ifname, s.outbound));
            }
            _ => {
                open.insert(k, packets.len());
                packets.push(Packet { seg: s.clone(), seen: vec![(node, ifname, s.outbound)], first_ts: s.ts });
            }
        }
    }
    packets
}

/// Envoy's account of the connection with one of `ends` as an end, from its access log: of
/// the lines that name it (a pooled upstream is on every request's), the one that ended
/// nearest `at`.
fn envoy_account(map: &PathMap, actor: &str, ends: &[SocketAddr], at: f64) -> Option<String> {
    let lines = map.access_logs.get(actor)?;
    let line = lines
        .iter()
        .filter(|l| {
            ["downstream", "upstream_local"].iter().any(|k| logged_addr(l, k).is_some_and(|a| ends.contains(&a)))
        })
        .min_by(|a, b| {
            let off = |l: &serde_json::Value| line_span(l).map_or(f64::MAX, |(_, e)| (e - at).abs());
            off(a).total_cmp(&off(b))
        })?;
    let field = |k: &str| l_str(line, k);
    let mut parts = Vec::new();
    for (k, name) in [
        ("flags", "flags"),
        ("close_reason", "downstream local close"),
        ("upstream_close_reason", "upstream local close"),
        ("downstream_close", "downstream close type"),
        ("upstream_close", "upstream close type"),
        ("termination", "termination"),
    ] {
        if let Some(v) = field(k) {
            parts.push(format!("{name} {v}"));
        }
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// An address an access log line gives under `k` (`downstream`, `upstream_local`, …).
fn logged_addr(line: &serde_json::Value, k: &str) -> Option<SocketAddr> {
    line[k].as_str().and_then(|a| a.parse().ok())
}

fn l_str(line: &serde_json::Value, k: &str) -> Option<String> {
    line[k].as_str().filter(|v| !v.is_empty() && *v != "-").map(str::to_string)
}

/// When an access log line's connection or request was open: its start and end (seconds
/// since the epoch), when the line says.
fn line_span(line: &serde_json::Value) -> Option<(f64, f64)> {
    let start: jiff::Timestamp = line["start"].as_str()?.parse().ok()?;
    let start = start.as_millisecond() as f64 / 1000.0;
    let duration = line["duration_ms"].as_str().and_then(|d| d.parse::<f64>().ok()).or(line["duration_ms"].as_f64())?;
    Some((start, start + duration / 1000.0))
}

/// The connections that carry the one from `client` to `server` over `[first, last]`: the
/// pairs of ends on each hop. Each proxy's access log pairs a downstream address with the
/// upstream socket it used (`upstream_local` → `upstream`); only lines open during the
/// connection count. From the app's connection the chain follows downstream → upstream only,
/// so the app connections that shared one pooled upstream stay apart. From a proxy's upstream
/// connection it also follows back to the app connections it carried (`carried`). A
/// middlebox keeps the addresses.
fn chain(
    map: &PathMap,
    (client, server): (SocketAddr, SocketAddr),
    (first, last): (f64, f64),
    back: bool,
) -> (BTreeSet<(SocketAddr, SocketAddr)>, BTreeSet<SocketAddr>) {
    let mut pairs: BTreeSet<(SocketAddr, SocketAddr)> = [(client, server)].into();
    let mut clients: BTreeSet<SocketAddr> = [client].into();
    let lines: Vec<&serde_json::Value> = map
        .access_logs
        .values()
        .flatten()
        .filter(|l| line_span(l).is_none_or(|(s, e)| s <= last + 1.0 && e >= first - 1.0))
        .collect();
    loop {
        let before = (pairs.len(), clients.len());
        for line in &lines {
            let addr = |k: &str| logged_addr(line, k);
            let (Some(down), Some(up)) = (addr("downstream"), addr("upstream_local")) else { continue };
            if clients.contains(&down) || (back && clients.contains(&up)) {
                clients.insert(up);
                if let Some(host) = addr("upstream") {
                    pairs.insert((up, host));
                }
                if back {
                    clients.insert(down);
                }
            }
        }
        if (pairs.len(), clients.len()) == before {
            return (pairs, clients);
        }
    }
}

fn attribute_one(
    f: &Finding,
    client: &str,
    (pairs, clients): &(BTreeSet<(SocketAddr, SocketAddr)>, BTreeSet<SocketAddr>),
    packets: &[Packet],
    map: &PathMap,
    factor: f64,
) -> Option<Attribution> {
    // A packet of the chain: one of its connections, or to or from a client address of it (a
    // downstream connection whose listener address the log does not give).
    let on_chain = |p: &&Packet| {
        let (s, d) = (p.seg.src, p.seg.dst);
        pairs.contains(&(s, d)) || pairs.contains(&(d, s)) || clients.contains(&s) || clients.contains(&d)
    };
    let packets: Vec<&Packet> = packets.iter().filter(on_chain).collect();
    let packets = &packets[..];
    let idle_from = f.idle_from;
    let end = f.last + SAME_PACKET_S;
    let act_of = |p: &Packet| -> Option<Act> {
        let action = if p.seg.rst {
            Action::Reset
        } else if p.seg.fin {
            Action::Fin
        } else if matches!(p.end(map), Some((_, true))) {
            Action::Drop
        } else {
            return None;
        };
        let lo = p.seen.iter().any(|(_, i, _)| i == "lo");
        let (actor, named_by) = match action {
            Action::Drop => (p.end(map)?.0.to_string(), "node"),
            _ => {
                let node = p.origin()?;
                owner(map, node, p.seg.src, p.seg.dst, lo)
            }
        };
        // Whom it was for: the receiver; for a drop, the sender.
        let peer = match (action, p.end(map)) {
            (Action::Drop, _) => p.origin().map(|n| owner(map, n, p.seg.src, p.seg.dst, lo).0),
            (_, Some((node, false))) => Some(owner(map, node, p.seg.dst, p.seg.src, lo).0),
            (_, Some((node, true))) => Some(format!("far end (dropped at {node})")),
            (_, None) => None,
        }
        .unwrap_or_else(|| "hop outside the capture".into());
        let envoy = (action != Action::Drop && map.nodes.values().any(|n| n.proxy.as_deref() == Some(actor.as_str())))
            .then(|| envoy_account(map, &actor, &[p.seg.src, p.seg.dst], p.first_ts))
            .flatten();
        let at = p.first_ts - idle_from;
        let conntrack = map.nodes.get(&actor).filter(|n| n.forwards).map(|_| {
            let flow =
                |a: SocketAddr, b: SocketAddr| (a == p.seg.src && b == p.seg.dst) || (a == p.seg.dst && b == p.seg.src);
            // The flow's last segment the node forwarded (received and sent on) before the act.
            let forwarded = |q: &Packet| {
                let at = |out: bool| q.seen.iter().any(|(n, _, o)| *n == actor && *o == Some(out));
                at(true) && at(false)
            };
            let last = packets
                .iter()
                .filter(|q| q.first_ts < p.first_ts && flow(q.seg.src, q.seg.dst) && forwarded(q))
                .map(|q| q.first_ts)
                .fold(f64::NAN, f64::max);
            let destroyed = map
                .destroys
                .iter()
                .filter(|(n, t, s, d)| *n == actor && flow(*s, *d) && *t <= p.first_ts + SAME_PACKET_S)
                .map(|(_, t, _, _)| *t)
                .fold(f64::NAN, f64::max);
            let of = |t: f64| (!t.is_nan()).then_some(t - idle_from);
            ConntrackView {
                last_segment_at_idle_s: of(last).unwrap_or(0.0),
                expired_at_idle_s: of(last).zip(map.forget_after.get(&actor)).map(|(l, t)| l + t),
                destroyed_at_idle_s: of(destroyed),
                watched: map.conntrack_watched.get(&actor).copied().unwrap_or(false),
            }
        });
        Some(Act {
            conntrack,
            actor,
            action,
            at_idle_s: at,
            at_idle_real_s: at * factor,
            from: p.seg.src.to_string(),
            to: p.seg.dst.to_string(),
            peer,
            named_by,
            envoy,
        })
    };
    let all: Vec<Act> =
        packets.iter().filter(|p| p.first_ts >= idle_from && p.first_ts <= end).filter_map(|p| act_of(p)).collect();
    // A forwarding node that answers a segment with an RST (reject) did not drop it: its act
    // is the reset.
    let answered = |d: &Act| {
        all.iter().any(|r| {
            r.action == Action::Reset
                && r.actor == d.actor
                && r.at_idle_s >= d.at_idle_s
                && r.at_idle_s - d.at_idle_s <= SAME_PACKET_S
        })
    };
    let mut acts = all.iter().filter(|a| a.action != Action::Drop || !answered(a)).cloned();
    let first = acts.next()?;
    // The app closed its own connection first (its pool's lifetime ran out): whatever came
    // back is the answer to its close, not a hop's act. A proxy that closed its own upstream
    // connection is a hop, and acted.
    if client == "app" && first.actor == client && first.action == Action::Fin {
        return None;
    }
    // What followed: each other hop's first act, and the app's connection's own end.
    let mut then: Vec<Act> = Vec::new();
    for a in acts {
        let seen = then.iter().chain(std::iter::once(&first)).any(|t| t.actor == a.actor && t.action == a.action);
        if !seen && then.len() < 4 {
            then.push(a);
        }
    }
    // Packets lost by the capture of the node where the drop was seen.
    let lost = map.capture_lost.get(&first.actor).copied().unwrap_or(0);
    let sentence = sentence(&first, &then, client, &f.diagnosis, factor, lost);
    let first_at = first.at_idle_s;
    let (lifelines, arrows) = diagram(f, packets, map, &first);
    Some(Attribution {
        connection: format!("{} → {}", f.client, f.dialled.unwrap_or(f.server)),
        client: client.to_string(),
        app_saw: app_saw(&f.diagnosis),
        first,
        then,
        sentence,
        lifelines,
        arrows,
        idle_from_t: idle_from - f.first,
        idle_to_t: idle_from - f.first + first_at,
    })
}

fn app_saw(d: &Diagnosis) -> String {
    match d {
        Diagnosis::ClosedWhileIdle { then_rst: false, .. } => "a FIN while idle".into(),
        Diagnosis::ClosedWhileIdle { then_rst: true, .. } => "a FIN while idle, then an RST on reuse".into(),
        Diagnosis::ForgottenReset { .. } => "an RST on reuse, no FIN before".into(),
        Diagnosis::ResetWhileIdle { .. } => "an RST while idle".into(),
        Diagnosis::Unanswered { retransmissions, .. } => {
            format!("its data unanswered ({retransmissions} retransmissions)")
        }
        Diagnosis::KeepaliveUnanswered { probes, .. } => format!("{probes} keepalive probes unanswered"),
        Diagnosis::ClientReset => "its own reset".into(),
    }
}

/// `6.000 s of idle (1.0 h in the scenario's time)`.
fn when(scaled: f64, factor: f64) -> String {
    let real = if factor <= 1.0 {
        String::new()
    } else {
        format!(" ({} in the scenario's time)", scenario_time(scaled * factor))
    };
    format!("{scaled:.3} s of idle{real}")
}

/// Real-world seconds as the scenario states durations: `1.00 h`, `6.7 min`, `40.0 s`.
pub fn scenario_time(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.2} h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{s:.1} s")
    }
}

/// An actor as a sentence names it: `the middlebox mb1`, `the gateway gw1`, `the sidecar`.
fn the(actor: &str) -> String {
    let numbered = |prefix: &str| {
        actor.strip_prefix(prefix).is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    };
    if numbered("mb") {
        format!("the middlebox {actor}")
    } else if numbered("gw") {
        format!("the gateway {actor}")
    } else {
        format!("the {actor}")
    }
}

fn verb(a: &Act) -> String {
    match a.action {
        Action::Fin => format!("closed its connection to {} with a FIN", the(&a.peer)),
        Action::Reset => format!("sent an RST to {}", the(&a.peer)),
        Action::Drop => format!("dropped a segment from {} (no FIN, no RST)", the(&a.peer)),
    }
}

fn sentence(first: &Act, then: &[Act], client: &str, d: &Diagnosis, factor: f64, lost: u32) -> String {
    let mut s = format!("{} acted first: it {} at {}", the(&first.actor), verb(first), when(first.at_idle_s, factor));
    if first.named_by == "namespace" {
        s.push_str(" (its socket named by its namespace)");
    }
    if first.action == Action::Drop && lost > 0 {
        s.push_str(&format!(
            " (but the capture itself lost {lost} packet(s): this drop may be the capture's, not the hop's)"
        ));
    }
    if let Some(e) = &first.envoy {
        s.push_str(&format!("; Envoy logged {e}"));
    }
    if let Some(c) = &first.conntrack
        && let Some(expired) = c.expired_at_idle_s
    {
        let last = c.last_segment_at_idle_s;
        let last = if last.abs() < 0.0005 {
            "as the idle began".to_string()
        } else if last < 0.0 {
            format!("{:.3} s before the idle began", -last)
        } else {
            format!("at {last:.3} s of idle")
        };
        s.push_str(&format!(
            " (its conntrack entry had expired at {}: the last segment it forwarded, {last}, plus its timeout (configuration)",
            when(expired, factor)
        ));
        match c.destroyed_at_idle_s {
            Some(d) if (first.at_idle_s - d).abs() <= SAME_PACKET_S => {
                s.push_str("; conntrack -E reported the entry destroyed as that segment arrived)")
            }
            Some(d) => s.push_str(&format!("; conntrack -E reported the entry destroyed at {d:.3} s)")),
            None if c.watched => s.push_str("; conntrack -E reported no DESTROY for it)"),
            None => s.push_str("; conntrack -E did not run to the end: no DESTROY to show)"),
        }
    }
    for a in then {
        let dt = a.at_idle_s - first.at_idle_s;
        let dt = if dt < 1.0 { format!("{:.1} ms", dt * 1000.0) } else { format!("{dt:.3} s") };
        s.push_str(&format!("; {dt} later {} {}", the(&a.actor), verb(a)));
    }
    match client {
        "app" => s.push_str(&format!("; the app saw {}", app_saw(d))),
        proxy => s.push_str(&format!("; the {proxy}'s own upstream connection saw {}", app_saw(d))),
    }
    s
}

/// The diagram's lifelines and arrows: the packets of the data path from the app's
/// connection's first packet to its last, one arrow per packet however many hops saw it.
fn diagram(f: &Finding, packets: &[&Packet], map: &PathMap, first: &Act) -> (Vec<String>, Vec<Arrow>) {
    let (act_actor, act_conntrack, idle_from) = (first.actor.clone(), first.conntrack.clone(), f.idle_from);
    let mut lifelines = map.actors.clone();
    let index = |name: &str, lifelines: &mut Vec<String>| {
        lifelines.iter().position(|l| l == name).unwrap_or_else(|| {
            lifelines.push(name.to_string());
            lifelines.len() - 1
        })
    };
    // Keepalive probes: no new data, one below what that direction sent next.
    let mut next: BTreeMap<(SocketAddr, SocketAddr), u32> = BTreeMap::new();
    let mut all = Vec::new();
    for p in packets.iter().filter(|p| p.first_ts >= f.first - SAME_PACKET_S && p.first_ts <= f.last + SAME_PACKET_S) {
        let s = &p.seg;
        let dir = (s.src, s.dst);
        let keepalive =
            s.len <= 1 && !s.syn && !s.fin && !s.rst && next.get(&dir).is_some_and(|n| s.seq == n.wrapping_sub(1));
        if !keepalive {
            let e = s.seq.wrapping_add(s.len + u32::from(s.syn) + u32::from(s.fin));
            let ahead = next.get(&dir).is_none_or(|n| (e.wrapping_sub(*n) as i32) > 0);
            if ahead {
                next.insert(dir, e);
            }
        }
        let kind = if s.rst {
            "RST"
        } else if s.syn && s.ack {
            "SYN-ACK"
        } else if s.syn {
            "SYN"
        } else if s.fin {
            "FIN"
        } else if keepalive {
            "keepalive"
        } else if s.len > 0 {
            "data"
        } else {
            continue;
        };
        let lo = p.seen.iter().any(|(_, i, _)| i == "lo");
        let (Some(origin), Some((end, dropped))) = (p.origin(), p.end(map)) else { continue };
        let from = owner(map, origin, s.src, s.dst, lo).0;
        let to = if dropped { end.to_string() } else { owner(map, end, s.dst, s.src, lo).0 };
        if from == to {
            continue;
        }
        let (from, to) = (index(&from, &mut lifelines), index(&to, &mut lifelines));
        all.push(Arrow { t: p.first_ts - f.first, from, to, kind: kind.into(), dropped });
    }
    // A middlebox's conntrack, on its lifeline: when the entry expired (configuration) and
    // when conntrack reported it destroyed (measured).
    if let Some(c) = act_conntrack {
        let i = index(&act_actor, &mut lifelines);
        let at = |idle_s: f64| idle_from + idle_s - f.first;
        if let Some(e) = c.expired_at_idle_s {
            all.push(Arrow { t: at(e), from: i, to: i, kind: "expired".into(), dropped: false });
        }
        if let Some(d) = c.destroyed_at_idle_s {
            all.push(Arrow { t: at(d), from: i, to: i, kind: "DESTROY".into(), dropped: false });
        }
        all.sort_by(|a, b| a.t.total_cmp(&b.t));
    }
    // Keep every SYN, FIN, RST, keepalive and drop; data at the start and the end.
    let data: Vec<usize> =
        all.iter().enumerate().filter(|(_, a)| a.kind == "data" && !a.dropped).map(|(i, _)| i).collect();
    let other = all.len() - data.len();
    let room = MAX_ARROWS.saturating_sub(other);
    let keep: BTreeSet<usize> = if data.len() > room {
        data.iter().take(room / 2).chain(data.iter().skip(data.len() - (room - room / 2))).copied().collect()
    } else {
        data.iter().copied().collect()
    };
    let arrows = all
        .into_iter()
        .enumerate()
        .filter(|(i, a)| a.kind != "data" || a.dropped || keep.contains(i))
        .map(|(_, a)| a)
        .collect();
    (lifelines, arrows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "198.18.0.1:40000";
    const SRV: &str = "198.18.0.6:6379";

    /// A middlebox path's interfaces, and what the lab knows of it.
    fn middlebox_path() -> (Vec<String>, PathMap) {
        let names = ["app to-srv", "mb0 to-app", "mb0 to-srv", "srv to-app"].map(String::from).to_vec();
        let mut map = PathMap { actors: vec!["app".into(), "mb0".into(), "server".into()], ..Default::default() };
        map.nodes.insert("app".into(), NodeActors { main: "app".into(), ..Default::default() });
        map.nodes.insert("mb0".into(), NodeActors { main: "mb0".into(), proxy: None, forwards: true });
        map.nodes.insert("srv".into(), NodeActors { main: "server".into(), ..Default::default() });
        map.sockets.insert(("app".into(), APP.parse().unwrap(), SRV.parse().unwrap()), "app".into());
        map.sockets.insert(("srv".into(), SRV.parse().unwrap(), APP.parse().unwrap()), "server".into());
        map.forget_after.insert("mb0".into(), 2.0);
        (names, map)
    }

    /// A segment on interface `iface`; `flags` among `S`, `A`, `F`, `R`.
    fn segment(
        iface: u32,
        ts: f64,
        (src, dst): (SocketAddr, SocketAddr),
        flags: &str,
        seq: u32,
        len: u32,
        outbound: bool,
    ) -> Segment {
        Segment {
            iface,
            ts,
            src,
            dst,
            syn: flags.contains('S'),
            ack: flags.contains('A'),
            fin: flags.contains('F'),
            rst: flags.contains('R'),
            seq,
            ack_no: 0,
            len,
            outbound: Some(outbound),
        }
    }

    /// One segment seen on `hops` (interface index, outbound), at `ts`.
    fn seen(out: &mut Vec<Segment>, ts: f64, from_app: bool, flags: &str, seq: u32, len: u32, hops: &[(u32, bool)]) {
        let (src, dst) = if from_app { (APP, SRV) } else { (SRV, APP) };
        for (i, &(iface, outbound)) in hops.iter().enumerate() {
            let ends = (src.parse().unwrap(), dst.parse().unwrap());
            out.push(segment(iface, ts + i as f64 * 1e-5, ends, flags, seq, len, outbound));
        }
    }

    /// App to server across the middlebox: each of the four sightings.
    const FORWARD: [(u32, bool); 4] = [(0, true), (1, false), (2, true), (3, false)];
    const BACK: [(u32, bool); 4] = [(3, true), (2, false), (1, true), (0, false)];

    fn warm() -> Vec<Segment> {
        let mut s = Vec::new();
        seen(&mut s, 0.0, true, "S", 100, 0, &FORWARD);
        seen(&mut s, 0.001, false, "SA", 500, 0, &BACK);
        seen(&mut s, 0.002, true, "A", 101, 14, &FORWARD);
        seen(&mut s, 0.003, false, "A", 501, 7, &BACK);
        s
    }

    /// The listings name a socket by its two ends; a segment whose peer the listings never saw
    /// with that local address (a redirect's other side) still gets the socket's owner by its
    /// local address, before the node's actors are guessed.
    #[test]
    fn a_socket_is_owned_by_its_local_address_when_its_peer_differs() {
        let mut map = PathMap::default();
        map.nodes
            .insert("app".into(), NodeActors { main: "app".into(), proxy: Some("sidecar".into()), forwards: false });
        let local: SocketAddr = "127.0.0.6:43000".parse().unwrap();
        map.sockets.insert(("app".into(), local, "198.18.0.6:6379".parse().unwrap()), "sidecar".into());
        let elsewhere: SocketAddr = "198.18.0.9:6379".parse().unwrap();
        assert_eq!(owner(&map, "app", local, elsewhere, false), ("sidecar".to_string(), "socket"));
        // Not in the listings: the node's actors (a socket of the app's namespace on its veth
        // is its proxy's; on loopback, outside the redirect ports, the app's).
        let unknown: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        assert_eq!(owner(&map, "app", unknown, elsewhere, true), ("app".to_string(), "namespace"));
    }

    #[test]
    fn a_middlebox_that_answers_a_forgotten_flow_with_rst_acted_first() {
        let (names, map) = middlebox_path();
        let mut s = warm();
        // After 10 s of idle: the app writes; the middlebox takes it in, never sends it on, and
        // sends an RST in the server's name.
        seen(&mut s, 10.0, true, "A", 115, 14, &FORWARD[..2]);
        seen(&mut s, 10.001, false, "R", 508, 0, &[(1, true), (0, false)]);
        let a = attribute(&s, &names, &map, 100.0);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!((a[0].first.actor.as_str(), a[0].first.action), ("mb0", Action::Reset), "{}", a[0].sentence);
        assert!((a[0].first.at_idle_s - 10.0).abs() < 0.01, "{}", a[0].first.at_idle_s);
        assert!(a[0].sentence.contains("(16.7 min in the scenario's time)"), "{}", a[0].sentence);
        let c = a[0].first.conntrack.as_ref().unwrap();
        assert!((c.expired_at_idle_s.unwrap() - 2.0).abs() < 0.01, "{c:?}");
        assert_eq!(a[0].lifelines, ["app", "mb0", "server"]);
        let rst = a[0].arrows.iter().find(|x| x.kind == "RST").unwrap();
        assert_eq!((rst.from, rst.to, rst.dropped), (1, 0, false));
        let write = a[0].arrows.iter().rfind(|x| x.kind == "data").unwrap();
        assert_eq!((write.from, write.to, write.dropped), (0, 1, true), "the write ends at the middlebox");
    }

    #[test]
    fn a_middlebox_that_drops_acted_first_and_the_server_never_saw_the_write() {
        let (names, map) = middlebox_path();
        let mut s = warm();
        for t in [10.0, 10.2, 10.6, 11.4] {
            seen(&mut s, t, true, "A", 115, 14, &FORWARD[..2]);
        }
        let a = attribute(&s, &names, &map, 1.0);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!((a[0].first.actor.as_str(), a[0].first.action), ("mb0", Action::Drop), "{}", a[0].sentence);
        assert!(a[0].sentence.contains("its data unanswered (3 retransmissions)"), "{}", a[0].sentence);
    }

    /// A pool that closes its connection itself (its lifetime ran out as the idle began): the
    /// RST that answers its FIN is no hop's act, and nothing is attributed.
    #[test]
    fn a_connection_the_app_closed_itself_is_no_hops_act() {
        let (names, map) = middlebox_path();
        let mut s = warm();
        seen(&mut s, 0.004, true, "FA", 115, 0, &FORWARD);
        seen(&mut s, 0.005, false, "R", 508, 0, &BACK);
        assert!(attribute(&s, &names, &map, 1.0).is_empty());
    }

    /// The same close by a sidecar of its own upstream connection is the sidecar's act.
    #[test]
    fn a_proxy_that_closed_its_upstream_connection_itself_acted() {
        let (names, mut map) = middlebox_path();
        map.nodes.get_mut("app").unwrap().proxy = Some("sidecar".into());
        map.sockets.insert(("app".into(), APP.parse().unwrap(), SRV.parse().unwrap()), "sidecar".into());
        let mut s = warm();
        seen(&mut s, 0.004, true, "FA", 115, 0, &FORWARD);
        seen(&mut s, 0.005, false, "R", 508, 0, &BACK);
        let a = attribute(&s, &names, &map, 1.0);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(
            (a[0].client.as_str(), a[0].first.actor.as_str(), a[0].first.action),
            ("sidecar", "sidecar", Action::Fin)
        );
    }

    #[test]
    fn the_server_closing_first_is_the_server_not_the_hop_that_forwarded_its_fin() {
        let (names, map) = middlebox_path();
        let mut s = warm();
        seen(&mut s, 5.0, false, "FA", 508, 0, &BACK);
        seen(&mut s, 5.001, true, "FA", 115, 0, &FORWARD);
        let a = attribute(&s, &names, &map, 1.0);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!((a[0].first.actor.as_str(), a[0].first.action), ("server", Action::Fin), "{}", a[0].sentence);
        assert_eq!(a[0].first.peer, "app");
    }

    /// A middlebox pod on a cluster: one interface, in and out; the app dials its Service
    /// (kube-proxy DNATs on the node, outside the capture), the pod DNATs to the server's
    /// Service and masquerades. A keepalive it forwards while idle is no drop; the write it
    /// takes in and never sends on, once it forgot the flow, is.
    #[test]
    fn a_middlebox_pod_behind_two_nats_that_drops_acted_first() {
        let names = ["app eth0", "mb0 eth0", "srv eth0"].map(String::from).to_vec();
        let mut map = PathMap { actors: vec!["app".into(), "mb0".into(), "server".into()], ..Default::default() };
        map.nodes.insert("app".into(), NodeActors { main: "app".into(), ..Default::default() });
        map.nodes.insert("mb0".into(), NodeActors { main: "mb0".into(), proxy: None, forwards: true });
        map.nodes.insert("srv".into(), NodeActors { main: "server".into(), ..Default::default() });
        map.forget_after.insert("mb0".into(), 2.0);
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let (app, svc, pod, masq, srv_svc, srv) = (
            a("10.244.0.5:40000"),
            a("10.96.0.9:6379"),
            a("10.244.0.7:6379"),
            a("10.244.0.7:40000"),
            a("10.96.0.4:6379"),
            a("10.244.0.8:6379"),
        );
        let mut s = Vec::new();
        let mut push = |iface, ts, src, dst, flags: &str, seq, len, outbound| {
            s.push(segment(iface, ts, (src, dst), flags, seq, len, outbound))
        };
        // One segment each way across the path: app out, mb in, mb out, server in (and back).
        let mut forward = |ts: f64, flags: &str, seq, len, to_server: bool| {
            push(0, ts, app, svc, flags, seq, len, true);
            push(1, ts + 1e-5, app, pod, flags, seq, len, false);
            if to_server {
                push(1, ts + 2e-5, masq, srv_svc, flags, seq, len, true);
                push(2, ts + 3e-5, masq, srv, flags, seq, len, false);
            }
        };
        forward(0.0, "S", 100, 0, true);
        forward(0.002, "A", 101, 14, true);
        // Idle: a keepalive probe at 1 s crosses (and is answered: not drawn here).
        forward(1.002, "A", 114, 0, true);
        // At 10 s the app writes; the pod forgot the flow and sends nothing on.
        for t in [10.0, 10.2, 10.6, 11.4] {
            forward(t, "A", 115, 14, false);
        }
        let mut back = |ts: f64, flags: &str, seq, len| {
            push(2, ts, srv, masq, flags, seq, len, true);
            push(1, ts + 1e-5, srv_svc, masq, flags, seq, len, false);
            push(1, ts + 2e-5, pod, app, flags, seq, len, true);
            push(0, ts + 3e-5, svc, app, flags, seq, len, false);
        };
        back(0.001, "SA", 500, 0);
        back(0.003, "A", 501, 7);
        s.sort_by(|x, y| x.ts.total_cmp(&y.ts));
        // The pod's conntrack names the flow by its own side of the NAT.
        map.destroys.push(("mb0".into(), 10.00001, app, pod));
        map.conntrack_watched.insert("mb0".into(), true);
        let at = attribute(&s, &names, &map, 1.0);
        assert_eq!(at.len(), 1, "{at:?}");
        assert_eq!(at[0].connection, "10.244.0.5:40000 → 10.96.0.9:6379", "the app's own ends");
        assert_eq!((at[0].first.actor.as_str(), at[0].first.action), ("mb0", Action::Drop), "{}", at[0].sentence);
        assert!((at[0].first.at_idle_s - 10.0 + 0.003).abs() < 0.01, "not the keepalive at 1 s: {}", at[0].sentence);
        let c = at[0].first.conntrack.as_ref().unwrap();
        assert!((c.last_segment_at_idle_s - 0.999).abs() < 0.01, "the keepalive was forwarded: {c:?}");
        assert!(c.destroyed_at_idle_s.is_some_and(|d| (d - 9.997).abs() < 0.01), "{c:?}");
        assert!(
            at[0].sentence.contains("conntrack -E reported the entry destroyed as that segment arrived"),
            "{}",
            at[0].sentence
        );
    }

    /// A sidecar path as the lab captures it: the app's connection on the app's loopback
    /// (to the listener after istio-iptables' redirect, the answers from the address dialled),
    /// the sidecar's upstream one on the veth.
    #[test]
    fn the_sidecars_idle_close_is_the_sidecars_on_the_connection_the_app_dialled() {
        let (app, up, srv, listener): (SocketAddr, SocketAddr, SocketAddr, SocketAddr) = (
            "198.18.0.1:40000".parse().unwrap(),
            "198.18.0.1:40010".parse().unwrap(),
            "198.18.0.2:6379".parse().unwrap(),
            "127.0.0.1:15001".parse().unwrap(),
        );
        let names = ["app lo", "app to-srv", "srv to-app"].map(String::from).to_vec();
        let mut map = PathMap { actors: vec!["app".into(), "sidecar".into(), "server".into()], ..Default::default() };
        map.nodes
            .insert("app".into(), NodeActors { main: "app".into(), proxy: Some("sidecar".into()), forwards: false });
        map.nodes.insert("srv".into(), NodeActors { main: "server".into(), ..Default::default() });
        map.sockets.insert(("app".into(), app, srv), "app".into());
        map.sockets.insert(("app".into(), listener, app), "sidecar".into());
        map.sockets.insert(("app".into(), up, srv), "sidecar".into());
        map.sockets.insert(("srv".into(), srv, up), "server".into());
        map.access_logs.insert(
            "sidecar".into(),
            vec![serde_json::json!({"downstream": app.to_string(), "upstream_local": up.to_string(), "upstream": srv.to_string()})],
        );
        // Each connection its own numbers, as a kernel picks them.
        let seg = |iface, ts, src, dst, flags: &str, len, outbound| {
            let seq = if src == up || dst == up { 2 } else { 1 };
            Segment { ack_no: 1, ..segment(iface, ts, (src, dst), flags, seq, len, outbound) }
        };
        let mut s = vec![
            seg(0, 0.000, app, listener, "S", 0, false),
            seg(0, 0.001, srv, app, "SA", 0, false),
            seg(1, 0.002, up, srv, "S", 0, true),
            seg(2, 0.00201, up, srv, "S", 0, false),
            seg(2, 0.003, srv, up, "SA", 0, true),
            seg(1, 0.00301, srv, up, "SA", 0, false),
            seg(0, 0.004, app, listener, "A", 14, false),
        ];
        // 6 s later the sidecar closes both sides.
        s.push(seg(0, 6.004, srv, app, "FA", 0, false));
        s.push(seg(1, 6.0041, up, srv, "FA", 0, true));
        s.push(seg(2, 6.00411, up, srv, "FA", 0, false));
        let a = attribute(&s, &names, &map, 600.0);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].connection, "198.18.0.1:40000 → 198.18.0.2:6379", "the address the app dialled");
        assert_eq!((a[0].first.actor.as_str(), a[0].first.action), ("sidecar", Action::Fin), "{}", a[0].sentence);
        assert_eq!(a[0].first.peer, "app");
        assert!(a[0].sentence.contains("at 6.000 s of idle (1.00 h in the scenario's time)"), "{}", a[0].sentence);
        // The chain holds the sidecar's upstream connection too: its FIN to the server is drawn.
        let fin_up = a[0].arrows.iter().find(|x| x.kind == "FIN" && x.from == 1 && x.to == 2);
        assert!(fin_up.is_some(), "{:?}", a[0].arrows);
    }
}
