//! Time scale: run a 1 h timeout in seconds without changing what decides the outcome.
//!
//! One factor per cell divides every duration of that cell. Kernel knobs take whole seconds
//! (≥ 1 s), Envoy and the probe take milliseconds. The orderings that decide a cell's outcome
//! come from what each duration is on the path ([`Role`]):
//!
//! - the idle period against every hop's timeout (does the timer fire while idle?);
//! - the heartbeat against every timeout (do the PINGs come before it fires?);
//! - the pool's max idle against the idle period (is the connection replaced at checkout?);
//! - every keepalive time against every timeout (do probes start before the hop gives up?);
//! - every keepalive interval against the timeouts of hops that probes refresh (conntrack).
//!
//! After rounding, each such pair must keep the order the scenario gave it, at least
//! [`MIN_GAP`] apart, and the idle period must stay ≥ [`MIN_GAP`]: a factor that breaks one is
//! refused with the pair named. `auto` picks the largest factor that keeps them all. A
//! kernel duration that is in no deciding pair (a keepalive interval when no hop sees
//! probes) is clamped to the kernel's 1 s minimum and the summary says so. `TCP_USER_TIMEOUT`
//! is checked against the (unscaled) request timeout instead.

use crate::duration::{Dur, human};
use crate::knobs::{Knobs, Precision, Role};
use crate::scenario::TimeScaleSpec;
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// The smallest gap kept between two durations whose order decides the outcome, and the
/// shortest idle period. One second absorbs process start-up, scheduling on a busy 2-core
/// machine and the millisecond skew between warming the first and the last connection.
pub const MIN_GAP: Duration = Duration::from_secs(1);
/// The largest factor `auto` considers.
pub const MAX_FACTOR: u32 = 100_000;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ScaledValue {
    pub label: String,
    pub real: Dur,
    pub scaled: Dur,
    pub precision: Precision,
    pub role: Role,
    /// Whether the value is in an ordering that decides the outcome.
    pub deciding: bool,
    /// Why the value is not simply `real / factor`, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TimeScale {
    pub factor: u32,
    pub auto: bool,
    pub values: Vec<ScaledValue>,
    /// The orderings that decide this cell, as `a < b` in real-world time.
    pub orderings: Vec<String>,
}

impl TimeScale {
    pub fn notes(&self) -> impl Iterator<Item = String> + '_ {
        self.values.iter().filter_map(|v| v.note.as_ref().map(|n| format!("{}: {n}", v.label)))
    }
}

/// A factor that would change the outcome of the cell.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderingError {
    pub factor: u32,
    pub message: String,
}

impl fmt::Display for OrderingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Index pairs of durations whose order decides the outcome.
pub fn deciding_pairs(roles: &[Role]) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for (i, a) in roles.iter().enumerate() {
        for (j, b) in roles.iter().enumerate() {
            let decides = matches!(
                (a, b),
                (Role::Idle, Role::Timeout { .. })
                    | (Role::Heartbeat, Role::Timeout { .. })
                    | (Role::PoolMaxIdle, Role::Idle)
                    | (Role::KeepaliveTime, Role::Timeout { .. })
                    | (Role::KeepaliveInterval, Role::Timeout { refreshed_by_probes: true })
            );
            if decides && i != j {
                pairs.push((i, j));
            }
        }
    }
    pairs
}

/// A duration Envoy or the probe takes, scaled: milliseconds, at least 1 ms (`0s`, "off",
/// stays off).
pub fn scale_millis(real: Dur, factor: u32) -> Dur {
    if real.is_zero() {
        return real;
    }
    Dur(Duration::from_millis((real.0.as_secs_f64() * 1000.0 / factor.max(1) as f64).round().max(1.0) as u64))
}

/// A duration the kernel takes, scaled: whole seconds, at least 1 s.
pub fn scale_seconds(real: Dur, factor: u32) -> u64 {
    (real.0.as_secs_f64() / factor.max(1) as f64).round().max(1.0) as u64
}

fn scale_one(real: Dur, factor: u32, precision: Precision, deciding: bool) -> (Dur, Option<String>) {
    let exact = real.0.as_secs_f64() / factor as f64;
    match precision {
        Precision::Millis => (scale_millis(real, factor), None),
        Precision::WholeSeconds => {
            let s = exact.round();
            let exact_text = human(Duration::from_millis((exact * 1000.0).round() as u64));
            if s < 1.0 {
                let note = if deciding {
                    format!("{exact_text} rounds below the kernel's 1 s minimum; set to 1s")
                } else {
                    format!(
                        "decides nothing on this path; clamped to the kernel's 1 s minimum (exact value {exact_text})"
                    )
                };
                (Dur::secs(1), Some(note))
            } else {
                let v = Dur::secs(s as u64);
                let note = ((v.0.as_secs_f64() - exact).abs() > 0.0005)
                    .then(|| format!("kernel takes whole seconds: {exact_text} rounded to {v}"));
                (v, note)
            }
        }
    }
}

fn scaled_values(knobs: &Knobs, factor: u32) -> (Vec<ScaledValue>, Vec<(usize, usize)>) {
    let mut k = knobs.clone();
    let durations = k.durations_mut();
    let roles: Vec<Role> = durations.iter().map(|d| d.role).collect();
    let pairs = deciding_pairs(&roles);
    let values = durations
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let deciding = pairs.iter().any(|(a, b)| *a == i || *b == i);
            let (scaled, note) = scale_one(*d.value, factor, d.precision, deciding);
            ScaledValue { label: d.label, real: *d.value, scaled, precision: d.precision, role: d.role, deciding, note }
        })
        .collect();
    (values, pairs)
}

fn check(knobs: &Knobs, values: &[ScaledValue], pairs: &[(usize, usize)], factor: u32) -> Result<(), OrderingError> {
    for v in values.iter().filter(|v| v.role == Role::Idle) {
        if v.scaled.0 < MIN_GAP {
            return Err(OrderingError {
                factor,
                message: format!(
                    "time scale {factor} shrinks `{}` ({} → {}) below {}: too short to measure reliably",
                    v.label,
                    v.real,
                    v.scaled,
                    human(MIN_GAP)
                ),
            });
        }
    }
    for &(i, j) in pairs {
        let (a, b) = (&values[i], &values[j]);
        let (lo, hi) = match a.real.cmp(&b.real) {
            std::cmp::Ordering::Less => (a, b),
            std::cmp::Ordering::Greater => (b, a),
            std::cmp::Ordering::Equal => continue,
        };
        if hi.scaled.0 < lo.scaled.0 + MIN_GAP {
            return Err(OrderingError {
                factor,
                message: format!(
                    "time scale {factor} breaks the ordering `{}` ({}) < `{}` ({}): scaled to {} and {}, less than {} apart",
                    lo.label,
                    lo.real,
                    hi.label,
                    hi.real,
                    lo.scaled,
                    hi.scaled,
                    human(MIN_GAP)
                ),
            });
        }
    }
    let request = knobs.client.request_timeout;
    for v in values.iter().filter(|v| v.role == Role::UserTimeout) {
        if v.scaled >= request {
            return Err(OrderingError {
                factor,
                message: format!(
                    "`{}` ({} → {}) must stay below `client.request_timeout` ({request}, not scaled), or the request timeout fires first",
                    v.label, v.real, v.scaled
                ),
            });
        }
    }
    Ok(())
}

/// The largest factor the analytical bounds allow (before rounding is checked).
fn upper_bound(values: &[ScaledValue], pairs: &[(usize, usize)]) -> u32 {
    let gap = MIN_GAP.as_secs_f64();
    let mut bound = MAX_FACTOR as f64;
    for v in values.iter().filter(|v| v.role == Role::Idle) {
        bound = bound.min(v.real.as_secs_f64() / gap);
    }
    for &(i, j) in pairs {
        let d = (values[i].real.as_secs_f64() - values[j].real.as_secs_f64()).abs();
        if d > 0.0 {
            bound = bound.min(d / gap);
        }
    }
    bound.floor().max(1.0) as u32
}

/// Divide every duration by `factor` with the same rounding, without checking orderings:
/// for rendering the unmitigated path of a cell at that cell's factor (whose orderings are
/// the mitigated path's).
pub fn apply_factor(knobs: &Knobs, factor: u32) -> Knobs {
    let (values, _) = scaled_values(knobs, factor);
    let mut scaled = knobs.clone();
    for (d, v) in scaled.durations_mut().into_iter().zip(&values) {
        *d.value = v.scaled;
    }
    scaled
}

/// Scale a cell's knobs. Returns the scaled knobs and the record of every value.
pub fn scale(knobs: &Knobs, spec: TimeScaleSpec) -> Result<(Knobs, TimeScale), OrderingError> {
    let (factor, auto) = match spec {
        TimeScaleSpec::Factor(f) => {
            let (values, pairs) = scaled_values(knobs, f);
            check(knobs, &values, &pairs, f)?;
            (f, false)
        }
        TimeScaleSpec::Auto => {
            let (values, pairs) = scaled_values(knobs, 1);
            let mut f = upper_bound(&values, &pairs);
            loop {
                let (values, pairs) = scaled_values(knobs, f);
                match check(knobs, &values, &pairs, f) {
                    Ok(()) => break,
                    Err(e) if f == 1 => return Err(e),
                    Err(_) => f -= 1,
                }
            }
            (f, true)
        }
    };
    let (values, pairs) = scaled_values(knobs, factor);
    let scaled = apply_factor(knobs, factor);
    let orderings = pairs
        .iter()
        .filter_map(|&(i, j)| {
            let (a, b) = (&values[i], &values[j]);
            match a.real.cmp(&b.real) {
                std::cmp::Ordering::Less => Some(format!("{} < {}", a.label, b.label)),
                std::cmp::Ordering::Greater => Some(format!("{} < {}", b.label, a.label)),
                std::cmp::Ordering::Equal => None,
            }
        })
        .collect();
    Ok((scaled, TimeScale { factor, auto, values, orderings }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mitigation::{Mitigation, app_heartbeat::AppHeartbeat, app_keepalive::AppKeepalive};

    fn base() -> Knobs {
        crate::mitigation::test_knobs() // sidecar 1h, idle 70m
    }

    #[test]
    fn auto_keeps_a_one_second_gap_between_timeout_and_idle() {
        let (k, ts) = scale(&base(), TimeScaleSpec::Auto).unwrap();
        assert_eq!(ts.factor, 600);
        assert_eq!(k.sidecar().unwrap().idle_timeout, Dur::secs(6));
        assert_eq!(k.idle, Dur::secs(7));
    }

    #[test]
    fn a_factor_that_flips_an_ordering_is_refused_naming_the_pair() {
        let e = scale(&base(), TimeScaleSpec::Factor(1200)).unwrap_err();
        assert!(e.message.contains("path[0].sidecar.idle_timeout"), "{e}");
        assert!(e.message.contains("`idle`"), "{e}");
        assert!(scale(&base(), TimeScaleSpec::Factor(360)).is_ok());
    }

    #[test]
    fn keepalive_time_takes_whole_seconds_and_a_useless_interval_is_clamped() {
        let mut k = base();
        AppKeepalive(crate::scenario::Keepalive { time: Dur::secs(600), interval: Dur::secs(75), probes: 9 })
            .apply(&mut k)
            .unwrap();
        let (k, ts) = scale(&k, TimeScaleSpec::Auto).unwrap();
        let ka = k.client.keepalive.unwrap();
        assert_eq!(ka.time, Dur::secs(1));
        assert_eq!(ka.interval, Dur::secs(1));
        let interval = ts.values.iter().find(|v| v.label == "client.keepalive.interval").unwrap();
        assert!(!interval.deciding);
        assert!(interval.note.as_deref().unwrap().contains("decides nothing"), "{interval:?}");
    }

    #[test]
    fn heartbeat_stays_below_the_timeout() {
        let mut k = base();
        AppHeartbeat(Dur::secs(3500)).apply(&mut k).unwrap();
        // 100 s between heartbeat and timeout: auto must stop at 100.
        let (k2, ts) = scale(&k, TimeScaleSpec::Auto).unwrap();
        assert_eq!(ts.factor, 100);
        assert!(k2.client.heartbeat.unwrap() < k2.sidecar().unwrap().idle_timeout);
        let e = scale(&k, TimeScaleSpec::Factor(600)).unwrap_err();
        assert!(e.message.contains("client.heartbeat"), "{e}");
    }

    #[test]
    fn a_disabled_timeout_is_not_scaled() {
        let mut k = base();
        k.sidecar_mut().unwrap().idle_timeout = Dur::secs(0);
        let (k2, ts) = scale(&k, TimeScaleSpec::Auto).unwrap();
        assert!(k2.sidecar().unwrap().idle_timeout.is_zero());
        assert_eq!(ts.factor, 4200, "only the idle decides: 70m down to 1s");
    }
}
