//! The `middlebox` hop in the local lab: a forwarding namespace whose conntrack forgets idle
//! flows, and what it answers to segments of a forgotten flow.
//!
//! ```text
//!   ── to-app ──▶ [ forward: ct state invalid → counter "forgotten" → reject with tcp reset | drop ] ── to-srv ──▶
//!                   nf_conntrack_tcp_timeout_established = idle_timeout, nf_conntrack_tcp_loose = 0
//! ```
//!
//! With `loose = 0` conntrack never adopts a flow from a mid-stream segment, so once the
//! entry expired, every segment of the flow is `invalid`: exactly a cloud LB that forgot it.

use crate::local::device::LocalDevice;
use crate::local::netns::Netns;
use crate::backend::evidence::MiddleboxView;
use crate::hop::{MiddleboxHop, OnUnknown};
use anyhow::Result;

pub const TABLE: &str = "idlelab_middlebox";

pub fn ruleset(hop: &MiddleboxHop) -> String {
    let verdict = match hop.on_unknown {
        OnUnknown::Reset => "reject with tcp reset",
        OnUnknown::Drop => "drop",
    };
    format!(
        "table inet {TABLE} {{\n  counter forgotten {{ }}\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    ct state invalid meta l4proto tcp counter name \"forgotten\" {verdict}\n  }}\n}}\n"
    )
}

/// Install the rules, then the conntrack sysctls (they exist once conntrack is active in the netns).
pub fn start(hop: &MiddleboxHop, ns: &Netns) -> Result<()> {
    ns.nft_apply("middlebox: conntrack verdict for forgotten flows", &ruleset(hop))?;
    ns.exec(
        "sysctl",
        &[
            "-q",
            "-w",
            "net.netfilter.nf_conntrack_tcp_loose=0",
            &format!("net.netfilter.nf_conntrack_tcp_timeout_established={}", hop.conntrack_timeout_s()),
        ],
        None,
    )?;
    Ok(())
}

pub fn snapshot(ns: &Netns, role: &str, moment: &str) -> MiddleboxView {
    let counter = ns.exec("nft", &["list", "counter", "inet", TABLE, "forgotten"], None).unwrap_or_default();
    let conntrack = ns
        .exec("conntrack", &["-L", "-p", "tcp"], None)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect();
    MiddleboxView { role: role.into(), moment: moment.into(), forgotten_segments: parse_packets(&counter), conntrack }
}

/// With `--capture`: conntrack's DESTROY events of the middlebox, each stamped when
/// `conntrack -E -o timestamp` received it (the wall clock, the capture's), written to `out`
/// (its complaints, such as lost events, to `out.stderr`).
/// An entry that expired is removed when the kernel next looks it up (the flow's next
/// segment) or when its garbage collector passes, so a DESTROY says when conntrack removed
/// the flow, not when its timeout ran out.
pub fn watch_destroys(netns: &std::path::Path, out: &std::path::Path) -> Result<crate::local::process::LabProcess> {
    let file = std::fs::File::create(out)?;
    let errors = std::fs::File::create(out.with_extension("stderr"))?;
    let mut cmd = tokio::process::Command::new("conntrack");
    cmd.args(["-E", "-e", "DESTROY", "-p", "tcp", "-o", "timestamp"]).stdout(file).stderr(errors);
    crate::local::process::spawn("conntrack -E", cmd, netns, None)
}

/// One DESTROY line of `conntrack -E -o timestamp`: its time, and the flow's original
/// direction (`src=… dst=… sport=… dport=…`).
pub fn parse_destroy(line: &str) -> Option<(f64, std::net::SocketAddr, std::net::SocketAddr)> {
    let ts: f64 = line.trim_start().strip_prefix('[')?.split(']').next()?.parse().ok()?;
    if !line.contains("[DESTROY]") {
        return None;
    }
    let field = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k));
    let addr = |ip: &str, port: &str| format!("{}:{}", field(ip)?, field(port)?).parse().ok();
    Some((ts, addr("src=", "sport=")?, addr("dst=", "dport=")?))
}

fn parse_packets(nft_counter: &str) -> u64 {
    nft_counter.split_whitespace().skip_while(|w| *w != "packets").nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

impl LocalDevice for MiddleboxHop {
    fn start(&self, ns: &Netns) -> Result<()> {
        start(self, ns)
    }
    fn snapshot(&self, ns: &Netns, node: &str, moment: &str) -> Option<MiddleboxView> {
        Some(snapshot(ns, node, moment))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::duration::Dur;

    #[test]
    fn rules_and_counter() {
        let hop = MiddleboxHop { preset: None, idle_timeout: Dur::secs(3), on_unknown: OnUnknown::Drop };
        let r = ruleset(&hop);
        assert!(r.contains("ct state invalid meta l4proto tcp counter name \"forgotten\" drop"), "{r}");
        let listing = "table inet idlelab_middlebox {\n\tcounter forgotten {\n\t\tpackets 3 bytes 156\n\t}\n}\n";
        assert_eq!(parse_packets(listing), 3);
        let event = "[1796409884.953164]\t[DESTROY] tcp      6 ESTABLISHED src=198.18.0.1 dst=198.18.0.6 sport=44992 dport=6379 src=198.18.0.6 dst=198.18.0.1 sport=6379 dport=44992 [ASSURED]";
        let (ts, src, dst) = parse_destroy(event).unwrap();
        assert_eq!((ts, src.to_string(), dst.to_string()), (1796409884.953164, "198.18.0.1:44992".into(), "198.18.0.6:6379".into()));
        assert_eq!(parse_destroy("[1796409876.9]\t    [NEW] tcp 6 120 SYN_SENT src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2"), None);
    }
}
