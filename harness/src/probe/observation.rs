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
}
