//! The verdict: a pure function of the probe's observations.
//!
//! | verdict | meaning |
//! |---|---|
//! | `survived` | every reuse answered, no connection replaced |
//! | `idle-closed` | the peer closed the connection while idle (FIN seen) and the first request on it failed |
//! | `reset-on-reuse` | an RST (while idle, or answering the reuse) failed the first request, and no FIN came first |
//! | `timed-out` | the kernel declared the connection dead (`ETIMEDOUT`: keepalive probes unanswered while idle, or `TCP_USER_TIMEOUT` on reuse) and the request failed without waiting for the app's timeout |
//! | `hung` | a request got no answer within `client.request_timeout` |
//! | `failed-on-reuse` | the first request failed, and the lab saw no FIN, RST or kernel timeout that explains it |
//! | `recovered` | no request failed, but the pool or library replaced a pooled connection |
//!
//! Each verdict says only what was measured: a failure with no FIN seen is never called
//! `idle-closed`, and the sentence of evidence quotes the times and the client's own error.

use crate::model::observation::{Attempt, ConnObservation, Observations, Outcome};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Survived,
    IdleClosed,
    ResetOnReuse,
    TimedOut,
    Hung,
    FailedOnReuse,
    Recovered,
    /// gRPC balance: every replica got its share after the last scale event.
    Balanced,
    /// gRPC balance: requests stayed on some replicas (per-connection balancing).
    Pinned,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Survived => "survived",
            Verdict::IdleClosed => "idle-closed",
            Verdict::ResetOnReuse => "reset-on-reuse",
            Verdict::TimedOut => "timed-out",
            Verdict::Hung => "hung",
            Verdict::FailedOnReuse => "failed-on-reuse",
            Verdict::Recovered => "recovered",
            Verdict::Balanced => "balanced",
            Verdict::Pinned => "pinned",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn secs(ms: u64) -> String {
    format!("{:.2} s", ms as f64 / 1000.0)
}

/// "N s after its last activity", for an event on a connection while it sat idle.
fn after_last_activity(c: &ConnObservation, at_ms: u64) -> String {
    format!("{} after its last activity", secs(at_ms.saturating_sub(c.last_activity_ms.min(at_ms))))
}

/// The verdict and one sentence that says which observations produced it.
pub fn judge(obs: &Observations) -> (Verdict, String) {
    if let Some(balance) = &obs.balance {
        let (balanced, why) = super::balance::judge_balance(balance);
        return (if balanced { Verdict::Balanced } else { Verdict::Pinned }, why);
    }
    let n = obs.connections.len();
    let failed: Vec<(&ConnObservation, &Attempt)> =
        obs.connections.iter().filter_map(|c| c.first_failure().map(|f| (c, f))).collect();
    let text = |f: &Attempt| f.error.clone().unwrap_or_else(|| format!("{:?}", f.outcome));

    // The worst symptom first: the app waited its whole request timeout.
    let hung: Vec<_> = failed.iter().filter(|(_, f)| f.outcome == Outcome::NoAnswer).collect();
    if let Some((c, f)) = hung.first() {
        return (
            Verdict::Hung,
            format!(
                "{} of {n} requests got no answer; connection {} waited {} for it: {}",
                hung.len(),
                c.id,
                secs(f.latency_ms),
                text(f)
            ),
        );
    }
    // What a socket saw while idle explains a failure only on that socket: a pool that
    // replaced a closed connection carried the request on another one.
    let own = |c: &ConnObservation, f: &Attempt| c.carried_by_own_socket(f);
    let timed_out: Vec<_> = failed
        .iter()
        .filter(|(c, f)| (c.timed_out_ms.is_some() && own(c, f)) || f.outcome == Outcome::TimedOut)
        .collect();
    if let Some((c, f)) = timed_out.first() {
        let when = match c.timed_out_ms.filter(|_| own(c, f)) {
            Some(t) => format!("while idle, {}", after_last_activity(c, t)),
            None => format!("on reuse, {} after the request was sent", secs(f.latency_ms)),
        };
        return (
            Verdict::TimedOut,
            format!(
                "{} of {n} connections were declared dead by the kernel (ETIMEDOUT); connection {} {when}; the client saw: {}",
                timed_out.len(),
                c.id,
                text(f)
            ),
        );
    }
    if !failed.is_empty() {
        let fin: Vec<_> = failed.iter().filter(|(c, f)| c.peer_closed_ms.is_some() && own(c, f)).collect();
        if let Some((c, f)) = fin.first() {
            let at = c.peer_closed_ms.expect("filtered");
            return (
                Verdict::IdleClosed,
                format!(
                    "{} of {n} connections failed on reuse; {} had been closed by the peer (FIN) while idle, e.g. connection {} {}; the client saw: {}",
                    failed.len(),
                    fin.len(),
                    c.id,
                    after_last_activity(c, at),
                    text(f)
                ),
            );
        }
        let reset: Vec<_> = failed
            .iter()
            .filter(|(c, f)| (c.peer_reset_ms.is_some() && own(c, f)) || f.outcome == Outcome::Reset)
            .collect();
        if let Some((c, f)) = reset.first() {
            let when = match c.peer_reset_ms.filter(|_| own(c, f)) {
                Some(t) => format!("was reset while idle, {}, and the reuse then failed", after_last_activity(c, t)),
                None => "was reset on reuse".to_string(),
            };
            return (
                Verdict::ResetOnReuse,
                format!(
                    "{} of {n} connections met an RST with no FIN before it; connection {} {when}; the client saw: {}",
                    reset.len(),
                    c.id,
                    text(f)
                ),
            );
        }
        let (c, f) = failed[0];
        // A failure on a replacement socket: the old socket's FIN or RST is context, not cause.
        let replaced = match (&c.replaced_before_use, own(c, f)) {
            (Some(why), false) => format!(" on the socket that replaced it ({why})"),
            _ => String::new(),
        };
        return (
            Verdict::FailedOnReuse,
            format!(
                "{} of {n} connections failed on reuse ({:?}), and the lab saw no FIN, RST or kernel timeout on the sockets that carried them; connection {} failed after {}{replaced}: {}",
                failed.len(),
                f.outcome,
                c.id,
                secs(f.latency_ms),
                text(f)
            ),
        );
    }
    let replaced = obs.connections.iter().filter(|c| c.replaced_before_use.is_some()).count();
    if replaced > 0 {
        let why = obs.connections.iter().find_map(|c| c.replaced_before_use.clone()).unwrap_or_default();
        return (
            Verdict::Recovered,
            format!("no request failed; the pool replaced {replaced} of {n} connections at checkout ({why})"),
        );
    }
    let beats: u32 = obs.connections.iter().map(|c| c.heartbeats).sum();
    let beats = if beats > 0 { format!(" after {beats} heartbeats") } else { String::new() };
    (Verdict::Survived, format!("all {n} pooled connections answered after {} ms idle{beats}", obs.idle_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::observation::{Attempt, ConnObservation};

    fn conn(outcome: Outcome, fin: bool) -> ConnObservation {
        ConnObservation {
            id: 0,
            local_addr: "198.18.0.1:40000".into(),
            opened_ms: 10,
            last_activity_ms: 20,
            heartbeats: 0,
            heartbeat_failure: None,
            peer_closed_ms: fin.then_some(6020),
            peer_reset_ms: None,
            timed_out_ms: None,
            replaced_before_use: None,
            reuse: Attempt {
                at_ms: 7100,
                latency_ms: 1,
                outcome,
                error: (!outcome.is_ok()).then(|| "boom".into()),
                local_addr: None,
            },
            retry_after_reconnect: None,
            reconnects: 0,
            keepalive: false,
        }
    }

    fn obs(conns: Vec<ConnObservation>) -> Observations {
        Observations {
            service: "redis".into(),
            target: "x".into(),
            pool: conns.len(),
            idle_started_ms: 20,
            idle_ms: 7000,
            reuse_started_ms: 7100,
            connections: conns,
            notes: vec![],
            balance: None,
            finished_ms: 0,
            peak_rss_kib: 0,
        }
    }

    /// Issue 17: the HCM closed the app's idle connections (FIN), hyper-util replaced them,
    /// and the requests on the new sockets got Envoy's 503 from a stale upstream pool. The FIN
    /// on the old socket does not explain a failure on another one: `failed-on-reuse`.
    #[test]
    fn a_fin_on_one_socket_is_not_blamed_for_a_failure_on_another() {
        let mut c = conn(Outcome::Error, true);
        c.replaced_before_use = Some("hyper-util's pool saw the peer's FIN on it".into());
        c.reuse.local_addr = Some("198.18.0.1:40100".into());
        let (v, why) = judge(&obs(vec![c.clone()]));
        assert_eq!(v, Verdict::FailedOnReuse, "{why}");
        assert!(why.contains("replaced it"), "{why}");
        // Without the carrier's address, a replacement says the same.
        c.reuse.local_addr = None;
        assert_eq!(judge(&obs(vec![c.clone()])).0, Verdict::FailedOnReuse);
        // The same socket, FIN'd while idle: idle-closed.
        c.replaced_before_use = None;
        c.reuse.local_addr = Some(c.local_addr.clone());
        assert_eq!(judge(&obs(vec![c.clone()])).0, Verdict::IdleClosed);
        // An RST on the old socket and a 503 on the new one: not reset-on-reuse either.
        let mut r = conn(Outcome::Error, false);
        r.peer_reset_ms = Some(6020);
        r.replaced_before_use = Some("saw an error".into());
        assert_eq!(judge(&obs(vec![r.clone()])).0, Verdict::FailedOnReuse);
        // But a reset that the request itself met is about the socket that carried it.
        r.reuse.outcome = Outcome::Reset;
        assert_eq!(judge(&obs(vec![r])).0, Verdict::ResetOnReuse);
    }

    #[test]
    fn each_verdict_follows_its_observations() {
        assert_eq!(judge(&obs(vec![conn(Outcome::Ok, false)])).0, Verdict::Survived);
        assert_eq!(judge(&obs(vec![conn(Outcome::Ok, false), conn(Outcome::Eof, true)])).0, Verdict::IdleClosed);
        assert_eq!(judge(&obs(vec![conn(Outcome::Reset, false)])).0, Verdict::ResetOnReuse);
        assert_eq!(
            judge(&obs(vec![conn(Outcome::Reset, true)])).0,
            Verdict::IdleClosed,
            "a FIN first means the idle close did it"
        );
        assert_eq!(judge(&obs(vec![conn(Outcome::NoAnswer, false), conn(Outcome::Reset, false)])).0, Verdict::Hung);
        let mut c = conn(Outcome::Ok, true);
        c.replaced_before_use = Some("idle 7 s > max idle 3 s".into());
        let (v, why) = judge(&obs(vec![c]));
        assert_eq!(v, Verdict::Recovered);
        assert!(why.contains("max idle"), "{why}");
    }

    #[test]
    fn a_failed_heartbeat_is_a_failed_request() {
        let mut c = conn(Outcome::Ok, true);
        c.heartbeat_failure = Some(Attempt {
            at_ms: 8000,
            latency_ms: 0,
            outcome: Outcome::Eof,
            error: Some("closed".into()),
            local_addr: None,
        });
        assert_eq!(judge(&obs(vec![c])).0, Verdict::IdleClosed);
    }

    /// The memcached case of issue 9: an RST arrived while idle (a keepalive probe met a
    /// middlebox that forgot the flow), and the reuse then failed with EPIPE.
    #[test]
    fn a_reset_while_idle_is_reset_on_reuse_whatever_the_reuse_error() {
        let mut c = conn(Outcome::BrokenPipe, false);
        c.peer_reset_ms = Some(8000);
        let (v, why) = judge(&obs(vec![c]));
        assert_eq!(v, Verdict::ResetOnReuse, "{why}");
        assert!(why.contains("reset while idle, 7.98 s after its last activity"), "{why}");
    }

    #[test]
    fn a_failure_with_no_fin_rst_or_timeout_is_not_called_idle_closed() {
        for outcome in [Outcome::BrokenPipe, Outcome::Eof, Outcome::Error] {
            let (v, why) = judge(&obs(vec![conn(outcome, false)]));
            assert_eq!(v, Verdict::FailedOnReuse, "{outcome:?}: {why}");
            assert!(why.contains("no FIN, RST or kernel timeout"), "{why}");
        }
    }

    #[test]
    fn the_kernels_etimedout_is_timed_out_not_hung() {
        let mut idle = conn(Outcome::BrokenPipe, false);
        idle.timed_out_ms = Some(5000);
        let (v, why) = judge(&obs(vec![idle]));
        assert_eq!(v, Verdict::TimedOut, "{why}");
        assert!(why.contains("while idle, 4.98 s after its last activity"), "{why}");
        let mut reuse = conn(Outcome::TimedOut, false);
        reuse.reuse.latency_ms = 480;
        let (v, why) = judge(&obs(vec![reuse]));
        assert_eq!(v, Verdict::TimedOut);
        assert!(why.contains("on reuse, 0.48 s after"), "{why}");
        let mut waited = conn(Outcome::NoAnswer, false);
        waited.reuse.latency_ms = 3250;
        let (v, why) = judge(&obs(vec![waited]));
        assert_eq!(v, Verdict::Hung);
        assert!(why.contains("waited 3.25 s"), "{why}");
    }
}
