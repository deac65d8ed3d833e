//! The kernel's TCP keepalive timer, against the middleboxes its probes cross: when (and
//! how) keepalive ends an idle connection.
//!
//! ```text
//!   socket ──probe──▶ middlebox (forgets a flow idle for its timeout; any segment refreshes it)
//!          ◀──ACK───   answered: the flow is refreshed, the kernel's count starts over
//!          ◀──RST───   forgotten, `on_unknown: reset`: the connection is reset now
//!             ····     forgotten, `on_unknown: drop`: unanswered; after `probes` of them, ETIMEDOUT
//! ```
//!
//! Linux (`tcp_keepalive_timer`): the timer fires `time` after the last segment received;
//! when the connection has been silent that long it sends a probe and fires again after
//! `interval`. An answer (its ACK) resets the probe count and the silence, so the next probe
//! comes `max(time, interval)` after an answered one. When the timer fires with `probes`
//! probes unanswered, the kernel gives up (`ETIMEDOUT`). So when `time` < the device's
//! timeout < `interval`, the first probe is answered and refreshes the flow, and the kernel
//! gives up at `time + (probes + 1) × interval`, one interval later than `time + probes ×
//! interval`.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a middlebox does with a segment of a flow it has forgotten.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnUnknown {
    Reset,
    Drop,
}

/// A device on the socket's path that forgets idle flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forgetter {
    pub timeout: Duration,
    pub on_unknown: OnUnknown,
}

/// How keepalive ended the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndKind {
    /// `probes` probes went unanswered: the kernel gave up (`ETIMEDOUT`).
    GiveUp,
    /// A probe met a device that forgot the flow and resets: `ECONNRESET`.
    Reset,
}

/// When keepalive ends a connection idle since 0, and how many probes were answered first
/// (the shape a time scale must keep).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepaliveEnd {
    pub at: Duration,
    pub kind: EndKind,
    pub answered: u32,
}

/// When keepalive (`time`, `interval`, `probes`) ends a connection whose last segment
/// crossed `devices` at 0; `None` when every probe is answered (the connection stays up) or
/// no device forgets it.
pub fn end(time: Duration, interval: Duration, probes: u32, devices: &[Forgetter]) -> Option<KeepaliveEnd> {
    if devices.is_empty() || time.is_zero() || interval.is_zero() || probes == 0 {
        return None;
    }
    let (mut last_rx, mut unanswered, mut answered) = (Duration::ZERO, 0u32, 0u32);
    let mut t = time;
    let mut answered_in_a_row = 0;
    // Two answered probes in a row, `max(time, interval)` apart: every later one is the same.
    while answered_in_a_row < 2 {
        if t - last_rx < time {
            t = last_rx + time;
            continue;
        }
        if unanswered >= probes {
            return Some(KeepaliveEnd { at: t, kind: EndKind::GiveUp, answered });
        }
        // Every device saw the last answered probe (or the last activity) at `last_rx`.
        match devices.iter().find(|d| t - last_rx >= d.timeout) {
            None => {
                last_rx = t;
                unanswered = 0;
                answered += 1;
                answered_in_a_row += 1;
            }
            Some(d) if d.on_unknown == OnUnknown::Reset => {
                return Some(KeepaliveEnd { at: t, kind: EndKind::Reset, answered });
            }
            Some(_) => {
                unanswered += 1;
                answered_in_a_row = 0;
            }
        }
        t += interval;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn drop_after(n: u64) -> Forgetter {
        Forgetter { timeout: s(n), on_unknown: OnUnknown::Drop }
    }

    #[test]
    fn a_device_that_forgets_before_the_first_probe_gets_probes_times_interval() {
        let e = end(s(400), s(30), 3, &[drop_after(350)]).unwrap();
        assert_eq!((e.at, e.kind, e.answered), (s(490), EndKind::GiveUp, 0));
    }

    /// Issue 17: time < device timeout < interval: the first probe is answered and refreshes
    /// the flow; the kernel gives up one interval later than `time + probes × interval`.
    #[test]
    fn an_answered_first_probe_moves_the_give_up_one_interval_later() {
        let e = end(s(100), s(300), 3, &[drop_after(200)]).unwrap();
        assert_eq!((e.at, e.kind, e.answered), (s(100 + 4 * 300), EndKind::GiveUp, 1));
    }

    #[test]
    fn probes_the_device_answers_keep_the_connection_forever() {
        assert_eq!(end(s(60), s(10), 3, &[drop_after(350)]), None);
        // interval < time < timeout: the next probe waits `time` after an answered one.
        assert_eq!(end(s(100), s(20), 3, &[drop_after(150)]), None);
        assert_eq!(end(s(100), s(20), 3, &[]), None);
    }

    #[test]
    fn a_resetting_device_ends_it_at_the_first_probe_it_has_forgotten() {
        let reset = Forgetter { timeout: s(200), on_unknown: OnUnknown::Reset };
        assert_eq!(
            end(s(300), s(10), 9, &[reset]).unwrap(),
            KeepaliveEnd { at: s(300), kind: EndKind::Reset, answered: 0 }
        );
        assert_eq!(
            end(s(100), s(250), 9, &[reset]).unwrap(),
            KeepaliveEnd { at: s(350), kind: EndKind::Reset, answered: 1 }
        );
    }

    #[test]
    fn interval_shorter_than_time_waits_time_after_an_answer() {
        // time 100 < timeout 150; interval 20. Answered at 100, next at 200 (100 after the
        // answer), 100 after the refresh < 150: answered again: forever.
        assert_eq!(end(s(100), s(20), 3, &[drop_after(150)]), None);
        // time 100 < timeout 90? no: time 100 > 90: the first probe is lost; 3 × 20 later.
        assert_eq!(end(s(100), s(20), 3, &[drop_after(90)]).unwrap().at, s(160));
    }
}
