//! What `ss -tnoHp` shows in a namespace: each TCP socket's state, ends, owner and timer.
//!
//! The keepalive timer is the evidence that a socket really has keepalive on: `ss -o`
//! prints `timer:(keepalive,…)` only for sockets with SO_KEEPALIVE set.

use super::netns::Netns;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct SocketView {
    pub state: String,
    pub local: String,
    pub peer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer: Option<String>,
    pub keepalive: bool,
}

/// One moment's view of a namespace's sockets.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct SocketSnapshot {
    pub netns_role: String,
    pub moment: String,
    pub sockets: Vec<SocketView>,
}

pub fn parse_ss(text: &str) -> Vec<SocketView> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 5 || cols[0] == "LISTEN" {
                return None;
            }
            let rest = cols[5..].join(" ");
            let timer = rest.find("timer:(").map(|i| {
                let t = &rest[i + 7..];
                t[..t.find(')').unwrap_or(t.len())].to_string()
            });
            let process = rest.find("users:((\"").map(|i| {
                let t = &rest[i + 9..];
                t[..t.find('"').unwrap_or(t.len())].to_string()
            });
            Some(SocketView {
                state: cols[0].to_string(),
                local: cols[3].to_string(),
                peer: cols[4].to_string(),
                keepalive: timer.as_deref().is_some_and(|t| t.starts_with("keepalive")),
                process,
                timer,
            })
        })
        .collect()
}

pub fn snapshot(ns: &Netns, role: &str, moment: &str) -> SocketSnapshot {
    let sockets = ns.exec("ss", &["-tanoHp"], None).map(|t| parse_ss(&t)).unwrap_or_default();
    SocketSnapshot { netns_role: role.into(), moment: moment.into(), sockets }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_state_owner_and_keepalive_timer() {
        let text = "LISTEN 0 511 0.0.0.0:15001 0.0.0.0:* users:((\"envoy\",pid=9,fd=20))\n\
ESTAB 0 0 198.18.0.1:36636 198.18.0.2:6379 users:((\"idlelab\",pid=7,fd=9)) timer:(keepalive,364ms,0)\n\
CLOSE-WAIT 1 0 198.18.0.1:36646 198.18.0.2:6379 users:((\"envoy\",pid=9,fd=31))\n";
        let s = parse_ss(text);
        assert_eq!(s.len(), 2);
        assert!(s[0].keepalive);
        assert_eq!(s[0].process.as_deref(), Some("idlelab"));
        assert_eq!(s[1].state, "CLOSE-WAIT");
        assert!(!s[1].keepalive);
    }
}
