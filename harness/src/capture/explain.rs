//! `idlelab explain`: what a capture taken on one hop says about each TCP connection that
//! ended badly — how long it sat idle, whether a FIN or keepalive probes were seen, who sent
//! the RST or whose segments went unanswered — and which failure of the lab that points to.
//!
//! ```text
//!   segments (read.rs) ─▶ per connection and interface: its story in order
//!        ─▶ Finding { idle, fin, rst, retransmissions, keepalive probes } ─▶ Diagnosis ─▶ text
//! ```
//!
//! Every sentence is from the packets; where the capture cannot tell (it starts mid-connection,
//! so the client is guessed from the ports), the sentence says so.

use super::read::{LoopbackRedirects, Segment};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The shortest pause before a server's FIN that counts as an idle close (the lab's shortest
/// scaled idle timeout is several seconds; a close right after an answer is a normal one).
const MIN_IDLE_S: f64 = 0.5;

/// One connection's packets on one interface, in order.
#[derive(Debug, Default)]
struct Conn {
    segments: Vec<Segment>,
}

/// Who the capture says a packet came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Client => "the client",
            Side::Server => "the server side",
        }
    }
}

/// What ended a connection badly.
#[derive(Clone, Debug, PartialEq)]
pub enum Diagnosis {
    /// The server side sent FIN after an idle period; the client wrote later and met an RST
    /// (or the capture ends there).
    ClosedWhileIdle { idle_s: f64, then_rst: bool },
    /// No FIN: after an idle period the client wrote and the server side answered RST.
    ForgottenReset { idle_s: f64 },
    /// The server side sent RST while the client had sent nothing since the idle began.
    ResetWhileIdle { idle_s: f64 },
    /// After an idle period the client's data went unanswered: retransmissions, no ACK.
    Unanswered { idle_s: f64, retransmissions: u32, waited_s: f64 },
    /// Keepalive probes from `by` went unanswered.
    KeepaliveUnanswered { probes: u32, by: Side },
    /// The client reset the connection.
    ClientReset,
}

/// One connection that ended badly, as one interface saw it.
#[derive(Clone, Debug)]
pub struct Finding {
    pub iface: u32,
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// When `server` is the sidecar's redirect listener on loopback: the address the app
    /// dialled (seen on the sidecar's answers).
    pub dialled: Option<SocketAddr>,
    /// Whether the client was known from a SYN, or guessed from the ports.
    pub client_from_syn: bool,
    /// The connection's first and last packet in the capture (seconds since the epoch).
    pub first: f64,
    pub last: f64,
    pub fin_by: Option<(Side, f64)>,
    pub rst_by: Option<(Side, f64)>,
    pub keepalive_probes: u32,
    pub diagnosis: Diagnosis,
    /// Where the silence the diagnosis measured began (seconds since the epoch).
    pub idle_from: f64,
}

/// Collects segments into connections; [`Explainer::findings`] judges them.
#[derive(Default)]
pub struct Explainer {
    /// By interface and address pair: the connections in turn (a port used again after a FIN
    /// or RST is a new connection from its SYN on).
    conns: BTreeMap<(u32, SocketAddr, SocketAddr), Vec<Conn>>,
    redirects: LoopbackRedirects,
}

impl Explainer {
    pub fn add(&mut self, s: &Segment) {
        let mut s = s.clone();
        self.redirects.fix(&mut s);
        let key = if s.src <= s.dst { (s.iface, s.src, s.dst) } else { (s.iface, s.dst, s.src) };
        let turns = self.conns.entry(key).or_default();
        let ended = turns.last().is_none_or(|c| c.segments.iter().any(|x| x.fin || x.rst));
        if turns.is_empty() || (s.syn && !s.ack && ended) {
            turns.push(Conn::default());
        }
        turns.last_mut().expect("a connection").segments.push(s);
    }

    /// Every connection that ended badly, by interface, in the order they started.
    pub fn findings(&self) -> Vec<Finding> {
        let mut out: Vec<Finding> = self.conns.values().flatten().filter_map(judge).collect();
        for f in &mut out {
            f.dialled = self.redirects.original(f.iface, f.client);
        }
        out.sort_by(|a, b| (a.iface, a.first).partial_cmp(&(b.iface, b.first)).unwrap_or(std::cmp::Ordering::Equal));
        out
    }

    pub fn connections(&self) -> usize {
        self.conns.values().map(Vec::len).sum()
    }
}

/// The two ends: the SYN's sender is the client; without a SYN, the end with the higher port.
fn ends(c: &Conn) -> (SocketAddr, SocketAddr, bool) {
    if let Some(syn) = c.segments.iter().find(|s| s.syn && !s.ack) {
        return (syn.src, syn.dst, true);
    }
    if let Some(synack) = c.segments.iter().find(|s| s.syn && s.ack) {
        return (synack.dst, synack.src, true);
    }
    let s = &c.segments[0];
    if s.src.port() > s.dst.port() { (s.src, s.dst, false) } else { (s.dst, s.src, false) }
}

/// A keepalive probe: no new data, its sequence number one below what that side sends next
/// (Linux sends 0 bytes at snd_nxt − 1; others 1 garbage byte). What it sends next is known
/// from its own segments, or, in a capture that starts while the connection idles, from what
/// the peer last acknowledged.
fn is_keepalive(s: &Segment, own_next: Option<u32>, peer_ack: Option<u32>) -> bool {
    let below = |n: Option<u32>| n.is_some_and(|n| s.seq == n.wrapping_sub(1));
    s.len <= 1 && !s.syn && !s.fin && !s.rst && (below(own_next) || below(peer_ack))
}

/// What each segment of a connection is, for the idle arithmetic.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    /// Data, a SYN or a FIN: the connection in use.
    Activity,
    /// A keepalive probe, or the peer's bare ACK that answers one: not use.
    Keepalive,
    /// A bare ACK, an RST.
    Other,
}

/// Each segment's role, and the keepalive probes each side sent (client, server).
fn roles(segs: &[Segment], client: SocketAddr) -> (Vec<Role>, [u32; 2]) {
    let i = |s: &Segment| usize::from(s.src != client);
    let mut next: [Option<u32>; 2] = [None, None];
    let mut acked: [Option<u32>; 2] = [None, None];
    let mut probes = [0u32; 2];
    let mut pending_probe = [false, false];
    let mut roles = Vec::with_capacity(segs.len());
    for s in segs {
        let me = i(s);
        let role = if is_keepalive(s, next[me], acked[1 - me]) {
            probes[me] += 1;
            pending_probe[me] = true;
            Role::Keepalive
        } else if pending_probe[1 - me] && s.len == 0 && !s.syn && !s.fin && !s.rst {
            pending_probe[1 - me] = false;
            Role::Keepalive
        } else if s.len > 0 || s.syn || s.fin {
            Role::Activity
        } else {
            Role::Other
        };
        if role != Role::Keepalive {
            let end = s.seq.wrapping_add(s.len + u32::from(s.syn) + u32::from(s.fin));
            // Only forward movement counts (a retransmission does not move it).
            if next[me].is_none_or(|n| (end.wrapping_sub(n) as i32) > 0) {
                next[me] = Some(end);
            }
        }
        if s.ack {
            acked[me] = Some(s.ack_no);
        }
        roles.push(role);
    }
    (roles, probes)
}

fn judge(c: &Conn) -> Option<Finding> {
    let (client, server, client_from_syn) = ends(c);
    let side = |s: &Segment| if s.src == client { Side::Client } else { Side::Server };
    let segs = &c.segments;
    let first = segs.first()?.ts;
    let last = segs.last()?.ts;
    let fin = segs.iter().find(|s| s.fin).map(|s| (side(s), s.ts));
    let rst = segs.iter().find(|s| s.rst).map(|s| (side(s), s.ts));
    let (roles, probes) = roles(segs, client);

    // The silence before `t`: since the last segment that used the connection (data, SYN,
    // FIN; not keepalive probes, their answers or bare ACKs); from the capture's start when
    // there is none.
    let last_activity_before = |t: f64| {
        segs.iter()
            .zip(&roles)
            .filter(|(s, r)| **r == Role::Activity && s.ts < t)
            .map(|(s, _)| s.ts)
            .fold(first, f64::max)
    };
    let probes_unanswered = |sd: Side| {
        let i = usize::from(sd == Side::Server);
        let first_probe =
            segs.iter().zip(&roles).find(|(s, r)| **r == Role::Keepalive && side(s) == sd).map(|(s, _)| s.ts);
        // Two or more, and nothing at all from the other side after the first of them.
        probes[i] >= 2 && first_probe.is_some_and(|t| !segs.iter().any(|s| s.ts > t && side(s) != sd))
    };
    // The silence before the first keepalive probe of `sd`.
    let first_probe_idle = |sd: Side| {
        let t =
            segs.iter().zip(&roles).find(|(s, r)| **r == Role::Keepalive && side(s) == sd).map_or(last, |(s, _)| s.ts);
        last_activity_before(t)
    };

    let idle_from;
    let diagnosis = match (fin, rst) {
        (Some((Side::Server, fin_ts)), rst) => {
            let idle_s = fin_ts - last_activity_before(fin_ts);
            let then_rst = rst.is_some_and(|(s, _)| s == Side::Server);
            // A server that answers and closes at once (an HTTP `Connection: close`, an admin
            // call) ended nothing badly: only a close after an idle pause, or one the client
            // then wrote into, is an idle close.
            if idle_s < MIN_IDLE_S && !then_rst {
                return None;
            }
            idle_from = fin_ts - idle_s;
            Diagnosis::ClosedWhileIdle { idle_s, then_rst }
        }
        (_, Some((Side::Server, rst_ts))) => {
            // The client's last write before the RST, if nothing from the server answered it.
            let write = segs
                .iter()
                .zip(&roles)
                .filter(|(s, r)| **r == Role::Activity && side(s) == Side::Client && s.len > 0 && s.ts <= rst_ts)
                .map(|(s, _)| s)
                .next_back();
            let answered = |w: &Segment| {
                segs.iter()
                    .zip(&roles)
                    .any(|(s, r)| side(s) == Side::Server && *r == Role::Activity && s.ts > w.ts && s.ts < rst_ts)
            };
            match write {
                Some(w) if !answered(w) => {
                    idle_from = last_activity_before(w.ts);
                    Diagnosis::ForgottenReset { idle_s: w.ts - idle_from }
                }
                _ => {
                    idle_from = last_activity_before(rst_ts);
                    Diagnosis::ResetWhileIdle { idle_s: rst_ts - idle_from }
                }
            }
        }
        (_, Some((Side::Client, _))) if probes_unanswered(Side::Client) => {
            idle_from = first_probe_idle(Side::Client);
            Diagnosis::KeepaliveUnanswered { probes: probes[0], by: Side::Client }
        }
        // A client's RST after its own retransmissions went unanswered is the black hole's.
        (_, Some((Side::Client, rst_ts))) => match unanswered(segs, &roles, client, &last_activity_before) {
            Some((d, from)) => {
                idle_from = from;
                d
            }
            None => {
                idle_from = last_activity_before(rst_ts);
                Diagnosis::ClientReset
            }
        },
        (_, None) if probes_unanswered(Side::Client) => {
            idle_from = first_probe_idle(Side::Client);
            Diagnosis::KeepaliveUnanswered { probes: probes[0], by: Side::Client }
        }
        (_, None) if probes_unanswered(Side::Server) => {
            idle_from = first_probe_idle(Side::Server);
            Diagnosis::KeepaliveUnanswered { probes: probes[1], by: Side::Server }
        }
        (_, None) => {
            let (d, from) = unanswered(segs, &roles, client, &last_activity_before)?;
            idle_from = from;
            d
        }
    };
    Some(Finding {
        iface: segs[0].iface,
        client,
        server,
        dialled: None,
        client_from_syn,
        first,
        last,
        fin_by: fin,
        rst_by: rst,
        keepalive_probes: probes[0] + probes[1],
        diagnosis,
        idle_from,
    })
}

/// The client's data sent again and again with nothing back from the server side: how long
/// the connection was idle before, how many retransmissions, how long the client waited.
fn unanswered(
    segs: &[Segment],
    roles: &[Role],
    client: SocketAddr,
    last_activity_before: &dyn Fn(f64) -> f64,
) -> Option<(Diagnosis, f64)> {
    let from_client: Vec<&Segment> = segs
        .iter()
        .zip(roles)
        .filter(|(s, r)| s.src == client && s.len > 0 && **r == Role::Activity)
        .map(|(s, _)| s)
        .collect();
    let last = *from_client.last()?;
    let sent_at = from_client.iter().find(|s| s.seq == last.seq)?.ts;
    let retransmissions = from_client.iter().filter(|s| s.seq == last.seq).count() as u32 - 1;
    let answered = segs.iter().any(|s| s.src != client && s.ts > sent_at);
    if retransmissions == 0 || answered {
        return None;
    }
    let from = last_activity_before(sent_at);
    let waited_s = segs.last().map(|s| s.ts - sent_at).unwrap_or(0.0);
    Some((Diagnosis::Unanswered { idle_s: sent_at - from, retransmissions, waited_s }, from))
}

/// The shipped scenario that reproduces a diagnosis for a server port, or why there is none.
pub fn reproducer(d: &Diagnosis, server_port: u16) -> Result<&'static str, String> {
    let svc = match server_port {
        6379 => "redis",
        3306 => "mysql",
        11211 => "memcached",
        443 | 8443 => "https",
        80 | 8080 => "http",
        50051 => "grpc",
        15001 | 15006 => {
            return Err(format!(
                "port {server_port} is the sidecar's own listener (istio-iptables redirected the connection): the service's port is not in this capture; `idlelab list` names the scenarios per service"
            ));
        }
        p => {
            return Err(format!(
                "port {p} is none of the lab's services (redis, MySQL, memcached, HTTP, HTTPS, gRPC); the nearest by failure kind is below"
            ));
        }
    };
    Ok(match (d, svc) {
        (Diagnosis::ClosedWhileIdle { idle_s, .. }, "redis") if (1100.0..1300.0).contains(idle_s) => {
            "redis-server-timeout"
        }
        (Diagnosis::ClosedWhileIdle { .. }, "mysql") => "mysql-idle",
        (Diagnosis::ClosedWhileIdle { .. }, "memcached") => "memcached-idle",
        (Diagnosis::ClosedWhileIdle { .. }, "http" | "https") => "http-idle",
        (Diagnosis::ClosedWhileIdle { .. }, "grpc") => "grpc-keepalive-sidecar",
        (Diagnosis::ClosedWhileIdle { .. }, _) => "redis-idle",
        (Diagnosis::ForgottenReset { .. } | Diagnosis::ResetWhileIdle { .. }, "mysql") => "mysql-sidecar-upstream",
        (Diagnosis::ForgottenReset { .. } | Diagnosis::ResetWhileIdle { .. }, "memcached") => "memcached-middlebox",
        (Diagnosis::ForgottenReset { .. } | Diagnosis::ResetWhileIdle { .. }, "http") => "http-sidecar-upstream",
        (Diagnosis::ForgottenReset { .. } | Diagnosis::ResetWhileIdle { .. }, "https") => "https-keepalive",
        (Diagnosis::ForgottenReset { .. } | Diagnosis::ResetWhileIdle { .. }, "grpc") => "grpc-keepalive-direct",
        (Diagnosis::ForgottenReset { .. } | Diagnosis::ResetWhileIdle { .. }, _) => "redis-middlebox",
        (Diagnosis::Unanswered { .. } | Diagnosis::KeepaliveUnanswered { .. }, "grpc") => "grpc-keepalive-blackhole",
        (Diagnosis::Unanswered { .. } | Diagnosis::KeepaliveUnanswered { .. }, _) => "redis-blackhole",
        (Diagnosis::ClientReset, _) => return Err("the client's own reset: no shipped scenario reproduces it".into()),
    })
}

/// The nearest scenario by failure kind alone (for a port none of the lab's services use).
fn nearest(d: &Diagnosis) -> Option<&'static str> {
    reproducer(d, 6379).ok()
}

/// Seconds as a person reads them: `3600.0 s (1 h)`.
fn secs(s: f64) -> String {
    // Branch on the value as printed, so 3599.999 s reads as 1 h.
    let shown = (s * 10.0).round() / 10.0;
    if shown >= 3600.0 {
        format!("{s:.1} s ({:.1} h)", s / 3600.0)
    } else if shown >= 60.0 {
        format!("{s:.1} s ({:.1} min)", s / 60.0)
    } else {
        format!("{s:.3} s")
    }
}

/// What one finding means, in sentences from its packets.
pub fn describe(f: &Finding, iface: Option<&str>) -> String {
    let mut lines = Vec::new();
    let on = iface.map(|n| format!(" on {n}")).unwrap_or_default();
    lines.push(format!("{} → {}{on}", f.client, f.server));
    if let Some(d) = f.dialled {
        lines.push(format!(
            "  the app dialled {d}: istio-iptables redirected it to the sidecar's listener, whose answers come back from {d}"
        ));
    }
    if !f.client_from_syn {
        lines.push(
            "  the capture starts mid-connection (no SYN): the client is guessed from the ports (the higher one), and idle time before the capture is unknown".into(),
        );
    }
    let at = |t: f64| format!("{:.3} s", t - f.first);
    let fin = match f.fin_by {
        Some((s, t)) => format!("FIN from {} at {}", s.name(), at(t)),
        None => "no FIN".into(),
    };
    let rst = match f.rst_by {
        Some((s, t)) => format!("RST from {} at {}", s.name(), at(t)),
        None => "no RST".into(),
    };
    lines.push(format!("  {fin}; {rst}; {} keepalive probe(s) seen", f.keepalive_probes));
    let (what, means) = match &f.diagnosis {
        Diagnosis::ClosedWhileIdle { idle_s, then_rst } => (
            format!(
                "idle {}, then a FIN from the server side{}",
                secs(*idle_s),
                if *then_rst { "; the client wrote to the closed connection and got RST" } else { "" }
            ),
            if (3500.0..3700.0).contains(idle_s) {
                "an idle timeout of 1 h on the server side of this hop: Envoy's tcp_proxy idle_timeout (Istio's default, 1 h) closes both sides with a FIN"
            } else {
                "an idle timeout on the server side of this hop (a proxy's idle_timeout, or the server's own): it closed the connection with a FIN"
            },
        ),
        Diagnosis::ForgottenReset { idle_s } => (
            format!("idle {}, no FIN; the client wrote and the server side answered RST", secs(*idle_s)),
            "something on the path forgot the flow while it was idle and never told either end (a load balancer's or NAT's connection table: no FIN); the next segment met an RST",
        ),
        Diagnosis::ResetWhileIdle { idle_s } => (
            format!("idle {}, no FIN; the server side sent RST with nothing sent by the client", secs(*idle_s)),
            "the server side reset the idle connection (a proxy or the server gave up on it, or a keepalive probe met a device that forgot the flow)",
        ),
        Diagnosis::Unanswered { idle_s, retransmissions, waited_s } => (
            format!(
                "idle {}, then the client's data went unanswered: {retransmissions} retransmission(s) over {}, nothing back",
                secs(*idle_s),
                secs(*waited_s)
            ),
            "a black hole: a device on the path forgot the flow and drops its segments (no RST, no FIN); the client waits for its own timeout or the kernel's retransmission limit (ETIMEDOUT)",
        ),
        Diagnosis::KeepaliveUnanswered { probes, by } => (
            format!("{probes} keepalive probe(s) from {} went unanswered", by.name()),
            "the peer or a device between stopped answering: the kernel's keepalive found a dead or forgotten flow before the next request",
        ),
        Diagnosis::ClientReset => (
            "the client reset the connection".into(),
            "the client's side gave up on it (its own timeout, or a close with unread data)",
        ),
    };
    lines.push(format!("  {what}"));
    lines.push(format!("  points to: {means}"));
    match reproducer(&f.diagnosis, f.dialled.unwrap_or(f.server).port()) {
        Ok(scenario) => lines.push(format!("  reproduce with: idlelab run {scenario}")),
        Err(why) => {
            lines.push(format!("  no reproducer named: {why}"));
            if let (true, Some(near)) = (why.contains("nearest"), nearest(&f.diagnosis)) {
                lines.push(format!("  nearest: idlelab run {near}"));
            }
        }
    }
    lines.join("\n")
}
