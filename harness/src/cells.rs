//! Expand a scenario into cells: one independent experiment per mitigation, with its knobs
//! in real-world time and then scaled.

use crate::config::CellConfig;
use crate::mitigation::MitigationSpec;
use crate::model::scale::{EnvoyTiming, TimeScale};
use crate::model::service::TimeScaleSpec;
use crate::model::verdict::Verdict;
use crate::scenario::Scenario;
use crate::timescale::{self};

#[derive(Clone, Debug)]
pub struct Cell {
    pub scenario: String,
    pub label: String,
    pub mitigation: MitigationSpec,
    pub describe: String,
    pub expected: Verdict,
    pub why: Option<String>,
    /// Real-world knobs before the mitigation (the scenario as written).
    pub baseline: CellConfig,
    /// Real-world knobs after the mitigation.
    pub real: CellConfig,
    /// What the lab runs with.
    pub scaled: CellConfig,
    pub time_scale: TimeScale,
}

/// Cells whose label or mitigation name matches one of `only` (all cells when empty).
/// Errors name the cell and the ordering a factor would flip.
pub fn expand(scenario: &Scenario, only: &[String], time_scale: Option<TimeScaleSpec>) -> Result<Vec<Cell>, String> {
    let spec = time_scale.unwrap_or(scenario.time_scale);
    let mut cells = Vec::new();
    for c in &scenario.cells {
        let m = &c.mitigation.value;
        let label = m.label();
        let kind = label.split('=').next().unwrap_or(&label).to_string();
        if !only.is_empty() && !only.iter().any(|o| *o == label || *o == kind) {
            continue;
        }
        let baseline = scenario.base_knobs();
        let mut real = baseline.clone();
        m.as_mitigation().apply(&mut real).map_err(|e| format!("cell `{label}`: {e}"))?;
        let (scaled, time_scale) = scale_cell(&real, spec).map_err(|e| {
            let at = c.mitigation.referenced;
            format!(
                "{}:{}:{}: cell `{label}`: {e}\n  hint: {}",
                scenario.source.display(),
                at.line(),
                at.column(),
                e.hint
            )
        })?;
        cells.push(Cell {
            scenario: scenario.name.clone(),
            describe: m.as_mitigation().describe(),
            label,
            mitigation: m.clone(),
            baseline,
            expected: c.expect,
            why: c.why.clone(),
            real,
            scaled,
            time_scale,
        });
    }
    if cells.is_empty() {
        let known: Vec<String> = scenario.cells.iter().map(|c| c.mitigation.value.label()).collect();
        return Err(format!(
            "no cell matches --mitigation {}\n  hint: this scenario's cells are: {}",
            only.join(", "),
            known.join(", ")
        ));
    }
    Ok(cells)
}

/// A cell's knobs scaled. A balance run is real time: none of its durations is a timer whose
/// order decides it.
fn scale_cell(real: &CellConfig, spec: TimeScaleSpec) -> Result<(CellConfig, TimeScale), timescale::OrderingError> {
    if real.grpc.is_some() {
        let envoy = real.envoy_timing.clone();
        return Ok((real.clone(), TimeScale { factor: 1, auto: false, envoy, values: vec![], orderings: vec![] }));
    }
    timescale::scale(real, spec)
}

/// The cells scaled again for the Envoy that will run them: its measured timing facts
/// (`local::envoy_timing`) in place of the ones they were expanded with. A cell whose factor
/// was asked for (`--time-scale N`) keeps it, or is refused if the facts make it flip an
/// ordering; an `auto` cell gets the strongest factor these facts allow.
pub fn for_envoy(cells: Vec<Cell>, timing: &EnvoyTiming) -> Result<Vec<Cell>, String> {
    cells
        .into_iter()
        .map(|mut cell| {
            if cell.real.envoy_timing == *timing {
                return Ok(cell);
            }
            cell.real.envoy_timing = timing.clone();
            cell.baseline.envoy_timing = timing.clone();
            let spec =
                if cell.time_scale.auto { TimeScaleSpec::Auto } else { TimeScaleSpec::Factor(cell.time_scale.factor) };
            let (scaled, time_scale) = scale_cell(&cell.real, spec).map_err(|e| {
                format!("{}::{} on {}: {e}\n  hint: {}", cell.scenario, cell.label, timing.describe(), e.hint)
            })?;
            cell.scaled = scaled;
            cell.time_scale = time_scale;
            Ok(cell)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::scale::{EnvoyTiming, Precision};

    fn http_idle() -> Scenario {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/http-idle.yaml");
        crate::scenario::load(&path).unwrap()
    }

    fn measured(close_delay_ms: u64) -> EnvoyTiming {
        EnvoyTiming {
            release: "1.99.0".into(),
            http_close_delay_ms: close_delay_ms,
            tcp_idle_timer_while_connecting: true,
            http_upstream_idle_timer_while_connecting: false,
            source: crate::model::scale::TimingSource::Measured,
        }
    }

    /// A release whose connection manager closed later would need more room between the
    /// sidecar's idle timeout and the reuse: the cell is scaled again for the facts of the
    /// Envoy that runs it, and records them.
    #[test]
    fn a_cell_is_scaled_again_for_the_envoy_that_runs_it() {
        let cells = expand(&http_idle(), &["none".into()], None).unwrap();
        let before = cells[0].time_scale.clone();
        assert_eq!(before.envoy, EnvoyTiming::default());
        // The same facts as assumed: nothing changes but the record of the release.
        let same = for_envoy(
            cells.clone(),
            &EnvoyTiming {
                release: "1.40.0".into(),
                source: crate::model::scale::TimingSource::Measured,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(same[0].time_scale.factor, before.factor);
        assert_eq!(same[0].time_scale.envoy.release, "1.40.0");
        // A close 16 s after the idle timeout: a weaker factor keeps the reuse after it.
        let later = for_envoy(cells.clone(), &measured(16_000)).unwrap();
        let ts = &later[0].time_scale;
        assert!(ts.factor < before.factor, "{} < {}", ts.factor, before.factor);
        assert_eq!(ts.envoy, measured(16_000));
        let drain = ts.values.iter().find(|v| v.precision == Precision::HttpDrain { drain_ms: 16_000 });
        assert!(drain.is_some_and(|v| v.late_by_ms == Some(16_000)), "{:?}", ts.values);
        assert!(ts.notes().any(|n| n.starts_with("Envoy 1.99.0 (measured): an idle HTTP/1.1 connection closes 16 s")));
        let sidecar = later[0].scaled.sidecar().unwrap().idle_timeout;
        assert!(sidecar.0 + std::time::Duration::from_secs(16) < later[0].scaled.idle.0, "{ts:?}");
    }

    /// A factor asked for that these facts would flip is refused, naming the cell and the Envoy.
    #[test]
    fn a_factor_asked_for_that_the_envoy_cannot_keep_is_refused() {
        let cells =
            expand(&http_idle(), &["none".into()], Some(crate::model::service::TimeScaleSpec::Factor(500))).unwrap();
        let e = for_envoy(cells, &measured(16_000)).unwrap_err();
        assert!(e.starts_with("http-idle::none on Envoy 1.99.0 (measured)"), "{e}");
        assert!(e.contains("hint: use `--time-scale"), "{e}");
    }
}
