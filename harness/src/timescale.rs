//! Time scale: run a 1 h timeout in seconds without changing what decides the outcome.
//!
//! One factor per cell divides every duration of that cell. Kernel knobs take whole seconds
//! (≥ 1 s), Envoy and the probe take milliseconds. After rounding, every pair of *deciding*
//! durations must keep the order the scenario gave them, at least [`MIN_GAP`] apart, and
//! every deciding duration must stay ≥ [`MIN_GAP`]: a factor that flips or squeezes one is
//! refused with the pair named. `auto` picks the largest factor that keeps them all.
//! A duration that decides nothing on the cell's path (a keepalive probe interval when no
//! hop sees probes) is clamped to the kernel's minimum and the summary says so.

use crate::duration::{Dur, human};
use crate::knobs::{Knobs, Precision};
use crate::scenario::TimeScaleSpec;
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// The smallest gap kept between two deciding durations, and the smallest deciding duration.
/// One second absorbs process start-up, scheduling on a busy 2-core machine and the
/// millisecond skew between warming the first and the last pooled connection.
pub const MIN_GAP: Duration = Duration::from_secs(1);
/// The largest factor `auto` considers.
pub const MAX_FACTOR: u32 = 100_000;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ScaledValue {
    pub label: String,
    pub real: Dur,
    pub scaled: Dur,
    pub precision: Precision,
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
}

impl TimeScale {
    pub fn notes(&self) -> impl Iterator<Item = String> + '_ {
        self.values
            .iter()
            .filter_map(|v| v.note.as_ref().map(|n| format!("{}: {n}", v.label)))
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

fn scale_one(
    real: Dur,
    factor: u32,
    precision: Precision,
    deciding: bool,
) -> (Dur, Option<String>) {
    let exact = real.0.as_secs_f64() / factor as f64;
    match precision {
        Precision::Millis => {
            let ms = (exact * 1000.0).round().max(1.0) as u64;
            (Dur(Duration::from_millis(ms)), None)
        }
        Precision::WholeSeconds => {
            let s = exact.round();
            if s < 1.0 {
                let note = if deciding {
                    format!(
                        "{} rounds below the kernel's 1 s minimum; set to 1s",
                        human(Duration::from_secs_f64(exact))
                    )
                } else {
                    format!(
                        "decides nothing on this path; clamped to the kernel's 1 s minimum (exact value {})",
                        human(Duration::from_secs_f64(exact))
                    )
                };
                (Dur::secs(1), Some(note))
            } else {
                let v = Dur::secs(s as u64);
                let note = ((v.0.as_secs_f64() - exact).abs() > 0.0005).then(|| {
                    format!(
                        "kernel takes whole seconds: {} rounded to {}",
                        human(Duration::from_secs_f64(exact)),
                        v
                    )
                });
                (v, note)
            }
        }
    }
}

fn scaled_values(knobs: &Knobs, factor: u32) -> Vec<ScaledValue> {
    let mut k = knobs.clone();
    k.durations_mut()
        .into_iter()
        .map(|d| {
            let (scaled, note) = scale_one(*d.value, factor, d.precision, d.deciding);
            ScaledValue {
                label: d.label,
                real: *d.value,
                scaled,
                precision: d.precision,
                deciding: d.deciding,
                note,
            }
        })
        .collect()
}

fn check(values: &[ScaledValue], factor: u32) -> Result<(), OrderingError> {
    let deciding: Vec<&ScaledValue> = values.iter().filter(|v| v.deciding).collect();
    for v in &deciding {
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
    for (i, a) in deciding.iter().enumerate() {
        for b in &deciding[i + 1..] {
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
    }
    Ok(())
}

/// The largest factor the analytical bounds allow (before rounding is checked).
fn upper_bound(knobs: &Knobs) -> u32 {
    let values = scaled_values(knobs, 1);
    let deciding: Vec<f64> = values
        .iter()
        .filter(|v| v.deciding)
        .map(|v| v.real.as_secs_f64())
        .collect();
    let gap = MIN_GAP.as_secs_f64();
    let mut bound = MAX_FACTOR as f64;
    for (i, a) in deciding.iter().enumerate() {
        bound = bound.min(a / gap);
        for b in &deciding[i + 1..] {
            let d = (a - b).abs();
            if d > 0.0 {
                bound = bound.min(d / gap);
            }
        }
    }
    bound.floor().max(1.0) as u32
}

/// Scale a cell's knobs. Returns the scaled knobs and the record of every value.
pub fn scale(knobs: &Knobs, spec: TimeScaleSpec) -> Result<(Knobs, TimeScale), OrderingError> {
    let (factor, auto) = match spec {
        TimeScaleSpec::Factor(f) => {
            check(&scaled_values(knobs, f), f)?;
            (f, false)
        }
        TimeScaleSpec::Auto => {
            let mut f = upper_bound(knobs);
            loop {
                match check(&scaled_values(knobs, f), f) {
                    Ok(()) => break,
                    Err(e) if f == 1 => return Err(e),
                    Err(_) => f -= 1,
                }
            }
            (f, true)
        }
    };
    let values = scaled_values(knobs, factor);
    let mut scaled = knobs.clone();
    for (d, v) in scaled.durations_mut().into_iter().zip(&values) {
        *d.value = v.scaled;
    }
    Ok((
        scaled,
        TimeScale {
            factor,
            auto,
            values,
        },
    ))
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
        AppKeepalive {
            time: Dur::secs(600),
            interval: Dur::secs(75),
            probes: 9,
        }
        .apply(&mut k)
        .unwrap();
        let (k, ts) = scale(&k, TimeScaleSpec::Auto).unwrap();
        let ka = k.client.keepalive.unwrap();
        assert_eq!(ka.time, Dur::secs(1));
        assert_eq!(ka.interval, Dur::secs(1));
        let interval = ts
            .values
            .iter()
            .find(|v| v.label == "client.keepalive.interval")
            .unwrap();
        assert!(!interval.deciding);
        assert!(
            interval
                .note
                .as_deref()
                .unwrap()
                .contains("decides nothing"),
            "{interval:?}"
        );
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
