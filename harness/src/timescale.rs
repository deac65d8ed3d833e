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
//! - every keepalive whose probes cross a middlebox that forgets the flow between them: when
//!   the kernel's timer ends the connection (`keepalive::end`: the give-up after `probes`
//!   unanswered probes, counted from the first one lost, or the RST a probe meets) against
//!   the idle period (does the connection die while idle?), and the way it ends (which
//!   probe is the first one lost) must be the same after rounding.
//!
//! After rounding, each such pair must keep the order the scenario gave it, at least
//! [`MIN_GAP`] apart — plus, for a timer that acts late (a server's whole-second clock, see
//! [`Precision::ServerClock`]), how late it may act — and the idle period must stay ≥
//! [`MIN_GAP`]: a factor that breaks one is refused with the pair named. Two deciding
//! durations that are equal are refused at any factor: which fires first would be a race,
//! not an experiment. `auto` picks the largest factor that keeps them all. A
//! kernel duration that is in no deciding pair (a keepalive interval when no hop sees
//! probes) is clamped to the kernel's 1 s minimum and the summary says so. `TCP_USER_TIMEOUT`
//! is checked against the (unscaled) request timeout instead.

use crate::config::CellConfig;
use crate::model::duration::{Dur, human};
use crate::model::scale::{Precision, Role};
use crate::model::scale::{ScaledValue, TimeScale, scale_millis};
use crate::model::service::TimeScaleSpec;
use std::fmt;
use std::time::Duration;

/// The smallest gap kept between two durations whose order decides the outcome, and the
/// shortest idle period. One second absorbs process start-up, scheduling on a busy 2-core
/// machine and the millisecond skew between warming the first and the last connection.
pub const MIN_GAP: Duration = Duration::from_secs(1);
/// The largest factor `auto` considers.
pub const MAX_FACTOR: u32 = 100_000;

/// Why a cell's durations cannot be run at a factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderingProblem {
    /// The idle period would be too short to measure.
    IdleTooShort,
    /// A deciding pair would come too close or flip.
    Ordering,
    /// A deciding pair is equal in real-world time.
    Race,
    /// `TCP_USER_TIMEOUT` would not fire before the (unscaled) request timeout.
    UserTimeout,
}

/// A factor that would change the outcome of the cell, or durations no factor can run.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderingError {
    pub factor: u32,
    pub problem: OrderingProblem,
    pub message: String,
    /// What to change so that it runs.
    pub hint: String,
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
                    // A proxy's or server's timer (it closes with a FIN) against a middlebox
                    // forgetting the flow: which comes first decides whether the FIN crosses
                    // a flow the middlebox still knows, or the next segment meets a reset.
                    | (Role::Timeout { refreshed_by_probes: false }, Role::Timeout { refreshed_by_probes: true })
            );
            if decides && i != j {
                pairs.push((i, j));
            }
        }
    }
    pairs
}

fn scale_one(real: Dur, factor: u32, precision: Precision, deciding: bool) -> (Dur, Option<String>) {
    let exact = real.0.as_secs_f64() / factor as f64;
    match precision {
        Precision::Millis | Precision::HttpDrain { .. } => (scale_millis(real, factor), None),
        Precision::MillisFloor { floor_ms } => {
            let v = scale_millis(real, factor);
            let floor = Dur(Duration::from_millis(floor_ms));
            if v < floor && real >= floor {
                (
                    floor,
                    Some(format!(
                        "{v} is below its {floor} floor (the lab's gap for a deadline, grpc-go's minimum keepalive Time); set to {floor}"
                    )),
                )
            } else {
                (v, None)
            }
        }
        Precision::WholeSeconds | Precision::ServerClock { .. } => {
            let s = exact.round();
            let exact_text = human(Duration::from_millis((exact * 1000.0).round() as u64));
            if s < 1.0 {
                let note = if deciding {
                    format!("{exact_text} rounds below the whole-second minimum; set to 1s")
                } else {
                    format!(
                        "decides nothing on this path; clamped to the kernel's 1 s minimum (exact value {exact_text})"
                    )
                };
                (Dur::secs(1), Some(note))
            } else {
                let v = Dur::secs(s as u64);
                let note = ((v.0.as_secs_f64() - exact).abs() > 0.0005)
                    .then(|| format!("whole seconds: {exact_text} rounded to {v}"));
                (v, note)
            }
        }
    }
}

/// The labels of the keepalives whose end decides the cell (`CellConfig::keepalive_ends`).
fn giveup_prefixes(knobs: &CellConfig) -> Vec<String> {
    knobs.keepalive_ends().into_iter().map(|(label, _)| label).collect()
}

/// How a keepalive's end is named in orderings and errors.
fn end_label(label: &str, end: &crate::model::keepalive::KeepaliveEnd) -> String {
    match end.kind {
        crate::model::keepalive::EndKind::GiveUp => format!("{label} give-up"),
        crate::model::keepalive::EndKind::Reset => format!("{label} reset (a probe meets the forgotten flow)"),
    }
}

fn scaled_values(knobs: &CellConfig, factor: u32) -> (Vec<ScaledValue>, Vec<(usize, usize)>) {
    let mut k = knobs.clone();
    let giveups = giveup_prefixes(knobs);
    let durations = k.durations_mut();
    let roles: Vec<Role> = durations.iter().map(|d| d.role).collect();
    let pairs = deciding_pairs(&roles);
    let values = durations
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let in_giveup =
                giveups.iter().any(|p| d.label.strip_prefix(p.as_str()).is_some_and(|r| r.starts_with('.')));
            let deciding = in_giveup || pairs.iter().any(|(a, b)| *a == i || *b == i);
            let (scaled, note) = scale_one(*d.value, factor, d.precision, deciding);
            let late = d.precision.late_by().as_millis() as u64;
            ScaledValue {
                label: d.label,
                real: *d.value,
                scaled,
                precision: d.precision,
                late_by_ms: (late > 0).then_some(late),
                role: d.role,
                deciding,
                note,
            }
        })
        .collect();
    (values, pairs)
}

/// One deciding pair, as the check sees it: a label, its real and scaled value, and how late
/// the earlier one may act.
struct Pair<'a> {
    lo: (&'a str, Dur, Dur, Duration),
    hi: (&'a str, Dur, Dur),
}

fn check_pair(p: Pair<'_>, factor: u32) -> Result<(), OrderingError> {
    let ((lo, lo_real, lo_scaled, late), (hi, hi_real, hi_scaled)) = (p.lo, p.hi);
    let gap = MIN_GAP + late;
    let late_text = if late.is_zero() {
        String::new()
    } else {
        format!(" (1 s, plus up to {} that `{lo}` may act late)", human(late))
    };
    if hi_scaled.0 < lo_scaled.0 + gap {
        let unscaled = hi_real.0.saturating_sub(lo_real.0) < gap;
        let hint = if unscaled {
            format!(
                "even unscaled, `{lo}` ({lo_real}) and `{hi}` ({hi_real}) are less than {} apart{late_text}, too close to tell which fired: move them further apart in the scenario",
                human(gap)
            )
        } else {
            "use a smaller factor, or `--time-scale auto` to pick the strongest one that keeps every ordering"
                .to_string()
        };
        return Err(OrderingError {
            factor,
            problem: OrderingProblem::Ordering,
            message: format!(
                "time scale {factor} breaks the ordering `{lo}` ({lo_real}) < `{hi}` ({hi_real}): scaled to {lo_scaled} and {hi_scaled}, less than {} apart{late_text}",
                human(gap)
            ),
            hint,
        });
    }
    Ok(())
}

fn race(factor: u32, a: &str, b: &str, value: Dur) -> OrderingError {
    OrderingError {
        factor,
        problem: OrderingProblem::Race,
        message: format!(
            "`{a}` and `{b}` are both {value}, and which of them comes first decides the outcome: that is a race, not an experiment"
        ),
        hint: format!("give one of them another value, at least {} apart (after scaling)", human(MIN_GAP)),
    }
}

/// Pairs the check looks at: (lo index, hi index) in `values`, in real-world order.
fn ordered(values: &[ScaledValue], i: usize, j: usize) -> Option<(usize, usize)> {
    match values[i].real.cmp(&values[j].real) {
        std::cmp::Ordering::Less => Some((i, j)),
        std::cmp::Ordering::Greater => Some((j, i)),
        std::cmp::Ordering::Equal => None,
    }
}

fn check(
    knobs: &CellConfig,
    values: &[ScaledValue],
    pairs: &[(usize, usize)],
    factor: u32,
) -> Result<(), OrderingError> {
    for &(i, j) in pairs {
        if values[i].real == values[j].real {
            return Err(race(factor, &values[i].label, &values[j].label, values[i].real));
        }
    }
    let idle = values.iter().find(|v| v.role == Role::Idle).expect("every cell has an idle period");
    let scaled_knobs = apply_factor(knobs, factor);
    let (real_ends, scaled_ends) = (knobs.keepalive_ends(), scaled_knobs.keepalive_ends());
    // The kernel's keepalive must end the same way at this factor: rounding to whole seconds
    // must not make a probe answered that was lost, or the reverse.
    let shape = |ends: &[(String, crate::model::keepalive::KeepaliveEnd)]| {
        ends.iter().map(|(l, e)| (l.clone(), e.kind, e.answered)).collect::<Vec<_>>()
    };
    if shape(&real_ends) != shape(&scaled_ends) {
        let describe = |ends: &[(String, crate::model::keepalive::KeepaliveEnd)]| {
            if ends.is_empty() {
                return "no keepalive ends the connection".to_string();
            }
            ends.iter()
                .map(|(l, e)| format!("{} at {} after {} answered probes", end_label(l, e), Dur(e.at), e.answered))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(OrderingError {
            factor,
            problem: OrderingProblem::Ordering,
            message: format!(
                "time scale {factor} changes how the kernel's keepalive ends: real {}; scaled {}",
                describe(&real_ends),
                describe(&scaled_ends)
            ),
            hint: "use a smaller factor, or `--time-scale auto` to pick the strongest one that keeps every ordering"
                .into(),
        });
    }
    let giveups: Vec<_> = real_ends.into_iter().zip(scaled_ends).collect();
    for ((label, end), _) in &giveups {
        if Dur(end.at) == idle.real {
            return Err(race(factor, &end_label(label, end), &idle.label, idle.real));
        }
    }
    if idle.scaled.0 < MIN_GAP {
        return Err(OrderingError {
            factor,
            problem: OrderingProblem::IdleTooShort,
            message: format!(
                "time scale {factor} shrinks `{}` ({} → {}) below {}: too short to measure reliably",
                idle.label,
                idle.real,
                idle.scaled,
                human(MIN_GAP)
            ),
            hint: "use a smaller factor, or `--time-scale auto` to pick the strongest one that keeps every ordering"
                .into(),
        });
    }
    for &(i, j) in pairs {
        let (lo, hi) = ordered(values, i, j).expect("equal pairs refused above");
        let (lo, hi) = (&values[lo], &values[hi]);
        check_pair(
            Pair { lo: (&lo.label, lo.real, lo.scaled, lo.precision.late_by()), hi: (&hi.label, hi.real, hi.scaled) },
            factor,
        )?;
    }
    for ((label, real), (_, scaled)) in &giveups {
        let label = end_label(label, real);
        let (real, scaled) = (Dur(real.at), Dur(scaled.at));
        let (a, b) = ((label.as_str(), real, scaled), (idle.label.as_str(), idle.real, idle.scaled));
        let (lo, hi) = if real < idle.real { (a, b) } else { (b, a) };
        check_pair(Pair { lo: (lo.0, lo.1, lo.2, Duration::ZERO), hi }, factor)?;
    }
    let request = knobs.client.request_timeout;
    for v in values.iter().filter(|v| v.role == Role::UserTimeout) {
        if v.scaled >= request {
            return Err(OrderingError {
                factor,
                problem: OrderingProblem::UserTimeout,
                message: format!(
                    "`{}` ({} → {}) must stay below `client.request_timeout` ({request}, not scaled), or the request timeout fires first",
                    v.label, v.real, v.scaled
                ),
                hint: format!(
                    "raise `client.request_timeout` above {} (it is the lab's patience and is not scaled), or a larger factor shrinks `{}`",
                    v.scaled, v.label
                ),
            });
        }
    }
    Ok(())
}

/// The largest factor the analytical bounds allow (before rounding is checked).
fn upper_bound(knobs: &CellConfig, values: &[ScaledValue], pairs: &[(usize, usize)]) -> u32 {
    let gap = MIN_GAP.as_secs_f64();
    let mut bound = MAX_FACTOR as f64;
    for v in values.iter().filter(|v| v.role == Role::Idle) {
        bound = bound.min(v.real.as_secs_f64() / gap);
        for (_, end) in knobs.keepalive_ends() {
            let d = (end.at.as_secs_f64() - v.real.as_secs_f64()).abs();
            if d > 0.0 {
                bound = bound.min(d / gap);
            }
        }
    }
    for &(i, j) in pairs {
        if let Some((lo, hi)) = ordered(values, i, j) {
            let d = values[hi].real.as_secs_f64() - values[lo].real.as_secs_f64();
            bound = bound.min(d / (gap + values[lo].precision.late_by().as_secs_f64()));
        }
    }
    bound.floor().max(1.0) as u32
}

/// Divide every duration by `factor` with the same rounding, without checking orderings:
/// for rendering the unmitigated path of a cell at that cell's factor (whose orderings are
/// the mitigated path's).
pub fn apply_factor(knobs: &CellConfig, factor: u32) -> CellConfig {
    let (values, _) = scaled_values(knobs, factor);
    let mut scaled = knobs.clone();
    for (d, v) in scaled.durations_mut().into_iter().zip(&values) {
        *d.value = v.scaled;
    }
    scaled
}

/// The strongest factor that keeps every ordering of the cell, or why none does.
fn strongest(knobs: &CellConfig) -> Result<u32, OrderingError> {
    let (values, pairs) = scaled_values(knobs, 1);
    let mut f = upper_bound(knobs, &values, &pairs);
    loop {
        let (values, pairs) = scaled_values(knobs, f);
        match check(knobs, &values, &pairs, f) {
            Ok(()) => return Ok(f),
            Err(e) if f == 1 || e.problem == OrderingProblem::Race => return Err(e),
            Err(_) => f -= 1,
        }
    }
}

/// Scale a cell's knobs. Returns the scaled knobs and the record of every value.
pub fn scale(knobs: &CellConfig, spec: TimeScaleSpec) -> Result<(CellConfig, TimeScale), OrderingError> {
    let (factor, auto) = match spec {
        TimeScaleSpec::Factor(f) => {
            let (values, pairs) = scaled_values(knobs, f);
            if let Err(mut e) = check(knobs, &values, &pairs, f) {
                // Name the factor that works, or pass on why none does.
                if matches!(e.problem, OrderingProblem::Ordering | OrderingProblem::IdleTooShort) {
                    e.hint = match strongest(knobs) {
                        Ok(n) if n < f => format!(
                            "use `--time-scale {n}` or smaller (the strongest factor that keeps every ordering of this cell), or `--time-scale auto`"
                        ),
                        Ok(_) => e.hint,
                        Err(none) => none.hint,
                    };
                }
                return Err(e);
            }
            (f, false)
        }
        TimeScaleSpec::Auto => (strongest(knobs)?, true),
    };
    let (values, pairs) = scaled_values(knobs, factor);
    let scaled = apply_factor(knobs, factor);
    let mut orderings: Vec<String> = pairs
        .iter()
        .filter_map(|&(i, j)| {
            ordered(&values, i, j).map(|(lo, hi)| format!("{} < {}", values[lo].label, values[hi].label))
        })
        .collect();
    for (label, end) in knobs.keepalive_ends() {
        let g = end_label(&label, &end);
        orderings.push(if Dur(end.at) < knobs.idle { format!("{g} < idle") } else { format!("idle < {g}") });
    }
    Ok((scaled, TimeScale { factor, auto, envoy: knobs.envoy_timing.clone(), values, orderings }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mitigation::{Mitigation, app_heartbeat::AppHeartbeat, app_keepalive::AppKeepalive};

    /// gRPC's HTTP/2 keepalive: the ACK deadline is floored at the lab's gap, and a PING that
    /// goes unanswered behind a drop is a give-up the time scale keeps on its side of the idle.
    #[test]
    fn a_grpc_ping_deadline_is_floored_and_its_give_up_is_ordered_against_the_idle() {
        let s = crate::scenario::parse(
            "name: g\nsummary: s\nservice: grpc\npath: [{middlebox: {idle_timeout: 350s, on_unknown: drop}}]\nidle: 10m\nclient: {http2_keep_alive_interval: 7m, keep_alive_timeout: 20s}\ncells: [{mitigation: none, expect: recovered}]\n",
            std::path::Path::new("g.yaml"),
        )
        .unwrap();
        let knobs = s.base_knobs();
        let ends = knobs.keepalive_ends();
        assert_eq!(ends.len(), 1, "{ends:?}");
        assert_eq!(ends[0].0, "client.http2_keepalive");
        assert_eq!(ends[0].1.at, Duration::from_secs(440), "the PING at 7 min, no ACK within 20 s");
        let (scaled, ts) = scale(&knobs, crate::model::service::TimeScaleSpec::Auto).unwrap();
        let timeout = ts.values.iter().find(|v| v.label == "client.http2_keepalive.timeout").unwrap();
        assert_eq!(timeout.scaled, Dur(MIN_GAP), "floored at the gap: {timeout:?}");
        let h2 = scaled.client.http2_keepalive.unwrap();
        assert!(h2.interval.0 + h2.timeout.0 + MIN_GAP <= scaled.idle.0, "the give-up stays before the reuse: {ts:?}");
        assert!(ts.orderings.iter().any(|o| o == "client.http2_keepalive give-up < idle"), "{:?}", ts.orderings);
        // The deadline's precision in the durations is the floored one.
        assert_eq!(
            crate::model::scale::Precision::MillisFloor { floor_ms: MIN_GAP.as_millis() as u64 },
            knobs
                .clone()
                .durations_mut()
                .iter()
                .find(|d| d.label == "client.http2_keepalive.timeout")
                .unwrap()
                .precision
        );
    }

    fn base() -> CellConfig {
        crate::mitigation::contract::tests::test_knobs() // sidecar 1h, idle 70m
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
        AppKeepalive(crate::model::service::Keepalive { time: Dur::secs(600), interval: Dur::secs(75), probes: 9 })
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

    #[test]
    fn equal_deciding_durations_are_a_race_at_any_factor() {
        let mut k = base();
        AppHeartbeat(Dur::secs(3600)).apply(&mut k).unwrap();
        for spec in [TimeScaleSpec::Auto, TimeScaleSpec::Factor(1), TimeScaleSpec::Factor(600)] {
            let e = scale(&k, spec).unwrap_err();
            assert_eq!(e.problem, OrderingProblem::Race, "{spec}: {e}");
            assert!(e.message.contains("client.heartbeat") && e.message.contains("sidecar.idle_timeout"), "{e}");
            assert!(e.hint.contains("another value"), "{}", e.hint);
        }
    }

    /// Issue 9: redis's whole-second clock closes up to 1.1 s after its `timeout`; a 3 s idle
    /// against a 2 s timeout flipped 1 run in 20. The idle must clear the latest moment.
    #[test]
    fn a_server_clock_keeps_its_lateness_out_of_the_gap() {
        let mut k = base();
        k.path.clear();
        k.server_idle_timeout = Dur::secs(1200);
        k.idle = Dur::secs(1800);
        let (scaled, ts) = scale(&k, TimeScaleSpec::Auto).unwrap();
        assert!(scaled.idle.0 >= scaled.server_idle_timeout.0 + Duration::from_millis(2100), "{ts:?}");
        assert!(ts.factor < 600, "600 gave 3 s against 2 s, inside redis's window");
        let e = scale(&k, TimeScaleSpec::Factor(600)).unwrap_err();
        assert!(e.message.contains("may act late"), "{e}");
        assert!(e.hint.contains(&format!("--time-scale {}", ts.factor)), "names the factor that works: {}", e.hint);
        // Unscaled, 1 s apart is inside redis's window: no factor helps.
        k.idle = Dur::secs(1201);
        let e = scale(&k, TimeScaleSpec::Auto).unwrap_err();
        assert!(e.hint.contains("even unscaled") && e.hint.contains("further apart"), "{}", e.hint);
    }

    /// With a blackhole on the path, when the kernel gives up on unanswered probes decides
    /// whether the connection dies while idle: `time + probes × interval` against the idle.
    #[test]
    fn keepalive_give_up_against_the_idle_is_a_deciding_pair_behind_a_blackhole() {
        let mut k = base();
        k.path = vec![crate::hop::Hop::Middlebox(crate::hop::MiddleboxHop {
            preset: None,
            idle_timeout: Dur::secs(350),
            on_unknown: crate::hop::OnUnknown::Drop,
        })];
        k.idle = Dur::secs(600);
        AppKeepalive(crate::model::service::Keepalive { time: Dur::secs(400), interval: Dur::secs(30), probes: 3 })
            .apply(&mut k)
            .unwrap();
        let (_, ts) = scale(&k, TimeScaleSpec::Auto).unwrap();
        assert!(ts.orderings.iter().any(|o| o == "client.keepalive give-up < idle"), "{:?}", ts.orderings);
        let interval = ts.values.iter().find(|v| v.label == "client.keepalive.interval").unwrap();
        assert!(interval.deciding, "the interval decides the give-up");
        // Idle 500 s: ×20 gives time 20 s, interval 1.5 s → 2 s, a give-up at 26 s after a
        // 25 s idle, although 490 s < 500 s: refused, and auto stays below it.
        k.idle = Dur::secs(500);
        let e = scale(&k, TimeScaleSpec::Factor(20)).unwrap_err();
        assert!(e.message.contains("client.keepalive give-up"), "{e}");
        assert!(scale(&k, TimeScaleSpec::Auto).unwrap().1.factor < 20);
    }

    /// Issue 17: keepalive time < the device's timeout < interval. The first probe is
    /// answered, so the kernel gives up at time + (probes + 1) × interval (1300 s), after the
    /// idle (1250 s): the reuse meets the forgotten flow (`hung`). The old model put the
    /// give-up at time + probes × interval (1000 s) before the idle, protected that moment,
    /// and accepted factors at which the real give-up crossed the idle.
    #[test]
    fn an_answered_first_probe_moves_the_protected_give_up() {
        let mut k = base();
        k.path = vec![crate::hop::Hop::Middlebox(crate::hop::MiddleboxHop {
            preset: None,
            idle_timeout: Dur::secs(200),
            on_unknown: crate::hop::OnUnknown::Drop,
        })];
        k.idle = Dur::secs(1250);
        AppKeepalive(crate::model::service::Keepalive { time: Dur::secs(100), interval: Dur::secs(300), probes: 3 })
            .apply(&mut k)
            .unwrap();
        let (scaled, ts) = scale(&k, TimeScaleSpec::Auto).unwrap();
        assert!(ts.orderings.iter().any(|o| o == "idle < client.keepalive give-up"), "{:?}", ts.orderings);
        // What the kernel does with the scaled values: still after the idle, by the gap.
        let ka = scaled.client.keepalive.unwrap();
        let devices = [crate::model::keepalive::Forgetter {
            timeout: Duration::from_secs(
                scaled
                    .path
                    .iter()
                    .find_map(|h| match h {
                        crate::hop::Hop::Middlebox(m) => Some(m.conntrack_timeout_s()),
                        _ => None,
                    })
                    .unwrap(),
            ),
            on_unknown: crate::hop::OnUnknown::Drop,
        }];
        let end = crate::model::keepalive::end(ka.time.0, ka.interval.0, ka.probes, &devices).unwrap();
        assert_eq!(end.answered, 1, "{end:?} at ×{}", ts.factor);
        assert!(end.at >= scaled.idle.0 + MIN_GAP, "give-up {end:?} vs idle {} at ×{}", scaled.idle, ts.factor);
        // ×90 rounds to time 1 s, interval 3 s, timeout 2 s: the kernel would give up at 13 s,
        // before the 13.9 s idle: refused.
        assert!(scale(&k, TimeScaleSpec::Factor(90)).is_err());
    }

    #[test]
    fn a_user_timeout_above_the_request_timeout_gets_the_hint_that_fixes_it() {
        let mut k = base();
        crate::mitigation::tcp_user_timeout::TcpUserTimeout(Dur::secs(3600)).apply(&mut k).unwrap();
        let e = scale(&k, TimeScaleSpec::Factor(1)).unwrap_err();
        assert_eq!(e.problem, OrderingProblem::UserTimeout);
        assert!(e.hint.contains("client.request_timeout") && !e.hint.contains("smaller factor"), "{}", e.hint);
    }
}
