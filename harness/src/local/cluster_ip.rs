//! A Kubernetes ClusterIP as kube-proxy's nftables mode makes it, in the node's namespace.
//!
//! ```text
//!   client pod ──▶ node: prerouting (dstnat) ip daddr CLUSTER-IP tcp dport P
//!                        └▶ service chain: numgen random mod N vmap { 0: endpoint 0, … }
//!                             └▶ endpoint chain: dnat to POD-IP:P ──▶ replica
//! ```
//!
//! The pick happens once per connection: later packets of the flow follow its conntrack
//! entry, not the rules. So a long-lived HTTP/2 connection stays on the replica it got, and
//! a replica added later (a new map with N+1 entries) only sees connections opened after it.

use std::net::Ipv4Addr;

/// The nftables table the lab's kube-proxy rules live in (in the node's namespace only).
pub const TABLE: &str = "idlelab-kube-proxy";

/// The whole table for a ClusterIP `cluster_ip:port` over `endpoints`, replacing any earlier
/// version in one transaction (as kube-proxy syncs a Service's chains when its endpoints change).
pub fn ruleset(cluster_ip: Ipv4Addr, port: u16, endpoints: &[Ipv4Addr]) -> String {
    let mut out = format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n");
    out += "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n";
    out += &format!("    ip daddr {cluster_ip} tcp dport {port} jump service-grpc\n  }}\n");
    let vmap: Vec<String> = (0..endpoints.len()).map(|i| format!("{i} : jump endpoint-{i}")).collect();
    out += &format!(
        "  chain service-grpc {{\n    numgen random mod {} vmap {{ {} }}\n  }}\n",
        endpoints.len(),
        vmap.join(", ")
    );
    for (i, ep) in endpoints.iter().enumerate() {
        out += &format!("  chain endpoint-{i} {{\n    meta l4proto tcp dnat to {ep}:{port}\n  }}\n");
    }
    out + "}\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_random_pick_per_new_connection_over_every_endpoint() {
        let r = ruleset(
            Ipv4Addr::new(198, 18, 0, 252),
            50051,
            &[Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 14)],
        );
        assert!(r.contains("ip daddr 198.18.0.252 tcp dport 50051 jump service-grpc"), "{r}");
        assert!(r.contains("numgen random mod 2 vmap { 0 : jump endpoint-0, 1 : jump endpoint-1 }"), "{r}");
        assert!(r.contains("meta l4proto tcp dnat to 198.18.0.14:50051"), "{r}");
        // Replaces an earlier version in the same transaction.
        assert!(r.starts_with(&format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n")), "{r}");
    }
}
