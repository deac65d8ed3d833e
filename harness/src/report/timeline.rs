//! A cell's timeline as SVG: one row per pooled connection, so a reader sees *why* it failed.
//!
//! ```text
//!   conn 0  ●━━━━┥ warm ░░░░░░░░░░ idle ░░░░░░░░░▲FIN░░░░░░░░░░░✖ reuse (eof) ● retry ok
//!                       ┊ path[0].sidecar.idle_timeout fires
//! ```
//!
//! Times are the probe's (ms since it started); the dashed lines are where each hop's scaled
//! timeout falls, counted from the start of the idle period.

use crate::model::observation::{Attempt, Observations, Outcome};
use crate::model::scale::Role;
use crate::model::scale::TimeScale;
use std::fmt::Write;

/// Connections drawn at most; the rest are summarised in a caption.
pub const MAX_ROWS: usize = 16;
const WIDTH: f64 = 920.0;
const LEFT: f64 = 70.0;
const ROW: f64 = 26.0;
const TOP: f64 = 34.0;

/// Text for SVG and HTML, with the characters that would end it escaped (the other diagrams
/// use it too).
pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn attempt_mark(out: &mut String, x: f64, y: f64, a: &Attempt, what: &str) {
    let (fill, label) = if a.outcome.is_ok() {
        ("#1a7f37", "ok".to_string())
    } else {
        ("#cf222e", format!("{:?}", a.outcome).to_lowercase())
    };
    let title =
        format!("{what} at {} ms: {label}{}", a.at_ms, a.error.as_ref().map(|e| format!(" — {e}")).unwrap_or_default());
    let _ = write!(
        out,
        r#"<circle cx="{x:.1}" cy="{y:.1}" r="5" fill="{fill}"><title>{}</title></circle><text x="{:.1}" y="{:.1}" class="lbl">{}</text>"#,
        esc(&title),
        x + 7.0,
        y + 4.0,
        esc(&format!("{what}: {label}"))
    );
}

pub fn svg(obs: &Observations, time_scale: &TimeScale) -> String {
    let rows: Vec<_> = obs.connections.iter().take(MAX_ROWS).collect();
    let end = obs
        .connections
        .iter()
        .flat_map(|c| [Some(&c.reuse), c.retry_after_reconnect.as_ref()])
        .flatten()
        .map(|a| a.at_ms + a.latency_ms)
        .max()
        .unwrap_or(obs.reuse_started_ms)
        .max(obs.idle_started_ms + obs.idle_ms) as f64;
    let span = (end * 1.12).max(1.0);
    let x = |ms: u64| LEFT + (ms as f64 / span) * (WIDTH - LEFT - 150.0);
    let height = TOP + ROW * rows.len() as f64 + 34.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" role="img"><style>.lbl{{font:11px sans-serif;fill:#24292f}}.axis{{font:10px sans-serif;fill:#57606a}}</style>"#
    );
    // The idle period and where each hop's timeout falls in it.
    let (i0, i1) = (x(obs.idle_started_ms), x(obs.idle_started_ms + obs.idle_ms));
    let _ = write!(
        out,
        r##"<rect x="{i0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#f6f8fa"><title>idle period: {} ms</title></rect><text x="{i0:.1}" y="14" class="axis">idle {:.1} s</text>"##,
        TOP - 12.0,
        (i1 - i0).max(1.0),
        ROW * rows.len() as f64 + 12.0,
        obs.idle_ms,
        obs.idle_ms as f64 / 1000.0
    );
    for v in time_scale.values.iter().filter(|v| matches!(v.role, Role::Timeout { .. })) {
        let at = obs.idle_started_ms + v.scaled.0.as_millis() as u64;
        if (at as f64) > span {
            continue;
        }
        let tx = x(at);
        let _ = write!(
            out,
            r##"<line x1="{tx:.1}" x2="{tx:.1}" y1="{:.1}" y2="{:.1}" stroke="#bc4c00" stroke-dasharray="4 3"><title>{} ({} real, {} scaled) fires here if nothing crosses</title></line><text x="{:.1}" y="26" class="axis">{} fires</text>"##,
            TOP - 14.0,
            TOP + ROW * rows.len() as f64,
            esc(&v.label),
            v.real,
            v.scaled,
            tx + 3.0,
            esc(&v.label)
        );
    }
    for (i, c) in rows.iter().enumerate() {
        let y = TOP + ROW * i as f64 + ROW / 2.0;
        let _ = write!(out, r#"<text x="4" y="{:.1}" class="lbl">conn {}</text>"#, y + 4.0, c.id);
        let (o, l) = (x(c.opened_ms), x(c.last_activity_ms));
        let _ = write!(
            out,
            r##"<line x1="{o:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#0969da" stroke-width="4"><title>opened at {} ms, last activity at {} ms{}</title></line>"##,
            l.max(o + 2.0),
            c.opened_ms,
            c.last_activity_ms,
            if c.keepalive { ", SO_KEEPALIVE on" } else { "" }
        );
        let _ = write!(
            out,
            r##"<line x1="{l:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#8c959f" stroke-dasharray="2 3"/>"##,
            x(c.reuse.at_ms)
        );
        if c.heartbeats > 0 {
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" class="axis">{} heartbeats</text>"#,
                l + 4.0,
                y - 5.0,
                c.heartbeats
            );
        }
        for (t, label, color, what) in [
            (c.peer_closed_ms, "FIN", "#cf222e", "FIN from the peer"),
            (c.peer_reset_ms, "RST", "#bc4c00", "RST from the peer"),
            (c.timed_out_ms, "ETIMEDOUT", "#6e7781", "the kernel timed the connection out"),
        ] {
            if let Some(t) = t {
                let px = x(t);
                let _ = write!(
                    out,
                    r##"<path d="M{px:.1} {:.1} l-5 9 h10 z" fill="{color}"><title>{what} at {t} ms</title></path><text x="{:.1}" y="{:.1}" class="lbl">{label}</text>"##,
                    y - 9.0,
                    px - 9.0,
                    y - 11.0
                );
            }
        }
        if let Some(why) = &c.replaced_before_use {
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" class="lbl" fill="#8250df">↻<title>{}</title></text>"##,
                x(c.reuse.at_ms) - 16.0,
                y + 4.0,
                esc(why)
            );
        }
        attempt_mark(&mut out, x(c.reuse.at_ms), y, &c.reuse, "reuse");
        if let Some(r) = &c.retry_after_reconnect
            && (r.outcome != Outcome::Ok || c.reuse.outcome != Outcome::Ok)
        {
            let rx = (x(c.reuse.at_ms) + 95.0).min(WIDTH - 60.0);
            attempt_mark(&mut out, rx, y, r, "retry");
        }
    }
    let caption = if obs.connections.len() > rows.len() {
        format!("{} connections; the first {} are drawn", obs.connections.len(), rows.len())
    } else {
        format!("{} connections", obs.connections.len())
    };
    let _ = write!(
        out,
        r#"<text x="4" y="{:.1}" class="axis">{} · probe time 0–{:.1} s · ● reuse result · ▲ FIN/RST seen while idle · ↻ replaced by the pool · dashed: a hop's timeout</text></svg>"#,
        height - 8.0,
        esc(&caption),
        end / 1000.0
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::observation::ConnObservation;

    #[test]
    fn draws_a_row_per_connection_with_fin_and_result() {
        let conn = |id| ConnObservation {
            id,
            local_addr: String::new(),
            opened_ms: 0,
            last_activity_ms: 10,
            heartbeats: 0,
            heartbeat_failure: None,
            peer_closed_ms: Some(6010),
            peer_reset_ms: None,
            timed_out_ms: None,
            replaced_before_use: None,
            reuse: Attempt {
                at_ms: 7010,
                latency_ms: 1,
                outcome: Outcome::Eof,
                error: Some("broken <pipe>".into()),
                local_addr: None,
            },
            retry_after_reconnect: Some(Attempt {
                at_ms: 7012,
                latency_ms: 1,
                outcome: Outcome::Ok,
                error: None,
                local_addr: None,
            }),
            reconnects: 1,
            keepalive: false,
        };
        let obs = Observations {
            service: "redis".into(),
            target: "x".into(),
            pool: 2,
            idle_started_ms: 10,
            idle_ms: 7000,
            reuse_started_ms: 7010,
            connections: vec![conn(0), conn(1)],
            notes: vec![],
            balance: None,
            finished_ms: 0,
            peak_rss_kib: 0,
        };
        let ts = crate::timescale::scale(
            &crate::mitigation::contract::tests::test_knobs(),
            crate::model::service::TimeScaleSpec::Auto,
        )
        .unwrap()
        .1;
        let s = svg(&obs, &ts);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
        assert_eq!(s.matches("conn ").count(), 2);
        assert_eq!(s.matches(">FIN<").count(), 2);
        assert!(s.contains("sidecar.idle_timeout fires"));
        assert!(s.contains("broken &lt;pipe&gt;"), "text is escaped");
    }
}
