//! The verdict: a pure function of the probe's observations.
//!
//! | verdict | meaning |
//! |---|---|
//! | `survived` | every reuse answered, no connection replaced |
//! | `idle-closed` | the peer closed the connection while idle (FIN) and the first request on it failed |
//! | `reset-on-reuse` | the first request failed with a reset and no FIN came during the idle |
//! | `hung` | a request got no answer within the request timeout |
//! | `recovered` | no request failed, but the pool or library replaced a pooled connection |

use crate::probe::observation::{Observations, Outcome};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Survived,
    IdleClosed,
    ResetOnReuse,
    Hung,
    Recovered,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Survived => "survived",
            Verdict::IdleClosed => "idle-closed",
            Verdict::ResetOnReuse => "reset-on-reuse",
            Verdict::Hung => "hung",
            Verdict::Recovered => "recovered",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict and one sentence that says which observations produced it.
pub fn judge(obs: &Observations) -> (Verdict, String) {
    let n = obs.connections.len();
    let failed: Vec<_> = obs.connections.iter().filter_map(|c| c.first_failure().map(|f| (c, f))).collect();
    let count = |pred: &dyn Fn(Outcome) -> bool| failed.iter().filter(|(_, f)| pred(f.outcome)).count();

    let hung = count(&|o| o == Outcome::Timeout);
    if hung > 0 {
        let (c, f) = failed.iter().find(|(_, f)| f.outcome == Outcome::Timeout).expect("counted");
        let how = f.error.clone().unwrap_or_else(|| "no answer".into());
        return (
            Verdict::Hung,
            format!(
                "{hung} of {n} requests got no answer; connection {} failed after {:.2} s: {how}",
                c.id,
                f.latency_ms as f64 / 1000.0
            ),
        );
    }
    if !failed.is_empty() {
        let fin_seen = failed.iter().filter(|(c, _)| c.peer_closed_ms.is_some()).count();
        let resets = count(&|o| o == Outcome::Reset);
        let (c, f) = failed[0];
        let text = f.error.clone().unwrap_or_else(|| format!("{:?}", f.outcome));
        if fin_seen > 0 {
            let after = c.peer_closed_ms.map(|t| t.saturating_sub(c.last_activity_ms.min(t)));
            let after =
                after.map(|ms| format!(" {:.2} s after its last activity", ms as f64 / 1000.0)).unwrap_or_default();
            return (
                Verdict::IdleClosed,
                format!(
                    "{} of {n} connections failed on reuse; {fin_seen} had been closed by the peer (FIN) while idle, e.g. connection {}{after}; the client saw: {text}",
                    failed.len(),
                    c.id
                ),
            );
        }
        if resets > 0 {
            return (
                Verdict::ResetOnReuse,
                format!(
                    "{resets} of {n} connections were reset on reuse with no FIN during the idle; the client saw: {text}"
                ),
            );
        }
        return (
            Verdict::IdleClosed,
            format!(
                "{} of {n} connections failed on reuse ({:?}) although no FIN was seen while idle; the client saw: {text}",
                failed.len(),
                f.outcome
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
    use crate::probe::observation::{Attempt, ConnObservation};

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
            replaced_before_use: None,
            reuse: Attempt { at_ms: 7100, latency_ms: 1, outcome, error: (!outcome.is_ok()).then(|| "boom".into()) },
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
            finished_ms: 0,
            peak_rss_kib: 0,
        }
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
        assert_eq!(judge(&obs(vec![conn(Outcome::Timeout, false), conn(Outcome::Reset, false)])).0, Verdict::Hung);
        let mut c = conn(Outcome::Ok, true);
        c.replaced_before_use = Some("idle 7 s > max idle 3 s".into());
        let (v, why) = judge(&obs(vec![c]));
        assert_eq!(v, Verdict::Recovered);
        assert!(why.contains("max idle"), "{why}");
    }

    #[test]
    fn a_failed_heartbeat_is_a_failed_request() {
        let mut c = conn(Outcome::Ok, true);
        c.heartbeat_failure =
            Some(Attempt { at_ms: 8000, latency_ms: 0, outcome: Outcome::Eof, error: Some("closed".into()) });
        assert_eq!(judge(&obs(vec![c])).0, Verdict::IdleClosed);
    }
}
