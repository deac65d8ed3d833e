//! Expand a scenario into cells: one independent experiment per mitigation, with its knobs
//! in real-world time and then scaled.

use crate::config::CellConfig;
use crate::mitigation::MitigationSpec;
use crate::model::scale::TimeScale;
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
        // A balance run is real time: none of its durations is a timer whose order decides it.
        let scaled = if real.grpc.is_some() {
            Ok((
                real.clone(),
                crate::model::scale::TimeScale { factor: 1, auto: false, values: vec![], orderings: vec![] },
            ))
        } else {
            timescale::scale(&real, spec)
        };
        let (scaled, time_scale) = scaled.map_err(|e| {
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
