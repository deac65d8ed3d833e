//! The cell's chain of namespaces: app, one per hop that has its own, server.
//!
//! ```text
//!   app ──link 0── hop ns ──link 1── hop ns ── … ──link n── srv
//!   .1   /30   .2    .5   /30   .6                 .4n+1 /30 .4n+2
//! ```
//!
//! Each link is a veth pair named `to-srv` (toward the server) / `to-app` (toward the app),
//! with a /30 from the cell's /24 in 198.18.0.0/15. Every node routes toward the server by
//! default and back toward the app by the links behind it; hop namespaces forward. No link,
//! address or route is created in the host namespace.

use super::netns::Netns;
use anyhow::Result;
use std::net::Ipv4Addr;

/// One namespace of the chain.
pub struct Node {
    /// `app`, `srv`, or the hop's kind and index (`mb1`, `gw2`).
    pub role: String,
    pub netns: Netns,
    /// Its address on the link toward the app (None for the app itself).
    pub toward_app: Option<Ipv4Addr>,
}

pub struct Topology {
    pub nodes: Vec<Node>,
}

/// The two ends of link `link` of cell `seq`: (toward-server end, toward-app end).
pub fn link_addrs(seq: u32, link: u32) -> (Ipv4Addr, Ipv4Addr) {
    // 512 cells × 64 /30 links in 198.18.0.0/15.
    let cell = seq % 512;
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + cell * 256 + link * 4;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

fn subnet(seq: u32, link: u32) -> String {
    let (left, _) = link_addrs(seq, link);
    format!("{}/30", Ipv4Addr::from(u32::from(left) - 1))
}

impl Topology {
    /// Create the namespaces and links. `roles` lists the nodes from the app to the server.
    /// Blocking (it runs `ip`); call it from a blocking thread. On error, what was created is
    /// dropped, and so removed.
    pub fn build(tag: &str, seq: u32, roles: &[String]) -> Result<Topology> {
        let mut nodes: Vec<Node> = Vec::with_capacity(roles.len());
        for (i, role) in roles.iter().enumerate() {
            let netns = Netns::create(format!("{tag}-{role}"))?;
            let toward_app = (i > 0).then(|| link_addrs(seq, i as u32 - 1).1);
            nodes.push(Node { role: role.clone(), netns, toward_app });
        }
        let last = nodes.len() - 1;
        for i in 0..nodes.len() {
            let mut lines = vec!["link set lo up".to_string()];
            if i < last {
                let (here, next) = link_addrs(seq, i as u32);
                lines.push(format!("link add to-srv type veth peer name to-app netns {}", nodes[i + 1].netns.name));
                lines.push(format!("addr add {here}/30 dev to-srv"));
                lines.push("link set to-srv up".into());
                lines.push(format!("route add default via {next}"));
            }
            if i > 0 {
                let (prev, here) = link_addrs(seq, i as u32 - 1);
                lines.push(format!("addr add {here}/30 dev to-app"));
                lines.push("link set to-app up".into());
                if i == last {
                    lines.push(format!("route add default via {prev}"));
                } else {
                    for j in 0..(i as u32).saturating_sub(1) {
                        lines.push(format!("route add {} via {prev}", subnet(seq, j)));
                    }
                }
            }
            nodes[i].netns.ip_batch(&lines)?;
            if i > 0 && i < last {
                nodes[i].netns.sysctl("net.ipv4.ip_forward", "1")?;
            }
        }
        Ok(Topology { nodes })
    }

    pub fn app(&self) -> &Node {
        &self.nodes[0]
    }

    pub fn server(&self) -> &Node {
        self.nodes.last().expect("a topology has a server")
    }

    pub fn node(&self, role: &str) -> &Node {
        self.nodes.iter().find(|n| n.role == role).expect("known role")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_get_distinct_subnets_inside_198_18_0_0_15() {
        assert_eq!(link_addrs(0, 0), (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2)));
        assert_eq!(link_addrs(300, 1).0, Ipv4Addr::new(198, 19, 44, 5));
        assert_eq!(subnet(0, 1), "198.18.0.4/30");
        let (d, _) = link_addrs(511, 63);
        assert!(d.octets()[0] == 198 && d.octets()[1] == 19);
    }
}
