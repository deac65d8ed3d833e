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

use super::read::Segment;
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
    /// Whether the client was known from a SYN, or guessed from the ports.
    pub client_from_syn: bool,
    /// The connection's first and last packet in the capture (seconds since the epoch).
    pub first: f64,
    pub last: f64,
    pub fin_by: Option<(Side, f64)>,
    pub rst_by: Option<(Side, f64)>,
    pub keepalive_probes: u32,
    pub diagnosis: Diagnosis,
}

/// Collects segments into connections; [`Explainer::findings`] judges them.
#[derive(Default)]
pub struct Explainer {
    conns: BTreeMap<(u32, SocketAddr, SocketAddr), Conn>,
}

impl Explainer {
    pub fn add(&mut self, s: &Segment) {
        let key = if s.src <= s.dst { (s.iface, s.src, s.dst) } else { (s.iface, s.dst, s.src) };
        self.conns.entry(key).or_default().segments.push(s.clone());
    }

    /// Every connection that ended badly, by interface, in the order they started.
    pub fn findings(&self) -> Vec<Finding> {
        let mut out: Vec<Finding> = self.conns.values().filter_map(judge).collect();
        out.sort_by(|a, b| (a.iface, a.first).partial_cmp(&(b.iface, b.first)).unwrap_or(std::cmp::Ordering::Equal));
        out
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
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

/// A keepalive probe: no new data, its sequence number one below what that side sent next
/// (Linux sends 0 bytes at snd_nxt − 1; others 1 garbage byte).
fn is_keepalive(s: &Segment, next_seq: Option<u32>) -> bool {
    s.len <= 1 && !s.syn && !s.fin && !s.rst && next_seq.is_some_and(|n| s.seq == n.wrapping_sub(1))
}

fn judge(c: &Conn) -> Option<Finding> {
    let (client, server, client_from_syn) = ends(c);
    let side = |s: &Segment| if s.src == client { Side::Client } else { Side::Server };
    let segs = &c.segments;
    let first = segs.first()?.ts;
    let last = segs.last()?.ts;
    let fin = segs.iter().find(|s| s.fin).map(|s| (side(s), s.ts));
    let rst = segs.iter().find(|s| s.rst).map(|s| (side(s), s.ts));

    // Next sequence number per side, and which segments were keepalive probes.
    let mut next: [Option<u32>; 2] = [None, None];
    let mut probes = [0u32; 2];
    let mut keepalive_ts: Vec<f64> = Vec::new();
    let idx = |sd: Side| if sd == Side::Client { 0 } else { 1 };
    for s in segs {
        let i = idx(side(s));
        if is_keepalive(s, next[i]) {
            probes[i] += 1;
            keepalive_ts.push(s.ts);
            continue;
        }
        let advance = s.len + u32::from(s.syn) + u32::from(s.fin);
        let end = s.seq.wrapping_add(advance);
        // Only forward movement counts (a retransmission does not move it).
        if next[i].is_none_or(|n| (end.wrapping_sub(n) as i32) > 0) {
            next[i] = Some(end);
        }
    }

    // The idle gap: the longest pause between two packets that are not keepalive probes or
    // their answers, before the connection's end.
    let data_like: Vec<&Segment> = segs.iter().filter(|s| !keepalive_ts.contains(&s.ts)).collect();
    let idle = |until: f64| -> (f64, f64) {
        let mut best = (0.0, first);
        for w in data_like.windows(2) {
            if w[1].ts > until {
                break;
            }
            let gap = w[1].ts - w[0].ts;
            if gap > best.0 {
                best = (gap, w[0].ts);
            }
        }
        best
    };

    let probes_unanswered = |i: usize| {
        probes[i] >= 2 && {
            // No packet from the other side after the first probe of this side.
            let sd = if i == 0 { Side::Client } else { Side::Server };
            let first_probe = segs.iter().find(|s| side(s) == sd && keepalive_ts.contains(&s.ts)).map(|s| s.ts);
            first_probe.is_some_and(|t| !segs.iter().any(|s| s.ts > t && side(s) != sd))
        }
    };

    let diagnosis = match (fin, rst) {
        (Some((Side::Server, fin_ts)), rst) => {
            let (gap, _) = idle(fin_ts);
            let then_rst = rst.is_some_and(|(s, _)| s == Side::Server);
            // A server that answers and closes at once (an HTTP `Connection: close`, an admin
            // call) ended nothing badly: only a close after an idle pause, or one the client
            // then wrote into, is an idle close.
            if gap < MIN_IDLE_S && !then_rst {
                return None;
            }
            Diagnosis::ClosedWhileIdle { idle_s: gap, then_rst }
        }
        (_, Some((Side::Server, rst_ts))) => {
            // Did the client send data after the idle, just before the RST?
            let (gap, idle_from) = idle(rst_ts);
            let client_wrote =
                segs.iter().any(|s| side(s) == Side::Client && s.len > 1 && s.ts > idle_from && s.ts <= rst_ts);
            if client_wrote {
                Diagnosis::ForgottenReset { idle_s: gap }
            } else {
                Diagnosis::ResetWhileIdle { idle_s: gap }
            }
        }
        (_, Some((Side::Client, _))) if probes_unanswered(0) => {
            Diagnosis::KeepaliveUnanswered { probes: probes[0], by: Side::Client }
        }
        (_, Some((Side::Client, _))) => {
            // A client's RST after its own retransmissions went unanswered is the black hole's.
            match unanswered(segs, client) {
                Some(u) => u,
                None => Diagnosis::ClientReset,
            }
        }
        (_, None) if probes_unanswered(0) => Diagnosis::KeepaliveUnanswered { probes: probes[0], by: Side::Client },
        (_, None) if probes_unanswered(1) => Diagnosis::KeepaliveUnanswered { probes: probes[1], by: Side::Server },
        (_, None) => unanswered(segs, client)?,
    };
    Some(Finding {
        iface: segs[0].iface,
        client,
        server,
        client_from_syn,
        first,
        last,
        fin_by: fin,
        rst_by: rst,
        keepalive_probes: probes[0] + probes[1],
        diagnosis,
    })
}

/// The client's data sent again and again with nothing back from the server side: how long
/// the connection was idle before, how many retransmissions, how long the client waited.
fn unanswered(segs: &[Segment], client: SocketAddr) -> Option<Diagnosis> {
    let from_client: Vec<&Segment> = segs.iter().filter(|s| s.src == client && s.len > 1).collect();
    let last = *from_client.last()?;
    let sent_at = from_client.iter().find(|s| s.seq == last.seq)?.ts;
    let retransmissions = from_client.iter().filter(|s| s.seq == last.seq).count() as u32 - 1;
    let answered = segs.iter().any(|s| s.src != client && s.ts > sent_at);
    if retransmissions == 0 || answered {
        return None;
    }
    let before: Vec<&Segment> = segs.iter().filter(|s| s.ts < sent_at).collect();
    let idle_s = before.last().map(|s| sent_at - s.ts).unwrap_or(0.0);
    let waited_s = segs.last().map(|s| s.ts - sent_at).unwrap_or(0.0);
    Some(Diagnosis::Unanswered { idle_s, retransmissions, waited_s })
}

/// The shipped scenario that reproduces a diagnosis for a server port.
pub fn reproducer(d: &Diagnosis, server_port: u16) -> &'static str {
    let svc = match server_port {
        3306 => "mysql",
        11211 => "memcached",
        443 | 8443 => "https",
        80 | 8080 => "http",
        50051 => "grpc",
        _ => "redis",
    };
    match (d, svc) {
        (Diagnosis::ClosedWhileIdle { idle_s, .. }, "redis") if (1100.0..1300.0).contains(idle_s) => {
            "redis-server-timeout"
        }
        (Diagnosis::ClosedWhileIdle { .. }, "mysql") => "mysql-idle",
        (Diagnosis::ClosedWhileIdle { .. }, "memcached") => "memcached-idle",
        (Diagnosis::ClosedWhileIdle { .. }, "http") => "http-idle",
        (Diagnosis::ClosedWhileIdle { .. }, _) => "redis-idle",
        (Diagnosis::ForgottenReset { .. } | Diagnosis::ResetWhileIdle { .. }, "mysql") => "mysql-sidecar-upstream",
        (Diagnosis::ForgottenReset { .. } | Diagnosis::ResetWhileIdle { .. }, "memcached") => "memcached-middlebox",
        (Diagnosis::ForgottenReset { .. } | Diagnosis::ResetWhileIdle { .. }, "http") => "http-sidecar-upstream",
        (Diagnosis::ForgottenReset { .. } | Diagnosis::ResetWhileIdle { .. }, "https") => "https-keepalive",
        (Diagnosis::ForgottenReset { .. } | Diagnosis::ResetWhileIdle { .. }, "grpc") => "grpc-keepalive-direct",
        (Diagnosis::ForgottenReset { .. } | Diagnosis::ResetWhileIdle { .. }, _) => "redis-middlebox",
        (Diagnosis::Unanswered { .. } | Diagnosis::KeepaliveUnanswered { .. }, "grpc") => "grpc-keepalive-blackhole",
        (Diagnosis::Unanswered { .. } | Diagnosis::KeepaliveUnanswered { .. }, _) => "redis-blackhole",
        (Diagnosis::ClientReset, _) => "redis-idle",
    }
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
    lines.push(format!("  reproduce with: idlelab run {}", reproducer(&f.diagnosis, f.server.port())));
    lines.join("\n")
}
