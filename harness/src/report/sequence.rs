//! A failed connection's sequence diagram as SVG: the path's hops as lifelines, each packet of
//! the connection's chain an arrow from the hop that sent it to the one that got it.
//!
//! ```text
//!   app        sidecar        mb1        server
//!    │──SYN──────▶│             │            │
//!    │            │──SYN────────┼───────────▶│
//!    ≈ ≈ ≈ idle 3.000 s (10.0 min in the scenario's time) ≈ ≈ ≈
//!    │──data─────▶│──data──────▶✕            │      a drop ends at the hop that dropped it
//!    │            │◀────RST─────│            │
//!    │◀───RST─────│             │            │
//! ```
//!
//! One row per packet, in order; a pause longer than [`BREAK_S`] between two rows is drawn as
//! a break labelled with its length, so the idle gap is shown and not drawn to scale.

use super::timeline::esc;
use crate::capture::attribute::{Attribution, scenario_time};
use std::fmt::Write;

/// A pause between two packets drawn as a break.
pub const BREAK_S: f64 = 0.5;
const COLUMN: f64 = 150.0;
const LEFT: f64 = 90.0;
const TOP: f64 = 40.0;
const ROW: f64 = 18.0;
const GAP: f64 = 30.0;

fn color(kind: &str) -> &'static str {
    match kind {
        "RST" => "#cf222e",
        "FIN" => "#bc4c00",
        "keepalive" => "#8250df",
        "data" => "#0969da",
        _ => "#57606a",
    }
}

/// The diagram of one attribution; `factor` turns a break's length into the scenario's time.
pub fn svg(a: &Attribution, factor: u32) -> String {
    let x = |i: usize| LEFT + COLUMN * i as f64;
    let width = LEFT + COLUMN * a.lifelines.len().max(2) as f64;
    // Each row's y, with the breaks.
    let mut ys = Vec::with_capacity(a.arrows.len());
    let mut breaks = Vec::new();
    let mut y = TOP + 10.0;
    for (i, arrow) in a.arrows.iter().enumerate() {
        if i > 0 {
            let pause = arrow.t - a.arrows[i - 1].t;
            if pause > BREAK_S {
                breaks.push((y + GAP / 2.0, pause));
                y += GAP;
            }
        }
        y += ROW;
        ys.push(y);
    }
    let height = y + 30.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="sequence" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11"><title>{}</title>"#,
        esc(&format!("{}: {}", a.connection, a.sentence))
    );
    for (i, name) in a.lifelines.iter().enumerate() {
        let first = a.first.actor == *name;
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-weight="{}">{}</text><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="{}"/>"#,
            x(i),
            TOP - 18.0,
            if first { "bold" } else { "normal" },
            esc(name),
            x(i),
            TOP - 10.0,
            x(i),
            height - 10.0,
            if first { "#cf222e" } else { "#8c959f" },
            if first { 2 } else { 1 }
        );
    }
    for (yb, pause) in &breaks {
        let real = pause * f64::from(factor);
        let label = if factor > 1 {
            format!("≈ {pause:.3} s ({} in the scenario's time) ≈", scenario_time(real))
        } else {
            format!("≈ {pause:.3} s ≈")
        };
        let _ = write!(
            out,
            r##"<rect x="4" y="{:.1}" width="{:.1}" height="{:.1}" fill="#f6f8fa"/><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#57606a" class="break">{}</text>"##,
            yb - GAP / 2.0 + 4.0,
            width - 8.0,
            GAP - 8.0,
            width / 2.0,
            yb + 4.0,
            esc(&label)
        );
    }
    for (arrow, y) in a.arrows.iter().zip(&ys) {
        let (x1, x2) = (x(arrow.from), x(arrow.to));
        // An event on one lifeline (a middlebox's conntrack): a diamond and its name.
        if arrow.from == arrow.to {
            let what = if arrow.kind == "expired" {
                "conntrack entry expired (last segment + timeout, configuration)"
            } else {
                "conntrack -E: DESTROY"
            };
            let _ = write!(
                out,
                r##"<g class="event"><title>{:.3} s: {}</title><text x="6" y="{:.1}" fill="#57606a">{:.3} s</text><path d="M{x1:.1},{:.1} l5,5 l-5,5 l-5,-5 z" fill="#9a6700"/><text x="{:.1}" y="{:.1}" fill="#9a6700">{}</text></g>"##,
                arrow.t,
                esc(what),
                y + 4.0,
                arrow.t,
                y - 5.0,
                x1 + 9.0,
                y + 4.0,
                esc(what)
            );
            continue;
        }
        let c = color(&arrow.kind);
        let dir = if x2 >= x1 { 1.0 } else { -1.0 };
        let dash = if arrow.kind == "keepalive" { r#" stroke-dasharray="4 3""# } else { "" };
        let _ = write!(
            out,
            r##"<g class="arrow {}"><title>{}</title><text x="6" y="{:.1}" fill="#57606a">{:.3} s</text><line x1="{x1:.1}" y1="{y:.1}" x2="{x2:.1}" y2="{y:.1}" stroke="{c}" stroke-width="1.5"{dash}/>"##,
            esc(&arrow.kind),
            esc(&format!(
                "{:.3} s: {} from {} to {}{}",
                arrow.t,
                arrow.kind,
                a.lifelines[arrow.from],
                a.lifelines[arrow.to],
                if arrow.dropped { " (dropped there)" } else { "" }
            )),
            y + 4.0,
            arrow.t
        );
        if arrow.dropped {
            let _ = write!(
                out,
                r#"<path d="M{:.1},{:.1} l8,8 M{:.1},{:.1} l-8,8" stroke="{c}" stroke-width="2"/>"#,
                x2 - 4.0,
                y - 4.0,
                x2 + 4.0,
                y - 4.0
            );
        } else {
            let _ = write!(out, r#"<path d="M{x2:.1},{y:.1} l{:.1},-4 l0,8 z" fill="{c}"/>"#, -7.0 * dir);
        }
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{c}">{}</text></g>"#,
            (x1 + x2) / 2.0,
            y - 3.0,
            esc(&arrow.kind)
        );
    }
    out.push_str("</svg>");
    out
}
