//! Captures: reading a pcap or pcapng as a stream of TCP segments (`read`), what the
//! packets of one hop say about each connection that ended badly (`explain`, the engine of
//! `idlelab explain`), and, over a cell's capture of every hop, which hop acted first
//! (`attribute`). The local lab writes its own per-cell captures (`local::capture`); this
//! module reads them and a team's own alike.
//!
//! ```text
//!   FILE.pcap[ng] ──read::for_each_segment──▶ Segment ──explain::Explainer──▶ Finding ──▶ text
//!   a cell's pcapng + PathMap (hops, sockets' owners, access logs, conntrack) ──attribute──▶
//!       Attribution { first act, what followed, sentence, diagram's arrows }
//! ```

pub mod attribute;
pub mod explain;
pub mod read;

use anyhow::{Context, Result};
use std::path::Path;

/// What `idlelab explain FILE` prints: each connection that ended badly, or why none did.
pub fn explain_file(path: &Path) -> Result<String> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).with_context(|| format!("{name}: cannot open"))?;
    let mut explainer = explain::Explainer::default();
    let capture = read::for_each_segment(std::io::BufReader::new(file), &name, |s, _| explainer.add(s))?;
    if capture.packets == 0 {
        anyhow::bail!("{name}: the capture holds no packet; expected the TCP traffic of the connections to explain");
    }
    if capture.packets == capture.not_tcp {
        anyhow::bail!(
            "{name}: {} packets, none of them TCP over IP; expected a capture of the connections (for example `tcpdump -i any -w FILE tcp port 6379`)",
            capture.packets
        );
    }
    let findings = explainer.findings();
    let mut out = format!(
        "{name}: {} packets, {} TCP connection(s) on {} interface(s); {} ended badly\n",
        capture.packets,
        explainer.connections(),
        capture.interfaces.len().max(1),
        findings.len()
    );
    for f in &findings {
        let iface = capture.interfaces.get(f.iface as usize).and_then(|i| i.name.as_deref());
        out.push('\n');
        out.push_str(&explain::describe(f, iface));
        out.push('\n');
    }
    if findings.is_empty() {
        out.push_str("\nEvery connection ended with a FIN exchange or is still open at the end of the capture.\n");
    }
    Ok(out)
}
