//! What the probe saw, connection by connection. The probe prints this as JSON; the
//! verdict is a pure function of it.

use serde::{Deserialize, Serialize};

/// How one request on a pooled connection ended.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    /// The peer had closed: read returned end-of-file.
    Eof,
    /// `ECONNRESET`: the peer (or a middlebox) answered with RST.
    Reset,
    /// `EPIPE`: writing to a connection already shut down.
    BrokenPipe,
    /// `ETIMEDOUT`: the kernel declared the connection dead (keepalive probes or
    /// retransmissions unanswered, or `TCP_USER_TIMEOUT` expired) before the app gave up.
    TimedOut,
    /// No answer within the request timeout: the app gave up waiting.
    #[serde(rename = "timeout")]
    NoAnswer,
    /// Any other error (its text is kept).
    Error,
}

impl Outcome {
    pub fn is_ok(self) -> bool {
        self == Outcome::Ok
    }
}

/// One request: when, how it ended, and what the client library said.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Attempt {
    pub at_ms: u64,
    pub latency_ms: u64,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The local `ip:port` of the socket that carried the request, when the probe knows it:
    /// a pool may carry a reuse on a new socket, and what the old one saw does not explain it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_addr: Option<String>,
}

/// One pooled connection, from open to its first reuse.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct ConnObservation {
    pub id: usize,
    pub local_addr: String,
    /// Milliseconds since the probe started.
    pub opened_ms: u64,
    /// The last byte sent or received before the reuse.
    pub last_activity_ms: u64,
    /// Heartbeats sent while idle (mitigation `app-heartbeat`).
    #[serde(default)]
    pub heartbeats: u32,
    /// The first heartbeat that failed, if any: a failed request like any other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_failure: Option<Attempt>,
    /// The peer's FIN arrived while the connection sat idle in the pool (read saw EOF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_closed_ms: Option<u64>,
    /// An RST arrived while the connection sat idle (when it arrived, not when it was noticed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_reset_ms: Option<u64>,
    /// The kernel failed the socket with `ETIMEDOUT` while it sat idle (keepalive probes
    /// unanswered): when that happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timed_out_ms: Option<u64>,
    /// The pool threw the connection away at checkout and opened another (why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_before_use: Option<String>,
    /// The first request after the idle period.
    pub reuse: Attempt,
    /// After a failed reuse the probe reconnects once and retries, as an app would: this
    /// shows the server itself was fine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_reconnect: Option<Attempt>,
    /// New connections this slot needed: a replacement at checkout, a reconnect after a failure.
    #[serde(default)]
    pub reconnects: u32,
    /// SO_KEEPALIVE, read back from the probe's own socket.
    #[serde(default)]
    pub keepalive: bool,
}

impl ConnObservation {
    /// The first request on this connection that failed, if any.
    pub fn first_failure(&self) -> Option<&Attempt> {
        self.heartbeat_failure.as_ref().or((!self.reuse.outcome.is_ok()).then_some(&self.reuse))
    }

    /// Whether `attempt` ran on this connection's own socket, so that what the socket saw
    /// while idle (a FIN, an RST, the kernel's timeout) can explain how it ended. A heartbeat
    /// runs on the idle socket itself; a reuse the pool carried on a replacement does not.
    pub fn carried_by_own_socket(&self, attempt: &Attempt) -> bool {
        if self.heartbeat_failure.as_ref() == Some(attempt) {
            return true;
        }
        match &attempt.local_addr {
            Some(addr) => *addr == self.local_addr,
            None => self.replaced_before_use.is_none(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Observations {
    pub service: String,
    pub target: String,
    pub pool: usize,
    pub idle_started_ms: u64,
    pub idle_ms: u64,
    pub reuse_started_ms: u64,
    pub connections: Vec<ConnObservation>,
    /// When the probe finished classifying the reuses (ms since it started).
    #[serde(default)]
    pub finished_ms: u64,
    /// The probe's peak resident memory (VmHWM), in KiB.
    #[serde(default)]
    pub peak_rss_kib: u64,
    /// What the client library did, in words (e.g. "checkout discarded 4 pooled connections").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// A gRPC balance cell: how the replicas shared the requests (no pooled connections then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<super::balance::BalanceObservation>,
}

impl Observations {
    /// A gRPC balance run's observations: no pooled connection, only what the replicas served.
    pub fn of_balance(
        service: &str,
        target: String,
        finished_ms: u64,
        balance: crate::model::balance::BalanceObservation,
    ) -> Self {
        Observations {
            service: service.into(),
            target,
            pool: 0,
            idle_started_ms: 0,
            idle_ms: 0,
            reuse_started_ms: 0,
            connections: vec![],
            finished_ms,
            peak_rss_kib: 0,
            notes: vec![],
            balance: Some(balance),
        }
    }

    /// What the probe contract promises (`scenarios/PROBE.md`): one row per pooled
    /// connection, ids 0 … pool − 1 each exactly once, and no socket carrying two reuses. A
    /// probe that sent its reuses through one connection again and again would otherwise
    /// report "all N pooled connections answered" after testing one.
    pub fn check_contract(&self) -> Result<(), String> {
        let mut seen = vec![0u32; self.pool];
        for c in &self.connections {
            match seen.get_mut(c.id) {
                Some(n) => *n += 1,
                None => {
                    return Err(format!(
                        "connection id {} is outside 0 … {} (pool {})",
                        c.id,
                        self.pool.saturating_sub(1),
                        self.pool
                    ));
                }
            }
        }
        let twice: Vec<String> =
            seen.iter().enumerate().filter(|(_, n)| **n > 1).map(|(i, n)| format!("connection {i} ×{n}")).collect();
        let missing: Vec<String> =
            seen.iter().enumerate().filter(|(_, n)| **n == 0).map(|(i, _)| i.to_string()).collect();
        if !twice.is_empty() || !missing.is_empty() {
            return Err(format!(
                "the probe must take each of the {} pooled connections out once; its rows have {}{}",
                self.pool,
                if twice.is_empty() { String::new() } else { twice.join(", ") },
                if missing.is_empty() { String::new() } else { format!(" (missing: {})", missing.join(", ")) }
            ));
        }
        // A warmed socket carries at most one reuse. A socket the library opened during the
        // reuse may carry more (net/http puts a new connection back and retries on it).
        let warmed: Vec<&str> =
            self.connections.iter().map(|c| c.local_addr.as_str()).filter(|a| !a.is_empty()).collect();
        let mut carriers: Vec<&str> = self
            .connections
            .iter()
            .filter_map(|c| c.reuse.local_addr.as_deref())
            .filter(|a| warmed.contains(a))
            .collect();
        carriers.sort_unstable();
        if let Some(w) = carriers.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!(
                "the pooled socket {} carried more than one reuse: each pooled connection must be taken out once",
                w[0]
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: usize, addr: &str, carrier: Option<&str>) -> ConnObservation {
        ConnObservation {
            id,
            local_addr: addr.into(),
            opened_ms: 0,
            last_activity_ms: 0,
            heartbeats: 0,
            heartbeat_failure: None,
            peer_closed_ms: None,
            peer_reset_ms: None,
            timed_out_ms: None,
            replaced_before_use: None,
            reuse: Attempt {
                at_ms: 1,
                latency_ms: 1,
                outcome: Outcome::Ok,
                error: None,
                local_addr: carrier.map(str::to_string),
            },
            retry_after_reconnect: None,
            reconnects: 0,
            keepalive: false,
        }
    }

    fn obs(rows: Vec<ConnObservation>) -> Observations {
        Observations {
            service: "http".into(),
            target: "x".into(),
            pool: rows.len(),
            idle_started_ms: 0,
            idle_ms: 1,
            reuse_started_ms: 1,
            connections: rows,
            finished_ms: 0,
            peak_rss_kib: 0,
            notes: vec![],
            balance: None,
        }
    }

    /// Issue 17: rows that repeat one connection ("connection 4" ×5) broke the contract
    /// silently; a pooled socket carrying two reuses does too. A new socket may carry two.
    #[test]
    fn each_pooled_connection_is_taken_out_once() {
        assert!(obs(vec![row(0, "a:1", Some("a:1")), row(1, "a:2", Some("a:2"))]).check_contract().is_ok());
        let e = obs(vec![row(1, "a:1", Some("a:1")), row(1, "a:2", Some("a:2"))]).check_contract().unwrap_err();
        assert!(e.contains("connection 1 ×2") && e.contains("missing: 0"), "{e}");
        let e = obs(vec![row(0, "a:1", Some("a:1")), row(1, "a:2", Some("a:1"))]).check_contract().unwrap_err();
        assert!(e.contains("a:1"), "{e}");
        assert!(obs(vec![row(0, "a:1", Some("n:9")), row(1, "a:2", Some("n:9"))]).check_contract().is_ok());
    }
}
