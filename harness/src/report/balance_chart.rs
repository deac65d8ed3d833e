//! A gRPC balance cell as SVG: requests per second of each replica over the run, one line per
//! replica, the scale events as dashed lines, so a reader sees at a glance which replicas
//! carried the load and which served nothing.
//!
//! ```text
//!   req/s │ r1 ━━━━━━━━━━━━━━━━━━━━┊━━━━━━━━━━━━━━━  carries two clients
//!         │ r3 ━━━━━━━━━━━━━━━━━━━━┊━━━━━━━━━━━━━━━
//!       0 │ r0 r2 ─────────────────┊ r4 r5 ─────────  (pinned: nothing reaches them)
//!                                scale to 6
//! ```
//!
//! The rate of a replica at a moment is what it served in the second before it (its own
//! counts, sampled every 200 ms).

use crate::model::balance::BalanceObservation;
use std::fmt::Write;

const WIDTH: f64 = 920.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 110.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 30.0;
const COLORS: [&str; 8] = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#1b7c83", "#e16f24", "#57606a"];

/// Requests per second of each replica at each sample (over the second before it).
pub fn rates(obs: &BalanceObservation) -> Vec<(u64, Vec<f64>)> {
    let t = &obs.timeline;
    t.iter()
        .enumerate()
        .filter(|(i, _)| *i > 0)
        .map(|(i, (ms, served))| {
            let back = t[..i].iter().rev().find(|(m, _)| *m + 1000 <= *ms).unwrap_or(&t[0]);
            let span = (*ms - back.0).max(1) as f64 / 1000.0;
            let r = served
                .iter()
                .enumerate()
                .map(|(r, n)| n.saturating_sub(back.1.get(r).copied().unwrap_or(0)) as f64 / span)
                .collect();
            (*ms, r)
        })
        .collect()
}

/// The same in a terminal: one row per replica, its request rate over the run in `width`
/// block characters (▁ … █, a blank where it served nothing), scaled to the busiest replica.
pub fn sparklines(obs: &BalanceObservation, width: usize) -> Vec<String> {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let rates = rates(obs);
    let replicas = obs.timeline.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let top = rates.iter().flat_map(|(_, r)| r.iter().copied()).fold(0.0f64, f64::max);
    if rates.is_empty() || top == 0.0 {
        return vec![];
    }
    let end = rates.last().map(|(ms, _)| *ms).unwrap_or(1).max(1);
    (0..replicas)
        .map(|r| {
            let row: String = (0..width)
                .map(|col| {
                    let at = end * (col as u64 + 1) / width as u64;
                    let rate = rates.iter().find(|(ms, _)| *ms >= at).and_then(|(_, v)| v.get(r).copied());
                    match rate {
                        None => ' ',
                        Some(x) if x <= 0.0 => '·',
                        Some(x) => BLOCKS[((x / top) * 7.0).round() as usize],
                    }
                })
                .collect();
            let total = obs.timeline.last().and_then(|(_, v)| v.get(r).copied()).unwrap_or(0);
            format!("replica {r:>2} {row} {total}")
        })
        .collect()
}

pub fn svg(obs: &BalanceObservation) -> String {
    let rates = rates(obs);
    let end = obs.timeline.last().map(|(ms, _)| *ms).unwrap_or(0).max(1) as f64;
    let replicas = obs.timeline.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let top_rate = rates.iter().flat_map(|(_, r)| r.iter().copied()).fold(1.0f64, f64::max).ceil();
    let x = |ms: f64| LEFT + ms / end * (WIDTH - LEFT - RIGHT);
    let y = |rate: f64| TOP + (1.0 - rate / top_rate) * (HEIGHT - TOP - BOTTOM);
    let mut out = format!(
        r#"<svg class="balance" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11"><title>requests per second of each replica</title>"#
    );
    // Axes: 0 and the top rate, the start and the end.
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#8c959f"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="#8c959f"/><text x="{:.1}" y="{:.1}" text-anchor="end">0</text><text x="{:.1}" y="{:.1}" text-anchor="end">{top_rate} req/s</text><text x="{LEFT}" y="{:.1}">0 s</text><text x="{:.1}" y="{:.1}" text-anchor="end">{:.1} s</text>"##,
        y(0.0),
        x(end),
        y(0.0),
        y(0.0),
        LEFT - 4.0,
        y(0.0) + 4.0,
        LEFT - 4.0,
        TOP + 4.0,
        HEIGHT - 8.0,
        x(end),
        HEIGHT - 8.0,
        end / 1000.0
    );
    // Scale events: where a segment starts.
    for s in obs.segments.iter().skip(1) {
        let _ = write!(
            out,
            r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1:.1}" stroke="#57606a" stroke-dasharray="4 3"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle">{3} replicas</text>"##,
            x(s.from_ms as f64),
            y(0.0),
            TOP - 6.0,
            s.served.len()
        );
    }
    for r in 0..replicas {
        let color = COLORS[r % COLORS.len()];
        let points: Vec<String> = rates
            .iter()
            .filter(|(_, v)| v.len() > r)
            .map(|(ms, v)| format!("{:.1},{:.1}", x(*ms as f64), y(v[r])))
            .collect();
        let total: u64 = obs.timeline.last().and_then(|(_, v)| v.get(r).copied()).unwrap_or(0);
        let _ = write!(
            out,
            r#"<polyline class="replica" fill="none" stroke="{color}" stroke-width="2" points="{}"><title>replica {r}: {total} requests</title></polyline><text x="{:.1}" y="{:.1}" fill="{color}">replica {r}: {total}</text>"#,
            points.join(" "),
            WIDTH - RIGHT + 8.0,
            TOP + 12.0 + r as f64 * 14.0
        );
    }
    out + "</svg>"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_replica_and_a_dashed_line_per_scale_event() {
        let obs = BalanceObservation {
            timeline: vec![(0, vec![0, 0]), (500, vec![10, 0]), (1000, vec![20, 0, 0]), (1500, vec![30, 0, 5])],
            segments: crate::model::balance::segments(
                &[(0, vec![0, 0]), (1000, vec![20, 0, 0]), (1500, vec![30, 0, 5])],
                &[1000],
                |ms| if ms < 1000 { 2 } else { 3 },
            ),
            ..Default::default()
        };
        let svg = svg(&obs);
        assert_eq!(svg.matches(r#"class="replica""#).count(), 3, "{svg}");
        assert_eq!(svg.matches("stroke-dasharray").count(), 1, "{svg}");
        assert!(svg.contains("replica 0: 30") && svg.contains("replica 1: 0"), "{svg}");
        let rows = sparklines(&obs, 3);
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert!(rows[1].contains("···"), "replica 1 served nothing: {rows:?}");
        // Replica 0 served 20 in the second before 1.0 s.
        assert_eq!(rates(&obs)[1].1[0], 20.0);
    }
}
